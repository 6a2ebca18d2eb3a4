"""The store protocol built once from the rules: backends only move rows atomically.

:class:`RowStore` implements every change of the :class:`Store` protocol by reading one row,
applying a rule from :mod:`._rules` and writing the row back in one atomic step that the backend
provides (``_transact``). The backends (memory, SQLite, Postgres, Redis) differ only in how
they move rows; they cannot disagree about statuses, versions, fencing tokens or attempts.
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeAlias, TypeVar

from .._events import log_event
from .._schema import Continuation, DecisionRecord
from .._segments import Segment
from .._tracing import carrier, claim_span, count_pending, decide_span, metrics
from ..dispatch import earliest_deadline
from ..errors import (
    AlreadyClaimed,
    BackingOff,
    ConflictError,
    ContinuationFailed,
    DecisionError,
    DispatchFailed,
    MissingDecisions,
)
from ._base import (
    DEFAULT_MAX_ATTEMPTS,
    AuditEvent,
    AuditKind,
    Claim,
    Status,
    Store,
    StoredContinuation,
    read_claimed,
)
from ._owners import holder_id, takeover_reason
from ._rules import (
    Events,
    Row,
    claim_row,
    complete_row,
    decide_row,
    fail_row,
    heartbeat_row,
    jsonable,
    recorded_event,
    release_row,
    retry_row,
)

__all__ = ["Change", "RowStore", "claim_first", "next_candidate", "plain_claim"]

log = logging.getLogger("continuations.store")

T = TypeVar("T")
Change: TypeAlias = Callable[[Row, datetime], tuple[Row, Events, T]]


def next_candidate(row: Row, at: datetime, owner: str) -> bool:
    """Whether :meth:`Store.claim_next` by ``owner`` considers ``row`` (as ``claimable`` lists)."""
    if row.status == "ready":
        return row.not_before is None or row.not_before <= at
    if row.status == "claimed":
        expired = row.lease_until is not None and row.lease_until <= at
        return expired or row.claimed_by == owner
    return False


def claim_order(row: Row, at: datetime) -> datetime:
    """Where ``row`` (a :func:`next_candidate`) stands in :meth:`Store.claim_next`'s order.

    When it became claimable (a ready row when it changed or when its backoff ended, an
    expired claim when its lease ended), or for a live claim a restarted owner takes back,
    when it was claimed. The backends order the same way.
    """
    if row.status == "claimed" and row.lease_until is not None and row.lease_until <= at:
        return row.lease_until
    if row.status == "ready" and row.not_before is not None:
        return row.not_before
    return row.updated_at


def claim_first(
    rows: Iterable[Row],
    at: datetime,
    *,
    owner: str,
    lease_seconds: float,
    max_attempts: int,
) -> tuple[Row, Row, Claim | ContinuationFailed, Events] | None:
    """Claim the first of ``rows`` (in claim order) that :meth:`Store.claim` would take.

    Returns the row as it was, the row claimed (or turned ``failed``, out of attempts), the
    claim (or the error to raise once that is written) and the audit events; None if no row
    may be claimed (a live claim whose holder is not gone, a backoff not yet over).
    """
    holder = holder_id()

    def takeover(held_by: str | None, held: str | None) -> str | None:
        return takeover_reason(owner, held_by, held)

    for row in rows:
        try:
            new, claim, events = claim_row(
                row, owner=owner, lease_seconds=lease_seconds, expected_version=None, at=at,
                max_attempts=max_attempts, holder=holder, takeover=takeover,
            )  # fmt: skip
        except (ConflictError, DecisionError):
            continue
        return row, new, claim, events
    return None


def plain_claim(
    id: str,
    run_id: str,
    *,
    status: Status,
    claimed_by: str | None,
    lease_until: datetime | None,
    version: int,
    fence: int,
    attempts: int,
    owner: str,
    lease_seconds: float,
    max_attempts: int,
    at: datetime,
) -> tuple[Claim, Events] | None:
    """What :func:`claim_row` makes of a ready row or an expired lease, from its columns alone.

    The claim and the audit events (``expired`` if a lease expired, then ``claimed``), for a
    backend that claims without parsing the document; the row's new values are the claim's
    (``version``, ``token`` as fence, ``attempt`` as attempts, ``lease_until``), ``owner``,
    no backoff and this process's holder. None for any other row (a live claim taken back,
    one out of attempts): :func:`claim_first` applies the full rules to those.
    """
    expired = status == "claimed" and lease_until is not None and lease_until <= at
    if not (status == "ready" or (expired and attempts < max_attempts)):
        return None
    until = at + timedelta(seconds=lease_seconds)
    claim = Claim(
        id=id, version=version + 1, owner=owner, lease_until=until, token=fence + 1,
        attempt=attempts + 1,
    )  # fmt: skip
    events: Events = []
    details: list[tuple[AuditKind, dict[str, object]]] = []
    if expired:
        details.append(("expired", {"owner": claimed_by, "lease_until": lease_until}))
    details.append(
        ("claimed", {"lease_until": until, "token": claim.token, "attempt": claim.attempt})
    )
    for kind, detail in details:
        events.append(
            AuditEvent(run_id=run_id, continuation_id=id, kind=kind, at=at, actor=owner,
                       detail=jsonable(detail))
        )  # fmt: skip
    return claim, events


class RowStore(Store):
    """A backend whose every change reads one row, applies a rule and writes it back atomically.

    The protocol's changes are defined once here; a backend implements :meth:`_transact` (and
    the methods that create rows or read many), so every backend applies the same rules. A
    change may return the row it was given unchanged (a journal write under a claim): the
    backend then writes only the audit events, still atomically with the claim check.
    """

    @abstractmethod
    async def _transact(self, id: str, change: Change[T]) -> T:
        """Read row ``id``, apply ``change`` at the backend's current time, write, audit.

        Raises:
            ContinuationNotFound: If there is no row ``id``.
        """

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
        """See :meth:`Store.decide`. Recorded in a ``continuation.decide`` span, whose context
        is stored with the decision."""
        kind = record.decision.kind
        with decide_span(id, record.path, kind, record.by) as span:
            record = record.model_copy(update={"trace": carrier(span)})

            def change(row: Row, at: datetime) -> tuple[Row, Events, _Decided]:
                new, events = decide_row(
                    row, record, expected_version=expected_version, at=at, replace=replace
                )
                ready = row.status != "ready" and new.status == "ready"
                return new, events, _Decided(new, ready, _requested(row, record), at)

            done = await self._transact(id, change)
            span.set_attribute("gen_ai.conversation.id", done.row.document.run_id)
            span.set_attribute("continuation.run_id", done.row.document.run_id)
        if not replace:
            instruments = metrics()
            attrs = {"continuation.request.kind": done.requested}
            instruments.pending.add(-1, attrs)
            latency = (done.at - done.row.created_at).total_seconds()
            instruments.decision_latency.record(max(latency, 0.0), attrs)
        if done.ready:  # the last decision landed: once, after the commit
            await self._dispatch(id, self.dispatcher.ready(id, done.row.document.seq))
        return done.row.record()

    async def save(self, cont: Continuation, *, actor: str | None = None) -> StoredContinuation:
        """See :meth:`Store.save`; the dispatcher is told once the row is stored."""
        record = await self._save(cont, actor=actor)
        await self._suspended(cont)
        return record

    async def checkpoint(
        self,
        cont: Continuation,
        *,
        previous: Claim | None = None,
        owner: str | None = None,
        lease_seconds: float = 30.0,
        progress: bool = True,
    ) -> Claim | None:
        """See :meth:`Store.checkpoint`; a suspension (no ``owner``) is dispatched as by save."""
        claim = await self._checkpoint(
            cont, previous=previous, owner=owner, lease_seconds=lease_seconds, progress=progress
        )
        if owner is None:
            await self._suspended(cont)
        return claim

    async def _suspended(self, cont: Continuation) -> None:
        """Tell the dispatcher about a stored suspension: ready, or when it expires."""
        count_pending(cont, 1)
        if not cont.undecided:
            await self._dispatch(cont.id, self.dispatcher.ready(cont.id, cont.seq))
            return
        when = earliest_deadline(cont)
        if when is not None:
            await self._dispatch(cont.id, self.dispatcher.expire_at(cont.id, cont.seq, when))

    async def _dispatch(self, id: str, call: Awaitable[None]) -> None:
        try:
            await call
        except Exception as exc:
            log_event(
                log,
                "dispatch_failed",
                logging.ERROR,
                continuation=id,
                error=f"{type(exc).__name__}: {exc}",
            )
            raise DispatchFailed(
                f"Continuation {id} is stored, but its dispatcher ({self.dispatcher!r}) failed: "
                f"{type(exc).__name__}: {exc}. Nothing was lost and nothing ran; the engine "
                "finds it in the store when its worker starts.",
                continuation_id=id,
            ) from exc

    @abstractmethod
    async def _save(self, cont: Continuation, *, actor: str | None) -> StoredContinuation:
        """Store a new suspension (see :meth:`Store.save`), without dispatching."""

    @abstractmethod
    async def _checkpoint(
        self,
        cont: Continuation,
        *,
        previous: Claim | None,
        owner: str | None,
        lease_seconds: float,
        progress: bool,
    ) -> Claim | None:
        """Store a run's next continuation (see :meth:`Store.checkpoint`), without dispatching."""

    async def claim(
        self,
        id: str,
        *,
        owner: str,
        lease_seconds: float = 300.0,
        expected_version: int | None = None,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    ) -> Claim:
        """See :meth:`Store.claim`, in a ``continuation.claim`` span."""
        with claim_span(owner, id) as span:
            try:
                claim = await self._claim(
                    id, owner=owner, lease_seconds=lease_seconds,
                    expected_version=expected_version, max_attempts=max_attempts,
                )  # fmt: skip
            except BaseException as exc:
                span.set_attribute("continuation.claim.result", _claim_result(exc))
                raise
            span.set_attribute("continuation.claim.result", "claimed")
            span.set_attribute("continuation.claim.token", claim.token)
            return claim

    async def claim_next(
        self,
        owner: str,
        *,
        lease_seconds: float = 300.0,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    ) -> Claim | None:
        """See :meth:`Store.claim_next`, in a ``continuation.claim`` span."""
        found = await self._spanned_claim_next(owner, lease_seconds, max_attempts, read=False)
        return found[0] if found is not None else None

    async def claim_next_record(
        self,
        owner: str,
        *,
        lease_seconds: float = 300.0,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    ) -> tuple[Claim, StoredContinuation] | None:
        """See :meth:`Store.claim_next_record`; the claim in a ``continuation.claim`` span."""
        found = await self._spanned_claim_next(owner, lease_seconds, max_attempts, read=True)
        if found is None:
            return None
        claim, parse = found
        # Parsed after the claim committed: an unreadable record raises SchemaError (a broken
        # checkpoint BrokenCheckpoint) naming it, under the claim; the caller fails it.
        return claim, parse() if parse is not None else await read_claimed(self, claim)

    async def _spanned_claim_next(
        self, owner: str, lease_seconds: float, max_attempts: int, *, read: bool
    ) -> tuple[Claim, Callable[[], StoredContinuation] | None] | None:
        with claim_span(owner) as span:
            try:
                if read:
                    found = await self._claim_next_read(
                        owner, lease_seconds=lease_seconds, max_attempts=max_attempts
                    )
                else:
                    claim = await self._claim_next(
                        owner, lease_seconds=lease_seconds, max_attempts=max_attempts
                    )
                    found = (claim, None) if claim is not None else None
            except BaseException as exc:
                span.set_attribute("continuation.claim.result", _claim_result(exc))
                raise
            if found is None:
                span.set_attribute("continuation.claim.result", "empty")
                return None
            span.set_attribute("continuation.claim.result", "claimed")
            span.set_attribute("continuation.id", found[0].id)
            span.set_attribute("continuation.claim.token", found[0].token)
            return found

    @abstractmethod
    async def _claim_next(
        self, owner: str, *, lease_seconds: float, max_attempts: int
    ) -> Claim | None:
        """See :meth:`Store.claim_next`: the backend's one atomic pick-and-claim."""

    async def _claim_next_read(
        self, owner: str, *, lease_seconds: float, max_attempts: int
    ) -> tuple[Claim, Callable[[], StoredContinuation] | None] | None:
        """:meth:`_claim_next`, with the claimed record's parser if the backend read it.

        A backend that reads the claimed row and its segments with the claim (one round trip)
        returns a function that parses them (raising ``SchemaError`` naming the record); this
        default returns none, and :meth:`claim_next_record` then gets the record.
        """
        claim = await self._claim_next(
            owner, lease_seconds=lease_seconds, max_attempts=max_attempts
        )
        return (claim, None) if claim is not None else None

    async def _claim(
        self,
        id: str,
        *,
        owner: str,
        lease_seconds: float,
        expected_version: int | None,
        max_attempts: int,
    ) -> Claim:
        holder = holder_id()

        def takeover(held_by: str | None, held: str | None) -> str | None:
            return takeover_reason(owner, held_by, held)

        def change(row: Row, at: datetime) -> tuple[Row, Events, Claim | ContinuationFailed]:
            new, claim, events = claim_row(
                row, owner=owner, lease_seconds=lease_seconds, expected_version=expected_version,
                at=at, max_attempts=max_attempts, holder=holder, takeover=takeover,
            )  # fmt: skip
            return new, events, claim

        result = await self._transact(id, change)
        if isinstance(result, ContinuationFailed):
            raise result  # the row is stored failed: raised once that was written
        return result

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

    async def fail(
        self,
        claim: Claim,
        error: BaseException,
        *,
        permanent: bool = False,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        retry_in: float = 0.0,
    ) -> StoredContinuation:
        """See :meth:`Store.fail`."""

        def change(row: Row, at: datetime) -> tuple[Row, Events, Row]:
            new, events = fail_row(
                row, claim, error, permanent=permanent, max_attempts=max_attempts,
                retry_in=retry_in, at=at,
            )  # fmt: skip
            return new, events, new

        return (await self._transact(claim.id, change)).record()

    async def retry(self, id: str, *, by: str | None = None) -> StoredContinuation:
        """See :meth:`Store.retry`."""

        def change(row: Row, at: datetime) -> tuple[Row, Events, Row]:
            new, events = retry_row(row, by=by, at=at)
            return new, events, new

        record = (await self._transact(id, change)).record()
        log_event(log, "retried", continuation=id, run=record.run_id, by=by)
        if record.status == "waiting":  # its undecided requests wait for decisions again
            count_pending(record.continuation, 1)
        if record.status == "ready":  # runnable again now: tell the engine, after the commit
            await self._dispatch(id, self.dispatcher.ready(id, record.continuation.seq))
        return record

    async def record(
        self,
        run_id: str,
        kind: AuditKind,
        *,
        continuation_id: str = "",
        actor: str | None = None,
        detail: dict[str, Any] | None = None,
        claim: Claim | None = None,
    ) -> None:
        """See :meth:`Store.record`."""
        if claim is None:
            await self._append(
                run_id, kind, continuation_id=continuation_id, actor=actor, detail=detail
            )
            return

        def events(at: datetime) -> Events:
            cid = continuation_id or claim.id
            event = recorded_event(
                run_id, kind, at=at, continuation_id=cid, actor=actor, detail=detail
            )
            return [event]

        await self._fenced(claim, events, None)

    async def append_segment(self, segment: Segment, *, claim: Claim) -> None:
        """See :meth:`Store.append_segment`."""
        if claim.id != segment.base:
            raise ConflictError(
                f"A segment of checkpoint {segment.base} cannot be appended under the claim "
                f"on {claim.id}.",
                continuation_id=segment.base,
            )
        await self._fenced(claim, lambda at: [], segment)

    async def append_step(
        self,
        claim: Claim,
        run_id: str,
        *,
        segment: Segment | None = None,
        journal: Sequence[tuple[AuditKind, dict[str, Any]]] = (),
        actor: str | None = None,
    ) -> None:
        """See :meth:`Store.append_step`: the segment and the entries in one atomic write."""
        if segment is not None and claim.id != segment.base:
            raise ConflictError(
                f"A segment of checkpoint {segment.base} cannot be appended under the claim "
                f"on {claim.id}.",
                continuation_id=segment.base,
            )
        entries = list(journal)

        def events(at: datetime) -> Events:
            return [
                recorded_event(
                    run_id, kind, at=at, continuation_id=claim.id, actor=actor, detail=detail
                )
                for kind, detail in entries
            ]

        await self._fenced(claim, events, segment)

    @abstractmethod
    async def _fenced(
        self, claim: Claim, events: Callable[[datetime], Events], segment: Segment | None
    ) -> None:
        """Write ``events`` (made at the backend's time) and ``segment`` under ``claim``.

        Atomically with a check (:func:`._rules.check_fence`) that reads only the claim
        columns of row ``claim.id``, never its document, so a journal write or an appended
        step costs the same however long the run's history is. A ``segment`` is checked
        with :func:`._rules.check_segment` against the base's stored segments.

        Raises:
            ClaimSuperseded: If ``claim`` no longer holds; nothing is written.
            ContinuationNotFound: If there is no row ``claim.id``.
        """

    @abstractmethod
    async def _append(
        self,
        run_id: str,
        kind: AuditKind,
        *,
        continuation_id: str,
        actor: str | None,
        detail: dict[str, Any] | None,
    ) -> None:
        """Append one audit event outside any claim, stamped with the backend's clock."""


