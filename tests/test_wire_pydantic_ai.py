"""Wire level: a nested suspension and resume over real HTTP with Pydantic AI's OpenAIChatModel.

Both agents talk to a local fake OpenAI-compatible server on 127.0.0.1, so the provider's real
message shapes (tool-call args as JSON strings, provider call ids) go through the continuation.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic_ai import Agent, RunContext
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider

from continuations_core import Completed, Continuation, Keyring, Suspended, requires_approval
from continuations_core._scope import prompt_digest
from continuations_core.testing.fake_openai import FakeOpenAIServer, Reply, ToolCall
from continuations_pydantic_ai import Continuations, resume, run

KEYS = Keyring.generate()
PARENT_CALL = ToolCall(id="call_parent_77", name="delegate", arguments={"task": "pay bob"})
CHILD_CALL = ToolCall(
    id="call_child_42", name="authorize", arguments={"who": "bob", "amount": 5000}
)


def responder(body: dict[str, Any]) -> Reply:
    tools = {t["function"]["name"] for t in body.get("tools", [])}
    answered = [m for m in body["messages"] if m["role"] == "tool"]
    if "delegate" in tools:
        return (
            Reply.say(f"parent done: {answered[0]['content']}")
            if answered
            else Reply.call(PARENT_CALL)
        )
    return (
        Reply.say(f"child done: {answered[0]['content']}") if answered else Reply.call(CHILD_CALL)
    )


def build(
    server: FakeOpenAIServer, provider: OpenAIProvider, ran: list[dict[str, Any]]
) -> Agent[None, str]:
    child = Agent(
        OpenAIChatModel("gpt-4o", provider=provider),
        name="accounts",
        capabilities=[Continuations()],
    )

    @child.tool_plain
    @requires_approval(reason="Authorizes an account")
    def authorize(who: str, amount: int) -> str:
        """Authorize a payment account."""
        ran.append({"who": who, "amount": amount})
        return f"authorized {who} for {amount}"

    parent = Agent(
        OpenAIChatModel("gpt-4o", provider=provider), name="hr", capabilities=[Continuations()]
    )

    @parent.tool
    async def delegate(ctx: RunContext[None], task: str) -> str:
        """Hand a task to the accounts agent."""
        return (await child.run(task, usage=ctx.usage)).output

    return parent


async def test_nested_suspend_and_resume_over_http() -> None:
    """A nested approval suspends and resumes over HTTP; args arrive as JSON strings."""
    ran: list[dict[str, Any]] = []
    with FakeOpenAIServer(responder) as server:
        async with OpenAIProvider(base_url=server.base_url, api_key="test") as provider:
            outcome = await run(build(server, provider, ran), "onboard bob", keys=KEYS)
        assert isinstance(outcome, Suspended)
        text = outcome.continuation.to_json()
        del outcome

        cont = Continuation.from_json(text)
        [req] = cont.requests
        [run_ref] = cont.root.pending[0].children
        assert run_ref.prompt == prompt_digest("pay bob")
        assert req.path == (
            "delegate:call_parent_77@0",
            f"accounts#{run_ref.prompt[:12]}.0",
            "authorize:call_child_42@0",
        )
        assert req.agents == ("hr", "accounts")
        assert req.args == {"who": "bob", "amount": 5000}
        child_state = run_ref.frame
        stored_call = child_state.state["messages"][-1]["parts"][0]
        assert isinstance(stored_call["args"], str) and json.loads(stored_call["args"]) == req.args
        assert ran == []

        async with OpenAIProvider(base_url=server.base_url, api_key="test") as provider:
            done = await resume(build(server, provider, ran), cont.approve(req.path), keys=KEYS)

    assert isinstance(done, Completed)
    assert ran == [{"who": "bob", "amount": 5000}]
    assert done.output == "parent done: child done: authorized bob for 5000"
    assert server.errors == []
    assert len(server.requests) == 4
    child_followup = server.requests[2]
    tool_msg = next(m for m in child_followup["messages"] if m["role"] == "tool")
    assert tool_msg["tool_call_id"] == "call_child_42"
    parent_followup = server.requests[3]
    assistant = next(m for m in parent_followup["messages"] if m["role"] == "assistant")
    assert assistant["tool_calls"][0]["id"] == "call_parent_77"
    assert json.loads(assistant["tool_calls"][0]["function"]["arguments"]) == {"task": "pay bob"}
