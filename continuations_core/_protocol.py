"""The adapter seam: outcomes, the suspension signal and nesting scope shared by adapters.

An adapter translates its framework's tool calls into neutral ones and asks the core what to
do. Three pieces here are shared by every adapter, so a tree of frames can mix frameworks:

- :class:`FrameSuspended` is raised out of an agent run whose frame suspended. A delegating
  tool's wrapper (in whichever adapter runs the parent) catches it and records a ``child``
  pending call; at the root, the adapter's ``run``/``resume`` turns it into :class:`Suspended`.
- :data:`CURRENT_CALL` holds the :class:`~._scope.CallScope` of the tool call being executed,
  so a sub-agent run started by a plain tool body knows it is nested, gets an identity that
  does not depend on scheduling, and finds the frame to resume or the result to replay.
- :func:`seal` wraps a suspended root frame into a signed continuation; opening one for a
  resume (verification, the store's authority, single use) is :mod:`._resume`.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Generic, TypeGuard, TypeVar

from ._decisions import FramePlan
from ._schema import Continuation, Frame, Request, TraceContext
from ._scope import CallScope, SubRun
from ._signing import Keyring
from ._tracing import carrier, suspend_span
from .errors import (
    AgentDrift,
    ContinuationError,
    DuplicateCallId,
    GateError,
    ResumeError,
    UnsupportedNesting,
)

__all__ = [
    "CURRENT_CALL",
    "REFUSED",
    "STARTED_BY",
    "CallScope",
    "Completed",
    "FrameSuspended",
    "Outcome",
    "SubRun",
    "Suspended",
    "check_fingerprint",
    "check_unique_call_ids",
    "fail_run",
    "fatal_error",
    "is_suspension",
    "new_run_id",
    "seal",
]

T = TypeVar("T")


@dataclass(frozen=True)
class Completed(Generic[T]):
    """The run finished.

    Attributes:
        output: The agent's final output.
        run_id: The stable id of the logical run, across suspensions.
        seq: How many times the run was suspended before completing.
        usage: The framework's usage totals for the whole run, across suspensions.
    """

    output: T
    run_id: str
    seq: int = 0
    usage: dict[str, Any] | None = None


@dataclass(frozen=True)
class Suspended:
    """The run stopped and is fully captured in ``continuation``; nothing stays in memory."""

    continuation: Continuation

    @property
    def requests(self) -> list[Request]:
        """Shortcut for ``continuation.requests``."""
        return self.continuation.requests


Outcome = Completed[T] | Suspended


class FrameSuspended(BaseException):
    """Raised out of an agent run whose frame suspended; never reaches user code.

    It derives from ``BaseException`` so that a plain ``except Exception`` in a tool body
    cannot swallow a sub-agent's suspension.
    """

    def __init__(self, frame: Frame) -> None:
        super().__init__(f"agent {frame.agent!r} suspended")
        self.frame = frame


def is_suspension(error: BaseException) -> bool:
    """Whether ``error`` (out of a tool body) only says that sub-agents suspended.

    A ``TaskGroup`` wraps its tasks' suspensions in a ``BaseExceptionGroup`` (with the siblings
    it cancelled); a group that holds anything else is a real error.
    """
    if isinstance(error, FrameSuspended):
        return True
    if isinstance(error, BaseExceptionGroup):
        leaves = error.exceptions
        import asyncio  # lazy: a process that only reads continuations needs no event loop

        return any(not isinstance(e, asyncio.CancelledError) for e in leaves) and all(
            isinstance(e, asyncio.CancelledError) or is_suspension(e) for e in leaves
        )
    return False


CURRENT_CALL: ContextVar[CallScope | None] = ContextVar("continuations_current_call", default=None)

#: Set by an adapter's ``run``/``resume`` around the root run, which turns a suspension into a
#: ``Suspended`` outcome. A root run started any other way cannot suspend.
MANAGED: ContextVar[bool] = ContextVar("continuations_managed", default=False)


def unmanaged_suspension(frame: Frame, entry: str) -> UnsupportedNesting:
    """The error for a root run that suspended but was not started through ``run``/``resume``.

    A sub-agent started in a thread that did not carry the tool call's context looks the same
    from inside, so the message names that construction too.
    """
    waiting = ", ".join(call.tool for call in frame.pending) or frame.suspended_by
    return UnsupportedNesting(
        f"Agent {frame.agent!r} must suspend ({waiting}) but runs outside any continuation-"
        f"aware run, so the suspension has nowhere to go; no gated tool ran. Either it was "
        f"started directly: start it with {entry}() to get a Suspended outcome. Or it is a "
        "sub-agent started in a thread that lost the tool call's context "
        "(ThreadPoolExecutor.submit or threading.Thread without contextvars.copy_context()): "
        "submit it as pool.submit(contextvars.copy_context().run, agent, prompt), or use "
        "asyncio.to_thread / await the async entry point."
    )


def check_unique_call_ids(ids: Sequence[str], agent: str) -> None:
    """Refuse one model response that uses a tool-call id for several calls (G13).

    Adapters call this before any call of the response is shown or run: with a shared id,
    a decision for one call would also decide the other.

    Raises:
        DuplicateCallId: If an id occurs twice.
    """
    twice = sorted({i for i in ids if ids.count(i) > 1})
    if twice:
        raise DuplicateCallId(
            f"Agent {agent!r}'s model response used the tool-call id(s) {', '.join(twice)} for "
            "more than one call. No call of that response ran. Tool-call ids must be unique "
            "within a response; check the model or provider."
        )


def new_run_id() -> str:
    """Return a fresh run id."""
    return uuid.uuid4().hex


#: The marked tools that refused to run during the root run being executed (G13), and other
#: errors that must fail the whole run (a re-entered body that did not repeat its sub-agent
#: runs, a sub-agent that could not be recorded). Adapters' ``run``/``resume`` set a fresh
#: list; the guard of a marked function adds to it wherever in the tree it refused, even
#: inside a framework that turns tool errors into results, and the run then fails with the
#: first one instead of carrying on.
REFUSED: ContextVar[list[ContinuationError] | None] = ContextVar(
    "continuations_refused", default=None
)


def fatal_error(error: BaseException | None) -> TypeGuard[ContinuationError]:
    """Whether ``error``, raised anywhere in the tree, must fail the whole root run.

    A marked tool that refused (G13), a sub-agent that could not be recorded, a sub-agent that
    could not be resumed (drift, a re-entered body that did not repeat its runs, an interrupted
    step): a framework that turns tool errors into results must not let the model carry on.
    """
    return isinstance(error, GateError | UnsupportedNesting | ResumeError)


def fail_run(error: ContinuationError) -> None:
    """Adapters: fail the root run being executed with ``error`` (after the current batch)."""
    refused = REFUSED.get()
    if refused is not None and not any(error is seen for seen in refused):
        refused.append(error)


def raise_refused() -> None:
    """Adapters: raise the first refusal recorded in this run, if any."""
    refused = REFUSED.get()
    if refused:
        raise refused[0]


#: Who started the run being executed (``run(..., started_by=...)``); every continuation of
#: the run, checkpoints included, records it in its signed part.
STARTED_BY: ContextVar[str | None] = ContextVar("continuations_started_by", default=None)


#: Set while a durable run executes: it seals its suspension again as it stores it (with the
#: run's next seq), so the adapter's seal is a draft and records no span.
RESEALS: ContextVar[bool] = ContextVar("continuations_reseals", default=False)


def sealed(
    frame: Frame, *, run_id: str, seq: int, keys: Keyring | None, trace: TraceContext | None = None
) -> Continuation:
    """Wrap ``frame`` into a continuation (a checkpoint, or a suspension's draft), signed when
    ``keys`` is given. Records nothing."""
    cont = Continuation(
        run_id=run_id, seq=seq, root=frame, started_by=STARTED_BY.get(), trace=trace
    )
    return cont.sign(keys) if keys is not None else cont


def suspension(frame: Frame, *, run_id: str, seq: int, keys: Keyring | None) -> Continuation:
    """The continuation a root run suspends into, within its ``continuation.suspend`` span.

    The span's W3C context is signed into the continuation (``trace``).
    """
    draft = Continuation(run_id=run_id, seq=seq, root=frame, started_by=STARTED_BY.get())
    with suspend_span(run_id, draft.id, seq, draft.leaves()) as span:
        cont = draft.model_copy(update={"trace": carrier(span)})
        return cont.sign(keys) if keys is not None else cont


def seal(frame: Frame, *, run_id: str, seq: int, keys: Keyring | None) -> Continuation:
    """Adapters: wrap a suspended root frame into a continuation, signed when ``keys`` is given.

    Records the ``continuation.suspend`` span (see :func:`suspension`), except in a durable
    run, which seals the suspension again when it stores it and records the span then.
    """
    if RESEALS.get():
        return sealed(frame, run_id=run_id, seq=seq, keys=keys)
    return suspension(frame, run_id=run_id, seq=seq, keys=keys)


def check_fingerprint(
    plan: FramePlan, *, framework: str, agent: str, fingerprint: dict[str, str]
) -> None:
    """Refuse to resume ``plan`` with an agent whose tools no longer match (G10).

    Every tool that a pending call or a recorded call of the frame uses must still exist
    with the same parameter schema.

    Raises:
        ResumeError: If the frame belongs to another framework.
        AgentDrift: If the agent's name or tools changed.
    """
    frame = plan.frame
    where = " > ".join(plan.path) or "the root"
    if frame.framework != framework:
        raise ResumeError(
            f"The frame at {where} was written by the {frame.framework!r} adapter but is being "
            f"resumed by {framework!r}. Resume it with an agent of the same framework."
        )
    if frame.agent != agent:
        raise AgentDrift(
            f"The frame at {where} belongs to agent {frame.agent!r}, but agent {agent!r} is "
            "resuming it. Pass the same agent definitions that suspended the run."
        )
    problems: list[str] = []
    for name, recorded in sorted(frame.fingerprint.items()):
        current = fingerprint.get(name)
        if current is None:
            problems.append(f"tool {name!r} is gone")
        elif current != recorded:
            problems.append(f"tool {name!r} changed its parameters")
    if problems:
        raise AgentDrift(
            f"Agent {agent!r} no longer matches its suspended frame at {where}: "
            f"{'; '.join(problems)}. Deploy the agent version that suspended the run, or "
            "deny the pending calls and start a new run."
        )
