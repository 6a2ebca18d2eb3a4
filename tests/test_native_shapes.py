"""What the frameworks' own consumers see: denials in their native shape, and a replayed Strands
sub-agent that returns the same AgentResult it returned when it ran."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator
from typing import Any

from pydantic import BaseModel
from pydantic_ai import Agent, RunContext
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
)
from pydantic_ai.models.function import AgentInfo, FunctionModel
from strands import Agent as StrandsAgent
from strands import tool

from continuations_core import Completed, Continuation, Suspended, requires_approval
from continuations_core.testing.conformance import KEYS
from continuations_pydantic_ai import Continuations, resume, run
from continuations_strands import Continuations as StrandsContinuations
from continuations_strands import resume as strands_resume
from continuations_strands import run as strands_run
from continuations_strands.testing import ScriptedModel

DENIAL = "Over the daily limit"


def _loaded(outcome: Any) -> Continuation:
    assert isinstance(outcome, Suspended), outcome
    return Continuation.from_json(outcome.continuation.to_json())


def _pai_payer(returns: list[ToolReturnPart], ran: list[int]) -> Agent[None, str]:
    def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        if not any(isinstance(m, ModelResponse) for m in messages):
            return ModelResponse(parts=[ToolCallPart("transfer", {"amount": 5000}, "c1")])
        returns.extend(
            p for m in messages if isinstance(m, ModelRequest) for p in m.parts
            if isinstance(p, ToolReturnPart)
        )  # fmt: skip
        return ModelResponse(parts=[TextPart("done")])

    agent: Agent[None, str] = Agent(
        FunctionModel(respond), name="payer", capabilities=[Continuations()]
    )

    @agent.tool_plain
    @requires_approval
    def transfer(amount: int) -> str:
        """Move money."""
        ran.append(amount)
        return "sent"

    return agent


async def test_pydantic_ai_denial_is_its_own_denied_tool_return() -> None:
    """A denied call reaches the model and the history as ToolReturnPart(outcome='denied')."""
    returns: list[ToolReturnPart] = []
    ran: list[int] = []
    cont = _loaded(await run(_pai_payer(returns, ran), "pay", keys=KEYS))
    cont = cont.deny(cont.requests[0].path, DENIAL)
    done = await resume(_pai_payer(returns, ran), cont, keys=KEYS)
    assert isinstance(done, Completed) and ran == []
    [denied] = returns
    assert (denied.tool_name, denied.tool_call_id) == ("transfer", "c1")
    assert denied.outcome == "denied" and denied.content == DENIAL


async def test_pydantic_ai_denial_inside_a_sub_agent_is_denied_too() -> None:
    """Below a delegating call the denial has the same native shape."""
    returns: list[ToolReturnPart] = []
    ran: list[int] = []

    def build() -> Agent[None, str]:
        child = _pai_payer(returns, ran)

        def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
            if not any(isinstance(m, ModelResponse) for m in messages):
                return ModelResponse(parts=[ToolCallPart("delegate", {"task": "pay"}, "p1")])
            return ModelResponse(parts=[TextPart("parent done")])

        parent: Agent[None, str] = Agent(
            FunctionModel(respond), name="parent", capabilities=[Continuations()]
        )

        @parent.tool
        async def delegate(ctx: RunContext[None], task: str) -> str:
            """Delegate."""
            return (await child.run(task, usage=ctx.usage)).output

        return parent

    cont = _loaded(await run(build(), "go", keys=KEYS))
    cont = cont.deny(cont.requests[0].path, DENIAL)
    assert isinstance(await resume(build(), cont, keys=KEYS), Completed)
    assert [(r.outcome, r.content) for r in returns] == [("denied", DENIAL)] and ran == []


class _Recording(ScriptedModel):
    """A scripted Strands model that keeps every message list it was called with."""

    def __init__(self, *args: Any, seen: list[Any], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seen = seen

    async def stream(
        self, messages: Any, tool_specs: Any = None, system_prompt: Any = None, **kw: Any
    ) -> AsyncGenerator[Any, None]:
        self.seen.append(json.loads(json.dumps(messages, default=str)))
        async for event in super().stream(messages, tool_specs, system_prompt, **kw):
            yield event


async def test_strands_denial_is_its_own_cancelled_tool_result() -> None:
    """A denied call reaches the model as Strands' cancel-tool result: an error toolResult
    carrying the message, for that very toolUseId."""
    seen: list[Any] = []
    ran: list[int] = []

    def build() -> StrandsAgent:
        @tool
        @requires_approval
        def transfer(amount: int) -> str:
            """Move money."""
            ran.append(amount)
            return "sent"

        model = _Recording("payer", [[("transfer", {"amount": 5000}, "u1")]], seen=seen)
        return StrandsAgent(
            model=model,
            name="payer",
            tools=[transfer],
            callback_handler=None,
            plugins=[StrandsContinuations()],
        )

    cont = _loaded(await strands_run(build(), "pay", keys=KEYS))
    cont = cont.deny(cont.requests[0].path, DENIAL)
    assert isinstance(await strands_resume(build(), cont, keys=KEYS), Completed)
    assert ran == []
    results = [
        block["toolResult"] for m in seen[-1] for block in m["content"] if "toolResult" in block
    ]
    assert results == [{"toolUseId": "u1", "status": "error", "content": [{"text": DENIAL}]}]


class Verdict(BaseModel):
    """A judge's structured answer."""

    approved: bool
    reason: str


