"""The store protocol built once from the rules: backends only move rows atomically.

:class:`RowStore` implements every change of the :class:`Store` protocol by reading one row,
applying a rule from :mod:`._rules` and writing the row back in one atomic step that the backend
provides (``_transact``). The backends (memory, SQLite, Postgres, Redis) differ only in how
they move rows; they cannot disagree about statuses, versions, fencing tokens or attempts.
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeAlias, TypeVar

from .._events import log_event
from .._schema import Continuation, DecisionRecord
from .._segments import Segment
from ..errors import ConflictError, ContinuationFailed
from ._base import DEFAULT_MAX_ATTEMPTS, AuditKind, Claim, Store, StoredContinuation
from ._owners import holder_id, takeover_reason
from ._rules import (
    Events,
    Row,
    claim_row,
    complete_row,
    decide_row,
    fail_row,
    heartbeat_row,
    recorded_event,
    release_row,
    retry_row,
)

__all__ = ["Change", "RowStore"]

log = logging.getLogger("continuations.store")

T = TypeVar("T")
Change: TypeAlias = Callable[[Row, datetime], tuple[Row, Events, T]]


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
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    ) -> Claim:
        """See :meth:`Store.claim`."""
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
            event = recorded_event(run_id, kind, at=at, continuation_id=cid, actor=actor,
                                   detail=detail)  # fmt: skip
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
