"""Edges of the approval gate (issue 7, DESIGN G13) that the bypass group does not reach.

- Pydantic AI: a call whose tool the gate cannot resolve to a function the leaf toolset holds
  is held for a decision, never run.
- A root agent without the capability or plugin, run with the framework's own entry points,
  does not run a marked tool.
- One decision per path: a second decision in memory is refused, the first one is kept.
- A loaded document carrying two decisions for one path is refused.

Every test asserts on what ran (a list the tool body appends to) and what the model received.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from pydantic_ai import Agent, RunContext
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    RetryPromptPart,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
)
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, FunctionModel
from pydantic_ai.toolsets import FunctionToolset, WrapperToolset
from pydantic_ai.toolsets.abstract import ToolsetTool
from strands import Agent as StrandsAgent
from strands import tool

from continuations_core import (
    AlreadyDecided,
    Continuation,
    MalformedContinuation,
    SignatureError,
    UngatedCall,
    requires_approval,
)
from continuations_core.testing.conformance import BIG, KEYS, completed, payer, suspended
from continuations_core.testing.spec import Call, Ledger
from continuations_pydantic_ai import Continuations, resume, run
from continuations_pydantic_ai.testing import PydanticAIHarness
from continuations_strands.testing import ScriptedModel

ARGS = {"to": "bob", "amount": 5}
#: The reason the Pydantic AI gate gives a call it holds because it cannot resolve the tool.
UNRESOLVED = "The gate could not resolve which function this runs."


# -- helpers ------------------------------------------------------------------------------------


def _wire(ran: list[tuple[str, int]], *, marked: bool) -> Callable[..., str]:
    """A ``wire`` tool whose body appends to ``ran``; marked with ``@requires_approval`` or not."""

    def wire(to: str, amount: int) -> str:
        """Wire money."""
        ran.append((to, amount))
        return f"wired {amount} to {to}"

    return requires_approval(wire) if marked else wire


def _received(messages: list[ModelMessage]) -> list[str]:
    """The tool results (and retry prompts) in the last request, as the model sees them."""
    last = messages[-1] if messages else None
    if not isinstance(last, ModelRequest):
        return []
    return [
        str(part.content)
        for part in last.parts
        if isinstance(part, ToolReturnPart | RetryPromptPart)
    ]


def _calling_wire(
    seen: list[list[str]], *, before_call: Callable[[], None] = lambda: None
) -> FunctionModel:
    """A model that calls ``wire`` once (running ``before_call`` first), then says "done".

    ``seen`` gets what the model received on each turn.
    """

    def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        seen.append(_received(messages))
        if not any(isinstance(m, ModelResponse) for m in messages):
            before_call()
            return ModelResponse(parts=[ToolCallPart("wire", dict(ARGS), tool_call_id="c1")])
        return ModelResponse(parts=[TextPart("done")])

    async def stream(messages: list[ModelMessage], info: AgentInfo) -> Any:
        response = respond(messages, info)
        for i, part in enumerate(response.parts):
            if isinstance(part, ToolCallPart):
                args = json.dumps(part.args_as_dict())
                yield {i: DeltaToolCall(part.tool_name, args, tool_call_id=part.tool_call_id)}
            elif isinstance(part, TextPart):
                yield part.content

    return FunctionModel(respond, stream_function=stream)


def _held(outcome: Any) -> Continuation:
    """The one request of a suspension held because the gate could not resolve its tool."""
    cont = suspended(outcome)
    [request] = cont.requests
    assert (request.tool, request.args, request.kind) == ("wire", ARGS, "approval"), request
    assert request.reason == UNRESOLVED, f"held for another reason: {request.reason!r}"
    return cont


@dataclass
class _Routed(WrapperToolset[None]):
    """Lists the tools of ``listed`` (a function toolset no agent holds) next to its own, and
    passes every call to the toolset it wraps: no leaf of the run holds the tool it runs."""

    listed: FunctionToolset[None]

    async def get_tools(self, ctx: RunContext[None]) -> dict[str, ToolsetTool[None]]:
        return {**(await self.wrapped.get_tools(ctx)), **(await self.listed.get_tools(ctx))}


def _routed_agent(
    ran: list[tuple[str, int]], seen: list[list[str]], *, marked: bool
) -> Agent[None, str]:
    elsewhere: FunctionToolset[None] = FunctionToolset()
    elsewhere.add_function(_wire(ran, marked=marked))
    own: FunctionToolset[None] = FunctionToolset()
    own.add_function(lambda who: f"found {who}", name="lookup")
    agent: Agent[None, str] = Agent(
        _calling_wire(seen), toolsets=[_Routed(own, elsewhere)], capabilities=[Continuations()]
    )
    return agent


# -- 1. Pydantic AI: a call the gate cannot resolve is held, never run -----------------------------


@pytest.mark.parametrize("decision", ["deny", "approve"])
@pytest.mark.parametrize("marked", [False, True], ids=["plain", "marked"])
async def test_a_tool_that_leaves_its_toolset_between_listing_and_call_is_held(
    marked: bool, decision: str
) -> None:
    """The model is shown ``wire``; before the call runs, its function toolset no longer holds
    it. The gate cannot tell what would run, so even an unmarked tool is held for a decision:
    nothing runs, a denial reaches the model, and an approval runs the call exactly once."""
    ran: list[tuple[str, int]] = []
    seen: list[list[str]] = []
    toolset: FunctionToolset[None] = FunctionToolset()
    toolset.add_function(_wire(ran, marked=marked))
    removed = {}

    def vanish() -> None:
        removed["wire"] = toolset.tools.pop("wire")

    agent: Agent[None, str] = Agent(
        _calling_wire(seen, before_call=vanish), toolsets=[toolset], capabilities=[Continuations()]
    )
    cont = _held(await run(agent, "go", keys=KEYS))
    assert "wire" in removed, "the tool never left its toolset: the test proved nothing"
    assert ran == [], f"a call the gate could not resolve ran: {ran}"
    assert seen == [[]], f"the model received a result for the held call: {seen}"

    toolset.tools.update(removed)  # the tool is back for the resume
    path = cont.requests[0].path
    if decision == "deny":
        done = completed(await resume(agent, cont.deny(path, "not this one"), keys=KEYS))
        assert ran == [], f"a denied call ran: {ran}"
        assert seen[-1] == ["not this one"], seen
    else:
        done = completed(await resume(agent, cont.approve(path, by="alice"), keys=KEYS))
        assert ran == [("bob", 5)], ran
        assert seen[-1] == ["wired 5 to bob"], seen
    assert done.output == "done"


@pytest.mark.parametrize("marked", [False, True], ids=["plain", "marked"])
async def test_a_call_routed_to_a_leaf_that_does_not_hold_its_tool_is_held(marked: bool) -> None:
    """A custom wrapper lists a tool from a function toolset outside the run and routes its call
    to another function toolset, which would run it from the listed tool. The gate at that leaf
    cannot resolve the name, so it holds the call; a denial reaches the model, nothing runs."""
    ran: list[tuple[str, int]] = []
    seen: list[list[str]] = []
    agent = _routed_agent(ran, seen, marked=marked)
    cont = _held(await run(agent, "go", keys=KEYS))
    assert ran == [] and seen == [[]], (ran, seen)
    denied = cont.deny(cont.requests[0].path, "no routing", by="alice")
    completed(await resume(agent, denied, keys=KEYS))
    assert ran == [], f"a denied call ran: {ran}"
    assert seen[-1] == ["no routing"], seen


async def test_an_approved_unresolved_call_runs_once() -> None:
    """Holding is for a person to decide: approved, the routed plain call runs exactly once."""
    ran: list[tuple[str, int]] = []
    seen: list[list[str]] = []
    agent = _routed_agent(ran, seen, marked=False)
    cont = _held(await run(agent, "go", keys=KEYS))
    approved = cont.approve(cont.requests[0].path, by="alice")
    completed(await resume(agent, approved, keys=KEYS))
    assert ran == [("bob", 5)], ran
    assert seen[-1] == ["wired 5 to bob"], seen


async def test_an_approved_unresolved_call_of_a_marked_function_is_refused_clearly() -> None:
    """The same approval for a ``@requires_approval`` function: the gate never resolved which
    function the call runs, so it cannot hand that function a pass. The marked body does not
    run, and the run fails with an ``UngatedCall`` that says why and how to fix the toolset
    (not the generic "add Continuations()", which the agent already has)."""
    ran: list[tuple[str, int]] = []
    seen: list[list[str]] = []
    agent = _routed_agent(ran, seen, marked=True)
    cont = _held(await run(agent, "go", keys=KEYS))
    approved = cont.approve(cont.requests[0].path, by="alice")
    with pytest.raises(UngatedCall) as caught:
        await resume(agent, approved, keys=KEYS)
    assert ran == [], ran
    message = str(caught.value)
    assert "could not resolve which function" in message, message
    assert "'wire' was approved" in message, message
    assert "add Continuations()" not in message, message
    assert "toolset the gate can see through" in message, message


# -- 2. a root agent without the capability or plugin --------------------------------------------


@pytest.mark.parametrize("entry", ["run_sync", "run", "run_stream", "iter"])
def test_a_root_pydantic_ai_agent_without_the_capability_refuses_a_marked_tool(entry: str) -> None:
    """The framework's own entry points on an agent with no ``Continuations()``: the marked
    body does not run, ``UngatedCall`` (naming the tool and the fix) reaches the caller, and the
    model never gets a result for the call."""
    ran: list[tuple[str, int]] = []
    seen: list[list[str]] = []
    agent: Agent[None, str] = Agent(_calling_wire(seen), tools=[_wire(ran, marked=True)])

    async def stream() -> str:
        async with agent.run_stream("go") as streamed:
            return await streamed.get_output()

    async def iterate() -> Any:
        async with agent.iter("go") as agent_run:
            async for _node in agent_run:
                pass
        return agent_run.result

    with pytest.raises(UngatedCall) as caught:
        if entry == "run_sync":
            agent.run_sync("go")
        elif entry == "run":
            asyncio.run(agent.run("go"))
        elif entry == "run_stream":
            asyncio.run(stream())
        else:
            asyncio.run(iterate())
    assert ran == [], f"the marked body ran without a gate: {ran}"
    assert seen == [[]], f"the model was called again after the refused call: {seen}"
    assert "wire'" in str(caught.value) and "Continuations()" in str(caught.value), caught.value


@pytest.mark.parametrize("entry", ["call", "invoke_async"])
def test_a_root_strands_agent_without_the_plugin_refuses_a_marked_tool(entry: str) -> None:
    """``agent("...")`` / ``invoke_async`` on a Strands agent with no plugin: the marked body does
    not run; ``UngatedCall`` is raised, or (Strands turns tool exceptions into results) is what
    the model receives as the call's error result."""
    ran: list[tuple[str, int]] = []
    seen: list[list[str]] = []
    model = ScriptedModel(
        "bare", [[("wire", ARGS)]], on_call=lambda turn, received: seen.append(received)
    )
    agent = StrandsAgent(
        model=model, name="bare", tools=[tool(_wire(ran, marked=True))], callback_handler=None
    )
    raised: UngatedCall | None = None
    try:
        if entry == "call":
            agent("go")
        else:
            asyncio.run(agent.invoke_async("go"))
    except UngatedCall as exc:
        raised = exc
    assert ran == [], f"the marked body ran without a gate: {ran}"
    if raised is not None:
        assert "wire'" in str(raised), raised
        return
    results = [
        block["toolResult"]
        for message in agent.messages
        for block in message["content"]
        if "toolResult" in block
    ]
    assert [r["status"] for r in results] == ["error"], results
    [text] = [c.get("text", "") for c in results[0]["content"]]
    assert "UngatedCall" in text and "wire'" in text, text
    assert seen == [[], [text]], seen


