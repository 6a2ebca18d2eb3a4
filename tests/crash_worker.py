"""A process that runs a durable agent and kills itself with SIGKILL at a chosen point.

Each batch is ``lookup, charge, lookup`` run in order (sequential tools), ``charge`` not being
idempotent. Kill points (``--crash``): ``model:N`` while the model computes response N (before
it is saved); ``tool:N`` as batch N's first tool starts (after response N was checkpointed);
``mid:N`` as batch N's last tool starts (after ``charge`` recorded its result); ``charge:N``
inside ``charge`` after its side effect but before its result is journaled; ``none``. ``recover`` takes the
run over from its last checkpoint with ``resume_run``.
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

from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart, ToolReturnPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from continuations_core import AlreadyClaimed, Completed, Keyring
from continuations_core._durable import idempotency_key, idempotent
from continuations_core.stores import open_store
from continuations_core.testing.spec import Ledger
from continuations_pydantic_ai import Continuations, resume_run, run

TURNS: list[list[tuple[str, dict[str, Any]]]] = [
    [
        ("lookup", {"who": "bob"}),
        ("charge", {"who": "bob", "amount": 30}),
        ("lookup", {"who": "bob2"}),
    ],
    [
        ("lookup", {"who": "eve"}),
        ("charge", {"who": "eve", "amount": 5}),
        ("lookup", {"who": "eve2"}),
    ],
]


def build(ledger: Ledger, crash: str) -> Agent[None, str]:
    kind, _, at = crash.partition(":")
    point = int(at) if at else -1

    def die() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        turn = sum(isinstance(m, ModelResponse) for m in messages)
        ledger.model("crash", turn, [])
        if kind == "model" and turn == point:
            die()
        if turn < len(TURNS):
            return ModelResponse(
                parts=[
                    ToolCallPart(n, a, tool_call_id=f"t{turn}c{i}")
                    for i, (n, a) in enumerate(TURNS[turn])
                ]
            )
        seen = [
            str(p.content)
            for m in messages
            for p in getattr(m, "parts", [])
            if isinstance(p, ToolReturnPart)
        ]
        return ModelResponse(parts=[TextPart("done: " + " | ".join(seen))])

    agent: Agent[None, str] = Agent(
        FunctionModel(respond), name="crash", capabilities=[Continuations()]
    )

    def batch_of(key: str) -> int:
        return int(key.rsplit(":t", 1)[1].split("c", 1)[0])

    @agent.tool_plain(sequential=True)
    @idempotent(False)
    def charge(who: str, amount: int) -> str:
        """Charge a card (not idempotent)."""
        key = idempotency_key()
        ledger.tool("crash", "charge", {"who": who, "amount": amount, "key": key})
        if kind == "charge" and batch_of(key) == point:
            die()  # after the side effect, before its result is journaled
        return f"charged {who} {amount}"

    @agent.tool_plain(sequential=True)
    def lookup(who: str) -> str:
        """Look someone up (idempotent)."""
        key = idempotency_key()
        if batch_of(key) == point and (
            (kind == "tool" and key.endswith("c0")) or (kind == "mid" and key.endswith("c2"))
        ):
            die()
        ledger.tool("crash", "lookup", {"who": who, "key": key})
        return f"found {who}"

    return agent


async def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("phase", choices=["run", "recover"])
    p.add_argument("--store", required=True)
    p.add_argument("--run-id", required=True)
    p.add_argument("--ledger", required=True)
    p.add_argument("--crash", default="none")
    p.add_argument("--result", required=True)
    a = p.parse_args()
    keys = Keyring.from_env()
    store = open_store(a.store)
    ledger = Ledger(path=Path(a.ledger))
    agent = build(ledger, a.crash if a.phase == "run" else "none")
    if a.phase == "run":
        outcome = await run(agent, "go", keys=keys, store=store, run_id=a.run_id, lease_seconds=1.0)
    else:
        deadline = time.monotonic() + 30
        while True:
            try:
                outcome = await resume_run(
                    a.run_id, agent, store=store, keys=keys, lease_seconds=1.0
                )
                break
            except AlreadyClaimed:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
    assert isinstance(outcome, Completed)
    Path(a.result).write_text(json.dumps({"output": outcome.output, "usage": outcome.usage}))
    await store.close()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
