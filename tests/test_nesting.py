"""Nesting as people write it, beyond the conformance group: constructions that must fail closed,
bodies that go on past a suspension, re-entries that do not repeat what was recorded, and
documents written by schema version 2."""

from __future__ import annotations

import asyncio
import contextvars
import inspect
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from pydantic_ai import Agent, RunContext
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart
from pydantic_ai.models.function import AgentInfo, FunctionModel
from strands import Agent as StrandsAgent
from strands import tool

from continuations_core import (
    Completed,
    Continuation,
    ReplayMismatch,
    Suspended,
    UnsupportedNesting,
    requires_approval,
)
from continuations_core._signing import canonical_json
from continuations_core.testing.conformance import KEYS
from continuations_pydantic_ai import Continuations, resume, run
from continuations_strands import Continuations as StrandsContinuations
from continuations_strands import resume as strands_resume
from continuations_strands import run as strands_run
from continuations_strands.testing import ScriptedModel


def calling(*turns: list[tuple[str, dict[str, Any]]], name: str = "m") -> FunctionModel:
    """A model that makes ``turns[n]`` on its n-th response, then answers with the results."""

    def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        n = sum(isinstance(m, ModelResponse) for m in messages)
        if n < len(turns):
            return ModelResponse(
                parts=[
                    ToolCallPart(t, a, tool_call_id=f"{name}-{n}-{i}")
                    for i, (t, a) in enumerate(turns[n])
                ]
            )
        seen = [
            str(p.content)
            for m in messages
            for p in getattr(m, "parts", [])
            if getattr(p, "part_kind", "") == "tool-return"
        ]
        return ModelResponse(parts=[TextPart(f"{name} done: " + " | ".join(seen))])

    return FunctionModel(respond)


def payer(name: str, ran: list[str]) -> Agent[None, str]:
    """A sub-agent whose first turn makes a gated transfer."""
    agent: Agent[None, str] = Agent(
        calling([("transfer", {"to": name})], name=name), name=name, capabilities=[Continuations()]
    )

    @agent.tool_plain
    @requires_approval
    def transfer(to: str) -> str:
        """Move money."""
        ran.append(to)
        return f"sent to {to}"

    return agent


def parent_of(body: Any) -> Agent[None, str]:
    """A root agent whose one call runs ``body`` as its delegating tool."""
    parent: Agent[None, str] = Agent(
        calling([("delegate", {"task": "pay"})], name="parent"),
        name="parent",
        capabilities=[Continuations()],
    )
    parent.tool(body, name="delegate")
    return parent


def _suspended(outcome: Any) -> Continuation:
    assert isinstance(outcome, Suspended), outcome
    return Continuation.from_json(outcome.continuation.to_json())


async def test_a_thread_without_the_context_fails_closed_on_pydantic_ai() -> None:
    """A sub-agent run in a thread that lost the tool call's context cannot suspend: a typed
    error names the construction and the fix, and its gated tool never runs."""
    ran: list[str] = []
    child = payer("alpha", ran)

    async def delegate(ctx: RunContext[None], task: str) -> str:
        with ThreadPoolExecutor() as pool:  # no contextvars.copy_context(): unsupported
            return (await asyncio.wrap_future(pool.submit(child.run_sync, task))).output

    with pytest.raises(UnsupportedNesting, match=r"copy_context\(\)"):
        await run(parent_of(delegate), "go", keys=KEYS)
    assert ran == []


async def test_a_thread_without_the_context_fails_closed_on_strands() -> None:
    """On Strands, the same construction fails the whole run with the typed error (not a tool
    error the model reads), and the gated tool never runs."""
    ran: list[str] = []

    @tool
    @requires_approval
    def transfer(to: str) -> str:
        """Move money."""
        ran.append(to)
        return "sent"

    child = StrandsAgent(
        model=ScriptedModel("alpha", [[("transfer", {"to": "alpha"})]]),
        name="alpha",
        tools=[transfer],
        callback_handler=None,
        plugins=[StrandsContinuations()],
    )

    @tool
    def delegate(task: str) -> str:
        """Delegate."""
        with ThreadPoolExecutor() as pool:  # no contextvars.copy_context(): unsupported
            return str(pool.submit(child, task).result())

    root = StrandsAgent(
        model=ScriptedModel("root", [[("delegate", {"task": "pay"})]]),
        name="root",
        tools=[delegate],
        callback_handler=None,
        plugins=[StrandsContinuations()],
    )
    with pytest.raises(UnsupportedNesting, match=r"copy_context\(\)"):
        await strands_run(root, "go", keys=KEYS)
    assert ran == []


