"""The store contract: stored records and the abstract :class:`Store`.

A store keeps each continuation's signed document, the decisions attached to it, its status
and the audit trail of the run. Status moves one way::

    waiting --decide--> ready --claim--> claimed --complete--> done
                          ^                 |
                          +----release------+      (an expired lease may be claimed again)

Every change bumps the record's ``version``; writers may pass ``expected_version`` to make
the change a compare-and-set on ``(id, version)`` (G5). The rules (status, versions, leases,
audit events) are pure functions in ``_rules``, so backends only move rows and cannot disagree.
"""

from __future__ import annotations

import asyncio
import builtins
from abc import ABC, abstractmethod
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .._schema import Continuation, DecisionRecord, Request

__all__ = [
    "STATUSES",
    "AuditEvent",
    "AuditKind",
    "Claim",
    "Status",
    "Store",
    "StoredContinuation",
]

Status = Literal["waiting", "ready", "claimed", "done"]
AuditKind = Literal[
    "suspended",
    "decided",
    "claimed",
    "released",
    "resumed",
    "completed",
    "expired",
    "checkpoint",
    "tool_started",
    "tool_completed",
    "tool_suspended",
]
STATUSES: tuple[Status, ...] = ("waiting", "ready", "claimed", "done")


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class StoredContinuation(_Record):
    """A continuation as the store holds it.

    Attributes:
        id: The continuation id.
        run_id: The run it belongs to.
        seq: How many times the run had suspended before this continuation.
        version: Bumped on every change; the compare-and-set token.
        status: ``waiting`` (some requests undecided), ``ready`` (all decided, or none at
            all), ``claimed`` (a resumer holds a lease) or ``done`` (resumed; single use).
        created_at: When it was saved.
        updated_at: When it last changed.
        claimed_by: The owner of the current or last claim.
        lease_until: When the current claim's lease ends.
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
        token: Random hex identifying this claim; it stops holding once taken over.
    """

    id: str
    version: int
    owner: str
    lease_until: datetime
    token: str


class AuditEvent(_Record):
    """One entry of a run's audit trail (G12): who did what, and when."""

    run_id: str
    continuation_id: str
    kind: AuditKind
    at: datetime
    actor: str | None = None
    detail: dict[str, Any] = Field(default_factory=dict)


class Store(ABC):
    """Where continuations, decisions and the audit trail live. Async-first.

    Every method is abstract, so a backend that misses one fails when instantiated. Use
    ``async with store:`` to close it when done.
    """

    @abstractmethod
    async def save(self, cont: Continuation, *, actor: str | None = None) -> StoredContinuation:
        """Store a newly suspended continuation, with any decisions it already carries.

        Raises:
            ConflictError: If a continuation with this id is already stored.
        """

    @abstractmethod
    async def load(self, id: str) -> Continuation:
        """Return the continuation with its decisions. Raises ``ContinuationNotFound``."""

    @abstractmethod
    async def get(self, id: str) -> StoredContinuation:
        """Return the stored record. Raises ``ContinuationNotFound``."""

    @abstractmethod
    async def list(
        self, *, status: Status | None = None, run_id: str | None = None, limit: int = 100
    ) -> builtins.list[StoredContinuation]:
        """Return up to ``limit`` records, newest first, filtered by status and run."""

    @abstractmethod
    async def decide(
        self,
        id: str,
        record: DecisionRecord,
        *,
        expected_version: int | None = None,
        replace: bool = False,
    ) -> StoredContinuation:
        """Attach one decision; return the record.

        The decision is validated against the document before anything is written. A path
        takes one decision: deciding it again is refused unless ``replace`` is true, and a
        replacement is audited with the decision it replaced.

        Raises:
            UnknownPath: If the decision targets no pending call.
            InvalidDecision: If it does not fit its call; the store is unchanged.
            AlreadyDecided: If the path is decided and ``replace`` is false (it names who
                decided it and when).
            AlreadyClaimed: If the continuation is claimed or done.
            ConflictError: If ``expected_version`` is given and is not the current version.
        """

    @abstractmethod
    async def claim(
        self,
        id: str,
        *,
        owner: str,
        lease_seconds: float = 300.0,
        expected_version: int | None = None,
    ) -> Claim:
        """Take a ready continuation (or one whose lease expired) for resuming.

        Raises:
            MissingDecisions: If some requests are undecided.
            AlreadyClaimed: If another owner holds a live lease, or it was resumed.
            ConflictError: If ``expected_version`` is given and is not the current version.
        """

    @abstractmethod
    async def heartbeat(self, claim: Claim, *, lease_seconds: float = 300.0) -> Claim:
        """Extend the claim's lease. Raises ``AlreadyClaimed`` if the claim was lost."""

    @abstractmethod
    async def release(self, claim: Claim) -> None:
        """Give the continuation back (``ready``). Raises ``AlreadyClaimed`` if it was lost."""

    @abstractmethod
    async def complete(
        self, claim: Claim, *, next_id: str | None = None, output: Any = None
    ) -> None:
        """Mark the continuation resumed (``done``); it can never be claimed again.

        Args:
            claim: The claim that resumed it.
            next_id: The continuation the run suspended into next, if it suspended again.
            output: The run's final output when it completed (``next_id`` is None).

        Raises:
            AlreadyClaimed: If the claim was lost (the lease expired and was taken over).
        """

    @abstractmethod
    async def audit(self, run_id: str) -> builtins.list[AuditEvent]:
        """Return the run's audit events in the order they were recorded."""

    @abstractmethod
    async def checkpoint(
        self,
        cont: Continuation,
        *,
        previous: Claim | None = None,
        owner: str | None = None,
        lease_seconds: float = 30.0,
    ) -> Claim | None:
        """Store a run's next continuation and retire ``previous``, in one atomic step (G9).

        With ``owner`` the new continuation is stored already claimed by ``owner`` (a
        checkpoint its own process keeps running from; audit ``checkpoint``) and the claim is
        returned. Without it, it is stored like :meth:`save` (a suspension waiting for
        decisions). ``previous`` is marked done, audited ``resumed`` with ``next_id``.

        Raises:
            AlreadyClaimed: If ``previous`` no longer holds; nothing is written.
        """

    @abstractmethod
    async def record(
        self,
        run_id: str,
        kind: AuditKind,
        *,
        continuation_id: str = "",
        actor: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Append an event to the run's audit trail (the tool journal uses it)."""

    async def claimable(self, *, limit: int = 10) -> builtins.list[str]:
        """Ids of continuations a worker may claim now: ready ones and expired leases, oldest first."""
        now = utcnow()
        ready = await self.list(status="ready", limit=10_000)
        claimed = await self.list(status="claimed", limit=10_000)
        stale = [r for r in claimed if r.lease_until is not None and r.lease_until <= now]
        found = sorted([*ready, *stale], key=lambda r: r.updated_at)
        return [r.id for r in found[:limit]]

    async def wait_ready(self, timeout: float) -> builtins.list[str]:
        """Wait up to ``timeout`` seconds for work; backends with notifications return early."""
        await asyncio.sleep(timeout)
        return []

    @abstractmethod
    async def close(self) -> None:
        """Release the store's resources. Connections passed in by the caller stay open."""

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)
