"""OpenTelemetry: the spans, events and metrics of a run across its pauses (G12).

The core depends on ``opentelemetry-api`` only: without an SDK configured every call here is
a no-op. The API is imported on first use, so ``import continuations_core`` stays cheap.

Spans (tracer ``agent-continuations``):

- ``continuation.suspend``: a root run suspended, with one ``continuation.request`` event per
  pending request (path, kind, tool, agent chain, deadline). Its W3C context is signed into
  the continuation (``Continuation.trace``).
- ``continuation.decide``: a decision stored, in the deciding process; its context is stored
  with the decision (``DecisionRecord.trace``).
- ``continuation.claim``: a claim attempt and its result (``claimed``, ``conflict``, ``empty``,
  ``failed``).
- ``continuation.resume``: a resumed run, around the framework's own agent spans. It starts in
  the resumer's context with links to the suspend and decide spans, or, with
  ``trace="continue"``, as a child of the suspend span (one continuous trace).
- ``continuation.recover``: a run taken over after a crash.

Events on the current span, not spans of their own: ``continuation.checkpoint`` (a full
checkpoint written), ``continuation.replay`` (a call answered from the journal instead of
running) and ``continuation.skipped`` (a non-idempotent call that was interrupted and is not
run again).

A gated call's own ``execute_tool`` span (the framework's, where it records one) is marked
``continuation.tool.outcome=suspended``: it waits for a decision and did not execute.

The suspend, decide, resume and recover spans carry ``gen_ai.conversation.id`` (the run id,
stable across pauses) and ``continuation.run_id``; claim spans carry the continuation id.
Attributes never hold arguments, results or idempotency keys.

Metrics (meter ``agent-continuations``): ``continuations.requests.pending`` (up/down, by
``continuation.request.kind``), ``continuations.decision.latency`` (s),
``continuations.resume.duration`` (s), ``continuations.claim.conflicts`` and
``continuations.expiries``.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from opentelemetry.metrics import Counter, Histogram, UpDownCounter
    from opentelemetry.trace import Link, Span, Tracer

    from ._schema import Continuation, TraceContext

__all__ = [
    "TraceMode",
    "carrier",
    "claim_span",
    "count_pending",
    "decide_span",
    "event",
    "mark_tool_suspended",
    "metrics",
    "recover_span",
    "resume_span",
    "suspend_span",
    "telemetry_ready",
]

#: How a resumed run's span relates to its suspension: linked to it (a new trace in the
#: resumer's context) or continuing it (a child of the suspend span).
TraceMode = Literal["link", "continue"]

NAME = "agent-continuations"


def _version() -> str:
    # The package's own constant: reading the installed metadata takes milliseconds.
    from . import __version__

    return __version__


@functools.cache
def _tracer() -> Tracer:
    from opentelemetry import trace

    return trace.get_tracer(NAME, _version())


class _Metrics:
    def __init__(self) -> None:
        from opentelemetry import metrics as api

        meter = api.get_meter(NAME, _version())
        self.pending: UpDownCounter = meter.create_up_down_counter(
            "continuations.requests.pending",
            unit="{request}",
            description="Requests waiting for a decision, by kind.",
        )
        self.decision_latency: Histogram = meter.create_histogram(
            "continuations.decision.latency",
            unit="s",
            description="From a suspension being stored to each of its decisions.",
        )
        self.resume_duration: Histogram = meter.create_histogram(
            "continuations.resume.duration",
            unit="s",
            description="How long a resumed run took, to its completion or next suspension.",
        )
        self.claim_conflicts: Counter = meter.create_counter(
            "continuations.claim.conflicts",
            unit="{claim}",
            description="Claims refused because another holder has the continuation.",
        )
        self.expiries: Counter = meter.create_counter(
            "continuations.expiries",
            unit="{request}",
            description="Requests that expired before a decision.",
        )


@functools.cache
def metrics() -> _Metrics:
    """The package's metric instruments (no-ops without an SDK)."""
    return _Metrics()


def count_pending(cont: Continuation, delta: int) -> None:
    """Add ``delta`` to the pending-requests gauge for each undecided request of ``cont``."""
    decided = {r.path for r in cont.decisions}
    pending = metrics().pending
    for path, _, call in cont.leaves():
        if path not in decided:
            pending.add(delta, {"continuation.request.kind": call.kind})


def telemetry_ready() -> None:
    """Create the tracer and the metric instruments now, not on first use."""
    _tracer()
    metrics()


def _run_attributes(run_id: str, continuation_id: str | None = None) -> dict[str, Any]:
    attrs: dict[str, Any] = {"gen_ai.conversation.id": run_id, "continuation.run_id": run_id}
    if continuation_id is not None:
        attrs["continuation.id"] = continuation_id
    return attrs


def carrier(span: Span) -> TraceContext | None:
    """``span``'s W3C context, or ``None`` when it is not recording a valid context."""
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    from ._schema import TraceContext

    if not span.get_span_context().is_valid:
        return None
    headers: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(headers, context=trace.set_span_in_context(span))
    if "traceparent" not in headers:  # pragma: no cover - a valid context always injects
        return None
    return TraceContext(traceparent=headers["traceparent"], tracestate=headers.get("tracestate"))


