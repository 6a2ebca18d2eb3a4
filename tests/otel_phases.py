"""One phase of a traced run in its own OS process: suspend, decide or resume (tracing tests).

Each process configures the OpenTelemetry SDK with an in-memory exporter, does its phase
against a shared SQLite store, and writes every finished span to ``--spans`` as JSON (name,
ids, parent, links, attributes, events), so the test can check the tree across processes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from _harnesses import ALL as HARNESSES
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from continuations_core import Completed, Keyring, Suspended
from continuations_core.stores import open_store
from continuations_core.testing.conformance import chain
from continuations_core.testing.spec import Ledger


def dump(span: ReadableSpan) -> dict[str, Any]:
    """A span as JSON: ids as hex, attributes and events as plain values."""
    ctx = span.get_span_context()
    assert ctx is not None
    return {
        "name": span.name,
        "trace_id": f"{ctx.trace_id:032x}",
        "span_id": f"{ctx.span_id:016x}",
        "parent": f"{span.parent.span_id:016x}" if span.parent else None,
        "parent_trace": f"{span.parent.trace_id:032x}" if span.parent else None,
        "links": [
            {
                "trace_id": f"{link.context.trace_id:032x}",
                "span_id": f"{link.context.span_id:016x}",
                "attributes": dict(link.attributes or {}),
            }
            for link in span.links
        ],
        "attributes": {k: _plain(v) for k, v in (span.attributes or {}).items()},
        "events": [
            {"name": e.name, "attributes": {k: _plain(v) for k, v in (e.attributes or {}).items()}}
            for e in span.events
        ],
    }


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


async def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("phase", choices=["suspend", "decide", "resume"])
    p.add_argument("--adapter", required=True)
    p.add_argument("--store", required=True)
    p.add_argument("--ledger", required=True)
    p.add_argument("--spans", required=True)
    p.add_argument("--id", help="the continuation to decide or resume")
    p.add_argument("--trace", default="link", choices=["link", "continue"])
    p.add_argument("--result", required=True)
    a = p.parse_args()

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    tracer = trace.get_tracer("otel-phases")
    if a.adapter != "strands":  # Pydantic AI records its spans only when instrumented
        from pydantic_ai import Agent

        Agent.instrument_all(True)

    keys = Keyring.from_env()
    harness = HARNESSES[a.adapter]()
    agent = harness.build(chain(3), Ledger(path=Path(a.ledger)))  # root > child > grandchild
    result: dict[str, Any] = {}
    async with open_store(a.store) as store:
        with tracer.start_as_current_span(f"process {a.phase}"):
            if a.phase == "suspend":
                outcome = await harness.run(agent, "go", keys=keys, store=store)
                assert isinstance(outcome, Suspended), outcome
                result = {"id": outcome.continuation.id, "run_id": outcome.continuation.run_id}
            elif a.phase == "decide":
                cont = await store.load(a.id)
                for request in cont.requests:
                    record = cont.approve(request.path, by="alice").decision_for(request.path)
                    assert record is not None
                    await store.decide(cont.id, record)
                result = {"decided": len(cont.requests)}
            else:
                cont = await store.load(a.id)
                outcome = await harness.resume(agent, cont, keys=keys, store=store, trace=a.trace)
                assert isinstance(outcome, Completed), outcome
                result = {"completed": True}
        audit = [
            e.model_dump(mode="json")
            for e in await store.audit(result.get("run_id") or (await store.get(a.id)).run_id)
        ]
    provider.force_flush()
    spans = [dump(s) for s in exporter.get_finished_spans()]
    Path(a.spans).write_text(json.dumps(spans))
    Path(a.result).write_text(json.dumps({**result, "audit": audit}))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