@dataclass(frozen=True)
class _Decided:
    row: Row
    ready: bool  # the last decision landed with this one
    requested: str  # the kind of the request it decided
    at: datetime


def _requested(row: Row, record: DecisionRecord) -> str:
    for path, _, call in row.document.leaves():
        if path == record.path:
            return call.kind
    return "unknown"


def _claim_result(exc: BaseException) -> str:
    if isinstance(exc, ContinuationFailed):
        return "failed"
    if isinstance(exc, BackingOff):
        return "backing_off"
    if isinstance(exc, MissingDecisions):
        return "undecided"
    if isinstance(exc, AlreadyClaimed | ConflictError):
        metrics().claim_conflicts.add(1)
        return "conflict"
    return "error"


class PickingRowStore(RowStore):
    """A :class:`RowStore` whose one pick can also return the claimed row (Postgres, SQLite).

    It implements :meth:`_pick`; both claim hooks come from it.
    """

    async def _claim_next(
        self, owner: str, *, lease_seconds: float, max_attempts: int
    ) -> Claim | None:
        found = await self._pick(owner, lease_seconds, max_attempts, read=False)
        return found[0] if found is not None else None

    async def _claim_next_read(
        self, owner: str, *, lease_seconds: float, max_attempts: int
    ) -> tuple[Claim, Callable[[], StoredContinuation] | None] | None:
        return await self._pick(owner, lease_seconds, max_attempts, read=True)

    @abstractmethod
    async def _pick(
        self, owner: str, lease_seconds: float, max_attempts: int, *, read: bool
    ) -> tuple[Claim, Callable[[], StoredContinuation] | None] | None:
        """Pick and claim the next claimable continuation in one atomic step (see
        :meth:`Store.claim_next`); with ``read``, also read the claimed row and its segments
        in that step and return their parser (raising ``SchemaError`` naming the record)."""
