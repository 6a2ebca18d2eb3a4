"""G14 inside one process: a run that lost its claim stops, approved calls that raised stay put.

The store is real (SQLite); faults are injected around it: a partition cuts the running
process off from the store (its lease expires meanwhile), and a flaky wrapper loses calls.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import g14_agents
import pytest
from _faulty import FlakyStore, PartitionedStore

from continuations_core import (
    ApprovedCallFailed,
    ClaimSuperseded,
    Completed,
    Keyring,
    SQLiteStore,
)
from continuations_core.testing.spec import Ledger

KEYS = Keyring.generate("g14")
LEASE = 0.6
FRAMEWORKS = ["pydantic-ai", "strands"]


@pytest.fixture(autouse=True)
def ledger() -> Iterator[Ledger]:
    """A fresh in-memory ledger for the g14 agents, and no lookup hooks left behind."""
    g14_agents.LEDGER.entries.clear()
    yield g14_agents.LEDGER
    g14_agents.ON_LOOKUP.clear()
    g14_agents.LEDGER.entries.clear()


def _payer(framework: str) -> Any:
    return g14_agents.payer if framework == "pydantic-ai" else g14_agents.strands_payer()


def _adapter(framework: str) -> Any:
    if framework == "pydantic-ai":
        import continuations_pydantic_ai as adapter
    else:
        import continuations_strands as adapter  # type: ignore[no-redef]
    return adapter


@pytest.mark.parametrize("framework", FRAMEWORKS)
async def test_a_run_cut_off_past_its_lease_writes_nothing_more_and_starts_no_tool(
    framework: str, ledger: Ledger, tmp_path: Path
) -> None:
    """Partitioned inside a tool batch past its lease and taken over, the run starts no tool."""
    path = tmp_path / "runs.db"
    store = PartitionedStore(SQLiteStore(path))
    rescuer = SQLiteStore(path)  # another process's connection
    cont = await g14_agents.decided(_payer(framework), store, KEYS)
    taken: dict[str, Any] = {}

    def cut_off() -> None:  # runs inside `lookup`, in the tool's thread
        store.partitioned.set()
        time.sleep(LEASE * 2)  # heartbeats cannot reach the store: the lease runs out

        async def take_over() -> None:
            [held] = await rescuer.list(run_id=cont.run_id, status="claimed")
            taken["claim"] = await rescuer.claim(held.id, owner="rescuer", lease_seconds=30)
            taken["audit"] = len(await rescuer.audit(cont.run_id))

        asyncio.run(take_over())
        store.partitioned.clear()

    g14_agents.ON_LOOKUP.append(cut_off)
    agent = _payer(framework)
    adapter = _adapter(framework)
    with pytest.raises(ClaimSuperseded):
        await adapter.resume(agent, cont, keys=KEYS, store=store, owner="zombie",
                             lease_seconds=LEASE)  # fmt: skip
    assert ledger.count("transfer") == 1 and ledger.count("lookup") == 1
    assert ledger.count("charge") == 0, "a run that lost its claim started another tool"
    after = (await rescuer.audit(cont.run_id))[taken["audit"] :]
    assert [e for e in after if e.actor == "zombie"] == [], "a superseded write was accepted"

    g14_agents.ON_LOOKUP.clear()
    held = await rescuer.load(taken["claim"].id)
    outcome = await adapter.resume(
        _payer(framework), held, keys=KEYS, store=rescuer, claim=taken["claim"], owner="rescuer"
    )
    assert isinstance(outcome, Completed)
    assert ledger.count("transfer") == 1 and ledger.count("charge") == 1
    assert ledger.count("lookup") == 2  # idempotent: the step in flight ran again
    await rescuer.close()
    await store.close()


async def test_an_approved_call_that_raised_fails_the_continuation_and_never_runs_again(
    ledger: Ledger, tmp_path: Path
) -> None:
    """Pydantic AI lets a tool's exception end the run: it is failed at once, the call ran once."""
    from continuations_pydantic_ai import resume, resume_run

    store = SQLiteStore(tmp_path / "runs.db")
    cont = await g14_agents.decided(g14_agents.wirer, store, KEYS)
    with pytest.raises(ApprovedCallFailed) as raised:
        await resume(g14_agents.wirer, cont, keys=KEYS, store=store)
    assert isinstance(raised.value.__cause__, RuntimeError)
    assert "bank refused" in str(raised.value)
    stored = await store.get(cont.id)
    assert stored.status == "failed" and stored.attempts == 1
    assert stored.last_error is not None and stored.last_error.type == "ApprovedCallFailed"
    kinds = [e.kind for e in await store.audit(cont.run_id)]
    assert kinds[-2:] == ["tool_failed", "failed"]
    with pytest.raises(Exception, match="failed"):
        await resume_run(cont.run_id, g14_agents.wirer, store=store, keys=KEYS)
    assert ledger.count("wire") == 1

    await store.retry(cont.id, by="ops")  # a person asks for the call to run again
    with pytest.raises(ApprovedCallFailed):
        await resume_run(cont.run_id, g14_agents.wirer, store=store, keys=KEYS)
    assert ledger.count("wire") == 2, "an explicit retry runs the approved call again"
    await store.close()


async def test_an_approved_strands_call_that_raised_reports_the_error_to_the_model_once(
    ledger: Ledger, tmp_path: Path
) -> None:
    """Strands turns a tool's exception into an error result: the run goes on, the call ran once."""
    from strands import Agent as StrandsAgent
    from strands import tool

    from continuations_strands import Continuations, resume
    from continuations_strands.testing import ScriptedModel

    agent = StrandsAgent(
        model=ScriptedModel("wirer", [[("wire", {"to": "mallory", "amount": 900})]]),
        name="wirer",
        tools=[tool(g14_agents.wire)],
        callback_handler=None,
        plugins=[Continuations()],
    )
    store = SQLiteStore(tmp_path / "runs.db")
    cont = await g14_agents.decided(agent, store, KEYS)
    outcome = await resume(agent, cont, keys=KEYS, store=store)
    assert isinstance(outcome, Completed)
    assert "bank refused" in str(outcome.output)
    assert ledger.count("wire") == 1
    assert (await store.status(cont.run_id)).state == "completed"
    await store.close()


async def test_transient_store_errors_inside_a_run_are_retried_without_repeating_tools(
    ledger: Ledger, tmp_path: Path
) -> None:
    """A store losing a third of its calls (before or after committing) still completes runs."""
    from continuations_pydantic_ai import resume

    inner = SQLiteStore(tmp_path / "runs.db")
    conts = [await g14_agents.decided(g14_agents.payer, inner, KEYS) for _ in range(5)]
    flaky = FlakyStore(inner, rate=0.33, seed=3)
    for cont in conts:
        outcome = await resume(g14_agents.payer, cont, keys=KEYS, store=flaky)
        assert isinstance(outcome, Completed), outcome
    assert sum(flaky.failures.values()) > 10, flaky.failures
    assert {k.split(":")[1] for k in flaky.failures} == {"before", "after"}
    for tool in ("transfer", "charge", "lookup"):
        keys = [r["key"] for r in ledger.runs(tool)]
        assert len(keys) == len(set(keys)) == 5, f"{tool} ran {keys}"
    for cont in conts:
        assert (await inner.status(cont.run_id)).state == "completed"
    await inner.close()