def _span_context(ctx: TraceContext | None) -> Any:
    """The remote span context a stored carrier names, or ``None``."""
    if ctx is None:
        return None
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    headers = {"traceparent": ctx.traceparent}
    if ctx.tracestate:
        headers["tracestate"] = ctx.tracestate
    extracted = TraceContextTextMapPropagator().extract(headers)
    span_context = trace.get_current_span(extracted).get_span_context()
    return span_context if span_context.is_valid else None


@contextlib.contextmanager
def suspend_span(
    run_id: str, continuation_id: str, seq: int, requests: Sequence[Any]
) -> Iterator[Span]:
    """The ``continuation.suspend`` span of a root suspension, with one event per request.

    ``requests`` are ``(path, agents, call)`` leaves of the frame being sealed, ``agents``
    being the whole chain from the root agent down to the one that made the call.
    """
    attrs = _run_attributes(run_id, continuation_id)
    attrs["continuation.seq"] = seq
    attrs["continuation.requests"] = len(requests)
    with _tracer().start_as_current_span("continuation.suspend", attributes=attrs) as span:
        for path, agents, call in requests:
            detail: dict[str, Any] = {
                "continuation.request.path": " > ".join(path),
                "continuation.request.kind": call.kind,
                "continuation.request.tool": call.tool,
                "continuation.request.agents": list(agents),
            }
            if call.expires_at is not None:
                detail["continuation.request.expires_at"] = call.expires_at.isoformat()
            span.add_event("continuation.request", detail)
        yield span


@contextlib.contextmanager
def decide_span(
    continuation_id: str, path: Sequence[str], kind: str, by: str | None
) -> Iterator[Span]:
    """The ``continuation.decide`` span of one decision being stored (the store sets the run
    attributes once it read the row)."""
    attrs: dict[str, Any] = {"continuation.id": continuation_id}
    attrs["continuation.request.path"] = " > ".join(path)
    attrs["continuation.decision"] = kind
    if by is not None:
        attrs["continuation.decided_by"] = by
    with _tracer().start_as_current_span("continuation.decide", attributes=attrs) as span:
        yield span


@contextlib.contextmanager
def claim_span(owner: str, continuation_id: str | None = None) -> Iterator[Span]:
    """The ``continuation.claim`` span; set ``continuation.claim.result`` on it."""
    attrs: dict[str, Any] = {"continuation.owner": owner}
    if continuation_id is not None:
        attrs["continuation.id"] = continuation_id
    with _tracer().start_as_current_span(
        "continuation.claim",
        attributes=attrs,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        yield span


@contextlib.contextmanager
def recover_span(run_id: str, owner: str) -> Iterator[Span]:
    """The ``continuation.recover`` span of a run taken over after a crash."""
    attrs = _run_attributes(run_id)
    attrs["continuation.owner"] = owner
    with _tracer().start_as_current_span("continuation.recover", attributes=attrs) as span:
        yield span


@contextlib.contextmanager
def resume_span(cont: Continuation, mode: TraceMode) -> Iterator[Span]:
    """The ``continuation.resume`` span around a resumed run, linked to (or continuing) the
    suspension and linked to the decisions that were stored with a trace context."""
    from opentelemetry import trace
    from opentelemetry.trace import Link

    suspended = _span_context(cont.trace)
    links: list[Link] = []
    if suspended is not None and mode == "link":
        links.append(Link(suspended, {"continuation.link": "suspend"}))
    for record in cont.decisions:
        decided = _span_context(record.trace)
        if decided is not None:
            links.append(
                Link(
                    decided,
                    {
                        "continuation.link": "decide",
                        "continuation.request.path": " > ".join(record.path),
                    },
                )
            )
    context = None
    if mode == "continue" and suspended is not None:
        context = trace.set_span_in_context(trace.NonRecordingSpan(suspended))
    attrs = _run_attributes(cont.run_id, cont.id)
    attrs["continuation.seq"] = cont.seq
    attrs["continuation.trace_mode"] = mode
    started = time.monotonic()
    try:
        with _tracer().start_as_current_span(
            "continuation.resume", context=context, links=links, attributes=attrs
        ) as span:
            yield span
    finally:
        metrics().resume_duration.record(
            time.monotonic() - started, {"continuation.trace_mode": mode}
        )


def mark_tool_suspended(tool: str) -> None:
    """Adapters: mark the framework's ``execute_tool`` span of ``tool``, if it is the current
    span, ``continuation.tool.outcome=suspended``: the call waits for a decision (or for its
    sub-agents), it did not execute. Any other current span is left alone."""
    from opentelemetry import trace

    span = trace.get_current_span()
    if not span.is_recording():
        return
    attributes = getattr(span, "attributes", None) or {}
    if attributes.get("gen_ai.tool.name") == tool:
        span.set_attribute("continuation.tool.outcome", "suspended")


def event(name: str, attributes: dict[str, Any]) -> None:
    """Add the event ``name`` to the current span (nothing without a recording span)."""
    from opentelemetry import trace

    span = trace.get_current_span()
    if span.is_recording():
        span.add_event(name, attributes)
