"""The ``@requires_approval`` guard: the same tool on both frameworks, a body that refuses
to run outside a gate, and the same ``when=`` input everywhere."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import pytest
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart
from pydantic_ai.models.function import AgentInfo, FunctionModel
from strands import Agent as StrandsAgent
from strands import tool

from continuations_core import Completed, Continuation, Keyring, UngatedCall, requires_approval
from continuations_core.testing import call_approved
from continuations_pydantic_ai import Continuations as PydanticContinuations
from continuations_pydantic_ai import run as pydantic_run
from continuations_strands import Continuations as StrandsContinuations
from continuations_strands import resume as strands_resume
from continuations_strands import run as strands_run
from continuations_strands.testing import ScriptedModel

KEYS = Keyring.generate()


def transfer(to: str, amount: int) -> str:
    """Move money.

    Args:
        to: Who receives it.
        amount: How much.
    """
    return f"sent {amount} to {to}"


async def atransfer(to: str, amount: int) -> str:
    """Move money, asynchronously."""
    return f"sent {amount} to {to}"


def test_the_guard_keeps_name_signature_docstring_and_sync_nature() -> None:
    """A marked function looks the same to introspection: name, signature, doc, sync or async."""
    marked, amarked = requires_approval(transfer), requires_approval(reason="r")(atransfer)
    assert marked.__name__ == "transfer" and marked.__doc__ == transfer.__doc__
    assert inspect.signature(marked) == inspect.signature(transfer)
    assert not inspect.iscoroutinefunction(marked) and inspect.iscoroutinefunction(amarked)
    assert inspect.signature(amarked) == inspect.signature(atransfer)


def test_both_frameworks_build_the_same_tool_schema_from_a_marked_function() -> None:
    """Pydantic AI and Strands build identical schemas for the marked and the plain function."""
    plain: Agent[None, str] = Agent("test", tools=[transfer])
    marked: Agent[None, str] = Agent("test", tools=[requires_approval(transfer)])

    def schema(agent: Agent[None, str]) -> Any:
        [toolset] = [ts for ts in agent.toolsets if hasattr(ts, "tools")]
        return toolset.tools["transfer"].function_schema.json_schema  # type: ignore[attr-defined]

    assert schema(marked) == schema(plain)
    assert tool(requires_approval(transfer)).tool_spec == tool(transfer).tool_spec


def test_a_direct_call_is_refused_and_the_test_helper_admits_one_call() -> None:
    """Direct calls raise UngatedCall; call_approved lets a unit test call the body once."""
    ran: list[int] = []

    @requires_approval
    def pay(amount: int) -> str:
        ran.append(amount)
        return "paid"

    @requires_approval
    async def apay(amount: int) -> str:
        ran.append(amount)
        return "paid"

    with pytest.raises(UngatedCall, match="pay"):
        pay(1)
    with pytest.raises(UngatedCall):
        asyncio.run(apay(2))
    assert ran == []
    assert call_approved(pay, 3) == "paid"
    assert asyncio.run(call_approved(apay, 4)) == "paid"
    assert ran == [3, 4]
    with pytest.raises(UngatedCall):  # the pass was for one call only
        pay(5)
    with pytest.raises(TypeError):
        call_approved(transfer, "bob", 1)  # not marked
    assert ran == [3, 4]


def _pydantic_model(args: dict[str, Any], tool_name: str = "transfer") -> FunctionModel:
    def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        if not any(isinstance(m, ModelResponse) for m in messages):
            return ModelResponse(parts=[ToolCallPart(tool_name, args, tool_call_id="c1")])
        return ModelResponse(parts=[TextPart("done")])

    return FunctionModel(respond)


async def test_when_gets_validated_args_of_the_same_type_on_both_frameworks() -> None:
    """The predicate sees a dict of validated args: the model's "7000" arrives as int 7000."""
    seen: dict[str, list[dict[str, Any]]] = {"pydantic-ai": [], "strands": []}

    def gate(framework: str) -> Any:
        def when(args: Any) -> bool:
            seen[framework].append(dict(args))
            return bool(args["amount"] > 1000)

        return requires_approval(when=when)(transfer)

    sent = {"to": "bob", "amount": "7000"}
    agent: Agent[None, str] = Agent(
        _pydantic_model(sent), tools=[gate("pydantic-ai")], capabilities=[PydanticContinuations()]
    )
    assert not isinstance(await pydantic_run(agent, "go", keys=KEYS), Completed)

    model = ScriptedModel("s", [[("transfer", sent)]])
    sagent = StrandsAgent(
        model=model,
        tools=[tool(gate("strands"))],
        callback_handler=None,
        plugins=[StrandsContinuations()],
    )
    assert not isinstance(await strands_run(sagent, "go", keys=KEYS), Completed)
    assert seen["pydantic-ai"] == seen["strands"] == [{"to": "bob", "amount": 7000}]
    assert all(type(a["amount"]) is int for a in seen["pydantic-ai"] + seen["strands"])


async def test_a_when_predicate_that_raises_holds_the_call() -> None:
    """When the predicate itself fails, a person decides: the call is held, not run."""
    ran: list[str] = []

    def broken(args: Any) -> bool:
        raise KeyError("no such field")

    @requires_approval(when=broken)
    def pay(to: str, amount: int) -> str:
        ran.append(to)
        return "paid"

    agent: Agent[None, str] = Agent(
        _pydantic_model({"to": "bob", "amount": 1}, "pay"), tools=[pay],
        capabilities=[PydanticContinuations()],
    )  # fmt: skip
    outcome = await pydantic_run(agent, "go", keys=KEYS)
    assert not isinstance(outcome, Completed) and ran == []


class _PromptModel(ScriptedModel):
    """Pays what the last prompt asks for ("pay <who> <amount>"), then says done: one turn per
    run, however long the agent's conversation already is."""

    def __init__(self) -> None:
        super().__init__("svc", [])

    async def stream(
        self, messages: Any, tool_specs: Any = None, system_prompt: Any = None, **kw: Any
    ):  # type: ignore[override]
        last = messages[-1]
        text = next((b["text"] for b in last["content"] if "text" in b), "")
        self.turns = [[("pay", {"to": text.split()[1], "amount": int(text.split()[2])},
                        f"c{len(messages)}")]] if text.startswith("pay ") else []  # fmt: skip
        async for event in super().stream([], tool_specs, system_prompt, **kw):
            yield event


async def test_a_module_level_strands_agent_serves_runs_after_one_suspends() -> None:
    """Three runs in a row on one Strands agent object, the second suspending, all work."""
    ran: list[str] = []

    @tool
    @requires_approval(when=lambda a: a["amount"] > 1000)
    def pay(to: str, amount: int) -> str:
        """Pay."""
        ran.append(f"{to}:{amount}")
        return "paid"

    agent = StrandsAgent(
        model=_PromptModel(), name="svc", tools=[pay], callback_handler=None,
        plugins=[StrandsContinuations()],
    )  # fmt: skip
    first = await strands_run(agent, "pay a 5", keys=KEYS)
    assert isinstance(first, Completed) and ran == ["a:5"]
    second = await strands_run(agent, "pay b 5000", keys=KEYS)
    assert not isinstance(second, Completed) and ran == ["a:5"]
    third = await strands_run(agent, "pay c 7", keys=KEYS)
    assert isinstance(third, Completed) and ran == ["a:5", "c:7"]
    cont = Continuation.from_json(second.continuation.to_json())
    done = await strands_resume(agent, cont.approve(cont.requests[0].path), keys=KEYS)
    assert isinstance(done, Completed) and ran == ["a:5", "c:7", "b:5000"]
