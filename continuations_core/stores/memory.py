"""An in-process store: for tests, demos and single-process tools. Nothing survives exit.

It follows exactly the rules of the persistent backends (status, versions, leases, audit),
so code developed against it behaves the same on SQLite or Postgres. A lock makes each
operation atomic even when several threads share one store.
"""

from __future__ import annotations

import builtins
import threading
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from .._schema import Continuation, DecisionRecord
from ..errors import StoreUnavailable
from ._base import (
    AuditEvent,
    AuditKind,
    Claim,
    Status,
    Store,
    StoredContinuation,
    already_saved,
    check_claimable,
    check_decidable,
    check_token,
    completed_detail,
    decided_detail,
    lease_end,
    new_token,
    not_found,
    status_of,
    suspended_detail,
    undecided_copy,
    utcnow,
)

__all__ = ["MemoryStore"]


@dataclass(frozen=True)
class _Entry:
    document: Continuation  # without decisions, as signed
    decisions: tuple[DecisionRecord, ...]
    version: int
    status: Status
    created_at: datetime
    updated_at: datetime
    order: int
    claimed_by: str | None = None
    claim_token: str | None = None
    lease_until: datetime | None = None

    def record(self) -> StoredContinuation:
        cont = self.document
        return StoredContinuation(
            id=cont.id,
            run_id=cont.run_id,
            seq=cont.seq,
            version=self.version,
            status=self.status,
            created_at=self.created_at,
            updated_at=self.updated_at,
            claimed_by=self.claimed_by,
            lease_until=self.lease_until,
            continuation=cont.with_decisions(self.decisions),
        )