class _Judge(ScriptedModel):
    """Looks something up, then answers through the structured output tool."""

    async def stream(
        self, messages: Any, tool_specs: Any = None, system_prompt: Any = None, **kw: Any
    ) -> AsyncGenerator[Any, None]:
        turn = sum(1 for m in messages if m["role"] == "assistant")
        if self.on_call is not None:
            self.on_call(turn, [])
        if turn == 0:
            self.on_call, on_call = None, self.on_call
            async for event in super().stream(messages, tool_specs, system_prompt, **kw):
                yield event
            self.on_call = on_call
            return
        await asyncio.sleep(0)
        answer = {"approved": True, "reason": "policy ok"}
        yield {"messageStart": {"role": "assistant"}}
        yield {"contentBlockStart": {"start": {"toolUse": {"name": "Verdict", "toolUseId": "v1"}}}}
        yield {"contentBlockDelta": {"delta": {"toolUse": {"input": json.dumps(answer)}}}}
        yield {"contentBlockStop": {}}
        yield {"messageStop": {"stopReason": "tool_use"}}
        usage = {"inputTokens": 3, "outputTokens": 2, "totalTokens": 5}
        yield {"metadata": {"usage": usage, "metrics": {"latencyMs": 0}}}


async def test_a_replayed_strands_sub_agent_returns_the_same_agent_result() -> None:
    """A completed sub-agent replayed on re-entry gives the body the AgentResult it got when it
    ran (stop reason, message, structured output) and the agent the same history, without a
    model call or a tool run."""
    received: list[dict[str, Any]] = []
    judge_calls: list[int] = []
    lookups: list[str] = []
    transfers: list[int] = []
    judges: list[StrandsAgent] = []

    def build() -> StrandsAgent:
        @tool
        def lookup(who: str) -> str:
            """Look someone up."""
            lookups.append(who)
            return f"{who} is known"

        judge = StrandsAgent(
            model=_Judge("judge", [[("lookup", {"who": "bob"})]], on_call=lambda t, r: judge_calls.append(t)),
            name="judge",
            tools=[lookup],
            callback_handler=None,
            plugins=[StrandsContinuations()],
        )  # fmt: skip
        judges.append(judge)

        @tool
        @requires_approval
        def transfer(amount: int) -> str:
            """Move money."""
            transfers.append(amount)
            return "sent"

        payer = StrandsAgent(
            model=ScriptedModel("payer", [[("transfer", {"amount": 700})]], latency=0.05),
            name="payer",
            tools=[transfer],
            callback_handler=None,
            plugins=[StrandsContinuations()],
        )

        @tool
        async def review_and_pay(task: str) -> str:
            """Review, then pay."""
            verdict, paid = await asyncio.gather(
                judge.invoke_async(task, structured_output_model=Verdict), payer.invoke_async(task)
            )
            received.append(
                {
                    "stop_reason": verdict.stop_reason,
                    "structured_output": verdict.structured_output,
                    "message": verdict.message["content"],
                }
            )
            return f"{verdict.structured_output} / {paid}"

        return StrandsAgent(
            model=ScriptedModel("root", [[("review_and_pay", {"task": "pay bob"})]]),
            name="root",
            tools=[review_and_pay],
            callback_handler=None,
            plugins=[StrandsContinuations()],
        )

    cont = _loaded(await strands_run(build(), "go", keys=KEYS))
    [request] = cont.requests
    assert request.agents == ("root", "payer") and received == []
    history = [(m["role"], m["content"]) for m in judges[0].messages]
    calls_before = list(judge_calls)
    done = await strands_resume(build(), cont.approve(request.path), keys=KEYS)
    assert isinstance(done, Completed) and transfers == [700]
    assert judge_calls == calls_before == [0, 1], "the replayed judge called its model"
    assert lookups == ["bob"], "the replayed judge ran its tool again"
    [replayed] = received
    assert replayed["stop_reason"] == "tool_use"
    assert replayed["structured_output"] == Verdict(approved=True, reason="policy ok")
    assert replayed["message"] == [
        {"toolUse": {"toolUseId": "v1", "name": "Verdict", "input": json.loads('{"approved": true, "reason": "policy ok"}')}}
    ]  # fmt: skip
    assert [(m["role"], m["content"]) for m in judges[1].messages] == history
