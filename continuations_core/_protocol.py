"""The adapter seam: outcomes, the suspension signal and nesting scope shared by adapters.

An adapter translates its framework's tool calls into neutral ones and asks the core what to
do. Three pieces here are shared by every adapter, so a tree of frames can mix frameworks:

- :class:`FrameSuspended` is raised out of an agent run whose frame suspended. A delegating
  tool's wrapper (in whichever adapter runs the parent) catches it and records a ``child``
  pending call; at the root, the adapter's ``run``/``resume`` turns it into :class:`Suspended`.
- :data:`CURRENT_CALL` holds the :class:`CallScope` of the tool call being executed, so a
  sub-agent run started by a plain tool body knows it is nested, which frame to resume, and
  which completed sub-agent runs to replay from the journal.
- :func:`seal` wraps a suspended root frame into a signed continuation; opening one for a
  resume (verification, the store's authority, single use) is :mod:`._resume`.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from ._decisions import CallPlan, FramePlan
from ._schema import Continuation, Frame, Request
from ._signing import Keyring
from .errors import AgentDrift, ConfigurationError, DuplicateCallId, ResumeError, UngatedCall

__all__ = [
    "CURRENT_CALL",
    "REFUSED",
    "STARTED_BY",
    "CallScope",
    "Completed",
    "FrameSuspended",
    "Outcome",
    "Suspended",
    "check_fingerprint",
    "check_unique_call_ids",
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


@dataclass
class CallScope:
    """The tool call being executed, as seen by sub-agent runs started inside it.

    Attributes:
        path: The path of this call from the root.
        agents: The agent chain down to the agent that made this call.
        resume: The plan for this call when it is re-entered on resume.
        replay: Completed sub-agent runs recorded before the suspension, by ordinal.
        suspended_ordinal: The ordinal of the sub-agent run that suspended, on resume.
        journal: Completed sub-agent runs of this execution, by ordinal.
        suspension: The ordinal and frame of the sub-agent run that suspended.
        owner: Adapter-private data of the calling run (e.g. its usage object), so a
            sub-agent of the same framework can tell what it shares with its caller.
    """

    path: tuple[str, ...]
    agents: tuple[str, ...]
    resume: CallPlan | None = None
    replay: list[dict[str, Any]] = field(default_factory=list)
    suspended_ordinal: int | None = None
    journal: list[dict[str, Any]] = field(default_factory=list)
    suspension: tuple[int, Frame] | None = None
    owner: Any = None
    _next: int = 0

    def next_ordinal(self) -> int:
        """Claim the ordinal of the next sub-agent run started in this call."""
        ordinal = self._next
        self._next += 1
        return ordinal

    def replayed(self, ordinal: int) -> dict[str, Any] | None:
        """The recorded result of sub-agent run ``ordinal``, if it completed earlier."""
        if ordinal < len(self.replay) and (
            self.suspended_ordinal is None or ordinal < self.suspended_ordinal
        ):
            return self.replay[ordinal]
        return None

    def resume_plan(self, ordinal: int) -> FramePlan | None:
        """The frame plan to resume for sub-agent run ``ordinal``, if it is the suspended one."""
        if self.resume is not None and ordinal == self.suspended_ordinal:
            return self.resume.child
        return None

    def record(self, ordinal: int, entry: dict[str, Any]) -> None:
        """Journal the result of completed sub-agent run ``ordinal``."""
        while len(self.journal) < ordinal:
            self.journal.append({})
        if len(self.journal) == ordinal:
            self.journal.append(entry)
        else:
            self.journal[ordinal] = entry

    def suspended(self, ordinal: int, frame: Frame) -> None:
        """Note that sub-agent run ``ordinal`` suspended with ``frame`` (the first one wins)."""
        if self.suspension is None:
            self.suspension = (ordinal, frame)

    @property
    def suspension_ordinal(self) -> int:
        """The ordinal of the sub-agent run that suspended (0 if none was noted)."""
        return self.suspension[0] if self.suspension is not None else 0

    def child_metadata(self, ordinal: int) -> dict[str, Any]:
        """What a ``child`` pending call keeps so re-entry can replay and resume."""
        return {"ordinal": ordinal, "journal": list(self.journal[:ordinal])}


CURRENT_CALL: ContextVar[CallScope | None] = ContextVar("continuations_current_call", default=None)

#: Set by an adapter's ``run``/``resume`` around the root run, which turns a suspension into a
#: ``Suspended`` outcome. A root run started any other way cannot suspend.
MANAGED: ContextVar[bool] = ContextVar("continuations_managed", default=False)


def unmanaged_suspension(frame: Frame, entry: str) -> ConfigurationError:
    """The error for a root run that suspended but was not started through ``run``/``resume``."""
    waiting = ", ".join(call.tool for call in frame.pending) or frame.suspended_by
    return ConfigurationError(
        f"Agent {frame.agent!r} must suspend ({waiting}) but was started directly, so the "
        f"suspension has nowhere to go. Start it with {entry}() to get a Suspended outcome; "
        "no gated tool ran."
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


#: The marked tools that refused to run during the root run being executed (G13). Adapters'
#: ``run``/``resume`` set a fresh list; the guard of a marked function adds to it wherever in
#: the tree it refused, even inside a framework that turns tool errors into results, and the
#: run then fails with the first one instead of carrying on.
REFUSED: ContextVar[list[UngatedCall] | None] = ContextVar("continuations_refused", default=None)


def raise_refused() -> None:
    """Adapters: raise the first refusal recorded in this run, if any."""
    refused = REFUSED.get()
    if refused:
        raise refused[0]


#: Who started the run being executed (``run(..., started_by=...)``); every continuation of
#: the run, checkpoints included, records it in its signed part.
STARTED_BY: ContextVar[str | None] = ContextVar("continuations_started_by", default=None)


def seal(frame: Frame, *, run_id: str, seq: int, keys: Keyring | None) -> Continuation:
    """Wrap a suspended root frame into a continuation, signed when ``keys`` is given."""
    cont = Continuation(run_id=run_id, seq=seq, root=frame, started_by=STARTED_BY.get())
    return cont.sign(keys) if keys is not None else cont


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