# -- 3. one decision per path, in memory ---------------------------------------------------------


def _decide(cont: Continuation, kind: str, target: Any, who: str) -> Continuation:
    if kind == "approve":
        return cont.approve(target, by=who)
    if kind == "edit":
        return cont.approve(target, args={"to": "mallory", "amount": 999}, by=who)
    return cont.deny(target, f"denied by {who}", by=who)


async def _payer_suspension() -> tuple[PydanticAIHarness, Any, Ledger, Continuation]:
    h = PydanticAIHarness()
    ledger = Ledger()
    agent = h.build(payer(Call("transfer", BIG)), ledger)
    return h, agent, ledger, suspended(await h.run(agent, "go", keys=KEYS))


@pytest.mark.parametrize("second", ["approve", "deny", "edit"])
@pytest.mark.parametrize("first", ["approve", "deny"])
async def test_a_second_decision_in_memory_is_refused_and_the_first_kept(
    first: str, second: str
) -> None:
    """Without a store, deciding a decided path again (by tuple, list or Request) raises
    ``AlreadyDecided`` naming who decided first; the first decision is unchanged and is the one
    a resume applies. Only ``replace=True`` replaces it."""
    h, agent, ledger, cont = await _payer_suspension()
    [request] = cont.requests
    path = request.path
    decided = _decide(cont, first, path, "alice")
    before = decided.model_dump(mode="json")
    record = decided.decision_for(path)
    assert record is not None and record.by == "alice"

    for target in (path, list(path), request):
        with pytest.raises(AlreadyDecided) as caught:
            _decide(decided, second, target, "mallory")
        assert caught.value.path == path and caught.value.by == "alice", caught.value
        assert caught.value.kind == first and "alice" in str(caught.value), caught.value
    assert decided.model_dump(mode="json") == before, "a refused decision changed the copy"
    assert decided.decision_for(path) == record

    replaced = (
        decided.deny(path, "replaced", by="carol", replace=True)
        if first == "approve"
        else decided.approve(path, by="carol", replace=True)
    )
    new = replaced.decision_for(path)
    assert new is not None and new.by == "carol" and len(replaced.decisions) == 1, new
    assert decided.decision_for(path) == record, "replace=True changed the original copy"

    completed(await h.resume(agent, decided, keys=KEYS))
    if first == "approve":
        assert ledger.runs("transfer") == [BIG], ledger.runs("transfer")
    else:
        assert ledger.count("transfer") == 0, ledger.runs("transfer")
        assert "denied by alice" in ledger.received("payer"), ledger.received("payer")


