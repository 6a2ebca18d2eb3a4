"""Journaled steps: code before a sub-agent call in a re-entered body runs once (in process)."""

from __future__ import annotations

from dataclasses import dataclass
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
    StepInterrupted,
    Suspended,
    idempotent,
    requires_approval,
    step,
)
from continuations_core._durable import CHECKPOINTER, Checkpointer
from continuations_core._protocol import CURRENT_CALL
from continuations_core._scope import CallScope
from continuations_core.stores import MemoryStore
from continuations_core.testing.conformance import KEYS
from continuations_pydantic_ai import Continuations, resume, run
from continuations_strands import Continuations as StrandsContinuations
from continuations_strands import resume as strands_resume
from continuations_strands import run as strands_run
from continuations_strands.testing import ScriptedModel


@dataclass
class Room:
    """A reserved room (a step's typed result)."""

    code: str
    floor: int


def _child(ran: list[int]) -> Agent[None, str]:
    """Two turns, each a gated transfer: the delegating call suspends twice."""

    def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        n = sum(isinstance(m, ModelResponse) for m in messages)
        if n < 2:
            return ModelResponse(parts=[ToolCallPart("transfer", {"amount": 100 + n}, f"t{n}")])
        return ModelResponse(parts=[TextPart("paid twice")])

    child: Agent[None, str] = Agent(
        FunctionModel(respond), name="payer", capabilities=[Continuations()]
    )

    @child.tool_plain
    @requires_approval
    def transfer(amount: int) -> str:
        """Move money."""
        ran.append(amount)
        return "sent"

    return child


def _parent(effects: list[str], ran: list[int], seen: list[Any]) -> Agent[None, str]:
    child = _child(ran)

    async def reserve(floor: int) -> Room:
        effects.append(f"reserve {floor}")
        return Room(code=f"R{len(effects)}", floor=floor)

    @step
    def notify(who: str) -> str:
        effects.append(f"notify {who}")
        return f"told {who}"

    def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        if not any(isinstance(m, ModelResponse) for m in messages):
            return ModelResponse(parts=[ToolCallPart("onboard", {"who": "alice"}, "p1")])
        return ModelResponse(parts=[TextPart("onboarded")])

    parent: Agent[None, str] = Agent(
        FunctionModel(respond), name="hr", capabilities=[Continuations()]
    )

    @parent.tool
    async def onboard(ctx: RunContext[None], who: str) -> str:
        """Reserve a room, tell the manager, then have accounts paid."""
        room = await step("reserve", reserve, 3)
        told = notify(who)
        seen.append((room, told))
        result = await child.run(f"pay for {room.code}", usage=ctx.usage)
        return f"{room.code}: {result.output}"

    return parent


async def test_a_step_before_a_sub_agent_runs_once_across_two_resumes() -> None:
    """A body re-entered twice runs its steps once; every entry gets the recorded values, typed
    by the function's return annotation, and the sub-agent prompt built from them is stable."""
    effects: list[str] = []
    ran: list[int] = []
    seen: list[Any] = []
    outcome = await run(_parent(effects, ran, seen), "go", keys=KEYS)
    for _ in range(2):
        assert isinstance(outcome, Suspended)
        cont = Continuation.from_json(outcome.continuation.to_json())
        [request] = cont.requests
        outcome = await resume(_parent(effects, ran, seen), cont.approve(request.path), keys=KEYS)
    assert isinstance(outcome, Completed) and outcome.output == "onboarded"
    assert effects == ["reserve 3", "notify alice"]
    assert ran == [100, 101]
    assert seen == [(Room("R1", 3), "told alice")] * 3


async def test_steps_are_recorded_in_the_signed_pending_call() -> None:
    """The recorded step results travel in the suspended call's metadata, inside the signature."""
    outcome = await run(_parent([], [], []), "go", keys=KEYS)
    assert isinstance(outcome, Suspended)
    [call] = outcome.continuation.root.pending
    assert call.metadata["steps"] == {
        "reserve#0": {"value": {"code": "R1", "floor": 3}},
        "notify#0": {"value": "told alice"},
    }


async def test_a_sync_step_in_a_strands_sync_body_runs_once() -> None:
    """A @step on a plain function, in a Strands sync tool body, runs once across a resume."""
    effects: list[str] = []
    ran: list[int] = []

    @step("book desk")
    def book(who: str) -> dict[str, str]:
        effects.append(who)
        return {"desk": f"D-{who}"}

    def build() -> StrandsAgent:
        @tool
        @requires_approval
        def transfer(amount: int) -> str:
            """Move money."""
            ran.append(amount)
            return "sent"

        child = StrandsAgent(
            model=ScriptedModel("payer", [[("transfer", {"amount": 5})]]),
            name="payer",
            tools=[transfer],
            callback_handler=None,
            plugins=[StrandsContinuations()],
        )

        @tool
        def onboard(who: str) -> str:
            """Book a desk, then have accounts paid."""
            desk = book(who)["desk"]
            return str(child(f"pay for {desk}"))

        return StrandsAgent(
            model=ScriptedModel("hr", [[("onboard", {"who": "alice"})]]),
            name="hr",
            tools=[onboard],
            callback_handler=None,
            plugins=[StrandsContinuations()],
        )

    outcome = await strands_run(build(), "go", keys=KEYS)
    assert isinstance(outcome, Suspended)
    cont = Continuation.from_json(outcome.continuation.to_json())
    done = await strands_resume(build(), cont.approve(cont.requests[0].path), keys=KEYS)
    assert isinstance(done, Completed)
    assert effects == ["alice"] and ran == [5]


async def test_outside_a_run_a_step_just_calls_the_function() -> None:
    """With no tool call around it, a step is a plain call."""
    calls: list[int] = []

    @step
    async def bump(n: int) -> int:
        calls.append(n)
        return n + 1

    assert await bump(1) == 2 and await step("bump", bump, 2) == 3
    assert calls == [1, 2]


async def test_a_non_idempotent_step_that_started_before_a_crash_is_not_run_again() -> None:
    """A step marked @idempotent(False) whose start is journaled without a result raises
    StepInterrupted instead of running again."""
    effects: list[str] = []

    @idempotent(False)
    async def charge(amount: int) -> str:
        effects.append("charged")
        return "ok"

    store = MemoryStore()
    cp = Checkpointer(store, "run-1", "me", None)
    scope = CallScope(path=("pay:c1@0",), agents=("hr",))
    await cp.tool_started(("pay:c1@0", "step:charge#0"), "step:charge")
    cp_token, scope_token = CHECKPOINTER.set(cp), CURRENT_CALL.set(scope)
    try:
        with pytest.raises(StepInterrupted, match="charge#0"):
            await step("charge", charge, 5)
    finally:
        CURRENT_CALL.reset(scope_token)
        CHECKPOINTER.reset(cp_token)
    assert effects == []
