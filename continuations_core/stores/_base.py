"""The store contract: stored records, the abstract :class:`Store`, and the shared rules.

A store keeps each continuation's signed document, the decisions attached to it, its status
and the audit trail of the run. Status moves one way::

    waiting --decide--> ready --claim--> claimed --complete--> done
                          ^                 |
                          +----release------+      (an expired lease may be claimed again)

Every change bumps the record's ``version``; writers may pass ``expected_version`` to make
the change a compare-and-set on ``(id, version)`` (G5). The rules (status, versions, leases,
audit events) are pure functions here, so backends only move rows and cannot disagree.
"""

from __future__ import annotations

import asyncio
import builtins
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from secrets import token_hex
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic_core import to_jsonable_python

from .._schema import Continuation, DecisionRecord, Request
from ..errors import AlreadyClaimed, ConflictError, ContinuationNotFound, MissingDecisions

__all__ = ["STATUSES", "AuditEvent", "AuditKind", "Claim", "Status", "Store", "StoredContinuation"]

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
        self, id: str, record: DecisionRecord, *, expected_version: int | None = None
    ) -> StoredContinuation:
        """Attach one decision (replacing any earlier one for its path); return the record.

        The decision is validated against the document before anything is written.

        Raises:
            UnknownPath: If the decision targets no pending call.
            InvalidDecision: If it does not fit its call; the store is unchanged.
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


# -- the rules: a backend reads a Row, applies a transition, and writes the result atomically --


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def not_found(id: str) -> ContinuationNotFound:
    """The error for an unknown id."""
    return ContinuationNotFound(
        f"No continuation with id {id!r} in this store. Check the id and the store URL.",
        continuation_id=id,
    )


def already_saved(id: str) -> ConflictError:
    """The error for saving an id twice."""
    return ConflictError(
        "A continuation with this id is already stored; save each suspension once and change "
        "it through decide, claim and complete.",
        continuation_id=id,
    )


@dataclass(frozen=True)
class Row:
    """What a backend persists for one continuation (the claim token included)."""

    document: Continuation  # as signed, without decisions
    decisions: tuple[DecisionRecord, ...]
    version: int
    status: Status
    created_at: datetime
    updated_at: datetime
    claimed_by: str | None = None
    claim_token: str | None = None
    lease_until: datetime | None = None

    @property
    def id(self) -> str:
        """The continuation id."""
        return self.document.id

    def record(self) -> StoredContinuation:
        """The public view of this row."""
        doc = self.document
        return StoredContinuation(
            id=doc.id,
            run_id=doc.run_id,
            seq=doc.seq,
            version=self.version,
            status=self.status,
            created_at=self.created_at,
            updated_at=self.updated_at,
            claimed_by=self.claimed_by,
            lease_until=self.lease_until,
            continuation=doc.with_decisions(self.decisions),
        )

    def event(self, kind: AuditKind, at: datetime, actor: str | None, **detail: Any) -> AuditEvent:
        """An audit event about this row."""
        # Values JSON cannot hold (a run's output, say) are kept as their repr.
        detail = to_jsonable_python(detail, fallback=repr)
        cid, run_id = self.id, self.document.run_id
        return AuditEvent(
            run_id=run_id, continuation_id=cid, kind=kind, at=at, actor=actor, detail=detail
        )

    def _changed(self, at: datetime, **changes: Any) -> Row:
        return replace(self, version=self.version + 1, updated_at=at, **changes)

    def _check_version(self, expected: int | None) -> None:
        if expected is not None and expected != self.version:
            raise ConflictError(
                f"Expected version {expected} but the stored version is {self.version}: "
                "someone else changed it. Reload it and try again.",
                continuation_id=self.id,
            )

    def _check_claim(self, claim: Claim) -> None:
        if self.status != "claimed" or self.claim_token != claim.token:
            raise AlreadyClaimed(
                f"The claim of {claim.owner!r} no longer holds: its lease expired and another "
                "resumer took over, or it was released or resumed. Stop this resume.",
                continuation_id=self.id,
            )


Events = builtins.list[AuditEvent]


def _decided(record: DecisionRecord) -> dict[str, Any]:
    return {
        "path": list(record.path),
        "decision": record.decision.model_dump(mode="json"),
        "comment": record.comment,
    }


def new_row(
    document: Continuation,
    decisions: tuple[DecisionRecord, ...],
    *,
    actor: str | None,
    at: datetime,
) -> tuple[Row, Events]:
    """Save: version 1, status from the (validated) decisions; audit ``suspended``."""
    decided = document.with_decisions(decisions)
    status: Status = "waiting" if decided.undecided else "ready"
    row = Row(document, decided.decisions, 1, status, at, at)
    requests = [list(path) for path, _, _ in document.leaves()]
    events = [row.event("suspended", at, actor, seq=document.seq, requests=requests)]
    events += [row.event("decided", at, r.by, **_decided(r)) for r in decided.decisions]
    return row, events


def decide_row(
    row: Row, record: DecisionRecord, *, expected_version: int | None, at: datetime
) -> tuple[Row, Events]:
    """Attach ``record``, validated before anything changes; audit ``decided``."""
    if row.status in ("claimed", "done"):
        raise AlreadyClaimed(
            f"The continuation is {'being resumed' if row.status == 'claimed' else 'resumed'}; "
            "its decisions can no longer change. Decide on the run's next continuation.",
            continuation_id=row.id,
        )
    row._check_version(expected_version)
    decided = row.document.with_decisions([*row.decisions, record])
    status: Status = "waiting" if decided.undecided else "ready"
    new = row._changed(at, decisions=decided.decisions, status=status)
    return new, [new.event("decided", at, record.by, **_decided(record))]


def claim_row(
    row: Row, *, owner: str, lease_seconds: float, expected_version: int | None, at: datetime
) -> tuple[Row, Claim, Events]:
    """Take a ready row, or one whose lease expired; audit ``claimed`` (after ``expired``)."""
    if row.status == "done":
        raise AlreadyClaimed(
            "It was already resumed; a continuation can be resumed only once.",
            continuation_id=row.id,
        )
    lease = row.lease_until
    if row.status == "claimed" and (lease is None or lease > at):
        raise AlreadyClaimed(
            f"Claimed by {row.claimed_by!r} until {lease.isoformat() if lease else '?'}. "
            "Another resumer holds it; it can be taken over once that lease expires.",
            continuation_id=row.id,
        )
    row._check_version(expected_version)
    if row.status == "waiting":
        raise MissingDecisions(
            row.document.with_decisions(row.decisions).undecided, continuation_id=row.id
        )
    events: Events = []
    if row.status == "claimed":
        events.append(row.event("expired", at, owner, owner=row.claimed_by, lease_until=lease))
    until = at + timedelta(seconds=lease_seconds)
    claim = Claim(
        id=row.id, version=row.version + 1, owner=owner, lease_until=until, token=token_hex(16)
    )
    new = row._changed(
        at, status="claimed", claimed_by=owner, claim_token=claim.token, lease_until=until
    )
    events.append(new.event("claimed", at, owner, lease_until=until))
    return new, claim, events


def heartbeat_row(
    row: Row, claim: Claim, *, lease_seconds: float, at: datetime
) -> tuple[Row, Claim]:
    """Extend the lease of a claim that still holds (the version does not change)."""
    row._check_claim(claim)
    until = at + timedelta(seconds=lease_seconds)
    return replace(row, lease_until=until), claim.model_copy(update={"lease_until": until})


def release_row(row: Row, claim: Claim, *, at: datetime) -> tuple[Row, Events]:
    """Give a claimed row back (``ready``); audit ``released``."""
    row._check_claim(claim)
    new = row._changed(at, status="ready", claim_token=None, lease_until=None)
    return new, [new.event("released", at, claim.owner)]


def checkpoint_rows(
    document: Continuation,
    decisions: tuple[DecisionRecord, ...],
    previous: tuple[Row, Claim] | None,
    *,
    owner: str | None,
    lease_seconds: float,
    at: datetime,
) -> tuple[Row, Row | None, Claim | None, Events]:
    """A run's next continuation (held by ``owner``, or waiting/ready) and ``previous`` retired."""
    events: Events = []
    retired: Row | None = None
    if previous is not None:
        row, held = previous
        retired, done = complete_row(row, held, next_id=document.id, output=None, at=at)
        events.extend(done)
    if owner is None:
        new, saved = new_row(document, decisions, actor=None, at=at)
        return new, retired, None, [*events, *saved]
    until = at + timedelta(seconds=lease_seconds)
    claim = Claim(id=document.id, version=1, owner=owner, lease_until=until, token=token_hex(16))
    new = Row(document, (), 1, "claimed", at, at, owner, claim.token, until)
    events.append(
        new.event("checkpoint", at, owner, seq=document.seq, step=document.root.suspended_by)
    )
    return new, retired, claim, events


def complete_row(
    row: Row, claim: Claim, *, next_id: str | None, output: Any, at: datetime
) -> tuple[Row, Events]:
    """Mark a claimed row ``done``; audit ``resumed`` and, if the run ended, ``completed``."""
    row._check_claim(claim)
    new = row._changed(at, status="done", claim_token=None, lease_until=None)
    events = [new.event("resumed", at, claim.owner, next_id=next_id)]
    if next_id is None:
        events.append(new.event("completed", at, claim.owner, output=output))
    return new, events