async def test_threads_that_copy_the_context_work_on_strands() -> None:
    """Threads submitted with contextvars.copy_context().run suspend and resume like tasks."""
    ran: list[str] = []

    def child(name: str) -> StrandsAgent:
        @tool
        @requires_approval
        def transfer(to: str) -> str:
            """Move money."""
            ran.append(to)
            return "sent"

        return StrandsAgent(
            model=ScriptedModel(name, [[("transfer", {"to": name})]]),
            name=name,
            tools=[transfer],
            callback_handler=None,
            plugins=[StrandsContinuations()],
        )

    def root() -> StrandsAgent:
        kids = [child("alpha"), child("beta")]

        @tool
        def delegate(task: str) -> str:
            """Delegate."""
            with ThreadPoolExecutor() as pool:
                runs = [pool.submit(contextvars.copy_context().run, k, task) for k in kids]
                return " / ".join(str(r.result()) for r in runs)

        return StrandsAgent(
            model=ScriptedModel("root", [[("delegate", {"task": "pay"})]]),
            name="root",
            tools=[delegate],
            callback_handler=None,
            plugins=[StrandsContinuations()],
        )

    cont = _suspended(await strands_run(root(), "go", keys=KEYS))
    assert sorted(r.agents[-1] for r in cont.requests) == ["alpha", "beta"]
    for request in cont.requests:
        cont = cont.approve(request.path)
    assert isinstance(await strands_resume(root(), cont, keys=KEYS), Completed)
    assert sorted(ran) == ["alpha", "beta"]


async def test_an_orphaned_task_cannot_start_a_sub_agent() -> None:
    """A sub-agent started by a task the body left behind is refused when it starts after the
    call ended: its gated tool never runs and nothing is recorded for it."""
    ran: list[str] = []
    child = payer("alpha", ran)
    left: list[asyncio.Task[Any]] = []

    async def delegate(ctx: RunContext[None], task: str) -> str:
        left.append(asyncio.create_task(child.run(task)))
        return "started in the background"

    outcome = await run(parent_of(delegate), "go", keys=KEYS)
    assert isinstance(outcome, Completed)
    await asyncio.wait(left)
    assert isinstance(left[0].exception(), UnsupportedNesting)
    assert ran == []


async def test_a_body_that_goes_on_past_suspended_sub_agents_still_suspends() -> None:
    """gather(return_exceptions=True) hands the body the suspensions as values; the call still
    suspends with both requests, and its return value is not taken as the call's result."""
    ran: list[str] = []
    kids = [payer("alpha", ran), payer("beta", ran)]
    returned: list[Any] = []

    async def delegate(ctx: RunContext[None], task: str) -> str:
        results = await asyncio.gather(*(k.run(task) for k in kids), return_exceptions=True)
        returned.append(results)
        return " / ".join(str(getattr(r, "output", r)) for r in results)

    cont = _suspended(await run(parent_of(delegate), "go", keys=KEYS))
    assert sorted(r.agents for r in cont.requests) == [("parent", "alpha"), ("parent", "beta")]
    for request in cont.requests:
        cont = cont.approve(request.path)
    done = await resume(parent_of(delegate), cont, keys=KEYS)
    assert isinstance(done, Completed)
    assert sorted(ran) == ["alpha", "beta"]
    assert "alpha done" in done.output and "beta done" in done.output


async def test_a_reentered_body_that_skips_a_suspended_run_is_refused() -> None:
    """A body that does not start again a sub-agent that suspended in it fails the resume with
    ReplayMismatch; the approved call never runs."""
    ran: list[str] = []
    child = payer("alpha", ran)
    entered: list[int] = []

    async def delegate(ctx: RunContext[None], task: str) -> str:
        entered.append(1)
        if len(entered) > 1:
            return "changed my mind"
        return (await child.run(task)).output

    cont = _suspended(await run(parent_of(delegate), "go", keys=KEYS))
    with pytest.raises(ReplayMismatch, match="alpha"):
        await resume(parent_of(delegate), cont.approve(cont.requests[0].path), keys=KEYS)
    assert ran == []


async def test_a_prompt_that_changes_on_reentry_is_refused_not_asked_again() -> None:
    """A body whose sub-agent prompt changes on every entry would ask for a decision forever;
    it fails with ReplayMismatch on the first resume instead, and nothing ran."""
    ran: list[str] = []
    child = payer("alpha", ran)
    entered: list[int] = []

    async def delegate(ctx: RunContext[None], task: str) -> str:
        entered.append(1)
        return (await child.run(f"{task} (attempt {len(entered)})")).output

    cont = _suspended(await run(parent_of(delegate), "go", keys=KEYS))
    with pytest.raises(ReplayMismatch, match="same prompts"):
        await resume(parent_of(delegate), cont.approve(cont.requests[0].path), keys=KEYS)
    assert ran == []


def _as_version_2(cont: Continuation) -> dict[str, Any]:
    """The document schema version 2 wrote for the same suspension (one child frame)."""

    def frame(data: dict[str, Any]) -> dict[str, Any]:
        pending = []
        for call in data["pending"]:
            call = dict(call)
            children = call.pop("children", [])
            if call["kind"] == "child":
                [only] = children
                call["child"] = frame(only["frame"])
                call["metadata"] = {"ordinal": 0, "journal": []}
            pending.append(call)
        return {**data, "pending": pending}

    data = cont.to_dict()
    signed = {k: v for k, v in data.items() if k not in ("signature", "decisions")}
    signed = {**signed, "schema": 2, "root": frame(data["root"])}
    kid, mac = KEYS.sign(canonical_json(signed))
    return {**signed, "signature": {"alg": "HMAC-SHA256", "kid": kid, "mac": mac}}


