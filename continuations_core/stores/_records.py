"""The records a store hands out: stored continuations, claims, run status, audit events.

These are plain frozen models; the rules that change them live in ``_rules`` and the abstract
store in ``_base``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .._schema import Continuation, Request, build_models

__all__ = [
    "DEFAULT_MAX_ATTEMPTS",
    "ERROR_MESSAGE_LIMIT",
    "RUN_STATES",
    "STATUSES",
    "AuditEvent",
    "AuditKind",
    "Claim",
    "LastError",
    "RunState",
    "RunStatus",
    "Status",
    "StoredContinuation",
    "build_records",
    "utcnow",
]

Status = Literal["waiting", "ready", "claimed", "done", "failed"]
AuditKind = Literal[
    "suspended",
    "decided",
    "claimed",
    "released",
    "resumed",
    "completed",
    "expired",
    "taken_over",
    "attempt_failed",
    "failed",
    "retried",
    "checkpoint",
    "tool_started",
    "tool_completed",
    "tool_suspended",
    "tool_failed",
    # Written by an engine (say DBOS) with its own ids: ``detail["event"]`` is ``claim``,
    # ``resume`` or ``complete``, next to the engine's fields (``dbos.workflow_id``).
    "engine",
]
STATUSES: tuple[Status, ...] = ("waiting", "ready", "claimed", "done", "failed")
RunState = Literal[
    "waiting", "ready", "retrying", "running", "abandoned", "failed", "completed", "unknown"
]
RUN_STATES: tuple[RunState, ...] = (
    "waiting", "ready", "retrying", "running", "abandoned", "failed", "completed", "unknown"
)  # fmt: skip

#: Claims of one continuation without progress before it fails (override per claim/worker).
DEFAULT_MAX_ATTEMPTS = 5
#: A stored error message is cut to this many characters.
ERROR_MESSAGE_LIMIT = 2000


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)


def build_records() -> None:
    """Build the record models' validators and serializers now, not on first use."""
    build_models(_Record)


class LastError(_Record):
    """Why the last attempt of a continuation failed.

    Attributes:
        type: The exception's class name.
        message: Its message (at most ``ERROR_MESSAGE_LIMIT`` characters).
        attempt: Which attempt failed (1 for the first claim).
        at: When it failed.
    """

    type: str
    message: str
    attempt: int
    at: datetime

    @classmethod
    def of(cls, error: BaseException, *, attempt: int, at: datetime) -> LastError:
        """Describe ``error``, cutting long messages."""
        message = str(error)
        if len(message) > ERROR_MESSAGE_LIMIT:
            message = message[: ERROR_MESSAGE_LIMIT - 1] + "…"
        return cls(type=type(error).__name__, message=message, attempt=attempt, at=at)

    def __str__(self) -> str:
        return f"{self.type}: {self.message} (attempt {self.attempt})"


class StoredContinuation(_Record):
    """A continuation as the store holds it.

    Attributes:
        id: The continuation id.
        run_id: The run it belongs to.
        seq: How many times the run had suspended before this continuation.
        version: Bumped on every change; the compare-and-set token.
        status: ``waiting`` (some requests undecided), ``ready`` (all decided, or none at
            all), ``claimed`` (a resumer holds a lease), ``done`` (resumed; single use) or
            ``failed`` (a permanent error, or out of attempts; ``retry`` makes it ready).
        created_at: When it was saved.
        updated_at: When it last changed.
        claimed_by: The owner of the current or last claim.
        lease_until: When the current claim's lease ends.
        fence: The fencing token of the current or last claim (0 before the first).
        attempts: Claims since the run last made progress, was decided or was retried.
        not_before: A ready continuation backing off is not claimed before this time.
        last_error: Why the last attempt failed, if one did.
        output: The run's final output, on the ``done`` continuation of a completed run.
        continuation: The signed document with the stored decisions attached.
    """

    id: str
    run_id: str
    seq: int
    version: int
    status: Status
    created_at: datetime
    updated_at: datetime
    claimed_by: str | None = None
    lease_until: datetime | None = None
    fence: int = 0
    attempts: int = 0
    not_before: datetime | None = None
    last_error: LastError | None = None
    output: Any = None
    continuation: Continuation

    @property
    def requests(self) -> list[Request]:
        """The continuation's requests, flattened for a UI."""
        return self.continuation.requests


class Claim(_Record):
    """A resumer's exclusive, leased hold on a ready continuation.

    Attributes:
        id: The continuation id.
        version: The record's version after the claim.
        owner: Who holds the claim (a worker name).
        lease_until: When the lease ends unless extended with ``heartbeat``.
        token: The fencing token: one more than the run's previous claim. Every write made
            under this claim is refused once a claim with a higher token exists.
        attempt: Which attempt this claim is (1 for the first claim since the run last made
            progress, was decided or was retried).
    """

    id: str
    version: int
    owner: str
    lease_until: datetime
    token: int
    attempt: int = 1


class RunStatus(_Record):
    """Where a run stands, for operators (``continuations status RUN_ID``).

    Attributes:
        run_id: The run.
        state: ``waiting`` for decisions, ``ready`` to resume, ``retrying`` (backing off after a
            failed attempt), ``running`` (claimed, lease live), ``abandoned`` (claimed, lease
            expired: a worker will take it over), ``failed``, ``completed`` or ``unknown``.
        continuation_id: The run's latest continuation, if the store holds one.
        seq: Its ``seq``.
        attempts: Its attempts since the run last made progress.
        claimed_by: The owner of its current or last claim.
        lease_until: When the current claim's lease ends.
        not_before: When a backing-off continuation becomes claimable.
        last_error: Why the last attempt failed.
        output: The final output of a completed run.
        updated_at: When the latest continuation last changed.
        pending: How many requests of a waiting continuation are undecided.
    """

    run_id: str
    state: RunState
    continuation_id: str | None = None
    seq: int | None = None
    attempts: int = 0
    claimed_by: str | None = None
    lease_until: datetime | None = None
    not_before: datetime | None = None
    last_error: LastError | None = None
    output: Any = None
    updated_at: datetime | None = None
    pending: int = 0


class AuditEvent(_Record):
    """One entry of a run's audit trail (G12): who did what, and when."""

    run_id: str
    continuation_id: str
    kind: AuditKind
    at: datetime
    actor: str | None = None
    detail: dict[str, Any] = Field(default_factory=dict)


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)