class MemoryStore(Store):
    """A store that keeps everything in this process's memory."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}
        self._events: builtins.list[AuditEvent] = []
        self._lock = threading.Lock()
        self._counter = 0
        self._closed = False

    def _open(self) -> None:
        if self._closed:
            raise StoreUnavailable("This MemoryStore is closed; create a new one.")

    def _entry(self, id: str) -> _Entry:
        self._open()
        entry = self._entries.get(id)
        if entry is None:
            raise not_found(id)
        return entry

    def _event(
        self,
        entry: _Entry,
        kind: AuditKind,
        at: datetime,
        actor: str | None,
        detail: dict[str, Any],
    ) -> None:
        doc = entry.document
        self._events.append(
            AuditEvent(
                run_id=doc.run_id,
                continuation_id=doc.id,
                kind=kind,
                at=at,
                actor=actor,
                detail=detail,
            )
        )

    async def save(self, cont: Continuation, *, actor: str | None = None) -> StoredContinuation:
        """See :meth:`Store.save`."""
        document = undecided_copy(cont)
        decided = document.with_decisions(cont.decisions)
        with self._lock:
            self._open()
            if cont.id in self._entries:
                raise already_saved(cont.id)
            at = utcnow()
            self._counter += 1
            entry = _Entry(
                document=document,
                decisions=decided.decisions,
                version=1,
                status=status_of(decided),
                created_at=at,
                updated_at=at,
                order=self._counter,
            )
            self._entries[cont.id] = entry
            self._event(entry, "suspended", at, actor, suspended_detail(cont))
            for record in decided.decisions:
                self._event(entry, "decided", at, record.by, decided_detail(record))
            return entry.record()

    async def load(self, id: str) -> Continuation:
        """See :meth:`Store.load`."""
        return (await self.get(id)).continuation

    async def get(self, id: str) -> StoredContinuation:
        """See :meth:`Store.get`."""
        with self._lock:
            entry = self._entry(id)
        return entry.record()

    async def list(
        self, *, status: Status | None = None, run_id: str | None = None, limit: int = 100
    ) -> builtins.list[StoredContinuation]:
        """See :meth:`Store.list`."""
        with self._lock:
            self._open()
            entries = [
                e
                for e in self._entries.values()
                if (status is None or e.status == status)
                and (run_id is None or e.document.run_id == run_id)
            ]
        entries.sort(key=lambda e: (e.created_at, e.order), reverse=True)
        return [e.record() for e in entries[: max(limit, 0)]]

    async def decide(
        self, id: str, record: DecisionRecord, *, expected_version: int | None = None
    ) -> StoredContinuation:
        """See :meth:`Store.decide`."""
        with self._lock:
            entry = self._entry(id)
            check_decidable(id, entry.status, entry.version, expected_version)
            # Validate before writing: an invalid decision leaves the entry as it was.
            decided = entry.document.with_decisions([*entry.decisions, record])
            entry = replace(
                entry,
                decisions=decided.decisions,
                version=entry.version + 1,
                status=status_of(decided),
                updated_at=utcnow(),
            )
            self._entries[id] = entry
            self._event(entry, "decided", entry.updated_at, record.by, decided_detail(record))
            return entry.record()

    async def claim(
        self,
        id: str,
        *,
        owner: str,
        lease_seconds: float = 300.0,
        expected_version: int | None = None,
    ) -> Claim:
        """See :meth:`Store.claim`."""
        with self._lock:
            entry = self._entry(id)
            at = utcnow()
            taking_over = check_claimable(
                id,
                status=entry.status,
                version=entry.version,
                expected=expected_version,
                claimed_by=entry.claimed_by,
                lease_until=entry.lease_until,
                undecided=entry.document.with_decisions(entry.decisions).undecided,
                at=at,
            )
            if taking_over:
                detail = {"owner": entry.claimed_by, "lease_until": _iso(entry.lease_until)}
                self._event(entry, "expired", at, owner, detail)
            claim = Claim(
                id=id,
                version=entry.version + 1,
                owner=owner,
                lease_until=lease_end(at, lease_seconds),
                token=new_token(),
            )
            entry = replace(
                entry,
                version=claim.version,
                status="claimed",
                updated_at=at,
                claimed_by=owner,
                claim_token=claim.token,
                lease_until=claim.lease_until,
            )
            self._entries[id] = entry
            self._event(entry, "claimed", at, owner, {"lease_until": _iso(claim.lease_until)})
            return claim

    async def heartbeat(self, claim: Claim, *, lease_seconds: float = 300.0) -> Claim:
        """See :meth:`Store.heartbeat`."""
        with self._lock:
            entry = self._entry(claim.id)
            check_token(claim.id, status=entry.status, token=entry.claim_token, claim=claim)
            renewed = claim.model_copy(update={"lease_until": lease_end(utcnow(), lease_seconds)})
            self._entries[claim.id] = replace(entry, lease_until=renewed.lease_until)
            return renewed

    async def release(self, claim: Claim) -> None:
        """See :meth:`Store.release`."""
        with self._lock:
            entry = self._entry(claim.id)
            check_token(claim.id, status=entry.status, token=entry.claim_token, claim=claim)
            entry = replace(
                entry,
                version=entry.version + 1,
                status="ready",
                updated_at=utcnow(),
                claim_token=None,
                lease_until=None,
            )
            self._entries[claim.id] = entry
            self._event(entry, "released", entry.updated_at, claim.owner, {})

    async def complete(self, claim: Claim, *, next_id: str | None = None, output: Any = None) -> None:
        """See :meth:`Store.complete`."""
        done_detail = completed_detail(output) if next_id is None else None
        with self._lock:
            entry = self._entry(claim.id)
            check_token(claim.id, status=entry.status, token=entry.claim_token, claim=claim)
            entry = replace(
                entry,
                version=entry.version + 1,
                status="done",
                updated_at=utcnow(),
                claim_token=None,
                lease_until=None,
            )
            self._entries[claim.id] = entry
            self._event(entry, "resumed", entry.updated_at, claim.owner, {"next_id": next_id})
            if done_detail is not None:
                self._event(entry, "completed", entry.updated_at, claim.owner, done_detail)

    async def audit(self, run_id: str) -> builtins.list[AuditEvent]:
        """See :meth:`Store.audit`."""
        with self._lock:
            self._open()
            return [e for e in self._events if e.run_id == run_id]

    async def close(self) -> None:
        """Drop everything; later calls raise ``StoreUnavailable``."""
        with self._lock:
            self._closed = True
            self._entries.clear()
            self._events.clear()


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
