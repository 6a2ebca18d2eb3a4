"""Agent definitions for worker processes in the fault-injection tests (``fleet_agents:AGENTS``).

Each run looks someone up and transfers money (gated, not idempotent) in its first step, then
looks up a receipt; tool bodies append to the ledger file in ``$FLEET_LEDGER`` with their
idempotency key, so the test can count executions per call across every worker process.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart, ToolReturnPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from continuations_core import (
    Continuation,
    Keyring,
    Store,
    Suspended,
    idempotency_key,
    idempotent,
    requires_approval,
)
from continuations_core.stores import open_store
from continuations_core.testing.spec import Ledger
from continuations_pydantic_ai import Continuations

LEDGER = (
    Ledger(path=Path(os.environ["FLEET_LEDGER"])) if os.environ.get("FLEET_LEDGER") else Ledger()
)


def _respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    turn = sum(isinstance(m, ModelResponse) for m in messages)
    if turn == 0:
        return ModelResponse(
            parts=[
                ToolCallPart("lookup", {"who": "bob"}, tool_call_id="c0"),
                ToolCallPart("transfer", {"to": "bob", "amount": 5000}, tool_call_id="c1"),
            ]
        )
    if turn == 1:
        return ModelResponse(parts=[ToolCallPart("receipt", {"who": "bob"}, tool_call_id="c2")])
    seen = [
        str(p.content)
        for m in messages
        for p in getattr(m, "parts", [])
        if isinstance(p, ToolReturnPart)
    ]
    return ModelResponse(parts=[TextPart("done: " + " | ".join(seen))])


payer: Agent[None, str] = Agent(
    FunctionModel(_respond), name="payer", capabilities=[Continuations()]
)


@payer.tool_plain
def lookup(who: str) -> str:
    """Look someone up (idempotent)."""
    time.sleep(0.01)
    LEDGER.tool("payer", "lookup", {"who": who, "key": idempotency_key()})
    return f"found {who}"


@payer.tool_plain
@requires_approval(reason="Moves money")
@idempotent(False)
def transfer(to: str, amount: int) -> str:
    """Transfer money (not idempotent)."""
    time.sleep(0.01)
    LEDGER.tool("payer", "transfer", {"to": to, "amount": amount, "key": idempotency_key()})
    return f"sent {amount} to {to}"


@payer.tool_plain
async def receipt(who: str) -> str:
    """Fetch the receipt (idempotent); ``$FLEET_SLOW`` seconds slow when set."""
    await asyncio.sleep(float(os.environ.get("FLEET_SLOW", "0.02")))
    LEDGER.tool("payer", "receipt", {"who": who, "key": idempotency_key()})
    # Work after the side effect, before the result is journaled: a kill landing here makes
    # the retry a visible extra execution of this idempotent tool.
    await asyncio.sleep(0.15)
    return f"receipt for {who}"


AGENTS = {"payer": payer}


async def decided_run(store: Store, keys: Keyring | None) -> Continuation:
    """Start one payer run in ``store`` and approve its transfer there."""
    from continuations_pydantic_ai import run

    outcome = await run(payer, "pay bob", keys=keys, store=store)
    assert isinstance(outcome, Suspended)
    cont = outcome.continuation
    await store.decide(cont.id, cont.approve(cont.requests[0].path, by="ops").decisions[0])
    return cont


async def decided_runs(url: str, keys: Keyring, n: int) -> list[Continuation]:
    """Start ``n`` payer runs in the store at ``url`` and approve each one's transfer."""
    async with open_store(url) as store:
        return [await decided_run(store, keys) for _ in range(n)]
