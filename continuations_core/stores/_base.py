"""The store contract: stored records and the abstract :class:`Store`.

A store keeps each continuation's signed document, the decisions attached to it, its status
and the audit trail of the run. Status moves one way::

    waiting --decide--> ready --claim--> claimed --complete--> done
                         ^  ^               |
                         |  +---release-----+      (an expired lease may be claimed again)
                         |  +---fail--------+--fail (permanent, or out of attempts)--> failed
                         +----------------------------------retry-------------------------+

Every change bumps the record's ``version``; writers may pass ``expected_version`` to make
the change a compare-and-set on ``(id, version)`` (G5). Every claim carries a fencing token,
one more than the last claim's, and every write made under a claim (heartbeat, checkpoint,
journal, complete, release, fail) is refused atomically once a newer claim exists (G14). The
rules (status, versions, tokens, leases, attempts, audit events) are pure functions in
``_rules``, so backends only move rows and cannot disagree.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from .._schema import Continuation, DecisionRecord
from .._segments import Segment
from ..dispatch import BUILTIN, Dispatcher
from ..errors import (
    ConflictError,
    ContinuationNotFound,
    DecisionError,
    SchemaError,
    SignatureError,
)
from ._records import (
    DEFAULT_MAX_ATTEMPTS,
    ERROR_MESSAGE_LIMIT,
    RUN_STATES,
    STATUSES,
    AuditEvent,
    AuditKind,
    Claim,
    LastError,
    RunState,
    RunStatus,
    Status,
    StoredContinuation,
    utcnow,
)

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
    "Store",
    "StoredContinuation",
    "utcnow",
]


class Store(ABC):
    """Where continuations, decisions and the audit trail live. Async-first.

    Every method is abstract, so a backend that misses one fails when instantiated. Use
    ``async with store:`` to close it when done.

    Attributes:
        dispatcher: Told when a continuation becomes ready to resume or is stored with a
            request deadline (see :mod:`continuations_core.dispatch`); the built-in
            :class:`~continuations_core.dispatch.StoreDispatcher` unless set. The shipped
            backends call it after :meth:`save`, :meth:`checkpoint` (a suspension) and
            :meth:`decide`; a backend written from scratch must do the same.
    """

    dispatcher: Dispatcher = BUILTIN

    @abstractmethod
    async def save(self, cont: Continuation, *, actor: str | None = None) -> StoredContinuation:
        """Store a newly suspended continuation, with any decisions it already carries.

        Raises:
            ConflictError: If a continuation with this id is already stored.
            DispatchFailed: If it was stored but :attr:`dispatcher` failed.
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
            ContinuationFailed: If it failed: only a retry makes it runnable again.
            ConflictError: If ``expected_version`` is given and is not the current version.
            DispatchFailed: If it was the last decision, it is stored, but :attr:`dispatcher`
                failed.
        """

    @abstractmethod
    async def claim(
        self,
        id: str,
        *,
        owner: str,
        lease_seconds: float = 300.0,
        expected_version: int | None = None,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    ) -> Claim:
        """Take a ready continuation (or one whose lease expired) for resuming.

        The claim's fencing token is one more than the previous claim's, and the record's
        attempt count goes up by one. A live claim is taken over at once only when its holder
        is known to be gone: the same explicit ``owner`` restarted, or a process on this
        machine that no longer runs (audited ``taken_over``; see ``stores._owners``).

        Raises:
            MissingDecisions: If some requests are undecided.
            AlreadyClaimed: If another owner holds a live lease, or it was resumed.
            BackingOff: If it failed recently and its backoff has not elapsed.
            ContinuationFailed: If it failed, or its last allowed attempt (``max_attempts``)
                ended without a result; it is then stored ``failed``.
            ConflictError: If ``expected_version`` is given and is not the current version.
        """

    @abstractmethod
    async def heartbeat(self, claim: Claim, *, lease_seconds: float = 300.0) -> Claim:
        """Extend the claim's lease. Raises ``ClaimSuperseded`` if the claim was lost."""

    @abstractmethod
    async def release(self, claim: Claim) -> None:
        """Give the continuation back (``ready``). Raises ``ClaimSuperseded`` if it was lost."""

    @abstractmethod
    async def complete(
        self, claim: Claim, *, next_id: str | None = None, output: Any = None
    ) -> None:
        """Mark the continuation resumed (``done``); it can never be claimed again.

        Args:
            claim: The claim that resumed it.
            next_id: The continuation the run suspended into next, if it suspended again.
            output: The run's final output when it completed (``next_id`` is None); kept on
                the record (see :meth:`status`) and in the audit trail.

        Raises:
            ClaimSuperseded: If the claim was lost (the lease expired and was taken over).
        """

    @abstractmethod
    async def fail(
        self,
        claim: Claim,
        error: BaseException,
        *,
        permanent: bool = False,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        retry_in: float = 0.0,
    ) -> StoredContinuation:
        """Record that the attempt holding ``claim`` failed with ``error``, and end the claim.

        The error's type and message are stored (``last_error``). A ``permanent`` error, or
        a failure of attempt ``max_attempts`` or later, makes the continuation ``failed``
        (audit ``failed``). Otherwise it is ``ready`` again but not claimable for
        ``retry_in`` seconds (audit ``attempt_failed``).

        Raises:
            ClaimSuperseded: If the claim was lost; nothing is written.
        """

    @abstractmethod
    async def retry(self, id: str, *, by: str | None = None) -> StoredContinuation:
        """Put a ``failed`` (or backing-off) continuation back to ``ready`` now; audit ``retried``.

        Its attempt count restarts, and its last error stays on record until the next
        attempt. An approved call that failed in an earlier attempt may run again. One with
        undecided requests (it expired undecided) goes back to ``waiting`` for them instead.
        A continuation made ``ready`` is dispatched (:attr:`dispatcher`), as a last decision is.

        Raises:
            ConflictError: If it is neither failed nor backing off.
        """

    @abstractmethod
    async def fail_unreadable(
        self, id: str, error: BaseException, *, actor: str | None = None
    ) -> bool:
        """Mark a continuation whose stored document or decisions cannot be read ``failed``.

        For a record written by a newer version of this package, or edited by hand: it is
        failed without being parsed (its last error says why, audit ``failed``), so workers
        stop trying to claim it; ``retry`` it after upgrading. A done or failed record is left
        as it is.

        Returns:
            Whether the record changed.
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
        progress: bool = True,
    ) -> Claim | None:
        """Store a run's next continuation and retire ``previous``, in one atomic step (G9).

        With ``owner`` the new continuation is stored already claimed by ``owner`` (a
        checkpoint its own process keeps running from; audit ``checkpoint``) and the claim is
        returned; it keeps ``previous``'s fencing token. Without it, it is stored like
        :meth:`save` (a suspension waiting for decisions). ``previous`` is marked done,
        audited ``resumed`` with ``next_id``.

        Args:
            cont: The next continuation.
            previous: The claim it follows on.
            owner: Hold the new continuation (a checkpoint) rather than wait for decisions.
            lease_seconds: The new claim's lease.
            progress: Whether the run advanced since ``previous`` was claimed. False for the
                first checkpoint after a claim, which records the step it started from, so a
                step that keeps failing still runs out of attempts.

        Raises:
            ClaimSuperseded: If ``previous`` no longer holds; nothing is written.
            DispatchFailed: If a suspension was stored but :attr:`dispatcher` failed.
        """

    @abstractmethod
    async def append_segment(self, segment: Segment, *, claim: Claim) -> None:
        """Append one step's segment to the checkpoint ``claim`` holds (an incremental checkpoint).

        The checkpoint's record is unchanged; :meth:`get` and :meth:`load` return it with its
        segments applied, and a later :meth:`checkpoint` (or completion) that retires it
        drops them. Appending a segment that is stored already is a no-op, so a retry after a
        lost answer is safe.

        Raises:
            ClaimSuperseded: If ``claim`` no longer holds; nothing is written.
            ConflictError: If the segment does not follow the last one stored.
        """

    async def append_step(
        self,
        claim: Claim,
        run_id: str,
        *,
        segment: Segment | None = None,
        journal: Sequence[tuple[AuditKind, dict[str, Any]]] = (),
        actor: str | None = None,
    ) -> None:
        """Append a step's ``segment`` and ``journal`` entries to the run, under ``claim``.

        One write for what a step adds (its segment, and the tool journal entries made since
        the last write, in order), so a durable step costs one round trip rather than one per
        entry. The built-in stores write it all in one atomic step; this default, for other
        stores, writes the segment and then each entry (every part is safe to repeat).

        Raises:
            ClaimSuperseded: If ``claim`` no longer holds; nothing is written.
            ConflictError: If the segment does not follow the last one stored.
        """
        if segment is not None:
            await self.append_segment(segment, claim=claim)
        for kind, detail in journal:
            await self.record(
                run_id, kind, continuation_id=claim.id, actor=actor, detail=detail, claim=claim
            )

    @abstractmethod
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
        """Append an event to the run's audit trail (the tool journal uses it).

        With ``claim`` the event is written under that claim: atomically refused with
        ``ClaimSuperseded`` once a newer claim exists, so a process that lost its run writes
        nothing more to its journal.
        """

    async def claimable(self, *, limit: int = 10, owner: str | None = None) -> builtins.list[str]:
        """Ids a worker may claim now, in :meth:`claim_next`'s order.

        Ready continuations whose backoff elapsed and expired leases; with ``owner``, also
        live claims held under that name (a restarted owner takes its claims back at once,
        if :meth:`claim` confirms the holder is gone). This only reads: :meth:`claim` is the
        atomic step.
        """
        now = utcnow()
        ready = await self.list(status="ready", limit=10_000)
        claimed = await self.list(status="claimed", limit=10_000)
        found = [r for r in ready if r.not_before is None or r.not_before <= now]
        found += [
            r
            for r in claimed
            if (r.lease_until is not None and r.lease_until <= now)
            or (owner is not None and r.claimed_by == owner)
        ]

        def due(r: StoredContinuation) -> datetime:  # as claim_next orders them
            if r.status == "claimed" and r.lease_until is not None and r.lease_until <= now:
                return r.lease_until
            return r.not_before if r.status == "ready" and r.not_before else r.updated_at

        found.sort(key=due)
        return [r.id for r in found[: max(limit, 0)]]

    async def claim_next(
        self,
        owner: str,
        *,
        lease_seconds: float = 300.0,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    ) -> Claim | None:
        """Claim the continuation claimable longest ago; None if there is none.

        The candidates are those :meth:`claimable` lists with ``owner``: ready ones whose
        backoff elapsed, expired leases, and live claims held under ``owner``'s name by a
        process that is gone (a restarted owner). The one taken is the one that became
        claimable first: a ready one when it changed or when its backoff ended, an expired
        claim when its lease ended, a live claim taken back when it was claimed. Live claims
        are not walked past on the backends, so holding many costs a claim nothing. The claim follows the rules of
        :meth:`claim` (fencing token, attempts, audit ``claimed``). The backends pick and
        claim in one atomic step, so concurrent workers never take the same continuation and
        never wait on each other; this default (for third-party stores) scans, then claims.

        Raises:
            ContinuationFailed: If the oldest candidate was an abandoned claim on its last
                allowed attempt: it is stored ``failed`` now (as :meth:`claim` does); call
                again for the next one.
            SchemaError: If the oldest candidate cannot be read (naming it); fail it with
                :meth:`fail_unreadable`.
        """
        skipped: set[str] = set()
        while True:
            ids = await self.claimable(limit=len(skipped) + 10, owner=owner)
            ids = [i for i in ids if i not in skipped]
            if not ids:
                return None
            for cid in ids:
                try:
                    return await self.claim(
                        cid, owner=owner, lease_seconds=lease_seconds, max_attempts=max_attempts
                    )
                except (ConflictError, DecisionError, ContinuationNotFound):
                    skipped.add(cid)  # another worker got there first, or it changed

    async def claim_next_record(
        self,
        owner: str,
        *,
        lease_seconds: float = 300.0,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    ) -> tuple[Claim, StoredContinuation] | None:
        """:meth:`claim_next`, with the claimed record as :meth:`get` reads it after the claim.

        What a worker does before it resumes. Postgres reads the record in the claim's own
        statement and SQLite in its transaction: one round trip instead of two. This
        default (the memory and Redis stores, third-party stores) claims, then gets.

        Raises:
            ContinuationFailed: As :meth:`claim_next`.
            SchemaError: If the claimed record cannot be read (naming it). The claim holds
                and nothing ran: fail it with :meth:`fail_unreadable`.
            SignatureError: If the claimed checkpoint's appended segments do not chain onto
                it (``BrokenCheckpoint``, naming it). The claim holds and nothing ran, as for
                ``SchemaError``.
            ContinuationError: Whatever else :meth:`get` raises (a store outage). The claim
                was released first, as far as the store could be reached, so the
                continuation is claimable again at once rather than after its lease.
        """
        claim = await self.claim_next(owner, lease_seconds=lease_seconds, max_attempts=max_attempts)
        if claim is None:
            return None
        return claim, await read_claimed(self, claim)

    async def status(self, run_id: str) -> RunStatus:
        """Where run ``run_id`` stands: its latest continuation's state, and its output."""
        records = await self.list(run_id=run_id, limit=10_000)
        if not records:
            events = await self.audit(run_id)  # a run completed without checkpoints
            done = [e for e in events if e.kind == "completed"]
            if done:
                output = done[-1].detail.get("output")
                return RunStatus(run_id=run_id, state="completed", output=output)
            return RunStatus(run_id=run_id, state="unknown")
        latest = max(records, key=lambda r: (r.seq, r.created_at))
        now = utcnow()
        state: RunState
        if latest.status == "done":
            state = "completed"
        elif latest.status == "claimed":
            live = latest.lease_until is not None and latest.lease_until > now
            state = "running" if live else "abandoned"
        elif latest.status == "ready" and latest.not_before and latest.not_before > now:
            state = "retrying"
        else:
            state = latest.status
        return RunStatus(
            run_id=run_id,
            state=state,
            continuation_id=latest.id,
            seq=latest.seq,
            attempts=latest.attempts,
            claimed_by=latest.claimed_by,
            lease_until=latest.lease_until if latest.status == "claimed" else None,
            not_before=latest.not_before if latest.status == "ready" else None,
            last_error=latest.last_error,
            output=latest.output if state == "completed" else None,
            updated_at=latest.updated_at,
            pending=len(latest.continuation.undecided) if latest.status == "waiting" else 0,
        )

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


async def read_claimed(store: Store, claim: Claim) -> StoredContinuation:
    """The record of a continuation just claimed with ``claim``; see :meth:`Store.claim_next_record`.

    A read that fails (but for an unreadable record or a broken checkpoint, which the caller
    fails: released, it would be claimed again at once) releases the claim, as far as the
    store can be reached, before it raises.
    """
    try:
        return await store.get(claim.id)
    except (SchemaError, SignatureError):
        raise
    except BaseException:
        with contextlib.suppress(Exception):
            await asyncio.shield(store.release(claim))
        raise