async def test_a_version_2_document_with_a_suspended_sub_agent_resumes() -> None:
    """A schema 2 document (one child frame, paths without run segments) loads, a decision
    recorded against its old path binds to the same call, and the resume runs it once."""
    ran: list[str] = []

    def build() -> Agent[None, str]:
        child = payer("alpha", ran)

        async def delegate(ctx: RunContext[None], task: str) -> str:
            return (await child.run(task, usage=ctx.usage)).output

        return parent_of(delegate)

    current = _suspended(await run(build(), "go", keys=KEYS))
    old = _as_version_2(current)
    [(new_path, _agents, _call)] = current.leaves()
    old_path = (new_path[0], new_path[2])
    legacy = Continuation.from_dict(old)
    legacy.verify(KEYS)
    [request] = legacy.requests
    assert request.agents == ("parent", "alpha") and request.path[0] == old_path[0]
    stored = current.approve(new_path, by="alice").decisions[0]
    moved = legacy.with_decisions([stored.model_copy(update={"path": old_path})])
    assert moved.decisions[0].path == request.path
    # Not through a store: a store re-serializes a document in the current schema, which its
    # version 2 signature does not cover (a store matter, the same for version 1 documents).
    done = await resume(build(), moved, keys=KEYS, single_use=False)
    assert isinstance(done, Completed) and ran == ["alpha"]


async def test_a_sub_agent_called_synchronously_from_an_async_tool_fails_instead_of_hanging(
    tmp_path: Any,
) -> None:
    """A durable run whose async tool blocks its event loop with a synchronous sub-agent call
    cannot checkpoint the tree; it fails with UnsupportedNesting within a lease, not hang."""
    from continuations_core.stores import SQLiteStore

    child = StrandsAgent(
        model=ScriptedModel("alpha", [[("look", {"who": "x"})]]),
        name="alpha",
        tools=[tool(lambda who: f"seen {who}", name="look", description="Look.")],
        callback_handler=None,
        plugins=[StrandsContinuations()],
    )

    @tool
    async def delegate(task: str) -> str:
        """Delegate, blocking the loop."""
        return str(child(task))

    root = StrandsAgent(
        model=ScriptedModel("root", [[("delegate", {"task": "go"})]]),
        name="root",
        tools=[delegate],
        callback_handler=None,
        plugins=[StrandsContinuations()],
    )
    async with SQLiteStore(tmp_path / "runs.db") as store:
        with pytest.raises(UnsupportedNesting, match="blocking it"):
            await asyncio.wait_for(
                strands_run(root, "go", keys=KEYS, store=store, lease_seconds=1.0), timeout=30
            )


async def test_a_drifted_sub_agent_among_concurrent_ones_fails_the_resume_on_strands() -> None:
    """When one of two concurrent Strands sub-agents no longer matches its frame, the resume
    fails with AgentDrift (its sibling is not waited for forever) and no gated body runs."""
    from continuations_core import AgentDrift

    ran: list[str] = []

    def child(name: str, param: str) -> StrandsAgent:
        def transfer(**kwargs: Any) -> str:
            ran.append(name)
            return "sent"

        transfer.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [inspect.Parameter(param, inspect.Parameter.KEYWORD_ONLY, annotation=str)],
            return_annotation=str,
        )
        transfer.__name__, transfer.__doc__ = "transfer", "Move money."
        transfer.__annotations__ = {param: str, "return": str}
        return StrandsAgent(
            model=ScriptedModel(name, [[("transfer", {param: name})]]),
            name=name,
            tools=[tool(requires_approval(transfer))],
            callback_handler=None,
            plugins=[StrandsContinuations()],
        )

    def root(beta_param: str) -> StrandsAgent:
        kids = [child("alpha", "to"), child("beta", beta_param)]

        @tool
        async def delegate(task: str) -> str:
            """Delegate to both."""
            results = await asyncio.gather(
                *(k.invoke_async(f"{task} {i}") for i, k in enumerate(kids))
            )
            return " / ".join(str(r) for r in results)

        return StrandsAgent(
            model=ScriptedModel("root", [[("delegate", {"task": "pay"})]]),
            name="root",
            tools=[delegate],
            callback_handler=None,
            plugins=[StrandsContinuations()],
        )

    cont = _suspended(await strands_run(root("to"), "go", keys=KEYS))
    for request in cont.requests:
        cont = cont.approve(request.path)
    with pytest.raises(AgentDrift, match="beta"):
        await asyncio.wait_for(strands_resume(root("account"), cont, keys=KEYS), timeout=30)
    assert "beta" not in ran
