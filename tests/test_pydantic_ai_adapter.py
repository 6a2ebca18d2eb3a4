"""Pydantic AI specifics: how tools are marked, and guards around Pydantic AI's own resume."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic_ai import Agent, RunContext
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.tools import Tool

from continuations_core import (
    Continuation,
    Keyring,
    ResumeError,
    StaleContinuation,
    Suspended,
    requires_approval,
)
from continuations_core._protocol import seal
from continuations_pydantic_ai import Completed, Continuations, resume, run, run_sync

KEYS = Keyring.generate()


def model_calling(tool: str, args: dict[str, Any]) -> FunctionModel:
    def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        if sum(isinstance(m, ModelResponse) for m in messages) == 0:
            return ModelResponse(parts=[ToolCallPart(tool, args, tool_call_id="c1")])
        return ModelResponse(parts=[TextPart("done")])

    return FunctionModel(respond)


def build(style: str, ran: list[str]) -> Agent[None, str]:
    def pay(to: str) -> str:
        """Pay someone."""
        ran.append(to)
        return f"paid {to}"

    model = model_calling("pay_ctx" if style == "tool-with-ctx" else "pay", {"to": "bob"})
    if style == "tools-list":
        return Agent(model, tools=[requires_approval(pay)], capabilities=[Continuations()])
    if style == "native-flag":
        return Agent(model, tools=[Tool(pay, requires_approval=True)])
    agent: Agent[None, str] = Agent(model)
    if style == "bare-below":
        agent.tool_plain(requires_approval(pay))
    elif style == "configured-above":
        requires_approval(reason="why")(agent.tool_plain(pay))
    elif style == "tool-with-ctx":

        @agent.tool
        @requires_approval(reason="why")
        def pay_ctx(ctx: RunContext[None], to: str) -> str:
            """Pay someone."""
            ran.append(to)
            return f"paid {to}"

    return agent


@pytest.mark.parametrize(
    "style",
    ["tools-list", "native-flag", "bare-below", "configured-above", "tool-with-ctx"],
)
async def test_every_marking_style_gates_the_tool(style: str) -> None:
    """Bare and configured markers, above or below the tool decorator, and Agent(tools=[...]) all gate."""
    ran: list[str] = []
    agent = build(style, ran)
    outcome = await run(agent, "pay bob", keys=KEYS)
    assert isinstance(outcome, Suspended), outcome
    assert ran == []
    cont = Continuation.from_json(outcome.continuation.to_json())
    done = await resume(agent, cont.approve(cont.requests[0].path), keys=KEYS)
    assert isinstance(done, Completed) and ran == ["bob"]


def test_run_sync_and_unmarked_tools() -> None:
    """run_sync completes a run whose tools are not marked, without any capability configured."""
    ran: list[str] = []

    agent: Agent[None, str] = Agent(model_calling("pay", {"to": "eve"}))

    @agent.tool_plain
    def pay(to: str) -> str:
        ran.append(to)
        return "ok"

    out = run_sync(agent, "pay eve")
    assert isinstance(out, Completed) and out.output == "done" and ran == ["eve"]


async def test_resume_refuses_pending_calls_without_their_model_response() -> None:
    """A frame with pending calls whose history ends in a request is refused, never answered 'interrupted'."""
    ran: list[str] = []
    agent = build("tools-list", ran)
    outcome = await run(agent, "pay bob", keys=KEYS)
    assert isinstance(outcome, Suspended)
    frame = outcome.continuation.root
    messages = frame.state["messages"][:-1]  # drop the model response that made the calls
    bad = seal(
        frame.model_copy(update={"state": {**frame.state, "messages": messages}}),
        run_id="r",
        seq=1,
        keys=KEYS,
    )
    with pytest.raises(ResumeError):
        await resume(agent, bad.approve(bad.requests[0].path), keys=KEYS)
    assert ran == []


async def test_stale_copy_is_detected_without_a_store() -> None:
    """A store-less caller detects an already-resumed copy from run_id and seq (G5)."""
    ran: list[str] = []
    agent = build("tools-list", ran)
    outcome = await run(agent, "pay bob", keys=KEYS)
    assert isinstance(outcome, Suspended)
    cont = outcome.continuation
    cont.check_fresh(0)
    with pytest.raises(StaleContinuation):
        cont.check_fresh(cont.seq)


async def test_a_run_started_directly_cannot_suspend_silently() -> None:
    """agent.run() on a continuation-aware agent that must suspend raises a clear error, runs nothing."""
    from continuations_core import ConfigurationError

    ran: list[str] = []
    agent = build("tools-list", ran)
    with pytest.raises(ConfigurationError, match=r"continuations_pydantic_ai\.run"):
        await agent.run("pay bob")
    assert ran == []
