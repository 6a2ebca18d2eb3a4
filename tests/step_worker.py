"""A process that runs, resumes or recovers a durable HR run whose delegating body has steps.

The root agent ``hr`` calls ``onboard``; its body reserves a room and notifies the manager as
journaled steps, then runs the ``payer`` sub-agent, whose two turns each make a gated transfer,
so the body is entered three times (and once more per crash). Every side effect and model call
is written to the ledger file. ``--crash payer:N`` kills the process with SIGKILL when the
payer's model is asked for its response ``N``.

Phases: ``run`` starts the run; ``resume`` approves every request of the run's waiting
continuation and resumes it through the store; ``recover`` takes the run over from its last
checkpoint (after a crash). Each writes ``{"status", "output"}`` to ``--result``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from pydantic_ai import Agent, RunContext
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from continuations_core import (
    AlreadyClaimed,
    Completed,
    Keyring,
    Suspended,
    requires_approval,
    step,
)
from continuations_core.stores import Store, open_store
from continuations_core.testing.spec import Ledger

PAYER_TURNS = 2


def _crash_at(crash: str) -> int:
    kind, _, at = crash.partition(":")
    return int(at) if kind == "payer" else -1


def build_pydantic_ai(ledger: Ledger, crash: str) -> Agent[None, str]:
    from continuations_pydantic_ai import Continuations

    die_at = _crash_at(crash)

    def pay(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        n = sum(isinstance(m, ModelResponse) for m in messages)
        ledger.model("payer", n, [])
        if n == die_at:
            os.kill(os.getpid(), signal.SIGKILL)
        if n < PAYER_TURNS:
            return ModelResponse(parts=[ToolCallPart("transfer", {"amount": 100 + n}, f"t{n}")])
        return ModelResponse(parts=[TextPart("paid")])

    payer: Agent[None, str] = Agent(
        FunctionModel(pay), name="payer", capabilities=[Continuations()]
    )

    @payer.tool_plain
    @requires_approval
    def transfer(amount: int) -> str:
        """Move money."""
        ledger.tool("payer", "transfer", {"amount": amount})
        return f"sent {amount}"

    async def reserve(floor: int) -> str:
        ledger.tool("hr", "reserve", {"floor": floor})
        return f"room on floor {floor}"

    @step
    def notify(who: str) -> str:  # a sync step called in an async body
        ledger.tool("hr", "notify", {"who": who})
        return f"told {who}'s manager"

    def plan(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        if not any(isinstance(m, ModelResponse) for m in messages):
            return ModelResponse(parts=[ToolCallPart("onboard", {"who": "alice"}, "h1")])
        returned = [str(p.content) for p in messages[-1].parts if hasattr(p, "tool_call_id")]
        return ModelResponse(parts=[TextPart("onboarded: " + " | ".join(returned))])

    hr: Agent[None, str] = Agent(FunctionModel(plan), name="hr", capabilities=[Continuations()])

    @hr.tool
    async def onboard(ctx: RunContext[None], who: str) -> str:
        """Reserve a room and tell the manager (once each), then have the payer pay."""
        room = await step("reserve", reserve, 3)
        told = notify(who)
        paid = await payer.run(f"pay the deposit for {room}", usage=ctx.usage)
        return f"{room}; {told}; {paid.output}"

    return hr


def build_strands(ledger: Ledger, crash: str) -> Any:
    from strands import Agent as StrandsAgent
    from strands import tool

    from continuations_strands import Continuations
    from continuations_strands.testing import ScriptedModel

    die_at = _crash_at(crash)

    def seen(turn: int, received: list[str]) -> None:
        ledger.model("payer", turn, [])
        if turn == die_at:
            os.kill(os.getpid(), signal.SIGKILL)

    @tool
    @requires_approval
    def transfer(amount: int) -> str:
        """Move money."""
        ledger.tool("payer", "transfer", {"amount": amount})
        return f"sent {amount}"

    turns = [[("transfer", {"amount": 100 + n}, f"t{n}")] for n in range(PAYER_TURNS)]
    payer = StrandsAgent(
        model=ScriptedModel("payer", turns, on_call=seen),
        name="payer",
        tools=[transfer],
        callback_handler=None,
        plugins=[Continuations()],
    )

    @step
    def reserve(floor: int) -> str:
        ledger.tool("hr", "reserve", {"floor": floor})
        return f"room on floor {floor}"

    @step("notify")
    def notify(who: str) -> str:
        ledger.tool("hr", "notify", {"who": who})
        return f"told {who}'s manager"

    @tool
    def onboard(who: str) -> str:
        """Reserve a room and tell the manager (once each), then have the payer pay."""
        room = reserve(3)
        told = notify(who)
        return f"{room}; {told}; {str(payer(f'pay the deposit for {room}')).strip()}"

    return StrandsAgent(
        model=ScriptedModel("hr", [[("onboard", {"who": "alice"}, "h1")]]),
        name="hr",
        tools=[onboard],
        callback_handler=None,
        plugins=[Continuations()],
    )


async def _waiting(store: Store, run_id: str) -> Any:
    records = [r for r in await store.list(run_id=run_id, limit=100) if r.status == "waiting"]
    latest = max(records, key=lambda r: r.seq)
    return await store.load(latest.id)


async def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("phase", choices=["run", "resume", "recover"])
    p.add_argument("--framework", choices=["pydantic-ai", "strands"], required=True)
    p.add_argument("--store", required=True)
    p.add_argument("--run-id", required=True)
    p.add_argument("--ledger", required=True)
    p.add_argument("--result", required=True)
    p.add_argument("--crash", default="none")
    a = p.parse_args()
    keys = Keyring.from_env()
    store = open_store(a.store)
    ledger = Ledger(path=Path(a.ledger))
    if a.framework == "strands":
        import continuations_strands as adapter

        agent = build_strands(ledger, a.crash)
    else:
        import continuations_pydantic_ai as adapter  # type: ignore[no-redef]

        agent = build_pydantic_ai(ledger, a.crash)
    common: dict[str, Any] = {"keys": keys, "store": store, "lease_seconds": 1.0}
    if a.phase == "run":
        outcome = await adapter.run(agent, "onboard alice", run_id=a.run_id, **common)
    elif a.phase == "resume":
        cont = await _waiting(store, a.run_id)
        for request in cont.requests:
            cont = cont.approve(request.path, by="manager")
        outcome = await adapter.resume(agent, cont, **common)
    else:
        deadline = time.monotonic() + 30
        while True:
            try:
                outcome = await adapter.resume_run(a.run_id, agent, **common)
                break
            except AlreadyClaimed:  # the killed process's lease has not expired yet
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
    status = "completed" if isinstance(outcome, Completed) else "suspended"
    assert isinstance(outcome, Completed | Suspended)
    output = outcome.output if isinstance(outcome, Completed) else None
    Path(a.result).write_text(json.dumps({"status": status, "output": output}))
    await store.close()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
