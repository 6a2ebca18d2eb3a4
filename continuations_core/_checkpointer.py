"""The checkpointer of a durable run: checkpoints and a tool journal, fenced by the run's claim.

Adapters reach the run's :class:`Checkpointer` through :data:`CHECKPOINTER` at step boundaries
(:meth:`Checkpointer.step`) and around every tool call (:meth:`Checkpointer.replay`,
:meth:`~Checkpointer.tool_started`, :meth:`~Checkpointer.tool_completed`,
:meth:`~Checkpointer.tool_suspended`). Every write is made under the run's claim, so once
another process took the run over the store refuses it (``ClaimSuperseded``) and the run
starts no further tool. Transient store errors are retried (:func:`._attempts.with_retries`).

A step is an incremental checkpoint (see :mod:`._segments`): the first step of an attempt
writes the whole root frame as a new signed checkpoint, and the next steps append only what
changed since the step before to it, as segments, so their cost does not grow with the
history. Once at least :func:`compact_every` segments (32 by default) were appended and they
add up to as many bytes as the checkpoint they follow (or :data:`MAX_CHAIN` times that many
segments were appended), the next step is a full checkpoint again, which retires the last one
and its segments. Full checkpoints thus come at geometrically spaced steps, and what they cost,
spread over the steps, does not grow with the history either.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from ._attempts import NOT_COMMITTED, RetryPolicy, log_event, retry_policy, settle, with_retries
from ._protocol import sealed
from ._schema import Continuation, Frame
from ._segments import (
    DEFAULT_COMPACT_EVERY,
    Segment,
    chain_start,
    diff,
    frame_data,
    new_segment,
)
from ._signing import Keyring
from ._tracing import event as trace_event
from .errors import (
    AlreadyClaimed,
    ApprovedCallFailed,
    ClaimSuperseded,
    ConfigurationError,
    ContinuationError,
    ContinuationNotFound,
)
from .stores._base import ERROR_MESSAGE_LIMIT, AuditKind, Claim, StoredContinuation

if TYPE_CHECKING:
    from ._attempts import _NotCommitted
    from .stores import Store

__all__ = ["CHECKPOINTER", "COMPACT_EVERY_ENV", "MAX_CHAIN", "Checkpointer", "compact_every"]

log = logging.getLogger("continuations.durable")

#: The environment variable that sets how many steps are appended to a checkpoint before the
#: next step is written in full (0 writes every step in full, as before segments existed).
COMPACT_EVERY_ENV = "CONTINUATIONS_COMPACT_EVERY"
#: Segments on one checkpoint, as a multiple of :func:`compact_every`, after which the next step
#: is written in full however small the segments are (bounds the work of reading it back).
MAX_CHAIN = 32


def compact_every() -> int:
    """Segments appended to a checkpoint before a full one: ``$CONTINUATIONS_COMPACT_EVERY`` or 32.

    Raises:
        ConfigurationError: If the variable is set to anything but a whole number ≥ 0.
    """
    text = os.environ.get(COMPACT_EVERY_ENV, "").strip()
    if not text:
        return DEFAULT_COMPACT_EVERY
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise ConfigurationError(
            f"${COMPACT_EVERY_ENV} is {text!r}; set it to a whole number of steps "
            "(0 writes every step as a full checkpoint)."
        )
    return value


@dataclass
class Checkpointer:
    """Writes a run's checkpoints and tool journal to a store, under the run's claim.

    Attributes:
        store: Where checkpoints and the journal go.
        run_id: The run.
        owner: Who holds the run's checkpoint (this process).
        keys: Signs checkpoints.
        claim: The claim on the latest checkpoint (or the continuation being resumed).
        seq: The ``seq`` of the latest continuation of the run.
        lease_seconds: How long a claim lasts without a heartbeat.
        retry: How a failed attempt is retried.
        lost: Set once a write was refused because another process took the run over.
        compact_every: Segments appended to a checkpoint at least, before the next full one
            (0: none; see the module's docstring).
    """

    store: Store
    run_id: str
    owner: str
    keys: Keyring | None
    claim: Claim | None = None
    seq: int = 0
    lease_seconds: float = 30.0
    enabled: bool = True
    retry: RetryPolicy = field(default_factory=retry_policy)
    lost: ClaimSuperseded | None = None
    recorded: dict[str, dict[str, Any]] = field(default_factory=dict)
    started: set[str] = field(default_factory=set)
    failed: dict[str, dict[str, Any]] = field(default_factory=dict)  # approved calls that raised
    in_flight: dict[str, tuple[str, bool]] = field(default_factory=dict)  # path: (tool, approved)
    #: Calls of the current batch that started and have not ended (a tree step leaves it be).
    running: set[str] = field(default_factory=set)
    #: Calls whose ``tool_started`` write raised (path: tool): they did not run, though the
    #: entry may be stored (its answer lost). :meth:`flush` says so before the claim goes.
    unconfirmed: dict[str, str] = field(default_factory=dict)
    steps: int = 0  # checkpoints written by this attempt
    stepping: bool = False  # a checkpoint write is in flight (it retires the current claim)
    #: The event loop the run (and its store) lives on; sub-agent runs on other loops (in
    #: threads) hand their writes over to it.
    loop: asyncio.AbstractEventLoop | None = None
    compact_every: int = field(default_factory=compact_every)
    _tree_lock: asyncio.Lock | None = field(default=None, repr=False)
    # The chain being appended to: the frame as of the last step (JSON data), the number of
    # segments on the current full checkpoint, and the last segment's MAC.
    _last: dict[str, Any] | None = field(default=None, repr=False)
    _appended: int = field(default=0, repr=False)
    _prev: str = field(default="", repr=False)
    # Bytes of the last full checkpoint's frame, and of the segments appended to it since.
    _base_bytes: int = field(default=0, repr=False)
    _chain_bytes: int = field(default=0, repr=False)
    # What waits for the run's next write: the frame of a held step (``step(hold=True)``) and
    # journal entries (a call's result while no other call runs), in the order they were made.
    _held_frame: Frame | None = field(default=None, repr=False)
    _held_journal: list[tuple[AuditKind, dict[str, Any]]] = field(default_factory=list, repr=False)
    _write_lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)
    # What is stored (the last step or the claimed continuation) plus the journal is the state
    # at the next model request: it needs no step of its own (see :meth:`after_batch`).
    _batch_open: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        # An attempt that starts from a claimed continuation (a resume, a takeover) reaches
        # its first model request with the results of the batch it finishes in the journal.
        self._batch_open = self.claim is not None

    async def load_journal(self) -> None:
        """Read the tool journal of earlier attempts of this run."""
        for event in await with_retries(lambda: self.store.audit(self.run_id), what="journal"):
            path = str(event.detail.get("path", ""))
            if event.kind == "tool_started":
                self.started.add(path)
            elif event.kind == "tool_completed":
                self.recorded[path] = dict(event.detail.get("result") or {})
            elif event.kind == "tool_suspended":
                self.started.discard(path)
            elif event.kind == "tool_failed" and event.detail.get("approved"):
                self.failed[path] = dict(event.detail)
            elif event.kind == "retried":  # a person asked for the failed step to run again
                self.failed.clear()

    def live(self) -> bool:
        """Whether the run still holds its claim, as far as this process knows."""
        return self.lost is None

    def _check_live(self) -> None:
        if self.lost is not None:
            raise self.lost

    def _superseded(self, exc: ClaimSuperseded) -> ClaimSuperseded:
        if self.lost is None:
            self.lost = exc
            log_event(
                log, "claim_lost", logging.WARNING, continuation=exc.continuation_id,
                run=self.run_id, owner=self.owner, error=exc,
            )  # fmt: skip
        return exc

    async def tree_step(self, frame: Frame) -> None:
        """Write a checkpoint of the whole tree at a sub-agent's step boundary.

        ``frame`` is the root frame with its delegating calls in flight pending on their
        sub-agent runs' current frames. Concurrent sub-agents checkpoint one at a time. Call it
        on :attr:`loop`.

        Raises:
            ClaimSuperseded: If the run's claim was taken over; nothing was written.
        """
        if self._tree_lock is None:
            self._tree_lock = asyncio.Lock()
        async with self._tree_lock:
            await self.step(frame)

    async def step(self, frame: Frame, *, hold: bool = False) -> None:
        """Write a checkpoint of ``frame`` (the root frame at a step boundary).

        The frame's ``state`` is kept to find what the next step changed, so it must be a
        value of its own that nothing changes afterwards (a fresh serialization).

        With ``hold`` the step waits for the run's next write: adapters hold the step that
        records a model response. If a call of its batch starts, the step goes with that
        call's ``tool_started``, in the same transaction, so it is stored before any tool
        runs. If the run suspends or completes first, or a later step comes first, the held
        step is dropped: what comes next stores everything it held.

        Raises:
            ClaimSuperseded: If the run's claim was taken over; nothing was written.
        """
        self._check_live()
        self.in_flight.clear()  # the batch is over: whatever raised was handled by the framework
        if hold:  # a new model response: its batch starts now
            self._held_frame, self._batch_open = frame, True
            self.running.clear()
            return
        self._held_frame, self._batch_open = None, False
        async with self._write_lock:
            await self._write_frame(frame, self._take_journal())

    def _take_journal(self) -> list[tuple[AuditKind, dict[str, Any]]]:
        journal, self._held_journal = self._held_journal, []
        return journal

    async def _write_frame(
        self, frame: Frame, journal: list[tuple[AuditKind, dict[str, Any]]], *, held: int = -1
    ) -> None:
        """Write ``frame`` as a segment (with ``journal``, in one transaction) or in full (then
        ``journal`` after it). Call it holding the write lock. ``held``: how many entries of
        ``journal`` (from its start) were held, to hold again if the write fails (all: -1)."""
        claim = self.claim
        if (
            claim is not None and self._last is not None and self.steps > 0
            and not self._compaction_due()
        ):  # fmt: skip
            made = self._segment(claim, frame)
            if made is not None:
                segment, data = made
                await self._append(
                    segment, journal, lambda: self._appended_step(segment, data), held=held
                )
                return
        try:
            await self._full_checkpoint(frame)
        except BaseException:
            self._hold_again(journal, held)
            raise
        await self._append(None, journal, lambda: None, held=held)

    async def _full_checkpoint(self, frame: Frame) -> None:
        """Write ``frame`` as a new signed checkpoint that retires the current one."""
        self.seq += 1
        cont = sealed(frame, run_id=self.run_id, seq=self.seq, keys=self.keys)
        previous, progress = self.claim, self.steps > 0

        async def checkpoint() -> Claim | None:
            return await self.store.checkpoint(
                cont, previous=previous, owner=self.owner, lease_seconds=self.lease_seconds,
                progress=progress,
            )  # fmt: skip

        async def committed() -> Claim | _NotCommitted | None:
            try:
                record = await self.store.get(cont.id)
            except ContinuationNotFound:
                return NOT_COMMITTED
            token = previous.token if previous is not None else 1
            if record.status != "claimed" or record.fence != token or record.lease_until is None:
                raise ClaimSuperseded(
                    "The checkpoint was written, but the run was taken over since.",
                    continuation_id=cont.id,
                )
            return self._claim_of(record, token)

        write = asyncio.ensure_future(
            with_retries(checkpoint, what="checkpoint", committed=committed)
        )
        self.stepping = True
        try:
            self.claim = await asyncio.shield(write)
        except asyncio.CancelledError:
            # Cancelled mid-write (a worker shutting down): the write goes on regardless, so
            # wait for it and keep its claim, which the shutdown then releases.
            with contextlib.suppress(ContinuationError):
                self.claim = await write
            raise
        except ClaimSuperseded as exc:
            raise self._superseded(exc) from None
        finally:
            self.stepping = False
        self._started_chain(cont, frame)
        self.steps += 1
        self.in_flight.clear()  # the batch is over: whatever raised was handled by the framework
        trace_event(
            "continuation.checkpoint",
            {"continuation.id": cont.id, "continuation.seq": cont.seq, "continuation.full": True},
        )

    def _compaction_due(self) -> bool:
        """Whether the next step is written in full (see the module's docstring)."""
        if self._appended < self.compact_every:
            return False
        return (
            self._chain_bytes >= self._base_bytes
            or self._appended >= self.compact_every * MAX_CHAIN
        )

    def _started_chain(self, cont: Continuation, frame: Frame) -> None:
        """The full checkpoint ``cont`` was written: the next steps append to it."""
        self._last = frame_data(frame) if self.compact_every > 0 else None
        try:
            self._base_bytes = len(json.dumps(self._last, separators=(",", ":")))
        except (TypeError, ValueError, RecursionError):  # not plain JSON: no segments anyway
            self._base_bytes = 0
        self._chain_bytes = 0
        self._appended = 0
        sig = cont.signature
        self._prev = chain_start(cont.id, sig.mac if sig is not None else None)

    def _segment(self, claim: Claim, frame: Frame) -> tuple[Segment, dict[str, Any]] | None:
        """The segment of this step, or None if its state is not plain JSON data (then the
        step is written in full, which serializes it the way a checkpoint always did)."""
        assert self._last is not None
        data = frame_data(frame)
        try:
            delta = diff(self._last, data)
            segment = new_segment(
                claim.id, self._appended + 1, self.seq + 1, self._prev, delta, self.keys
            )
        except (TypeError, ValueError, RecursionError):
            return None
        return segment, data

    async def after_batch(self) -> bool:
        """At the root's model request after a tool batch: if the last step recorded the
        batch's model response, write what waits (that step, the batch's results) and say so;
        the adapter then writes no step. Returns False if the adapter must write the step.

        The request's frame adds only the batch's results, which the journal holds. A crash
        from here on recovers from the model response and replays the batch from the journal,
        running no tool again, so it resumes at this same request. The same holds for the
        first request of an attempt that resumed a claimed continuation.

        Raises:
            ClaimSuperseded: If the run's claim was taken over; nothing was written.
        """
        self._check_live()
        if not self._batch_open:
            return False
        self._batch_open = False
        self.running.clear()
        async with self._write_lock:
            frame, self._held_frame = self._held_frame, None
            journal = self._take_journal()
            if frame is not None:
                await self._write_frame(frame, journal)
            else:
                await self._append(None, journal, lambda: None)
        self.in_flight.clear()
        return True

    async def flush(self) -> None:
        """Write the journal entries that wait for the run's next write; drop a held step.

        Called before the run's claim changes hands (a suspension, a completion, a failed
        attempt, a shutdown), which stores the run's state itself or repeats at most the
        step in flight.

        A call whose start could not be confirmed (see :meth:`tool_started`) did not run: it
        is journaled ``tool_suspended`` with ``not_run``, so the next attempt runs it (a
        non-idempotent call too) instead of answering it "interrupted". If that write fails
        as well, the next attempt answers it "interrupted": never run twice.

        Raises:
            ClaimSuperseded: If the run's claim was taken over; nothing was written.
        """
        self._held_frame = None
        notes: list[tuple[AuditKind, dict[str, Any]]] = [
            ("tool_suspended", {"path": key, "tool": tool, "not_run": True})
            for key, tool in self.unconfirmed.items()
        ]
        if self._held_journal or notes:
            async with self._write_lock:
                held = self._take_journal()
                await self._append(None, [*held, *notes], lambda: None, held=len(held))
            self.unconfirmed.clear()

    async def _write(self, entry: tuple[AuditKind, dict[str, Any]]) -> None:
        """Write journal ``entry`` with what waits (a held step goes in the same transaction)."""
        async with self._write_lock:
            journal = [*self._take_journal(), entry]
            frame, self._held_frame = self._held_frame, None
            if frame is not None:
                await self._write_frame(frame, journal, held=len(journal) - 1)
            else:
                await self._append(None, journal, lambda: None, held=len(journal) - 1)

    def _hold_again(self, journal: list[tuple[AuditKind, dict[str, Any]]], held: int) -> None:
        """A write failed: its held journal entries wait for the next write (a failed
        attempt's), before any held since."""
        kept = journal if held < 0 else journal[:held]
        self._held_journal = [*kept, *self._held_journal]

    async def _append(
        self,
        segment: Segment | None,
        journal: list[tuple[AuditKind, dict[str, Any]]],
        wrote: Callable[[], None],
        *,
        held: int = -1,
    ) -> None:
        """Append ``segment`` and ``journal`` to the checkpoint the run's claim holds; call
        ``wrote`` once they are stored (also when cancelled while the write went through).
        Call it holding the write lock; on failure the ``held`` entries are held again."""
        if segment is None and not journal:
            return
        written = False

        def done() -> None:
            nonlocal written
            written = True
            wrote()

        try:
            await self._store_append(segment, journal, done)
        except BaseException:
            if not written:
                self._hold_again(journal, held)
            raise

    async def _store_append(
        self,
        segment: Segment | None,
        journal: list[tuple[AuditKind, dict[str, Any]]],
        done: Callable[[], None],
    ) -> None:
        self._check_live()
        claim = self.claim
        if claim is None:  # no checkpoint holds the run (it suspended or ended): unfenced
            assert segment is None
            for kind, detail in journal:
                await with_retries(partial(self._record, kind, detail), what=str(kind))
            done()
            return

        async def append() -> None:
            await self.store.append_step(
                claim, self.run_id, segment=segment, journal=journal, actor=self.owner
            )

        # Appending a stored segment again is a no-op and journal entries are safe to repeat,
        # so a retry after a lost answer is safe.
        write = asyncio.ensure_future(with_retries(append, what="checkpoint"))
        try:
            await asyncio.shield(write)
        except asyncio.CancelledError:
            with contextlib.suppress(ContinuationError):
                await write
                done()
            raise
        except ClaimSuperseded as exc:
            raise self._superseded(exc) from None
        done()

    async def _record(self, kind: AuditKind, detail: dict[str, Any]) -> None:
        await self.store.record(self.run_id, kind, actor=self.owner, detail=detail)

    def _appended_step(self, segment: Segment, data: dict[str, Any]) -> None:
        self.seq, self._last, self._prev = segment.seq, data, segment.mac
        self._appended += 1
        self._chain_bytes += len(segment.text)
        self.steps += 1
        trace_event(
            "continuation.checkpoint",
            {"continuation.id": segment.base, "continuation.seq": segment.seq,
             "continuation.full": False},
        )  # fmt: skip

    def _claim_of(self, record: StoredContinuation, token: int) -> Claim:
        assert record.lease_until is not None
        return Claim(
            id=record.id, version=record.version, owner=self.owner,
            lease_until=record.lease_until, token=token, attempt=record.attempts,
        )  # fmt: skip

    def replay(self, path: tuple[str, ...], *, idempotent: bool) -> dict[str, Any] | None:
        """What to answer instead of running the call at ``path``, if anything.

        Returns the recorded result, or ``{"interrupted": True}`` for a non-idempotent call that
        started but never recorded a result; ``None`` means run the call.

        Raises:
            ApprovedCallFailed: If the call was approved and raised in an earlier attempt: it is
                not run again until someone retries the continuation.
            ClaimSuperseded: If the run's claim was taken over.
        """
        self._check_live()
        key = "/".join(path)
        if key in self.recorded:
            trace_event("continuation.replay", {"continuation.call.path": key})
            return self.recorded[key]
        if key in self.failed:
            error = self.failed[key].get("error") or {}
            raise ApprovedCallFailed(
                f"The approved call {self.failed[key].get('tool')!r} ({key}) did not finish in "
                f"an earlier attempt: it raised, or was running when its run failed, with "
                f"{error.get('type')}: {error.get('message')}. It is not run again "
                "automatically: check its effect, then retry the continuation.",
                continuation_id=self.claim.id if self.claim is not None else None,
            )
        if key in self.started and not idempotent:
            trace_event("continuation.skipped", {"continuation.call.path": key})
            return {"interrupted": True}
        return None

    async def _journal(self, kind: AuditKind, detail: dict[str, Any]) -> None:
        """One journal write (with what is held), fenced by the run's claim (retried on
        transient errors)."""
        self._check_live()
        await self._write((kind, detail))

    async def tool_started(
        self, path: tuple[str, ...], tool: str, *, approved: bool = False
    ) -> None:
        """Journal that the call at ``path`` is about to run; it may run once this returns.

        Args:
            path: The call's path.
            tool: The tool's name.
            approved: Whether a person approved this call (it is then never run again
                automatically if it raises).

        If the write raises, the call must not run. The entry may have been stored all the
        same (the store's answer was lost), which would make the next attempt answer the call
        "interrupted" rather than run it; :meth:`flush` records that it did not run.

        Raises:
            ClaimSuperseded: If the run was taken over: the call must not run.
            StoreUnavailable: If the store failed beyond the retries: the call must not run.
        """
        key = "/".join(path)
        detail: dict[str, Any] = {"path": key, "tool": tool}
        if approved:
            detail["approved"] = True
        try:
            await self._journal("tool_started", detail)
        except BaseException:
            self.unconfirmed[key] = tool
            raise
        self.unconfirmed.pop(key, None)
        self.started.add(key)
        self.in_flight[key] = (tool, approved)
        self.running.add(key)

    async def tool_completed(
        self, path: tuple[str, ...], tool: str, result: dict[str, Any]
    ) -> None:
        """Journal the result of the call at ``path`` (before its step completes).

        While other calls are in flight it is written at once; otherwise it goes with the
        run's next write, before anything else runs.
        """
        key = "/".join(path)
        self.in_flight.pop(key, None)
        self.running.discard(key)
        entry: dict[str, Any] = {"path": key, "tool": tool, "result": result}
        if self.running or self.claim is None:
            await self._journal("tool_completed", entry)
        else:
            # No other call runs: the result goes with the run's next write, which comes
            # before any other tool starts (its tool_started, the next step's checkpoint, the
            # suspension or the completion), so a crash in between repeats no tool body.
            self._check_live()
            self._held_journal.append(("tool_completed", entry))
        self.recorded[key] = result

    async def tool_suspended(self, path: tuple[str, ...], tool: str) -> None:
        """Journal that the call at ``path`` suspended (re-entering it later is intended)."""
        key = "/".join(path)
        self.in_flight.pop(key, None)
        self.running.discard(key)
        await self._journal("tool_suspended", {"path": key, "tool": tool})
        self.started.discard(key)

    async def heartbeats(self, stop: asyncio.Event) -> None:
        """Keep the current claim's lease alive until ``stop`` is set.

        A failed heartbeat (a conflicting write, a store hiccup) is retried on the next beat.
        A claim found taken over marks the run lost: its next write or tool start raises.
        """
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.lease_seconds / 3)
                return
            claim = self.claim
            if claim is None:
                continue
            try:
                renewed = await self.store.heartbeat(claim, lease_seconds=self.lease_seconds)
            except AlreadyClaimed as exc:
                # Not lost if a checkpoint written meanwhile retired it (its answer may still
                # be on the way back, so the new claim may not be set yet).
                if self.claim is claim and not self.stepping:
                    lost = exc if isinstance(exc, ClaimSuperseded) else ClaimSuperseded(str(exc))
                    self._superseded(lost)
                    return
                continue
            except ContinuationError as exc:
                log_event(log, "heartbeat_failed", logging.WARNING, run=self.run_id, error=exc)
                continue
            if self.claim is claim:  # a checkpoint written meanwhile holds a newer claim
                self.claim = renewed

    async def failed_attempt(self, error: BaseException) -> ApprovedCallFailed | None:
        """Settle the run's claim after ``error`` escaped the run (see :mod:`._attempts`).

        Calls still in flight are journaled ``tool_failed``. If one of them was approved the
        continuation fails at once, and the error to raise instead is returned: the approved
        call is not run again automatically.
        """
        claim = self.claim
        if claim is None or not self.live():
            return None
        with contextlib.suppress(ContinuationError):
            await self.flush()  # a call's result held for the next write is kept
        if not self.live():
            return None
        approved = [(key, tool) for key, (tool, ok) in self.in_flight.items() if ok]
        described = {"type": type(error).__name__, "message": str(error)[:ERROR_MESSAGE_LIMIT]}
        for key, (tool, ok) in list(self.in_flight.items()):
            detail = {"path": key, "tool": tool, "approved": ok, "error": described}
            with contextlib.suppress(ContinuationError):
                await self._journal("tool_failed", detail)
        if not self.live():
            return None
        failure: ApprovedCallFailed | None = None
        if approved:
            key, tool = approved[0]
            failure = ApprovedCallFailed(
                f"The approved call {tool!r} ({key}) did not finish: it raised, or was running "
                f"when its run failed, with {type(error).__name__}: {error}. It is not run "
                "again automatically: check its effect, then retry the continuation.",
                continuation_id=claim.id,
            )
        await settle(
            self.store, claim, failure or error, policy=self.retry,
            permanent=True if failure is not None else None, run_id=self.run_id,
        )  # fmt: skip
        self.claim = None
        return failure


CHECKPOINTER: ContextVar[Checkpointer | None] = ContextVar(
    "continuations_checkpointer", default=None
)
