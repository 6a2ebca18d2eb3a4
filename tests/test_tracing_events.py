"""Tracing in one process: claim results, recovery, journal events and the metrics (G12).

The SDK's in-memory span exporter and metric reader are installed once for this process
(OpenTelemetry's global providers can be set once); each test reads what it produced.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from opentelemetry import metrics as metrics_api
from opentelemetry import trace as trace_api
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from continuations_core import (
    AlreadyClaimed,
    Completed,
    Continuation,
    ContinuationExpired,
    MalformedContinuation,
    TraceContext,
)
from continuations_core.spi import Checkpointer, expire_due, take_over
from continuations_core.stores import MemoryStore
from continuations_core.testing._store_kit import decision, make_continuation
from continuations_core.testing.conformance import BIG, KEYS, TRANSFER, payer, suspended
from continuations_core.testing.spec import Call, Harness, Ledger

_EXPORTER = InMemorySpanExporter()
_READER = InMemoryMetricReader()


@pytest.fixture(scope="module", autouse=True)
def sdk() -> Iterator[None]:
    """The SDK, installed once for the process (OpenTelemetry allows one global provider)."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
    trace_api.set_tracer_provider(provider)
    metrics_api.set_meter_provider(MeterProvider(metric_readers=[_READER]))
    if not isinstance(trace_api.get_tracer_provider(), TracerProvider):  # pragma: no cover
        pytest.skip("another test installed a global tracer provider first")
    yield


@pytest.fixture(autouse=True)
def spans() -> Iterator[InMemorySpanExporter]:
    _EXPORTER.clear()
    yield _EXPORTER


def _named(name: str) -> list[ReadableSpan]:
    return [s for s in _EXPORTER.get_finished_spans() if s.name == name]


def _points(metric: str) -> list[Any]:
    data = _READER.get_metrics_data()
    out: list[Any] = []
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            for m in scope.metrics:
                if m.name == metric:
                    out.extend(m.data.data_points)
    return out


def _sum(metric: str, **attrs: Any) -> float:
    return sum(
        p.value for p in _points(metric) if all(p.attributes.get(k) == v for k, v in attrs.items())
    )


def _count(metric: str, **attrs: Any) -> int:
    return sum(
        p.count for p in _points(metric) if all(p.attributes.get(k) == v for k, v in attrs.items())
    )


async def test_claims_report_their_result_and_conflicts_are_counted() -> None:
    """claimed, conflict (counted), empty: each claim attempt is one span with its result."""
    store = MemoryStore()
    cont = make_continuation(KEYS, leaves=1)
    await store.save(cont)
    for i in range(len(cont.requests)):
        await store.decide(cont.id, decision(cont, i))
    conflicts = _sum("continuations.claim.conflicts")
    claim = await store.claim(cont.id, owner="w1")
    with pytest.raises(AlreadyClaimed):
        await store.claim(cont.id, owner="w2")
    assert await store.claim_next("w3") is None
    results = [s.attributes["continuation.claim.result"] for s in _named("continuation.claim")]
    assert results == ["claimed", "conflict", "empty"]
    first = _named("continuation.claim")[0]
    assert first.attributes["continuation.id"] == cont.id
    assert first.attributes["continuation.claim.token"] == claim.token
    assert _sum("continuations.claim.conflicts") == conflicts + 1


