"""An in-process store: for tests, demos and single-process tools. Nothing survives exit.

It applies the same rules as the persistent backends (status, versions, leases, audit), so
code developed against it behaves the same on SQLite or Postgres. A lock makes each operation
atomic even when several threads share one store.
"""

from __future__ import annotations

import builtins
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Any, TypeVar

from .._schema import Continuation
from .._segments import Segment
from ..errors import ContinuationFailed, StoreUnavailable
from ._base import (
    DEFAULT_MAX_ATTEMPTS,
    AuditEvent,
    AuditKind,
    Claim,
    Status,
    StoredContinuation,
)
from ._owners import holder_id
from ._rowstore import Change, RowStore, claim_first, claim_order, next_candidate
from ._rules import (
    Events,
    Row,
    already_saved,
    check_fence,
    check_segment,
    checkpoint_rows,
    new_row,
    not_found,
    recorded_event,
    unreadable_failure,
    utcnow,
)

__all__ = ["MemoryStore"]

T = TypeVar("T")


class MemoryStore(RowStore):
    """A store that keeps everything in this process's memory.

    Example::

        async with MemoryStore() as store:
            await store.save(outcome.continuation)
    """

    def __init__(self) -> None:
        self._rows: dict[str, Row] = {}
        self._order: dict[str, int] = {}
        self._events: builtins.list[AuditEvent] = []
        self._segments: dict[str, builtins.list[str]] = {}  # base id: segment texts, in order
        self._lock = threading.Lock()
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise StoreUnavailable("This MemoryStore is closed; create a new one.")

    def _row(self, id: str) -> Row:
        self._check_open()
        row = self._rows.get(id)
        if row is None:
            raise not_found(id)
        return row

    async def _transact(self, id: str, change: Change[T]) -> T:
        """Apply one transition atomically: either everything is written or nothing is."""
        with self._lock:
            old = self._row(id)
            row, events, result = change(old, utcnow())
            self._rows[id] = row
            if row.status == "done":  # a retired checkpoint's segments go with it
                self._segments.pop(id, None)
            self._events.extend(events)
            return result

    async def _save(self, cont: Continuation, *, actor: str | None = None) -> StoredContinuation:
        """See :meth:`Store.save`."""
        # Through JSON, as the persistent backends do: the store keeps its own copy, and state
        # that only survives in memory fails here rather than in production.
        document = Continuation.from_json(cont.model_copy(update={"decisions": ()}).to_json())
        with self._lock:
            self._check_open()
            if cont.id in self._rows:
                raise already_saved(cont.id)
            row, events = new_row(document, cont.decisions, actor=actor, at=utcnow())
            self._rows[cont.id] = row
            self._order[cont.id] = len(self._order)
            self._events.extend(events)
        return _detached(row)

    async def get(self, id: str) -> StoredContinuation:
        """See :meth:`Store.get`."""
        with self._lock:
            row = self._row(id)
            segments = tuple(self._segments.get(id, ()))
        return _detached(row, segments)

    async def list(
        self, *, status: Status | None = None, run_id: str | None = None, limit: int = 100
    ) -> builtins.list[StoredContinuation]:
        """See :meth:`Store.list`."""
        with self._lock:
            self._check_open()
            rows = [
                (row.created_at, self._order[id], row, tuple(self._segments.get(id, ())))
                for id, row in self._rows.items()
                if (status is None or row.status == status)
                and (run_id is None or row.document.run_id == run_id)
            ]
        rows.sort(key=lambda item: item[:2], reverse=True)
        return [_detached(row, segments) for _, _, row, segments in rows[: max(limit, 0)]]

    async def _checkpoint(
        self,
        cont: Continuation,
        *,
        previous: Claim | None = None,
        owner: str | None = None,
        lease_seconds: float = 30.0,
        progress: bool = True,
    ) -> Claim | None:
        """See :meth:`Store.checkpoint`."""
        document = Continuation.from_json(cont.model_copy(update={"decisions": ()}).to_json())
        holder = holder_id()
        with self._lock:
            self._check_open()
            if cont.id in self._rows:
                raise already_saved(cont.id)
            held = (self._row(previous.id), previous) if previous is not None else None
            new, retired, claim, events = checkpoint_rows(
                document, cont.decisions, held, owner=owner, lease_seconds=lease_seconds,
                at=utcnow(), progress=progress, holder=holder,
            )  # fmt: skip
            if retired is not None:
                self._rows[retired.id] = retired
                self._segments.pop(retired.id, None)
            self._rows[new.id] = new
            self._order[new.id] = len(self._order)
            self._events.extend(events)
        return claim

    async def _fenced(
        self, claim: Claim, events: Callable[[datetime], Events], segment: Segment | None
    ) -> None:
        with self._lock:
            row = self._row(claim.id)
            check_fence(row.id, row.status, row.fence, row.claimed_by, claim)
            made = events(utcnow())
            if segment is not None:
                stored = self._segments.setdefault(claim.id, [])
                at = stored[segment.index - 1] if 0 < segment.index <= len(stored) else None
                if check_segment(segment, len(stored), at):
                    stored.append(segment.text)
            self._events.extend(made)

    async def _append(
        self,
        run_id: str,
        kind: AuditKind,
        *,
        continuation_id: str,
        actor: str | None,
        detail: dict[str, Any] | None,
    ) -> None:
        event = recorded_event(
            run_id, kind, at=utcnow(), continuation_id=continuation_id, actor=actor, detail=detail
        )
        with self._lock:
            self._check_open()
            self._events.append(event)

    async def fail_unreadable(
        self, id: str, error: BaseException, *, actor: str | None = None
    ) -> bool:
        """See :meth:`Store.fail_unreadable` (rows here are always readable; kept for parity)."""
        with self._lock:
            row = self._row(id)
            if row.status in ("done", "failed"):
                return False
            at = utcnow()
            last, event = unreadable_failure(
                id, row.document.run_id, error, attempts=row.attempts, actor=actor, at=at
            )
            self._rows[id] = replace(
                row, status="failed", version=row.version + 1, updated_at=at, lease_until=None,
                holder=None, not_before=None, last_error=last,
            )  # fmt: skip
            self._events.append(event)
        return True

    async def _claim_next(
        self,
        owner: str,
        *,
        lease_seconds: float = 300.0,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    ) -> Claim | None:
        """See :meth:`Store.claim_next`; picked and claimed under the store's lock."""
        with self._lock:
            self._check_open()
            at = utcnow()
            rows = [row for row in self._rows.values() if next_candidate(row, at, owner)]
            rows.sort(key=lambda row: (claim_order(row, at), self._order[row.id]))
            found = claim_first(
                rows, at, owner=owner, lease_seconds=lease_seconds, max_attempts=max_attempts
            )
            if found is None:
                return None
            _, new, claim, events = found
            self._rows[new.id] = new
            self._events.extend(events)
        if isinstance(claim, ContinuationFailed):
            raise claim  # out of attempts: it is stored failed now
        return claim

    async def audit(self, run_id: str) -> builtins.list[AuditEvent]:
        """See :meth:`Store.audit`."""
        with self._lock:
            self._check_open()
            return [e for e in self._events if e.run_id == run_id]

    async def close(self) -> None:
        """Drop everything; later calls raise ``StoreUnavailable``."""
        with self._lock:
            self._closed = True
            self._rows.clear()
            self._order.clear()
            self._events.clear()
            self._segments.clear()


def _detached(row: Row, segments: tuple[str, ...] = ()) -> StoredContinuation:
    # Frozen models still hold mutable dicts (framework state); callers get their own copy.
    # A checkpoint with segments is built afresh from its texts: it is a copy already, and
    # a deep copy would drop what its verification needs.
    if segments:
        return row.record(segments)
    return row.record().model_copy(deep=True)
