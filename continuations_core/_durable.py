"""Durable runs (G9): checkpoints at step boundaries, a tool journal, idempotency keys.

With a store, a run keeps its latest checkpoint in the store as a continuation that its own
process holds claimed (with a lease it keeps alive). A checkpoint is written after every model
response and after every tool batch. If the process dies, the lease expires and any worker, or
``resume_run``, takes the run over from its last checkpoint: at most the step in flight runs
again.

Every tool call is journaled under ``run_id`` plus its path: ``tool_started`` before it runs and
``tool_completed`` (with its result) before the step completes. A step that runs again replays
recorded results instead of calling the tools, and a tool marked ``@idempotent(False)`` that
started but recorded no result is never called again: the model is told it was interrupted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from ._protocol import Outcome, Suspended, seal
from ._schema import Continuation, Frame
from ._signing import Keyring
from .errors import AlreadyClaimed, ConfigurationError, ContinuationError, ResumeError

if TYPE_CHECKING:
    from .stores import Claim, Store

__all__ = [
    "CHECKPOINTER",
    "INTERRUPTED_MESSAGE",
    "Checkpointer",
    "current_run_id",
    "default_owner",
    "durable",
    "idempotency_key",
    "idempotent",
    "is_idempotent",
    "run_durably",
    "take_over",
]

F = TypeVar("F", bound=Callable[..., Any])

log = logging.getLogger("continuations.durable")

IDEMPOTENT_MARKER = "__continuations_idempotent__"
INTERRUPTED_MESSAGE = (
    "The call was interrupted by a crash before its result was recorded, and it is not repeated "
    "because the tool is not idempotent. Check its effect before calling it again."
)

_RUN_ID: ContextVar[str | None] = ContextVar("continuations_run_id", default=None)
_CALL_KEY: ContextVar[str | None] = ContextVar("continuations_call_key", default=None)


def idempotent(flag: bool = True) -> Callable[[F], F]:
    """Mark whether a tool may safely run again after a crash (it may by default).

    ``@idempotent(False)`` tools are never re-executed once they started in a run that is
    recovered from a checkpoint.
    """

    def mark(fn: F) -> F:
        setattr(fn, IDEMPOTENT_MARKER, flag)
        inner = getattr(fn, "_tool_func", None) or getattr(fn, "__wrapped__", None)
        if inner is not None and inner is not fn:
            with contextlib.suppress(AttributeError, TypeError):
                setattr(inner, IDEMPOTENT_MARKER, flag)
        return fn

    return mark


def is_idempotent(obj: object) -> bool:
    """Whether ``obj`` (a tool function or tool object) may run again; true unless marked."""
    current: object | None = obj
    seen: set[int] = set()
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        flag = getattr(current, IDEMPOTENT_MARKER, None)
        if isinstance(flag, bool):
            return flag
        current = getattr(current, "__wrapped__", None) or getattr(current, "_tool_func", None)
    return True


def idempotency_key() -> str:
    """The idempotency key of the tool call being executed: ``"<run_id>:<path>"``.

    It is the same every time the call is retried, in any process, so a tool can pass it to an
    external API to deduplicate side effects.

    Raises:
        ConfigurationError: Outside a tool call of a continuation-aware run.
    """
    key = _CALL_KEY.get()
    if key is None:
        raise ConfigurationError(
            "idempotency_key() is only available inside a tool call of a run started with an "
            "adapter's run() or resume()."
        )
    return key


def current_run_id() -> str | None:
    """The run id of the run being executed, if any."""
    return _RUN_ID.get()


def set_run_id(run_id: str) -> Any:
    """Adapters: mark the run being executed (returns a token for ``reset_run_id``)."""
    return _RUN_ID.set(run_id)


def reset_run_id(token: Any) -> None:
    """Adapters: undo :func:`set_run_id`."""
    _RUN_ID.reset(token)


def enter_call(path: tuple[str, ...]) -> Any:
    """Adapters: the call at ``path`` starts; its idempotency key is now available."""
    return _CALL_KEY.set(f"{_RUN_ID.get() or '-'}:{'/'.join(path)}")


def exit_call(token: Any) -> None:
    """Adapters: undo :func:`enter_call`."""
    _CALL_KEY.reset(token)


def default_owner() -> str:
    """A worker name: host and process id."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class Checkpointer:
    """Writes a run's checkpoints and tool journal to a store.

    Attributes:
        store: Where checkpoints and the journal go.
        run_id: The run.
        owner: Who holds the run's checkpoint (this process).
        keys: Signs checkpoints.
        claim: The claim on the latest checkpoint (or the continuation being resumed).
        seq: The ``seq`` of the latest continuation of the run.
        lease_seconds: How long a claim lasts without a heartbeat.
    """

    store: Store
    run_id: str
    owner: str
    keys: Keyring | None
    claim: Claim | None = None
    seq: int = 0
    lease_seconds: float = 30.0
    enabled: bool = True
    recorded: dict[str, dict[str, Any]] = field(default_factory=dict)
    started: set[str] = field(default_factory=set)
    #: The event loop the run (and its store) lives on; sub-agent runs on other loops (in
    #: threads) hand their writes over to it.
    loop: asyncio.AbstractEventLoop | None = None
    _tree_lock: asyncio.Lock | None = field(default=None, repr=False)

    async def load_journal(self) -> None:
        """Read the tool journal of earlier attempts of this run."""
        for event in await self.store.audit(self.run_id):
            path = str(event.detail.get("path", ""))
            if event.kind == "tool_started":
                self.started.add(path)
            elif event.kind == "tool_completed":
                self.recorded[path] = dict(event.detail.get("result") or {})
            elif event.kind == "tool_suspended":
                self.started.discard(path)

    async def step(self, frame: Frame) -> None:
        """Write a checkpoint of ``frame`` (the root frame at a step boundary)."""
        self.seq += 1
        cont = seal(frame, run_id=self.run_id, seq=self.seq, keys=self.keys)
        write = asyncio.ensure_future(
            self.store.checkpoint(
                cont, previous=self.claim, owner=self.owner, lease_seconds=self.lease_seconds
            )
        )
        try:
            self.claim = await asyncio.shield(write)
        except asyncio.CancelledError:
            # Cancelled mid-write (a worker shutting down): the write goes on regardless, so
            # wait for it and keep its claim, which the shutdown then releases.
            with contextlib.suppress(ContinuationError):
                self.claim = await write
            raise

    async def tree_step(self, frame: Frame) -> None:
        """Write a checkpoint of the whole tree at a sub-agent's step boundary.

        ``frame`` is the root frame with its delegating calls in flight pending on their
        sub-agent runs' current frames. Concurrent sub-agents checkpoint one at a time. Call it
        on :attr:`loop`.
        """
        if self._tree_lock is None:
            self._tree_lock = asyncio.Lock()
        async with self._tree_lock:
            await self.step(frame)

    def replay(self, path: tuple[str, ...], *, idempotent: bool) -> dict[str, Any] | None:
        """What to answer instead of running the call at ``path``, if anything.

        Returns the recorded result, or ``{"interrupted": True}`` for a non-idempotent call that
        started but never recorded a result; ``None`` means run the call.
        """
        key = "/".join(path)
        if key in self.recorded:
            return self.recorded[key]
        if key in self.started and not idempotent:
            return {"interrupted": True}
        return None

    async def tool_started(self, path: tuple[str, ...], tool: str) -> None:
        """Journal that the call at ``path`` is about to run."""
        key = "/".join(path)
        self.started.add(key)
        await self.store.record(
            self.run_id, "tool_started", actor=self.owner, detail={"path": key, "tool": tool}
        )

    async def tool_completed(
        self, path: tuple[str, ...], tool: str, result: dict[str, Any]
    ) -> None:
        """Journal the result of the call at ``path`` (before its step completes)."""
        key = "/".join(path)
        self.recorded[key] = result
        await self.store.record(
            self.run_id,
            "tool_completed",
            actor=self.owner,
            detail={"path": key, "tool": tool, "result": result},
        )

    async def tool_suspended(self, path: tuple[str, ...], tool: str) -> None:
        """Journal that the call at ``path`` suspended (re-entering it later is intended)."""
        key = "/".join(path)
        self.started.discard(key)
        await self.store.record(
            self.run_id, "tool_suspended", actor=self.owner, detail={"path": key, "tool": tool}
        )

    async def heartbeats(self, stop: asyncio.Event) -> None:
        """Keep the current claim's lease alive until ``stop`` is set.

        A failed heartbeat (a conflicting write, a store hiccup) is retried on the next beat; a
        lost claim is left to the run, whose next write reports it.
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
            except AlreadyClaimed:
                continue
            except ContinuationError as exc:
                log.warning("heartbeat for run %s failed, retrying: %s", self.run_id, exc)
                continue
            if self.claim is claim:  # a checkpoint written meanwhile holds a newer claim
                self.claim = renewed


CHECKPOINTER: ContextVar[Checkpointer | None] = ContextVar(
    "continuations_checkpointer", default=None
)


async def run_durably(cp: Checkpointer, go: Callable[[], Awaitable[Outcome[Any]]]) -> Outcome[Any]:
    """Run ``go`` (an adapter's run or resume) with checkpoints, and record its outcome.

    A suspension is stored as the run's next continuation (waiting for decisions) and the
    current checkpoint is retired in the same step; a completion marks it done with the output.
    """
    await cp.load_journal()
    cp.loop = asyncio.get_running_loop()
    token = CHECKPOINTER.set(cp if cp.enabled else None)
    stop = asyncio.Event()
    beat = asyncio.create_task(cp.heartbeats(stop))
    try:
        outcome = await go()
    except asyncio.CancelledError:
        # A worker shutting down: give the run back now rather than when the lease expires.
        if cp.claim is not None:
            with contextlib.suppress(ContinuationError):
                await asyncio.shield(cp.store.release(cp.claim))
        raise
    finally:
        # Stop between beats rather than cancel one mid-call: a store call cut off half-way
        # can leave its connection unusable.
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await beat
        CHECKPOINTER.reset(token)
    if isinstance(outcome, Suspended):
        cont = _reseal(outcome.continuation, cp)
        await cp.store.checkpoint(cont, previous=cp.claim, owner=None)
        cp.claim = None
        return Suspended(cont)
    if cp.claim is not None:
        await cp.store.complete(cp.claim, output=outcome.output)
        cp.claim = None
    else:
        await cp.store.record(
            cp.run_id, "completed", actor=cp.owner, detail={"output": outcome.output}
        )
    return outcome


async def durable(
    go: Callable[[], Awaitable[Outcome[Any]]],
    *,
    store: Store | None,
    checkpoint: bool | None,
    run_id: str,
    seq: int,
    keys: Keyring | None,
    owner: str | None,
    lease_seconds: float,
    claim: Claim | None,
) -> Outcome[Any]:
    """Adapters: run ``go`` plainly, or durably through ``store`` holding ``claim``.

    ``claim`` is the claim on the continuation being resumed (see ``_resume.open_resume``).
    """
    if store is None:
        if checkpoint or claim is not None:
            raise ConfigurationError("checkpoint=True and claim= need a store; pass store=.")
        return await go()
    who = owner or default_owner()
    cp = Checkpointer(store, run_id, who, keys, claim=claim, seq=seq, lease_seconds=lease_seconds)
    cp.enabled = checkpoint is not False
    return await run_durably(cp, go)


async def take_over(
    store: Store, run_id: str, *, owner: str, lease_seconds: float = 30.0
) -> tuple[Continuation, Claim]:
    """Claim the latest continuation of ``run_id`` (a checkpoint whose lease expired, say).

    Raises:
        ResumeError: If the run has nothing left to resume.
        AlreadyClaimed: If a live process holds it.
        MissingDecisions: If it waits for decisions.
    """
    records = await store.list(run_id=run_id, limit=10_000)
    live = [r for r in records if r.status != "done"]
    if not live:
        state = "completed" if records else "unknown to this store"
        raise ResumeError(f"Run {run_id} has nothing left to resume: it is {state}.")
    latest = max(live, key=lambda r: r.seq)
    claim = await store.claim(latest.id, owner=owner, lease_seconds=lease_seconds)
    return await store.load(latest.id), claim


def _reseal(cont: Continuation, cp: Checkpointer) -> Continuation:
    cp.seq += 1
    return seal(cont.root, run_id=cp.run_id, seq=cp.seq, keys=cp.keys)
