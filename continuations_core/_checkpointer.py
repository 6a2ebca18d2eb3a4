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
history. After :func:`compact_every` segments (32 by default) the next step is a full
checkpoint again, which retires the last one and its segments.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._attempts import NOT_COMMITTED, RetryPolicy, log_event, retry_policy, settle, with_retries
from ._protocol import seal
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

__all__ = ["CHECKPOINTER", "COMPACT_EVERY_ENV", "Checkpointer", "compact_every"]

log = logging.getLogger("continuations.durable")

#: The environment variable that sets how many steps are appended to a checkpoint before the
#: next step is written in full (0 writes every step in full, as before segments existed).
COMPACT_EVERY_ENV = "CONTINUATIONS_COMPACT_EVERY"


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
        compact_every: Segments appended to a checkpoint before the next full one (0: none).
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

    async def step(self, frame: Frame) -> None:
        """Write a checkpoint of ``frame`` (the root frame at a step boundary).

        The frame's ``state`` is kept to find what the next step changed, so it must be a
        value of its own that nothing changes afterwards (a fresh serialization).

        Raises:
            ClaimSuperseded: If the run's claim was taken over; nothing was written.
        """
        self._check_live()
        claim = self.claim
        if (
            claim is not None and self._last is not None and self.steps > 0
            and self._appended < self.compact_every
        ):  # fmt: skip
            segment = self._segment(claim, frame)
            if segment is not None:
                await self._append(claim, *segment)
                return
        self.seq += 1
        cont = seal(frame, run_id=self.run_id, seq=self.seq, keys=self.keys)
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

    def _started_chain(self, cont: Continuation, frame: Frame) -> None:
        """The full checkpoint ``cont`` was written: the next steps append to it."""
        self._last = frame_data(frame) if self.compact_every > 0 else None
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

    async def _append(self, claim: Claim, segment: Segment, data: dict[str, Any]) -> None:
        """Append ``segment`` (this step's changes) to the checkpoint ``claim`` holds."""

        async def append() -> None:
            await self.store.append_segment(segment, claim=claim)

        # Appending a stored segment again is a no-op, so a retry after a lost answer is safe.
        write = asyncio.ensure_future(with_retries(append, what="checkpoint"))
        try:
            await asyncio.shield(write)
        except asyncio.CancelledError:
            with contextlib.suppress(ContinuationError):
                await write
                self._appended_step(segment, data)
            raise
        except ClaimSuperseded as exc:
            raise self._superseded(exc) from None
        self._appended_step(segment, data)
        self.in_flight.clear()

    def _appended_step(self, segment: Segment, data: dict[str, Any]) -> None:
        self.seq, self._last, self._prev = segment.seq, data, segment.mac
        self._appended += 1
        self.steps += 1

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
            return self.recorded[key]
        if key in self.failed:
            error = self.failed[key].get("error") or {}
            raise ApprovedCallFailed(
                f"The approved call {self.failed[key].get('tool')!r} ({key}) raised "
                f"{error.get('type')}: {error.get('message')} in an earlier attempt. It is not "
                "run again automatically: check its effect, then retry the continuation.",
                continuation_id=self.claim.id if self.claim is not None else None,
            )
        if key in self.started and not idempotent:
            return {"interrupted": True}
        return None

    async def _journal(self, kind: AuditKind, detail: dict[str, Any]) -> None:
        """One journal write, fenced by the run's claim (retried on transient errors)."""
        self._check_live()
        claim = self.claim

        async def write() -> None:
            await self.store.record(self.run_id, kind, actor=self.owner, detail=detail, claim=claim)

        try:
            await with_retries(write, what=str(kind))
        except ClaimSuperseded as exc:
            raise self._superseded(exc) from None

    async def tool_started(
        self, path: tuple[str, ...], tool: str, *, approved: bool = False
    ) -> None:
        """Journal that the call at ``path`` is about to run; it may run once this returns.

        Args:
            path: The call's path.
            tool: The tool's name.
            approved: Whether a person approved this call (it is then never run again
                automatically if it raises).

        Raises:
            ClaimSuperseded: If the run was taken over: the call must not run.
        """
        key = "/".join(path)
        detail: dict[str, Any] = {"path": key, "tool": tool}
        if approved:
            detail["approved"] = True
        await self._journal("tool_started", detail)
        self.started.add(key)
        self.in_flight[key] = (tool, approved)

    async def tool_completed(
        self, path: tuple[str, ...], tool: str, result: dict[str, Any]
    ) -> None:
        """Journal the result of the call at ``path`` (before its step completes)."""
        key = "/".join(path)
        self.in_flight.pop(key, None)
        await self._journal("tool_completed", {"path": key, "tool": tool, "result": result})
        self.recorded[key] = result

    async def tool_suspended(self, path: tuple[str, ...], tool: str) -> None:
        """Journal that the call at ``path`` suspended (re-entering it later is intended)."""
        key = "/".join(path)
        self.in_flight.pop(key, None)
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
                f"The approved call {tool!r} ({key}) raised {type(error).__name__}: {error}. It "
                "is not run again automatically: check its effect, then retry the continuation.",
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
