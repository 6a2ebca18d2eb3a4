"""Wire level: a nested suspension and resume over real HTTP with Strands' OpenAIModel.

Both agents stream from a local fake OpenAI-compatible server on 127.0.0.1, so Strands' real
provider shapes (streamed tool-call args as JSON strings, provider call ids) go through the
continuation.
"""

from __future__ import annotations

import json
from typing import Any

from strands import Agent, tool
from strands.models.openai import OpenAIModel

from continuations_core import Completed, Continuation, Keyring, Suspended, requires_approval
from continuations_core.testing.fake_openai import FakeOpenAIServer, Reply, ToolCall
from continuations_strands import Continuations, resume, run

KEYS = Keyring.generate()
PARENT_CALL = ToolCall(id="call_parent_9", name="delegate", arguments={"task": "pay bob"})
CHILD_CALL = ToolCall(id="call_child_3", name="authorize", arguments={"who": "bob", "amount": 5000})


def responder(body: dict[str, Any]) -> Reply:
    tools = {t["function"]["name"] for t in body.get("tools", [])}
    answered = [m for m in body["messages"] if m["role"] == "tool"]
    who = "parent" if "delegate" in tools else "child"
    if answered:
        content = answered[0]["content"]
        text = content if isinstance(content, str) else " ".join(c.get("text", "") for c in content)
        return Reply.say(f"{who} done: {text}")
    return Reply.call(PARENT_CALL if who == "parent" else CHILD_CALL)


def build(server: FakeOpenAIServer, ran: list[dict[str, Any]]) -> Agent:
    def model() -> OpenAIModel:
        return OpenAIModel(
            client_args={"base_url": server.base_url, "api_key": "test"}, model_id="fake"
        )

    @tool
    @requires_approval(reason="Authorizes an account")
    def authorize(who: str, amount: int) -> str:
        """Authorize a payment account."""
        ran.append({"who": who, "amount": amount})
        return f"authorized {who} for {amount}"

    child = Agent(
        model=model(),
        name="accounts",
        tools=[authorize],
        callback_handler=None,
        plugins=[Continuations()],
    )

    @tool
    async def delegate(task: str) -> str:
        """Hand a task to the accounts agent."""
        return str(await child.invoke_async(task)).strip()

    return Agent(
        model=model(), name="hr", tools=[delegate], callback_handler=None, plugins=[Continuations()]
    )


async def test_nested_suspend_and_resume_over_http() -> None:
    """A nested approval suspends and resumes over streamed HTTP; call ids and args survive."""
    ran: list[dict[str, Any]] = []
    with FakeOpenAIServer(responder) as server:
        outcome = await run(build(server, ran), "onboard bob", keys=KEYS)
        assert isinstance(outcome, Suspended)
        cont = Continuation.from_json(outcome.continuation.to_json())
        [req] = cont.requests
        [run_ref] = cont.root.pending[0].children
        assert req.path == (
            "delegate:call_parent_9@0",
            f"accounts#{run_ref.prompt[:12]}.0",
            "authorize:call_child_3@0",
        )
        assert req.agents == ("hr", "accounts") and req.args == {"who": "bob", "amount": 5000}
        assert ran == []
        done = await resume(build(server, ran), cont.approve(req.path), keys=KEYS)

    assert isinstance(done, Completed)
    assert ran == [{"who": "bob", "amount": 5000}]
    assert done.output == "parent done: child done: authorized bob for 5000"
    assert server.errors == []
    assert len(server.requests) == 4 and all(r.get("stream") for r in server.requests)
    child_followup = server.requests[2]
    assistant = next(m for m in child_followup["messages"] if m["role"] == "assistant")
    assert assistant["tool_calls"][0]["id"] == "call_child_3"
    assert json.loads(assistant["tool_calls"][0]["function"]["arguments"]) == req.args
    tool_msg = next(m for m in child_followup["messages"] if m["role"] == "tool")
    assert tool_msg["tool_call_id"] == "call_child_3"
    parent_followup = server.requests[3]
    assert (
        next(m for m in parent_followup["messages"] if m["role"] == "tool")["tool_call_id"]
        == "call_parent_9"
    )
