"""The flaky-store drain (G14): workers keep serving while a fifth of store calls fail.

Four workers drain 200 decided runs through their own :class:`FlakyStore` wrappers, each
failing 20% of its calls with ``StoreUnavailable`` (half before the store saw the call, half
after it committed). Every run must complete once, the non-idempotent ``transfer`` must run
at most once per run, and every worker must still be running at the end.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import fleet_agents
import pytest
import pytest_asyncio
from _backends import enter_namespace
from _faulty import FlakyStore

from continuations_core import Keyring, MemoryStore, Store
from continuations_core.stores import open_store
from continuations_core.worker import Worker

RUNS = int(os.environ.get("FLAKY_RUNS", "200"))
WORKERS = 4
RATE = 0.2
KEYS = Keyring.generate("flaky")


@pytest_asyncio.fixture(
    params=[
        "memory",
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("redis", marks=pytest.mark.redis),
    ]
)
async def stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[list[Store]]:
    """One reliable store for setup and checks, then one connection per worker."""
    async with AsyncExitStack() as stack:
        if request.param == "memory":
            shared = MemoryStore()
            yield [shared] * (WORKERS + 1)
            await shared.close()
            return
        url = await enter_namespace(stack, request.param, tmp_path)
        opened = [open_store(url) for _ in range(WORKERS + 1)]
        yield opened
        for store in opened:
            await store.close()


@pytest.mark.slow
async def test_four_workers_drain_through_a_store_failing_a_fifth_of_calls(
    stores: list[Store],
) -> None:
    """0 lost, 0 duplicate non-idempotent effects, every worker alive, despite 20% failures."""
    fleet_agents.LEDGER.entries.clear()
    reliable, *own = stores
    run_ids = [(await fleet_agents.decided_run(reliable, KEYS)).run_id for _ in range(RUNS)]
    flaky = [FlakyStore(store, rate=RATE, seed=n) for n, store in enumerate(own)]
    workers = [
        Worker(
            store,
            fleet_agents.AGENTS,
            keys=KEYS,
            owner=f"flaky-{n}",
            lease_seconds=2.0,
            poll_seconds=0.05,
            concurrency=2,
        )
        for n, store in enumerate(flaky)
    ]
    tasks = [asyncio.create_task(w.run(install_signals=False)) for w in workers]
    began = time.monotonic()
    states: Counter[str] = Counter()
    while time.monotonic() - began < 300:
        await asyncio.sleep(0.5)
        states = Counter([(await reliable.status(rid)).state for rid in run_ids])
        if states["completed"] + states["failed"] == RUNS or any(t.done() for t in tasks):
            break
    elapsed = time.monotonic() - began
    alive = [not t.done() for t in tasks]
    for worker in workers:
        worker.stop()
    await asyncio.gather(*tasks)
    transfers = Counter(r["key"] for r in fleet_agents.LEDGER.runs("transfer"))
    failures = sum(sum(f.failures.values()) for f in flaky)
    calls = sum(f.calls for f in flaky)
    print(
        f"\nflaky store: runs={RUNS} workers={WORKERS} calls={calls} failed_calls={failures} "
        f"({failures / max(calls, 1):.0%}) completed={states['completed']} "
        f"lost={RUNS - states['completed']} transfer_runs={sum(transfers.values())} "
        f"transfer_max={max(transfers.values(), default=0)} seconds={elapsed:.1f}"
    )
    assert all(alive), "a worker stopped serving"
    assert states["completed"] == RUNS, f"runs not completed: {states}"
    assert max(transfers.values()) == 1, "a non-idempotent tool ran twice"
    assert failures > RUNS, "the wrapper injected too few failures to test anything"
