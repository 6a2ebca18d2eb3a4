"""Durable runs (G9, G14): checkpoints at step boundaries, a fenced tool journal, attempts.

With a store, a run keeps its latest checkpoint in the store as a continuation that its own
process holds claimed (with a lease it keeps alive). A checkpoint is written after every model
response and after every tool batch. If the process dies, the lease expires and any worker, or
``resume_run``, takes the run over from its last checkpoint: at most the step in flight runs
again.

Every tool call is journaled under ``run_id`` plus its path: ``tool_started`` before it runs and
``tool_completed`` (with its result) before the step completes. A step that runs again replays
recorded results instead of calling the tools, and a tool marked ``@idempotent(False)`` that
started but recorded no result is never called again: the model is told it was interrupted.

Fencing (G14): every checkpoint, journal write and completion is made under the run's claim
and refused by the store once another process took the run over (``ClaimSuperseded``). A tool
starts only after its ``tool_started`` record was accepted under the live claim, so a process
that lost its run starts no further tool. What fencing cannot do is recall a tool that was
already running when the lease was lost: its effect may happen while the new holder runs the
step again. That is what ``@idempotent(False)`` (never run twice) and :func:`idempotency_key`
(let the external system deduplicate) are for.

A run that raises has its attempt settled (:mod:`._attempts`): retried after a backoff, or
``failed`` for a permanent error. An approved call that raised is never run again
automatically: a person approved one execution.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, TypeVar

from ._attempts import (
    NOT_COMMITTED,
    RETRY_POLICY,
    RetryPolicy,
    claim_with_retries,
    log_event,
    retry_policy,
    with_retries,
)
from ._checkpointer import CHECKPOINTER, Checkpointer
from ._protocol import RESEALS, Outcome, Suspended, suspension
from ._schema import Continuation
from ._signing import Keyring
from ._tracing import recover_span
from .errors import (
    AlreadyClaimed,
    ClaimSuperseded,
    ConfigurationError,
    ContinuationError,
    ContinuationNotFound,
    DispatchFailed,
    ResumeError,
)
from .stores._owners import default_owner

if TYPE_CHECKING:
    from ._attempts import _NotCommitted
    from .stores import Claim, Store

__all__ = [
    "CHECKPOINTER",
    "INTERRUPTED_MESSAGE",
    "RETRY_POLICY",
    "Checkpointer",
    "RetryPolicy",
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


async def run_durably(cp: Checkpointer, go: Callable[[], Awaitable[Outcome[Any]]]) -> Outcome[Any]:
    """Run ``go`` (an adapter's run or resume) with checkpoints, and record its outcome.

    A suspension is stored as the run's next continuation (waiting for decisions) and the
    current checkpoint is retired in the same step; a completion marks it done with the output.
    A run that raises has its attempt settled (retried after a backoff, or failed) and the
    error propagates; one whose claim was taken over writes nothing more.
    """
    await cp.load_journal()
    cp.loop = asyncio.get_running_loop()
    if cp.claim is not None:
        log_event(
            log, "resumed", continuation=cp.claim.id, run=cp.run_id, owner=cp.owner,
            token=cp.claim.token, attempt=cp.claim.attempt,
        )  # fmt: skip
    token = CHECKPOINTER.set(cp if cp.enabled else None)
    reseals = RESEALS.set(True)
    stop = asyncio.Event()
    beat = asyncio.create_task(cp.heartbeats(stop))
    try:
        try:
            outcome = await go()
        finally:
            # Stop between beats rather than cancel one mid-call: a store call cut off half-way
            # can leave its connection unusable.
            stop.set()
            with contextlib.suppress(asyncio.CancelledError):
                await beat
            CHECKPOINTER.reset(token)
            RESEALS.reset(reseals)
    except asyncio.CancelledError:
        # A worker shutting down: give the run back now rather than when the lease expires.
        if cp.claim is not None and cp.lost is None:
            with contextlib.suppress(ContinuationError):
                await asyncio.shield(cp.flush())  # a held result is kept for the next attempt
            with contextlib.suppress(ContinuationError):
                await asyncio.shield(cp.store.release(cp.claim))
        raise
    except AlreadyClaimed:
        raise  # the run was taken over: nothing of this attempt is recorded
    except Exception as exc:
        if cp.lost is not None:  # a framework may wrap the refusal (Strands does): say so plainly
            raise cp.lost from exc
        failure = await cp.failed_attempt(exc)
        if failure is not None:
            raise failure from exc  # an approved call raised: typed, and failed for good
        raise
    cp._check_live()  # a heartbeat found the run taken over: record nothing
    if isinstance(outcome, Suspended):
        await cp.flush()  # what waited for the run's next write goes before the suspension
        return await _suspend(cp, outcome)
    await _complete(cp, outcome)
    return outcome


async def _suspend(cp: Checkpointer, outcome: Suspended) -> Suspended:
    cont = _reseal(outcome.continuation, cp)
    previous = cp.claim

    async def write() -> None:
        # A failed dispatch leaves the suspension stored (the store logged it): the engine
        # finds it there.
        with contextlib.suppress(DispatchFailed):
            await cp.store.checkpoint(cont, previous=previous, owner=None)

    async def committed() -> _NotCommitted | None:
        try:
            await cp.store.get(cont.id)
        except ContinuationNotFound:
            return NOT_COMMITTED
        return None

    try:
        await with_retries(write, what="suspension", committed=committed)
    except ClaimSuperseded as exc:
        raise cp._superseded(exc) from None
    cp.claim = None
    log_event(
        log, "suspended", continuation=cont.id, run=cp.run_id, seq=cont.seq, owner=cp.owner,
        requests=len(cont.requests),
    )  # fmt: skip
    return Suspended(cont)


async def _complete(cp: Checkpointer, outcome: Outcome[Any]) -> None:
    output = getattr(outcome, "output", None)
    claim = cp.claim
    if claim is None:
        await cp.flush()  # journal entries that wait go first (unfenced: no claim holds the run)
        await with_retries(
            lambda: cp.store.record(
                cp.run_id, "completed", actor=cp.owner, detail={"output": output}
            ),
            what="completion",
        )
        log_event(log, "completed", run=cp.run_id, owner=cp.owner)
        return

    await cp.flush()  # what waited for the run's next write goes before the completion

    async def write() -> None:
        await cp.store.complete(claim, output=output)

    async def committed() -> _NotCommitted | None:
        record = await cp.store.get(claim.id)
        return None if record.status == "done" and record.fence == claim.token else NOT_COMMITTED

    try:
        await with_retries(write, what="completion", committed=committed)
    except ClaimSuperseded as exc:
        raise cp._superseded(exc) from None
    cp.claim = None
    log_event(log, "completed", continuation=claim.id, run=cp.run_id, owner=cp.owner)


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
    policy = retry_policy()
    cp = Checkpointer(
        store, run_id, who, keys, claim=claim, seq=seq, lease_seconds=lease_seconds, retry=policy
    )
    cp.enabled = checkpoint is not False
    return await run_durably(cp, go)


async def take_over(
    store: Store, run_id: str, *, owner: str, lease_seconds: float = 30.0
) -> tuple[Continuation, Claim]:
    """Claim the latest continuation of ``run_id`` (a checkpoint whose lease expired, say).

    A restarted process claiming under the same explicit ``owner`` as the dead holder takes
    the run back at once, without waiting for the lease (see ``stores._owners``).

    Raises:
        ResumeError: If the run has nothing left to resume.
        AlreadyClaimed: If a live process holds it.
        MissingDecisions: If it waits for decisions.
        ContinuationFailed: If it failed; retry it first.
    """
    with recover_span(run_id, owner) as span:
        records = await store.list(run_id=run_id, limit=10_000)
        live = [r for r in records if r.status != "done"]
        if not live:
            state = "completed" if records else "unknown to this store"
            raise ResumeError(f"Run {run_id} has nothing left to resume: it is {state}.")
        latest = max(live, key=lambda r: r.seq)
        span.set_attribute("continuation.id", latest.id)
        policy = retry_policy()
        claim = await claim_with_retries(
            store, latest.id, owner=owner, lease_seconds=lease_seconds,
            max_attempts=policy.max_attempts,
        )  # fmt: skip
        span.set_attribute("continuation.claim.token", claim.token)
        return await store.load(latest.id), claim


def _reseal(cont: Continuation, cp: Checkpointer) -> Continuation:
    cp.seq += 1
    return suspension(cont.root, run_id=cp.run_id, seq=cp.seq, keys=cp.keys)
