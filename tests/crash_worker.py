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
import re
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


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _call_of(key: str) -> str:
    """A call's key without its ``@<step>`` suffix (it ends with the scripted call id)."""
    return key.rpartition("@")[0] or key


def _batch_of(key: str) -> int:
    """The batch number in a call's key (scripted call ids end in ``t<batch>c<index>``)."""
    found = re.search(r"t(\d+)-?c\d+$", _call_of(key))
    assert found is not None, key
    return int(found.group(1))


def _tools(ledger: Ledger, kind: str, point: int) -> tuple[Any, Any]:
    """``charge`` (not idempotent) and ``lookup``, with their kill points."""

    @idempotent(False)
    def charge(who: str, amount: int) -> str:
        """Charge a card (not idempotent)."""
        key = idempotency_key()
        ledger.tool("crash", "charge", {"who": who, "amount": amount, "key": key})
        if kind == "charge" and _batch_of(key) == point:
            _die()  # after the side effect, before its result is journaled
        return f"charged {who} {amount}"

    def lookup(who: str) -> str:
        """Look someone up (idempotent)."""
        key = idempotency_key()
        if _batch_of(key) == point and (
            (kind == "tool" and _call_of(key).endswith("c0"))
            or (kind == "mid" and _call_of(key).endswith("c2"))
        ):
            _die()
        ledger.tool("crash", "lookup", {"who": who, "key": key})
        return f"found {who}"

    return charge, lookup


def build_strands(ledger: Ledger, crash: str) -> Any:
    from strands import Agent as StrandsAgent
    from strands import tool
    from strands.tools.executors import SequentialToolExecutor

    from continuations_strands import Continuations as StrandsContinuations
    from continuations_strands.testing import ScriptedModel

    kind, _, at = crash.partition(":")
    point = int(at) if at else -1

    def seen(turn: int, received: list[str]) -> None:
        ledger.model("crash", turn, [])
        if kind == "model" and turn == point:
            _die()

    charge, lookup = _tools(ledger, kind, point)
    model = ScriptedModel("t", [list(turn) for turn in TURNS], on_call=seen)
    return StrandsAgent(
        model=model,
        name="crash",
        tools=[tool(charge), tool(lookup)],
        callback_handler=None,
        plugins=[StrandsContinuations()],
        tool_executor=SequentialToolExecutor(),
    )


def build(ledger: Ledger, crash: str) -> Agent[None, str]:
    kind, _, at = crash.partition(":")
    point = int(at) if at else -1

    def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        turn = sum(isinstance(m, ModelResponse) for m in messages)
        ledger.model("crash", turn, [])
        if kind == "model" and turn == point:
            _die()
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

    charge, lookup = _tools(ledger, kind, point)
    agent.tool_plain(sequential=True)(charge)
    agent.tool_plain(sequential=True)(lookup)
    return agent


async def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("phase", choices=["run", "recover"])
    p.add_argument("--store", required=True)
    p.add_argument("--run-id", required=True)
    p.add_argument("--ledger", required=True)
    p.add_argument("--crash", default="none")
    p.add_argument("--result", required=True)
    p.add_argument("--framework", default="pydantic-ai")
    p.add_argument("--owner", default=None, help="a stable owner name (default: host:pid)")
    p.add_argument("--lease", type=float, default=1.0, help="the lease on claims, in seconds")
    a = p.parse_args()
    keys = Keyring.from_env()
    store = open_store(a.store)
    ledger = Ledger(path=Path(a.ledger))
    crash = a.crash if a.phase == "run" else "none"
    strands = a.framework == "strands"
    agent = build_strands(ledger, crash) if strands else build(ledger, crash)
    if strands:
        import continuations_strands

        start, take_over = continuations_strands.run, continuations_strands.resume_run
    else:
        start, take_over = run, resume_run
    if a.phase == "run":
        outcome = await start(
            agent, "go", keys=keys, store=store, run_id=a.run_id, lease_seconds=a.lease,
            owner=a.owner,
        )  # fmt: skip
    else:
        began, deadline = time.time(), time.monotonic() + 60
        while True:
            try:
                outcome = await take_over(
                    a.run_id, agent, store=store, keys=keys, lease_seconds=a.lease, owner=a.owner
                )
                break
            except AlreadyClaimed:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
        # From the start of recovery to the claim (audited by the store's clock on this host).
        claimed = [e for e in await store.audit(a.run_id) if e.kind == "claimed"][-1]
        recovered = {"took_over_after": claimed.at.timestamp() - began}
    assert isinstance(outcome, Completed)
    result = {"output": outcome.output, "usage": outcome.usage}
    if a.phase == "recover":
        result.update(recovered)
    Path(a.result).write_text(json.dumps(result))
    await store.close()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
