"""``run`` and ``resume``: thin entry points over the ``Continuations`` capability."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from pydantic_ai import Agent

from continuations_core import (
    Completed,
    Continuation,
    FrameSuspended,
    Keyring,
    Outcome,
    ResumeError,
    Suspended,
)
from continuations_core.spi import (
    MANAGED,
    ExpiryMode,
    FramePlan,
    OnSuspend,
    Opened,
    TraceMode,
    check_fingerprint,
    default_owner,
    new_run_id,
    reset_run_id,
    resume_root,
    seal,
    set_run_id,
    start_root,
    take_over,
)
from continuations_core.stores import Claim, Store

from . import _translate as t
from ._capability import Continuations
from ._nesting import RESUME, Resume

__all__ = ["prepare", "resume", "resume_run", "resume_sync", "run", "run_sync"]


def _extra_capabilities(agent: Agent[Any, Any]) -> list[Continuations]:
    """A per-run ``Continuations`` for agents that were not built with one."""
    if any(isinstance(c, Continuations) for c in t.capabilities_of(agent)):
        return []
    return [Continuations()]


async def run(
    agent: Agent[Any, Any],
    prompt: str | None = None,
    *,
    keys: Keyring | None = None,
    deps: Any = None,
    run_id: str | None = None,
    store: Store | None = None,
    checkpoint: bool | None = None,
    owner: str | None = None,
    lease_seconds: float = 30.0,
    started_by: str | None = None,
    on_suspend: OnSuspend | None = None,
    **run_kwargs: Any,
) -> Outcome[Any]:
    """Run ``agent`` until it completes or suspends.

    Args:
        agent: A Pydantic AI agent. It gets a ``Continuations`` capability for this run if it
            was not built with one.
        prompt: The user prompt.
        keys: Signs the continuation when the run suspends. Without it the continuation is
            unsigned and resuming it needs ``allow_unsigned=True``.
        deps: The run's dependencies (supply them again on resume).
        run_id: The logical run id; a new one by default.
        store: Keeps the run durable: a checkpoint after every model response and tool batch,
            a journal of tool results, and the suspension or completion (G9).
        checkpoint: Write checkpoints (default: when a store is given). ``False`` with a store
            only saves the suspension.
        owner: The name this process holds checkpoints under (host:pid by default).
        lease_seconds: The lease on checkpoints, kept alive while the run is in this process.
        started_by: Who started the run (a principal id), recorded signed in every
            continuation of the run, so an approval UI can keep people from approving their
            own requests.
        on_suspend: Called with the continuation when the run suspends (after it was
            stored, with a store), e.g. a webhook notifier; a failure is logged.
        **run_kwargs: Passed to ``agent.run`` (``model``, ``model_settings``, ``usage_limits``...).

    Returns:
        ``Completed(output=...)`` or ``Suspended(continuation=...)``.
    """
    rid = run_id or new_run_id()

    async def go() -> Outcome[Any]:
        token = set_run_id(rid)
        managed = MANAGED.set(True)
        try:
            result = await agent.run(
                prompt, deps=deps, capabilities=_extra_capabilities(agent), **run_kwargs
            )
        except FrameSuspended as suspended:
            return Suspended(seal(suspended.frame, run_id=rid, seq=1, keys=keys))
        finally:
            MANAGED.reset(managed)
            reset_run_id(token)
        return Completed(output=result.output, run_id=rid, seq=0, usage=t.dump_usage(result.usage))

    return await start_root(
        go,
        run_id=rid,
        keys=keys,
        store=store,
        checkpoint=checkpoint,
        owner=owner,
        lease_seconds=lease_seconds,
        started_by=started_by,
        on_suspend=on_suspend,
    )


async def prepare(agent: Agent[Any, Any]) -> None:
    """Build what Pydantic AI builds on a process's first run, before a worker claims work.

    Pydantic AI builds its message validator and serializer on first use, and imports anyio's
    asyncio backend when a run opens its first task group: tens of milliseconds together.
    :class:`continuations_core.worker.Worker` calls this for each of its agents before its
    first claim, so its first resume costs what the next ones do. Nothing of ``agent`` runs:
    no model is called and nothing is written.

    Args:
        agent: An agent the worker serves; what is built is shared by all of them.
    """
    del agent  # what is built is the process's, not one agent's
    t.build_message_adapter()
    async with anyio.create_task_group():
        pass


async def resume(
    agent: Agent[Any, Any],
    continuation: Continuation,
    *,
    keys: Keyring | None = None,
    deps: Any = None,
    allow_unsigned: bool = False,
    on_expired: ExpiryMode = "raise",
    store: Store | None = None,
    claim: Claim | None = None,
    checkpoint: bool | None = None,
    owner: str | None = None,
    lease_seconds: float = 30.0,
    single_use: bool = True,
    on_suspend: OnSuspend | None = None,
    trace: TraceMode = "link",
    **run_kwargs: Any,
) -> Outcome[Any]:
    """Resume a decided continuation of ``agent``.

    Everything is checked before any tool runs: the signature (G6), every decision and that
    none is missing (G4), deadlines (G8), and the root agent's tools (G10). Nested agents are
    reached through the tool bodies that call them, and their tools are checked when their
    delegating call is re-entered.

    Single use (G5) by default. With ``store``, the store is the truth (G13): the decisions
    the passed continuation carries are recorded there with compare-and-set (refused if they
    conflict with stored ones), the continuation is claimed (or pass the ``claim`` you hold),
    and the run resumes from the stored document and decisions; of several resumers exactly
    one proceeds, the others get ``AlreadyClaimed``. The run then stays durable as with
    :func:`run`. Without ``store``, the embedded default store
    (``continuations_core.stores.default_store_url()``) records the claim, so resuming one
    JSON twice, in any two processes, runs its tools once; ``single_use=False`` opts out.

    Args:
        agent: The root agent, built the same way as when the run suspended.
        continuation: The continuation, with decisions attached.
        keys: The keyring to verify the signature with.
        deps: The run's dependencies.
        allow_unsigned: Accept an unsigned continuation.
        on_expired: ``"raise"`` (default) raises ``ContinuationExpired`` for a call past its
            deadline; ``"deny"`` denies it with an "expired" message instead.
        store: The store holding the continuation (the truth); the resumed run is durable.
        claim: A claim already held on this continuation in ``store`` (a worker's).
        checkpoint: Write checkpoints (default: when ``store`` is given).
        owner: The name this process claims under (host:pid by default).
        lease_seconds: The lease on claims and checkpoints.
        single_use: Without ``store``, claim through the default store (the default).
        on_suspend: Called with the next continuation if the run suspends again.
        trace: ``"link"`` (default): the ``continuation.resume`` span starts in this
            process's trace context, linked to the suspend and decide spans; ``"continue"``:
            it continues the suspension's trace, as a child of its span.
        **run_kwargs: Passed to ``agent.run``.

    Returns:
        ``Completed`` or, if the run suspends again, ``Suspended`` with a higher ``seq``.
    """

    def check(verified: Continuation) -> None:
        # Checks that need only the (signed) document: run once it is verified, before the
        # store is touched.
        _check_root(agent, FramePlan(frame=verified.root, path=()))
        _check_consistent(verified)

    def go(opened: Opened) -> Callable[[], Awaitable[Outcome[Any]]]:
        plan, truth = opened.plan, opened.continuation
        state = plan.frame.state

        async def attempt() -> Outcome[Any]:
            token = RESUME.set(Resume(plan=plan, sub=None, agent_name=plan.frame.agent))
            run_token = set_run_id(truth.run_id)
            managed = MANAGED.set(True)
            try:
                result = await agent.run(
                    message_history=t.load_messages(state["messages"]),
                    usage=t.load_usage(state.get("usage")),
                    deps=deps,
                    capabilities=_extra_capabilities(agent),
                    **run_kwargs,
                )
            except FrameSuspended as suspended:
                seq = truth.seq + 1
                return Suspended(seal(suspended.frame, run_id=truth.run_id, seq=seq, keys=keys))
            finally:
                MANAGED.reset(managed)
                reset_run_id(run_token)
                RESUME.reset(token)
            return Completed(
                output=result.output,
                run_id=truth.run_id,
                seq=truth.seq,
                usage=t.dump_usage(result.usage),
            )

        return attempt

    return await resume_root(
        continuation,
        go,
        keys=keys,
        allow_unsigned=allow_unsigned,
        on_expired=on_expired,
        store=store,
        claim=claim,
        owner=owner,
        lease_seconds=lease_seconds,
        single_use=single_use,
        checkpoint=checkpoint,
        on_suspend=on_suspend,
        trace=trace,
        check=check,
    )


async def resume_run(
    run_id: str,
    agent: Agent[Any, Any],
    *,
    store: Store,
    keys: Keyring | None = None,
    owner: str | None = None,
    **kwargs: Any,
) -> Outcome[Any]:
    """Take over run ``run_id`` from its latest checkpoint (after a crash) and continue it.

    Raises:
        AlreadyClaimed: If a live process still holds the run.
        MissingDecisions: If the run is waiting for decisions.
        ResumeError: If the run already completed.
    """
    who = owner or default_owner()
    cont, claim = await take_over(store, run_id, owner=who)
    return await resume(agent, cont, keys=keys, store=store, claim=claim, owner=who, **kwargs)


def _check_consistent(continuation: Continuation) -> None:
    """Refuse a root frame with pending calls whose history does not end with their response.

    Resuming a history that ends in a request would make Pydantic AI answer the pending calls
    "interrupted" without running them.
    """
    frame = continuation.root
    if (
        frame.suspended_by == "calls"
        and t.last_response(t.load_messages(frame.state["messages"])) is None
    ):
        raise ResumeError(
            "The root frame has pending calls but its history does not end with the model "
            "response that made them; the continuation is inconsistent.",
            continuation_id=continuation.id,
        )


def _check_root(agent: Agent[Any, Any], plan: FramePlan) -> None:
    name = agent.name or "agent"
    if plan.frame.framework != t.FRAMEWORK or plan.frame.agent != name:
        check_fingerprint(
            plan, framework=t.FRAMEWORK, agent=name, fingerprint=plan.frame.fingerprint
        )


def run_sync(agent: Agent[Any, Any], prompt: str | None = None, **kwargs: Any) -> Outcome[Any]:
    """Synchronous :func:`run`."""
    return asyncio.run(run(agent, prompt, **kwargs))


def resume_sync(agent: Agent[Any, Any], continuation: Continuation, **kwargs: Any) -> Outcome[Any]:
    """Synchronous :func:`resume`."""
    return asyncio.run(resume(agent, continuation, **kwargs))
