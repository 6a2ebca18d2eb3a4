"""``run`` and ``resume``: thin entry points over the ``Continuations`` capability."""

from __future__ import annotations

import asyncio
from typing import Any

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
from continuations_core._decisions import ExpiryMode, FramePlan
from continuations_core._durable import (
    default_owner,
    durable,
    reset_run_id,
    set_run_id,
    take_over,
)
from continuations_core._protocol import (
    MANAGED,
    check_fingerprint,
    new_run_id,
    open_for_resume,
    seal,
)
from continuations_core.stores import Claim, Store

from . import _translate as t
from ._capability import _RESUME, Continuations, _Resume

__all__ = ["resume", "resume_run", "resume_sync", "run", "run_sync"]


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

    return await durable(
        go,
        store=store,
        checkpoint=checkpoint,
        run_id=rid,
        seq=0,
        keys=keys,
        owner=owner,
        lease_seconds=lease_seconds,
        claim=None,
    )


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
    **run_kwargs: Any,
) -> Outcome[Any]:
    """Resume a decided continuation of ``agent``.

    Everything is checked before any tool runs: the signature (G6), every decision and that
    none is missing (G4), deadlines (G8), and the root agent's tools (G10). Nested agents are
    reached through the tool bodies that call them, and their tools are checked when their
    delegating call is re-entered.

    Single use (G5): with ``store``, the continuation is claimed first (or pass the ``claim``
    you hold), so of several resumers exactly one proceeds; the others get ``AlreadyClaimed``.
    The run then stays durable as with :func:`run`. Without a store, a bare continuation
    carries ``run_id`` and ``seq`` so a caller can detect a stale copy (``check_fresh``).

    Args:
        agent: The root agent, built the same way as when the run suspended.
        continuation: The continuation, with decisions attached.
        keys: The keyring to verify the signature with.
        deps: The run's dependencies.
        allow_unsigned: Accept an unsigned continuation.
        on_expired: ``"raise"`` (default) raises ``ContinuationExpired`` for a call past its
            deadline; ``"deny"`` denies it with an "expired" message instead.
        store: Claim the continuation there and keep the resumed run durable.
        claim: A claim already held on the continuation (a worker's).
        checkpoint: Write checkpoints (default: when a store is given).
        owner: The name this process claims under (host:pid by default).
        lease_seconds: The lease on claims and checkpoints.
        **run_kwargs: Passed to ``agent.run``.

    Returns:
        ``Completed`` or, if the run suspends again, ``Suspended`` with a higher ``seq``.
    """
    plan = open_for_resume(
        continuation, keys=keys, allow_unsigned=allow_unsigned, on_expired=on_expired
    )
    _check_root(agent, plan)
    state = plan.frame.state
    if (
        plan.frame.suspended_by == "calls"
        and t.last_response(t.load_messages(state["messages"])) is None
    ):
        # Resuming a history that ends in a request would make Pydantic AI answer the pending
        # calls "interrupted" without running them; refuse instead.
        raise ResumeError(
            "The root frame has pending calls but its history does not end with the model "
            "response that made them; the continuation is inconsistent.",
            continuation_id=continuation.id,
        )

    async def go() -> Outcome[Any]:
        token = _RESUME.set(
            _Resume(plan=plan, scope=None, ordinal=None, agent_name=plan.frame.agent)
        )
        run_token = set_run_id(continuation.run_id)
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
            seq = continuation.seq + 1
            return Suspended(seal(suspended.frame, run_id=continuation.run_id, seq=seq, keys=keys))
        finally:
            MANAGED.reset(managed)
            reset_run_id(run_token)
            _RESUME.reset(token)
        return Completed(
            output=result.output,
            run_id=continuation.run_id,
            seq=continuation.seq,
            usage=t.dump_usage(result.usage),
        )

    return await durable(
        go,
        store=store,
        checkpoint=checkpoint,
        run_id=continuation.run_id,
        seq=continuation.seq,
        keys=keys,
        owner=owner,
        lease_seconds=lease_seconds,
        claim=claim,
        claim_id=continuation.id,
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
