"""Agents for the G14 tests (fencing, stalls, poison, flaky stores): ``g14_agents:AGENTS``.

Every tool body appends to the ledger in ``$G14_LEDGER`` (or memory) with its idempotency key,
so tests count executions per call across processes.

- ``payer``: step 0 asks to ``transfer`` (gated, not idempotent); once approved it runs, then
  step 1 runs ``lookup`` (idempotent, slow by ``$G14_LOOKUP_SECONDS``) and ``charge`` (not
  idempotent) one after the other; step 2 answers.
- ``wirer``: asks to ``wire`` (gated), whose body raises: an approved call that fails.
- ``expiring``: asks to ``quick_transfer`` with a one-second approval deadline.
- ``broken``: asks to ``transfer``; once approved, its model fails on every later call.
- ``ghost``: like ``payer``'s first step, but not among ``AGENTS``.
- ``drifter``: its runs suspend with ``drifter_then``; the deployed one changed ``transfer``.

``ON_LOOKUP`` lets an in-process test act while ``lookup`` runs (say, cut the store off).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

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
from continuations_core.testing.spec import Ledger
from continuations_pydantic_ai import Continuations

LEDGER = Ledger(path=Path(os.environ["G14_LEDGER"])) if os.environ.get("G14_LEDGER") else Ledger()
ON_LOOKUP: list[Callable[[], None]] = []

Turns = list[list[tuple[str, dict[str, Any]]]]
PAYER_TURNS: Turns = [
    [("transfer", {"to": "bob", "amount": 5})],
    [("lookup", {"who": "bob"}), ("charge", {"who": "bob", "amount": 1})],
]


def _model(turns: Turns) -> FunctionModel:
    def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        turn = sum(isinstance(m, ModelResponse) for m in messages)
        if turn < len(turns):
            return ModelResponse(
                parts=[
                    ToolCallPart(name, args, tool_call_id=f"t{turn}c{i}")
                    for i, (name, args) in enumerate(turns[turn])
                ]
            )
        seen = [
            str(p.content)
            for m in messages
            for p in getattr(m, "parts", [])
            if isinstance(p, ToolReturnPart)
        ]
        return ModelResponse(parts=[TextPart("done: " + " | ".join(seen))])

    return FunctionModel(respond)


def _agent(name: str, turns: Turns) -> Agent[None, str]:
    return Agent(_model(turns), name=name, capabilities=[Continuations()])


payer = _agent("payer", PAYER_TURNS)


@payer.tool_plain(sequential=True)
@requires_approval(reason="Moves money")
@idempotent(False)
def transfer(to: str, amount: int) -> str:
    """Transfer money (gated, not idempotent)."""
    LEDGER.tool("g14", "transfer", {"to": to, "amount": amount, "key": idempotency_key()})
    return f"sent {amount} to {to}"


@payer.tool_plain(sequential=True)
def lookup(who: str) -> str:
    """Look someone up (idempotent); slow by ``$G14_LOOKUP_SECONDS``."""
    LEDGER.tool("g14", "lookup_entered", {"who": who, "key": idempotency_key()})
    for hook in ON_LOOKUP:
        hook()
    time.sleep(float(os.environ.get("G14_LOOKUP_SECONDS", "0")))
    LEDGER.tool("g14", "lookup", {"who": who, "key": idempotency_key()})
    return f"found {who}"


@payer.tool_plain(sequential=True)
@idempotent(False)
def charge(who: str, amount: int) -> str:
    """Charge a card (not idempotent)."""
    LEDGER.tool("g14", "charge", {"who": who, "amount": amount, "key": idempotency_key()})
    return f"charged {who} {amount}"


wirer = _agent("wirer", [[("wire", {"to": "mallory", "amount": 900})]])


@wirer.tool_plain
@requires_approval(reason="Moves money abroad")
def wire(to: str, amount: int) -> str:
    """Wire money; the bank is down, so it raises after being called."""
    LEDGER.tool("g14", "wire", {"to": to, "amount": amount, "key": idempotency_key()})
    raise RuntimeError("the bank refused the connection")


expiring = _agent("expiring", [[("quick_transfer", {"to": "eve", "amount": 7})]])


@expiring.tool_plain
@requires_approval(reason="Moves money", expires=timedelta(seconds=1))
@idempotent(False)
def quick_transfer(to: str, amount: int) -> str:
    """Transfer money; the approval must come within a second."""
    LEDGER.tool("g14", "transfer", {"to": to, "amount": amount, "key": idempotency_key()})
    return f"sent {amount} to {to}"


def _broken_model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    if sum(isinstance(m, ModelResponse) for m in messages) == 0:
        return ModelResponse(parts=[ToolCallPart("transfer", {"to": "zed", "amount": 3})])
    raise RuntimeError("the model provider is unavailable")


broken: Agent[None, str] = Agent(
    FunctionModel(_broken_model), name="broken", capabilities=[Continuations()]
)
broken.tool_plain(transfer)
ghost = _agent("ghost", PAYER_TURNS[:1])  # not among AGENTS: a worker does not know it
ghost.tool_plain(transfer)

drifter_then = _agent("drifter", PAYER_TURNS[:1])  # as it was when its runs suspended
drifter_then.tool_plain(transfer)
drifter = _agent("drifter", PAYER_TURNS[:1])  # as deployed now: transfer takes other args


@drifter.tool_plain(name="transfer")
def transfer_v2(iban: str, cents: int) -> str:
    """Transfer money by IBAN (a changed tool)."""
    LEDGER.tool("g14", "transfer", {"to": iban, "amount": cents, "key": idempotency_key()})
    return f"sent {cents} to {iban}"


AGENTS = {
    "payer": payer,
    "wirer": wirer,
    "expiring": expiring,
    "broken": broken,
    "drifter": drifter,
}


def strands_payer() -> Any:
    """The ``payer`` agent, built with Strands (same tools, same script)."""
    from strands import Agent as StrandsAgent
    from strands import tool
    from strands.tools.executors import SequentialToolExecutor

    from continuations_strands import Continuations as StrandsContinuations
    from continuations_strands.testing import ScriptedModel

    return StrandsAgent(
        model=ScriptedModel("payer", [list(turn) for turn in PAYER_TURNS]),
        name="payer",
        tools=[tool(transfer), tool(lookup), tool(charge)],
        callback_handler=None,
        plugins=[StrandsContinuations()],
        tool_executor=SequentialToolExecutor(),
    )


async def decided(
    agent: Any, store: Store, keys: Keyring | None, *, by: str = "ops"
) -> Continuation:
    """Start a run of ``agent`` (either framework) in ``store``; approve its request there.

    Returns the continuation with the approval attached, as the store now holds it.
    """
    if isinstance(agent, Agent):
        from continuations_pydantic_ai import run
    else:
        from continuations_strands import run  # type: ignore[assignment]

    outcome = await run(agent, "go", keys=keys, store=store)
    assert isinstance(outcome, Suspended), outcome
    approved = outcome.continuation.approve(outcome.continuation.requests[0].path, by=by)
    await store.decide(approved.id, approved.decisions[0])
    return approved
