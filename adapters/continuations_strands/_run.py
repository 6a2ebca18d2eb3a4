"""``run`` and ``resume``: thin entry points over the ``Continuations`` plugin."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel
from strands import Agent
from strands.agent import AgentResult

from continuations_core import (
    Completed,
    ConfigurationError,
    Continuation,
    FrameSuspended,
    Keyring,
    Outcome,
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
from ._nesting import RESUME, Resume, prepared_snapshot
from ._plugin import ATTACHED, Continuations

__all__ = ["resume", "resume_run", "resume_sync", "run", "run_sync"]


def _plugin_of(agent: Agent) -> Continuations:
    plugin = ATTACHED.get(agent)
    if plugin is not None:
        return plugin
    raise ConfigurationError(
        f"Agent {agent.name!r} has no Continuations plugin; build it with "
        "Agent(..., plugins=[Continuations()])."
    )


def _output(result: AgentResult) -> Any:
    if result.structured_output is not None:
        return result.structured_output
    return str(result).strip()


def _completed(agent: Agent, result: AgentResult, run_id: str, seq: int) -> Completed[Any]:
    usage = _plugin_of(agent).finished_usage(agent)
    return Completed(output=_output(result), run_id=run_id, seq=seq, usage=usage)


async def run(
    agent: Agent,
    prompt: Any = None,
    *,
    keys: Keyring | None = None,
    run_id: str | None = None,
    structured_output_model: type[BaseModel] | None = None,
    invocation_state: dict[str, Any] | None = None,
    store: Store | None = None,
    checkpoint: bool | None = None,
    owner: str | None = None,
    lease_seconds: float = 30.0,
    started_by: str | None = None,
    on_suspend: OnSuspend | None = None,
) -> Outcome[Any]:
    """Run ``agent`` until it completes or suspends.

    Args:
        agent: A Strands agent built with ``plugins=[Continuations()]``.
        prompt: The prompt (any Strands ``AgentInput``).
        keys: Signs the continuation when the run suspends.
        run_id: The logical run id; a new one by default.
        structured_output_model: Structured output model; it is recorded in the frame and
            re-applied on resume.
        invocation_state: Passed to the invocation (supply it again on resume).
        store: Keeps the run durable: checkpoints before every model call and after every
            model response, a journal of tool results, the suspension or completion (G9).
        checkpoint: Write checkpoints (default: when a store is given).
        owner: The name this process holds checkpoints under (host:pid by default).
        lease_seconds: The lease on checkpoints, kept alive while the run is in this process.
        started_by: Who started the run (a principal id), recorded signed in every
            continuation of the run.
        on_suspend: Called with the continuation when the run suspends (after it was stored,
            with a store); a failure is logged.

    Returns:
        ``Completed(output=...)`` (the structured output, or the final text) or
        ``Suspended(continuation=...)``. A suspended run leaves ``agent`` as it was before the
        call, so the same agent object serves the next run.
    """
    _plugin_of(agent)
    rid = run_id or new_run_id()

    async def go() -> Outcome[Any]:
        before = t.take(agent)
        token = t.STRUCTURED.set(t.import_path(structured_output_model))
        run_token = set_run_id(rid)
        managed = MANAGED.set(True)
        try:
            result = await agent.invoke_async(
                prompt,
                structured_output_model=structured_output_model,
                invocation_state=invocation_state,
            )
        except FrameSuspended as suspended:
            t.load(agent, before)  # the agent object stays usable for the next run
            return Suspended(seal(suspended.frame, run_id=rid, seq=1, keys=keys))
        except Exception as exc:
            t.load(agent, before)
            inner = t.unwrapped(exc)
            if inner is exc:
                raise
            raise inner from exc
        finally:
            MANAGED.reset(managed)
            reset_run_id(run_token)
            t.STRUCTURED.reset(token)
        return _completed(agent, result, rid, 0)

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


async def resume(
    agent: Agent,
    continuation: Continuation,
    *,
    keys: Keyring | None = None,
    allow_unsigned: bool = False,
    on_expired: ExpiryMode = "raise",
    structured_output_model: type[BaseModel] | None = None,
    invocation_state: dict[str, Any] | None = None,
    store: Store | None = None,
    claim: Claim | None = None,
    checkpoint: bool | None = None,
    owner: str | None = None,
    lease_seconds: float = 30.0,
    single_use: bool = True,
    on_suspend: OnSuspend | None = None,
    trace: TraceMode = "link",
) -> Outcome[Any]:
    """Resume a decided continuation of ``agent``; see ``continuations_pydantic_ai.resume``.

    The signature, decisions, deadlines and the root agent's tools are checked before any tool
    runs; with ``store`` the store's document and decisions are the truth, and resuming is
    single use even without one (``single_use=False`` opts out). A structured output model
    recorded at suspension is imported and re-applied unless ``structured_output_model`` is
    given. If the run suspends again, ``agent`` is left as it was before the call.
    ``trace="continue"`` continues the suspension's trace instead of linking to it.
    """
    _plugin_of(agent)

    def check(verified: Continuation) -> None:  # once verified, before the store is touched
        _check_root(agent, FramePlan(frame=verified.root, path=()))

    def go(opened: Opened) -> Callable[[], Awaitable[Outcome[Any]]]:
        plan, truth = opened.plan, opened.continuation
        state = plan.frame.state
        model = structured_output_model or t.resolve(state.get("structured_output"))

        async def attempt() -> Outcome[Any]:
            before = t.take(agent)
            t.load(agent, prepared_snapshot(plan))
            prompt: Any = [] if t.is_activated(state["snapshot"]) else None
            token = RESUME.set(Resume(plan=plan, agent_name=plan.frame.agent))
            so_token = t.STRUCTURED.set(state.get("structured_output"))
            run_token = set_run_id(truth.run_id)
            managed = MANAGED.set(True)
            try:
                result = await agent.invoke_async(
                    prompt, structured_output_model=model, invocation_state=invocation_state
                )
            except FrameSuspended as suspended:
                t.load(agent, before)
                seq = truth.seq + 1
                return Suspended(seal(suspended.frame, run_id=truth.run_id, seq=seq, keys=keys))
            except Exception as exc:
                t.load(agent, before)
                inner = t.unwrapped(exc)
                if inner is exc:
                    raise
                raise inner from exc
            finally:
                MANAGED.reset(managed)
                reset_run_id(run_token)
                t.STRUCTURED.reset(so_token)
                RESUME.reset(token)
            return _completed(agent, result, truth.run_id, truth.seq)

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
    agent: Agent,
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


def _check_root(agent: Agent, plan: FramePlan) -> None:
    check_fingerprint(
        plan, framework=t.FRAMEWORK, agent=agent.name, fingerprint=t.fingerprint(agent)
    )


def run_sync(agent: Agent, prompt: Any = None, **kwargs: Any) -> Outcome[Any]:
    """Synchronous :func:`run`."""
    return asyncio.run(run(agent, prompt, **kwargs))


def resume_sync(agent: Agent, continuation: Continuation, **kwargs: Any) -> Outcome[Any]:
    """Synchronous :func:`resume`."""
    return asyncio.run(resume(agent, continuation, **kwargs))
