"""A process that runs a durable root agent whose tool runs a 5-step sub-agent, and kills itself.

The root ``hr`` makes one call, ``research``, whose plain body awaits the ``researcher``
sub-agent (depth 1). The researcher's responses 0-4 each call ``lookup`` (idempotent); response
5 is its answer. Every model call and tool execution is written to the ledger file.

Kill points (``--crash``), at each boundary of the sub-agent's run: ``model:N`` while the
researcher's model computes response N (before it is saved); ``tool:N`` as the lookup of
batch N starts (after response N was checkpointed); ``none``. ``recover`` takes the run over
from its last checkpoint with ``resume_run``.
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
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart, ToolReturnPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from continuations_core import AlreadyClaimed, Completed, Keyring
from continuations_core.stores import open_store
from continuations_core.testing.spec import Ledger

STEPS = 5


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _kill_point(crash: str) -> tuple[str, int]:
    kind, _, at = crash.partition(":")
    return kind, int(at) if at else -1


def _lookup(ledger: Ledger, crash: str) -> Any:
    kind, point = _kill_point(crash)

    def lookup(q: int) -> str:
        """Look something up (idempotent)."""
        if kind == "tool" and q == point:
            _die()
        ledger.tool("researcher", "lookup", {"q": q})
        return f"fact {q}"

    return lookup


def build_pydantic_ai(ledger: Ledger, crash: str) -> Agent[None, str]:
    from continuations_pydantic_ai import Continuations

    kind, point = _kill_point(crash)

    def think(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        n = sum(isinstance(m, ModelResponse) for m in messages)
        ledger.model("researcher", n, [])
        if kind == "model" and n == point:
            _die()
        if n < STEPS:
            return ModelResponse(parts=[ToolCallPart("lookup", {"q": n}, f"r{n}")])
        facts = [str(p.content) for m in messages for p in getattr(m, "parts", [])
                 if isinstance(p, ToolReturnPart)]  # fmt: skip
        return ModelResponse(parts=[TextPart("findings: " + ", ".join(facts))])

    researcher: Agent[None, str] = Agent(
        FunctionModel(think), name="researcher", capabilities=[Continuations()]
    )
    researcher.tool_plain(_lookup(ledger, crash))

    def plan(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        n = sum(isinstance(m, ModelResponse) for m in messages)
        ledger.model("hr", n, [])
        if n == 0:
            return ModelResponse(parts=[ToolCallPart("research", {"topic": "alice"}, "h1")])
        returned = [str(p.content) for p in messages[-1].parts if isinstance(p, ToolReturnPart)]
        return ModelResponse(parts=[TextPart("hr: " + " | ".join(returned))])

    hr: Agent[None, str] = Agent(FunctionModel(plan), name="hr", capabilities=[Continuations()])

    @hr.tool
    async def research(ctx: RunContext[None], topic: str) -> str:
        """Have the researcher look into a topic."""
        return (await researcher.run(f"research {topic}", usage=ctx.usage)).output

    return hr


def build_strands(ledger: Ledger, crash: str) -> Any:
    from strands import Agent as StrandsAgent
    from strands import tool

    from continuations_strands import Continuations
    from continuations_strands.testing import ScriptedModel

    kind, point = _kill_point(crash)

    def thinking(turn: int, received: list[str]) -> None:
        ledger.model("researcher", turn, [])
        if kind == "model" and turn == point:
            _die()

    turns = [[("lookup", {"q": n}, f"r{n}")] for n in range(STEPS)]
    researcher = StrandsAgent(
        model=ScriptedModel("researcher", turns, on_call=thinking),
        name="researcher",
        tools=[tool(_lookup(ledger, crash))],
        callback_handler=None,
        plugins=[Continuations()],
    )

    @tool
    async def research(topic: str) -> str:
        """Have the researcher look into a topic."""
        return str(await researcher.invoke_async(f"research {topic}")).strip()

    return StrandsAgent(
        model=ScriptedModel(
            "hr",
            [[("research", {"topic": "alice"}, "h1")]],
            on_call=lambda turn, received: ledger.model("hr", turn, []),
        ),
        name="hr",
        tools=[research],
        callback_handler=None,
        plugins=[Continuations()],
    )


async def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("phase", choices=["run", "recover"])
    p.add_argument("--framework", choices=["pydantic-ai", "strands"], required=True)
    p.add_argument("--store", required=True)
    p.add_argument("--run-id", required=True)
    p.add_argument("--ledger", required=True)
    p.add_argument("--crash", default="none")
    p.add_argument("--result", required=True)
    a = p.parse_args()
    keys = Keyring.from_env()
    store = open_store(a.store)
    ledger = Ledger(path=Path(a.ledger))
    crash = a.crash if a.phase == "run" else "none"
    if a.framework == "strands":
        import continuations_strands as adapter

        agent = build_strands(ledger, crash)
    else:
        import continuations_pydantic_ai as adapter  # type: ignore[no-redef]

        agent = build_pydantic_ai(ledger, crash)
    if a.phase == "run":
        outcome = await adapter.run(
            agent, "onboard alice", keys=keys, store=store, run_id=a.run_id, lease_seconds=1.0
        )
    else:
        deadline = time.monotonic() + 30
        while True:
            try:
                outcome = await adapter.resume_run(
                    a.run_id, agent, store=store, keys=keys, lease_seconds=1.0
                )
                break
            except AlreadyClaimed:  # the killed process's lease has not expired yet
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
    assert isinstance(outcome, Completed), outcome
    Path(a.result).write_text(json.dumps({"output": outcome.output}))
    await store.close()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
