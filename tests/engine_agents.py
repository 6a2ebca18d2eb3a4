"""Agents for the engine conformance suite (``engine_agents:AGENTS``).

``wirer`` asks to wire money in its first turn: ``wire`` needs approval, expires
``$ENGINE_EXPIRES`` seconds after the suspension (3 by default) and is not idempotent. Its body
and the model's second turn append to the ledger in ``$FLEET_LEDGER`` (in memory without it),
so a test can count executions and read what the model was told.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart, ToolReturnPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from continuations_core import idempotency_key, idempotent, requires_approval
from continuations_core.testing.spec import Ledger
from continuations_pydantic_ai import Continuations

LEDGER = (
    Ledger(path=Path(os.environ["FLEET_LEDGER"])) if os.environ.get("FLEET_LEDGER") else Ledger()
)
EXPIRES = timedelta(seconds=float(os.environ.get("ENGINE_EXPIRES", "3")))


def _respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    if not any(isinstance(m, ModelResponse) for m in messages):
        return ModelResponse(
            parts=[ToolCallPart("wire", {"to": "ann", "amount": 300}, tool_call_id="w1")]
        )
    told = [
        str(p.content)
        for m in messages
        for p in getattr(m, "parts", [])
        if isinstance(p, ToolReturnPart)
    ]
    LEDGER.model("wirer", 1, told)
    return ModelResponse(parts=[TextPart("done: " + " | ".join(told))])


wirer: Agent[None, str] = Agent(
    FunctionModel(_respond), name="wirer", capabilities=[Continuations()]
)


@wirer.tool_plain
@requires_approval(reason="Moves money", expires=EXPIRES)
@idempotent(False)
def wire(to: str, amount: int) -> str:
    """Wire money (not idempotent)."""
    LEDGER.tool("wirer", "wire", {"to": to, "amount": amount, "key": idempotency_key()})
    return f"wired {amount} to {to}"


AGENTS = {"wirer": wirer}
