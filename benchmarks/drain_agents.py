"""The agent worker processes load in the drain benchmark (``benchmarks.drain_agents:AGENTS``).

A trivial pause: the model calls one gated tool, then answers. Tool bodies append to the
ledger file in ``$BENCH_LEDGER``, so the benchmark can check every continuation ran once.

Importing this module prepares the agents (``prepare_agents``: what the frameworks and the
package build on first use, which a worker does before its first claim) and then waits for
the file ``$BENCH_START`` to exist (a start barrier): every worker process of a measurement
finishes starting up first, and then all begin claiming at once, so the drain rate is not a
measure of interpreter start-up. After the barrier, a worker's own ``Worker.prepare`` finds
that work done.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from continuations_core.testing.spec import AgentSpec, Call, Ledger, ToolSpec
from continuations_core.worker import prepare_agents

__all__ = ["AGENTS", "SPEC", "wait_for_start"]

#: How long a worker waits at the barrier before giving up.
START_TIMEOUT_SECONDS = 300.0

SPEC = AgentSpec(
    name="drain",
    turns=((Call("transfer", {"to": "bob", "amount": 5000}),),),
    tools=(ToolSpec("transfer", kind="gated", params="payment", reason="Moves money"),),
)


def wait_for_start() -> None:
    """Signal readiness (``$BENCH_START.<pid>``) and block until ``$BENCH_START`` exists."""
    start = os.environ.get("BENCH_START")
    if not start:
        return
    Path(f"{start}.{os.getpid()}").touch()
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while not Path(start).exists():
        if time.monotonic() > deadline:
            raise SystemExit("the drain benchmark never started this worker")
        time.sleep(0.005)


def _agents() -> dict[str, object]:
    from continuations_pydantic_ai.testing import PydanticAIHarness

    ledger_path = os.environ.get("BENCH_LEDGER")
    ledger = Ledger(path=Path(ledger_path)) if ledger_path else Ledger()
    return {SPEC.name: PydanticAIHarness().build(SPEC, ledger)}


AGENTS = _agents()
asyncio.run(prepare_agents(AGENTS))
wait_for_start()
