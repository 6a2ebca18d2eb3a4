"""The shared store rules: a backend reads a :class:`Row`, applies a transition, writes it.

Every transition is a pure function of the row, its arguments and the time, returning the new
row and the audit events to append. :class:`RowStore` builds the protocol's changes from them, so
a backend only implements moving rows atomically (``_transact``) and cannot disagree with the
others about status, versions, leases or the audit trail.
"""

from __future__ import annotations

import builtins
from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from secrets import token_hex
from typing import Any, TypeAlias, TypeVar

from pydantic_core import to_jsonable_python

from .._decisions import already_decided
from .._schema import Continuation, DecisionRecord
from ..errors import AlreadyClaimed, ConflictError, ContinuationNotFound, MissingDecisions
from ._base import AuditEvent, AuditKind, Claim, Status, Store, StoredContinuation, utcnow

__all__ = [
    "Change",
    "Events",
    "Row",
    "RowStore",
    "already_saved",
    "checkpoint_rows",
    "claim_row",
    "complete_row",
    "decide_row",
    "heartbeat_row",
    "new_row",
    "not_found",
    "recorded_event",
    "release_row",
    "utcnow",
]


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


def recorded_event(
    run_id: str,
    kind: AuditKind,
    *,
    at: datetime,
    continuation_id: str = "",
    actor: str | None = None,
    detail: dict[str, Any] | None = None,
) -> AuditEvent:
    """The event :meth:`Store.record` appends (values JSON cannot hold are kept as their repr)."""
    return AuditEvent(
        run_id=run_id,
        continuation_id=continuation_id,
        kind=kind,
        at=at,
        actor=actor,
        detail=to_jsonable_python(detail or {}, fallback=repr),
    )


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
    row: Row,
    record: DecisionRecord,
    *,
    expected_version: int | None,
    at: datetime,
    replace: bool = False,
) -> tuple[Row, Events]:
    """Attach ``record``, validated before anything changes; audit ``decided``.

    A path takes one decision: a second one raises ``AlreadyDecided`` (who decided it, when)
    unless ``replace`` is true, and a replacement is audited with the decision it replaced.
    """
    if row.status in ("claimed", "done"):
        raise AlreadyClaimed(
            f"The continuation is {'being resumed' if row.status == 'claimed' else 'resumed'}; "
            "its decisions can no longer change. Decide on the run's next continuation.",
            continuation_id=row.id,
        )
    row._check_version(expected_version)
    existing = next((r for r in row.decisions if r.path == record.path), None)
    if existing is not None and not replace:
        raise already_decided(existing, continuation_id=row.id)
    kept = [r for r in row.decisions if r.path != record.path]
    decided = row.document.with_decisions([*kept, record])
    status: Status = "waiting" if decided.undecided else "ready"
    new = row._changed(at, decisions=decided.decisions, status=status)
    detail = _decided(record)
    if existing is not None:
        detail["replaced"] = {**_decided(existing), "by": existing.by, "at": existing.at}
    return new, [new.event("decided", at, record.by, **detail)]


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


T = TypeVar("T")
Change: TypeAlias = Callable[[Row, datetime], tuple[Row, Events, T]]


class RowStore(Store):
    """A backend whose every change reads one row, applies a rule and writes it back atomically.

    The protocol's changes are defined once here; a backend implements :meth:`_transact` (and
    the methods that create rows or read many), so every backend applies the same rules.
    """

    @abstractmethod
    async def _transact(self, id: str, change: Change[T]) -> T:
        """Read row ``id``, apply ``change`` at the backend's current time, write, audit."""

    async def load(self, id: str) -> Continuation:
        """See :meth:`Store.load`."""
        return (await self.get(id)).continuation

    async def decide(
        self,
        id: str,
        record: DecisionRecord,
        *,
        expected_version: int | None = None,
        replace: bool = False,
    ) -> StoredContinuation:
        """See :meth:`Store.decide`."""

        def change(row: Row, at: datetime) -> tuple[Row, Events, Row]:
            new, events = decide_row(
                row, record, expected_version=expected_version, at=at, replace=replace
            )
            return new, events, new

        return (await self._transact(id, change)).record()

    async def claim(
        self,
        id: str,
        *,
        owner: str,
        lease_seconds: float = 300.0,
        expected_version: int | None = None,
    ) -> Claim:
        """See :meth:`Store.claim`."""

        def change(row: Row, at: datetime) -> tuple[Row, Events, Claim]:
            new, claim, events = claim_row(
                row, owner=owner, lease_seconds=lease_seconds, expected_version=expected_version,
                at=at,
            )  # fmt: skip
            return new, events, claim

        return await self._transact(id, change)

    async def heartbeat(self, claim: Claim, *, lease_seconds: float = 300.0) -> Claim:
        """See :meth:`Store.heartbeat`."""

        def change(row: Row, at: datetime) -> tuple[Row, Events, Claim]:
            new, renewed = heartbeat_row(row, claim, lease_seconds=lease_seconds, at=at)
            return new, [], renewed

        return await self._transact(claim.id, change)

    async def release(self, claim: Claim) -> None:
        """See :meth:`Store.release`."""
        await self._transact(claim.id, lambda row, at: (*release_row(row, claim, at=at), None))

    async def complete(
        self, claim: Claim, *, next_id: str | None = None, output: Any = None
    ) -> None:
        """See :meth:`Store.complete`."""

        def change(row: Row, at: datetime) -> tuple[Row, Events, None]:
            new, events = complete_row(row, claim, next_id=next_id, output=output, at=at)
            return new, events, None

        await self._transact(claim.id, change)
