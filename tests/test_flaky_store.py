"""Flaky stores (G14): workers keep serving while a fifth of store calls fail, and a lost
start of an approved call neither drops it nor runs it twice.

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
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import fleet_agents
import g14_agents
import pytest
import pytest_asyncio
from _backends import enter_namespace
from _faulty import FlakyStore

from continuations_core import Keyring, MemoryStore, Store, StoreUnavailable
from continuations_core._attempts import STORE_RETRIES, RetryPolicy
from continuations_core.stores import Claim, RunStatus, Segment, open_store
from continuations_core.stores._records import AuditKind
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
    unfinished = {
        rid: status
        for rid in run_ids
        if (status := await reliable.status(rid)).state != "completed"
    }
    for rid, status in unfinished.items():
        print(f"run {rid}: {status.state} after {status.attempts} attempts: {status.last_error}")
        for event in await reliable.audit(rid):
            print(f"  {event.at:%H:%M:%S.%f} {event.kind} {event.actor} {event.detail}")
    assert all(alive), "a worker stopped serving"
    assert states["completed"] == RUNS, f"runs not completed: {states}"
    assert max(transfers.values()) == 1, "a non-idempotent tool ran twice"
    assert failures > RUNS, "the wrapper injected too few failures to test anything"


class LostStarts(MemoryStore):
    """Fails the writes that journal ``transfer``'s start, ``failures`` times in a row: after
    storing them (the answer is lost) or before. With ``lose_note`` every write saying that
    the call did not run fails before reaching the store."""

    def __init__(self, *, side: str, failures: int, lose_note: bool = False) -> None:
        super().__init__()
        self.side, self.left, self.lose_note = side, failures, lose_note

    async def append_step(
        self,
        claim: Claim,
        run_id: str,
        *,
        segment: Segment | None = None,
        journal: Sequence[tuple[AuditKind, dict[str, Any]]] = (),
        actor: str | None = None,
    ) -> None:
        kinds = {
            (kind, detail.get("tool"), bool(detail.get("not_run"))) for kind, detail in journal
        }
        start = ("tool_started", "transfer", False) in kinds and self.left > 0
        note = ("tool_suspended", "transfer", True) in kinds and self.lose_note
        if start:
            self.left -= 1
        if note or (start and self.side == "before"):
            raise StoreUnavailable("injected: the write never reached the store")
        await super().append_step(claim, run_id, segment=segment, journal=journal, actor=actor)
        if start:
            raise StoreUnavailable("injected: the write was stored, its answer lost")


async def _approved_payer_drained(store: LostStarts, framework: str) -> tuple[str, RunStatus]:
    """Run the payer of ``framework`` in ``store`` until it asks for the transfer, approve it,
    and let a worker resume it (retrying failed attempts) until idle; the run id and status."""
    g14_agents.LEDGER.entries.clear()
    agent = g14_agents.payer if framework == "pydantic-ai" else g14_agents.strands_payer()
    cont = await g14_agents.decided(agent, store, KEYS)
    worker = Worker(
        store, {"payer": agent}, keys=KEYS, owner="w", poll_seconds=0.05,
        retry=RetryPolicy(backoff=0.05),
    )  # fmt: skip
    await asyncio.wait_for(worker.run(install_signals=False, idle_exit=1.0), 60)
    return cont.run_id, await store.status(cont.run_id)


@pytest.mark.parametrize("framework", ["pydantic-ai", "strands"])
@pytest.mark.parametrize("side", ["after", "before"])
async def test_an_approved_call_whose_start_could_not_be_journaled_runs_on_the_next_attempt(
    framework: str, side: str
) -> None:
    """The store fails every retry of the write journaling an approved, non-idempotent
    call's start, so the call does not run and the attempt fails. The attempt records that the
    call did not run, and the next attempt runs it once: the run completes with its result,
    not with the call answered "interrupted" (which would drop the approved transfer)."""
    store = LostStarts(side=side, failures=STORE_RETRIES + 1)
    run_id, status = await _approved_payer_drained(store, framework)
    assert store.left == 0, "the start was not failed as often as the store retries"
    assert status.state == "completed", status
    assert g14_agents.LEDGER.count("transfer") == 1
    assert "sent 5 to bob" in str(status.output) and "interrupted" not in str(status.output)
    events = await store.audit(run_id)
    kinds = [e.kind for e in events]
    assert "attempt_failed" in kinds
    noted = [e for e in events if e.kind == "tool_suspended" and e.detail.get("not_run")]
    assert [e.detail["tool"] for e in noted] == ["transfer"]


@pytest.mark.parametrize("framework", ["pydantic-ai", "strands"])
async def test_a_call_whose_start_may_be_stored_is_never_run_twice_when_no_note_gets_through(
    framework: str,
) -> None:
    """The same, but the store also loses the note that the call did not run: the next attempt
    cannot tell that it did not, so it answers the call "interrupted" and never runs it."""
    store = LostStarts(side="after", failures=STORE_RETRIES + 1, lose_note=True)
    _, status = await _approved_payer_drained(store, framework)
    assert status.state == "completed", status
    assert g14_agents.LEDGER.count("transfer") == 0
    assert "interrupted" in str(status.output)
