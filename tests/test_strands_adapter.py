"""Strands specifics: nesting styles, executors, repeated suspensions, structured output, bytes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from _harnesses import VARIANTS
from pydantic import BaseModel
from strands import Agent, tool

from continuations_core import Completed, Continuation, Keyring, Suspended, requires_approval
from continuations_core.testing.conformance import BIG, KEYS, SCENARIOS, chain, payer
from continuations_core.testing.spec import Call, Ledger
from continuations_strands import Continuations, resume, run
from continuations_strands.testing import ScriptedModel, StrandsHarness

WORKER = Path(__file__).with_name("xproc_worker.py")

# Scenarios with one request per batch hold for the sequential executor too; the others assert
# that a whole batch suspends together, which the sequential executor does not do by design
# (it stops the batch at the first interrupt; see test_sequential_executor_one_at_a_time).
SINGLE_REQUEST = [
    s
    for s in SCENARIOS
    if s.__name__
    not in {"two_children_one_step", "missing_decision", "decisions_order_independent"}
]


@pytest.mark.parametrize("scenario", SINGLE_REQUEST, ids=[s.__name__ for s in SINGLE_REQUEST])
@pytest.mark.parametrize("variant", sorted(VARIANTS))
async def test_conformance_variants(variant: str, scenario: Any) -> None:
    """Conformance scenarios hold for child(prompt) bodies, as_tool() and the sequential executor."""
    await scenario(VARIANTS[variant]())


async def test_sequential_executor_one_at_a_time() -> None:
    """With the sequential executor a batch stops at its first gated call; each surfaces in turn."""
    h = StrandsHarness(sequential=True)
    spec = payer(
        Call("lookup", {"who": "a"}),
        Call("transfer", BIG),
        Call("transfer", {"to": "eve", "amount": 7000}),
    )
    ledger = Ledger()
    outcome = await h.run(h.build(spec, ledger), "go", keys=KEYS)
    seen = []
    while isinstance(outcome, Suspended):
        cont = Continuation.from_json(outcome.continuation.to_json())
        [req] = cont.requests
        seen.append(req.args["to"])
        outcome = await h.resume(h.build(spec, ledger), cont.approve(req.path), keys=KEYS)
    assert isinstance(outcome, Completed)
    assert seen == ["bob", "eve"]
    assert [a["to"] for a in ledger.runs("transfer")] == ["bob", "eve"]
    assert ledger.count("lookup") == 1


@pytest.mark.parametrize("variant", ["strands-call", "strands-as-tool"])
def test_depth3_styles_survive_a_process_restart(variant: str, tmp_path: Path) -> None:
    """child(prompt) bodies and as_tool() suspend at depth 3 and resume in a new process."""
    keys = Keyring.generate("x")
    env = {**os.environ, "CONTINUATIONS_SIGNING_KEYS": keys.export()}
    ledger, doc, result = tmp_path / "ledger.jsonl", tmp_path / "c.json", tmp_path / "r.json"
    common = ["--adapter", variant, "--spec", "chain3", "--ledger", str(ledger), "--file", str(doc)]
    for phase in ("run", "resume"):
        if phase == "resume":
            cont = Continuation.from_json(doc.read_text())
            [req] = cont.requests
            assert req.agents == ("level1", "level2", "level3") and req.args == BIG
            doc.write_text(cont.approve(req.path).to_json())
        done = subprocess.run(
            [sys.executable, str(WORKER), phase, *common, "--result", str(result)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
    assert json.loads(result.read_text())["status"] == "completed"
    book = Ledger(path=ledger)
    assert book.runs("transfer") == [BIG] and book.count("lookup") == 3


async def test_repeated_suspensions_of_one_call_use_distinct_interrupts() -> None:
    """A delegating call whose child suspends twice gets a new interrupt name each round."""
    ledger = Ledger()
    child = payer(Call("transfer", BIG), name="child")
    child = child.__class__(
        "child",
        turns=((Call("transfer", BIG),), (Call("transfer", {"to": "eve", "amount": 9000}),)),
        tools=child.tools,
    )
    from continuations_core.testing.spec import AgentSpec, ToolSpec

    parent = AgentSpec(
        "parent",
        turns=((Call("delegate", {"task": "t"}),),),
        tools=(ToolSpec("delegate", "delegate", "task", children=(child,)),),
    )
    h = StrandsHarness()
    agent = h.build(parent, ledger)
    outcome = await h.run(agent, "go", keys=KEYS)
    names = []
    while isinstance(outcome, Suspended):
        cont = Continuation.from_json(outcome.continuation.to_json())
        names.append(cont.root.pending[0].metadata["interrupt_name"])
        outcome = await h.resume(agent, cont.approve(cont.requests[0].path), keys=KEYS)
    assert isinstance(outcome, Completed)
    assert names == ["continuations:child:0", "continuations:child:1"]
    assert [a["to"] for a in ledger.runs("transfer")] == ["bob", "eve"]


class Verdict(BaseModel):
    """A structured answer."""

    approved: bool
    amount: int


class _VerdictModel(ScriptedModel):
    """Calls the gated tool, then answers through the structured output tool."""

    async def stream(
        self, messages: Any, tool_specs: Any = None, system_prompt: Any = None, **kw: Any
    ):  # type: ignore[override]
        turn = sum(1 for m in messages if m["role"] == "assistant")
        if turn == 0:
            async for event in super().stream(messages, tool_specs, system_prompt, **kw):
                yield event
            return
        yield {"messageStart": {"role": "assistant"}}
        start = {"toolUse": {"name": "Verdict", "toolUseId": "so-1"}}
        yield {"contentBlockStart": {"start": start}}
        yield {
            "contentBlockDelta": {
                "delta": {"toolUse": {"input": json.dumps({"approved": True, "amount": 5000})}}
            }
        }
        yield {"contentBlockStop": {}}
        yield {"messageStop": {"stopReason": "tool_use"}}
        yield {
            "metadata": {
                "usage": {"inputTokens": 1, "outputTokens": 1, "totalTokens": 2},
                "metrics": {"latencyMs": 0},
            }
        }


def _verdict_agent(ran: list[int]) -> Agent:
    @tool
    @requires_approval
    def pay(to: str, amount: int) -> str:
        """Pay."""
        ran.append(amount)
        return "paid"

    model = _VerdictModel("v", [[("pay", {"to": "bob", "amount": 5000})]])
    return Agent(
        model=model, name="v", tools=[pay], callback_handler=None, plugins=[Continuations()]
    )


async def test_structured_output_model_is_reapplied_on_resume() -> None:
    """The structured output model given to run() is re-applied when a new agent resumes."""
    ran: list[int] = []
    outcome = await run(_verdict_agent(ran), "go", keys=KEYS, structured_output_model=Verdict)
    assert isinstance(outcome, Suspended)
    cont = Continuation.from_json(outcome.continuation.to_json())
    done = await resume(_verdict_agent(ran), cont.approve(cont.requests[0].path), keys=KEYS)
    assert isinstance(done, Completed)
    assert done.output == Verdict(approved=True, amount=5000)
    assert ran == [5000]


async def test_binary_content_survives_the_json_round_trip() -> None:
    """Image bytes in the history come back byte-identical after JSON and a resume."""
    payload = bytes(range(256))
    seen: list[bytes] = []
    ran: list[int] = []

    class Looking(ScriptedModel):
        async def stream(
            self, messages: Any, tool_specs: Any = None, system_prompt: Any = None, **kw: Any
        ):  # type: ignore[override]
            for m in messages:
                for block in m["content"]:
                    if "image" in block:
                        seen.append(block["image"]["source"]["bytes"])
            async for event in super().stream(messages, tool_specs, system_prompt, **kw):
                yield event

    def build() -> Agent:
        @tool
        @requires_approval
        def pay(to: str, amount: int) -> str:
            """Pay."""
            ran.append(amount)
            return "paid"

        model = Looking("img", [[("pay", {"to": "bob", "amount": 1})]])
        return Agent(
            model=model, name="img", tools=[pay], callback_handler=None, plugins=[Continuations()]
        )

    prompt = [{"text": "pay for this"}, {"image": {"format": "png", "source": {"bytes": payload}}}]
    outcome = await run(build(), prompt, keys=KEYS)
    assert isinstance(outcome, Suspended)
    text = outcome.continuation.to_json()
    cont = Continuation.from_json(text)
    seen.clear()
    done = await resume(build(), cont.approve(cont.requests[0].path), keys=KEYS)
    assert isinstance(done, Completed) and ran == [1]
    assert seen and all(b == payload for b in seen)


def test_plain_sync_body_calling_child() -> None:
    """A sync @tool body that calls child(prompt) suspends the parent and resumes the child."""
    h = StrandsHarness(delegate="call")
    import asyncio

    ledger = Ledger()
    spec = chain(2)
    outcome = asyncio.run(h.run(h.build(spec, ledger), "go", keys=KEYS))
    assert isinstance(outcome, Suspended)
    cont = Continuation.from_json(outcome.continuation.to_json())
    done = asyncio.run(
        h.resume(h.build(spec, ledger), cont.approve(cont.requests[0].path), keys=KEYS)
    )
    assert isinstance(done, Completed)
    assert ledger.runs("transfer") == [BIG]


def test_a_strands_agent_called_directly_cannot_suspend_silently() -> None:
    """agent(prompt) on a continuation-aware agent that must suspend raises a clear error."""
    from continuations_core import ConfigurationError

    ran: list[int] = []
    agent = _verdict_agent(ran)
    with pytest.raises(ConfigurationError, match=r"continuations_strands\.run"):
        agent("go")
    assert ran == []