# -- 4. two decisions for one path in a loaded document --------------------------------------------


@pytest.mark.parametrize("pair", ["same-twice", "approve-then-deny", "deny-then-approve"])
async def test_a_document_with_two_decisions_for_one_path_is_refused(pair: str) -> None:
    """A signed document edited by hand to carry two decisions for one path is refused as
    ``MalformedContinuation`` for the duplicate (decisions are outside the signature, and the
    same document with one of them loads and verifies)."""
    _h, _agent, ledger, cont = await _payer_suspension()
    path = cont.requests[0].path
    approved = json.loads(cont.approve(path, by="alice").to_json())
    [approve] = approved["decisions"]
    [deny] = json.loads(cont.deny(path, "no", by="mallory").to_json())["decisions"]
    pairs = {
        "same-twice": [approve, approve],
        "approve-then-deny": [approve, deny],
        "deny-then-approve": [deny, approve],
    }

    one = Continuation.from_json(json.dumps(approved))  # the control: one decision loads
    one.verify(KEYS)
    assert [r.by for r in one.decisions] == ["alice"]

    doubled = {**approved, "decisions": pairs[pair]}
    with pytest.raises(MalformedContinuation, match="more than one decision") as caught:
        Continuation.from_json(json.dumps(doubled))
    assert not isinstance(caught.value, SignatureError)
    assert " > ".join(path) in str(caught.value), caught.value
    assert ledger.count("transfer") == 0