async def test_decisions_are_spans_with_their_context_stored_and_measured() -> None:
    """Each decision: a decide span whose context the stored record carries; pending goes
    up at the suspension and back down with each decision; one latency per decision."""
    store = MemoryStore()
    cont = make_continuation(KEYS, leaves=2)
    kinds = [r.kind for r in cont.requests]
    before = {
        k: _sum("continuations.requests.pending", **{"continuation.request.kind": k})
        for k in set(kinds)
    }
    latencies = _count("continuations.decision.latency")
    await store.save(cont)
    for kind in set(kinds):
        now = _sum("continuations.requests.pending", **{"continuation.request.kind": kind})
        assert now == before[kind] + kinds.count(kind)
    for i in range(len(kinds)):
        await store.decide(cont.id, decision(cont, i))
    for kind in set(kinds):
        assert (
            _sum("continuations.requests.pending", **{"continuation.request.kind": kind})
            == before[kind]
        )
    assert _count("continuations.decision.latency") == latencies + len(kinds)
    decided = _named("continuation.decide")
    assert len(decided) == len(kinds)
    stored = {" > ".join(r.path): r for r in (await store.load(cont.id)).decisions}
    for span in decided:
        record = stored[str(span.attributes["continuation.request.path"])]
        ctx = span.get_span_context()
        assert record.trace is not None
        ids = [f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"]
        assert record.trace.traceparent.split("-")[1:3] == ids
        assert span.attributes["gen_ai.conversation.id"] == cont.run_id


async def test_requests_leave_the_pending_gauge_when_they_expire_and_come_back_on_retry() -> None:
    """An expiry that fails a continuation (``raise``) takes its undecided requests off the
    pending gauge, not the one decided before; a retry, after which they wait for decisions
    again, puts them back; deciding them brings the gauge back to where it started."""
    store = MemoryStore()
    cont = make_continuation(KEYS, leaves=2)
    kinds = [r.kind for r in cont.requests]

    def gauge() -> dict[str, float]:
        return {
            k: _sum("continuations.requests.pending", **{"continuation.request.kind": k})
            for k in set(kinds)
        }

    before = gauge()
    await store.save(cont)
    last = len(kinds) - 1  # a request without a deadline, decided in time
    await store.decide(cont.id, decision(cont, last))
    undecided = kinds[:last]
    waiting = {k: before[k] + undecided.count(k) for k in before}
    assert gauge() == waiting
    late = datetime.now(UTC) + timedelta(days=8)  # past the first transfer's deadline
    expiry = await expire_due(store, cont.id, on_expired="raise", now=late)
    assert expiry.outcome == "failed"
    assert gauge() == before
    assert (await store.retry(cont.id, by="ops")).status == "waiting"
    assert gauge() == waiting
    for i in range(last):
        await store.decide(cont.id, decision(cont, i))
    assert (await store.status(cont.run_id)).state == "ready"
    assert gauge() == before


async def test_a_take_over_is_a_recover_span() -> None:
    """take_over (a crashed run's checkpoint claimed by another process) records recover."""
    store = MemoryStore()
    base = make_continuation(KEYS, leaves=0, run_id="run-recover")
    base = base.model_copy(update={"root": base.root.model_copy(update={"pending": ()})}).sign(KEYS)
    held = await store.checkpoint(base, owner="w1", lease_seconds=0.05)
    assert held is not None
    await asyncio.sleep(0.1)
    _, claim = await take_over(store, "run-recover", owner="w2")
    (span,) = _named("continuation.recover")
    assert span.attributes["gen_ai.conversation.id"] == "run-recover"
    assert span.attributes["continuation.id"] == base.id
    assert span.attributes["continuation.claim.token"] == claim.token == 2


def test_journal_replays_and_skipped_calls_are_events_not_spans() -> None:
    """A call answered from the journal, and a non-idempotent one interrupted, are events."""
    cp = Checkpointer(MemoryStore(), "run-journal", "w1", KEYS)
    cp.recorded["a/lookup:1@0"] = {"value": "found"}
    cp.started.add("a/charge:2@0")
    tracer = trace_api.get_tracer("test")
    with tracer.start_as_current_span("tool batch"):
        assert cp.replay(("a", "lookup:1@0"), idempotent=True) == {"value": "found"}
        assert cp.replay(("a", "charge:2@0"), idempotent=False) == {"interrupted": True}
        assert cp.replay(("a", "other:3@0"), idempotent=True) is None
    (batch,) = _named("tool batch")
    assert [(e.name, e.attributes["continuation.call.path"]) for e in batch.events] == [
        ("continuation.replay", "a/lookup:1@0"),
        ("continuation.skipped", "a/charge:2@0"),
    ]
    assert [s.name for s in _EXPORTER.get_finished_spans()] == ["tool batch"]


async def test_expiries_and_resume_durations_are_measured(harness: Harness) -> None:
    """An expired request counts once per resume attempt, by on_expired; resumes are timed."""
    spec = payer(
        Call("transfer", BIG), transfer=replace(TRANSFER, expires=timedelta(milliseconds=1))
    )
    ledger = Ledger()
    agent = harness.build(spec, ledger)
    cont = suspended(await harness.run(agent, "go", keys=KEYS))
    await asyncio.sleep(0.01)
    raised = _sum("continuations.expiries", **{"continuation.on_expired": "raise"})
    denied = _sum("continuations.expiries", **{"continuation.on_expired": "deny"})
    resumes = _count("continuations.resume.duration")
    with pytest.raises(ContinuationExpired):
        await harness.resume(agent, cont, keys=KEYS, single_use=False)
    assert _sum("continuations.expiries", **{"continuation.on_expired": "raise"}) == raised + 1
    outcome = await harness.resume(agent, cont, keys=KEYS, on_expired="deny", single_use=False)
    assert isinstance(outcome, Completed)
    assert ledger.count("transfer") == 0
    assert _sum("continuations.expiries", **{"continuation.on_expired": "deny"}) == denied + 1
    assert _count("continuations.resume.duration") == resumes + 1
    (resume,) = _named("continuation.resume")
    assert resume.attributes["gen_ai.conversation.id"] == cont.run_id


async def test_a_decider_cannot_choose_the_stored_trace_context() -> None:
    """A decision arriving with its own trace context is stored with the decide span's."""
    store = MemoryStore()
    cont = make_continuation(KEYS, leaves=1)
    await store.save(cont)
    forged = TraceContext(traceparent=f"00-{'ab' * 16}-{'cd' * 8}-01")
    record = decision(cont, 0).model_copy(update={"trace": forged})
    await store.decide(cont.id, record)
    (span,) = _named("continuation.decide")
    stored = (await store.load(cont.id)).decision_for(record.path)
    assert stored is not None and stored.trace is not None
    assert stored.trace != forged
    assert stored.trace.traceparent.split("-")[2] == f"{span.get_span_context().span_id:016x}"


@pytest.mark.parametrize(
    "trace",
    [
        {"traceparent": "not a traceparent"},
        {"traceparent": f"00-{'ab' * 16}-{'cd' * 8}-01", "tracestate": "x" * 513},
        {"traceparent": f"00-{'ab' * 16}-{'cd' * 8}-01", "baggage": "user=alice"},
    ],
    ids=["malformed", "oversized-state", "extra-field"],
)
def test_a_malformed_trace_context_is_refused(trace: dict[str, str]) -> None:
    """A document whose trace context is not a W3C one does not load (G10, G15)."""
    text = make_continuation(None, leaves=1).model_copy(update={"trace": None}).to_json()
    data = json.loads(text)
    data["trace"] = trace
    with pytest.raises(MalformedContinuation):
        Continuation.from_json(json.dumps(data))
