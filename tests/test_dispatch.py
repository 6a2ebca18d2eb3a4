"""The dispatch seam: a store tells its dispatcher once, after the commit, on every backend."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import pytest_asyncio
from _backends import enter_namespace
from test_stores import BACKEND_PARAMS

from continuations_core import Completed, Dispatcher, DispatchFailed, StoreDispatcher
from continuations_core.dispatch import BUILTIN, earliest_deadline
from continuations_core.stores import MemoryStore, Store, open_store
from continuations_core.testing._store_kit import decision, make_continuation
from continuations_core.testing.conformance import BIG, KEYS, TRANSFER, payer, suspended
from continuations_core.testing.spec import Call, Harness, Ledger


class Recorder(Dispatcher):
    """Records every call; fails while ``failing`` is set (after recording the call)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, int, datetime | None]] = []
        self.failing = False

    async def ready(self, continuation_id: str, seq: int) -> None:
        self.calls.append(("ready", continuation_id, seq, None))
        await asyncio.sleep(0)
        if self.failing:
            raise ConnectionError("the engine's queue is down")

    async def expire_at(self, continuation_id: str, seq: int, when: datetime) -> None:
        self.calls.append(("expire_at", continuation_id, seq, when))
        if self.failing:
            raise ConnectionError("the engine's queue is down")


@pytest_asyncio.fixture(params=BACKEND_PARAMS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """A fresh store of each backend, with a recording dispatcher."""
    name: str = request.param
    async with AsyncExitStack() as stack:
        url = "memory://" if name == "memory" else await enter_namespace(stack, name, tmp_path)
        async with open_store(url, dispatcher=Recorder()) as opened:
            yield opened


def _calls(store: Store) -> list[tuple[str, str, int, datetime | None]]:
    assert isinstance(store.dispatcher, Recorder)
    return store.dispatcher.calls


@pytest.mark.asyncio
async def test_a_suspension_with_a_deadline_is_dispatched_to_expire_once(store: Store) -> None:
    """Saving a suspension tells expire_at its earliest undecided deadline; nothing is ready."""
    cont = make_continuation(KEYS, leaves=2)
    deadline = earliest_deadline(cont)
    assert deadline is not None and deadline > datetime.now(UTC)
    await store.save(cont)
    assert _calls(store) == [("expire_at", cont.id, cont.seq, deadline)]


@pytest.mark.asyncio
async def test_only_the_last_decision_dispatches_ready(store: Store) -> None:
    """Each decision but the last dispatches nothing; the last dispatches ready once."""
    cont = make_continuation(KEYS, leaves=2)
    await store.save(cont)
    calls = _calls(store)
    calls.clear()
    n = len(cont.requests)
    for i in range(n - 1):
        await store.decide(cont.id, decision(cont, i))
        assert calls == [], f"decision {i} of {n} dispatched"
    record = await store.decide(cont.id, decision(cont, n - 1))
    assert record.status == "ready"
    assert calls == [("ready", cont.id, cont.seq, None)]
    # Replacing a decision of a ready continuation dispatches nothing more.
    await store.decide(cont.id, decision(cont, 0, by="bob"), replace=True)
    assert calls == [("ready", cont.id, cont.seq, None)]
    claim = await store.claim(cont.id, owner="w1")
    assert claim.token == 1


@pytest.mark.asyncio
async def test_concurrent_last_decisions_dispatch_ready_exactly_once(store: Store) -> None:
    """Deciders racing on every request: one of them lands last, and only it dispatches."""
    cont = make_continuation(KEYS, leaves=4)
    await store.save(cont)
    calls = _calls(store)
    calls.clear()
    await asyncio.gather(*(store.decide(cont.id, decision(cont, i)) for i in range(5)))
    assert calls == [("ready", cont.id, cont.seq, None)]
    assert (await store.get(cont.id)).status == "ready"


@pytest.mark.asyncio
async def test_a_suspension_saved_fully_decided_is_ready_at_once(store: Store) -> None:
    """A continuation saved with every decision dispatches ready, and no expiry."""
    cont = make_continuation(KEYS, leaves=1)
    for i in range(len(cont.requests)):
        cont = cont.with_decisions((*cont.decisions, decision(cont, i)))
    await store.save(cont)
    assert _calls(store) == [("ready", cont.id, cont.seq, None)]


@pytest.mark.asyncio
async def test_a_decided_deadline_is_not_dispatched(store: Store) -> None:
    """Only undecided requests' deadlines count: no expiry when the one with it is decided."""
    cont = make_continuation(KEYS, leaves=2)
    assert cont.requests[0].expires_at is not None  # the only request with a deadline
    cont = cont.with_decisions((decision(cont, 0),))
    await store.save(cont)
    assert _calls(store) == []


@pytest.mark.asyncio
async def test_checkpoints_dispatch_suspensions_only(store: Store) -> None:
    """A held checkpoint dispatches nothing; a run's next suspension dispatches like a save."""
    first = make_continuation(KEYS, leaves=0, run_id="run-cp")
    held = await store.checkpoint(first, owner="w1", lease_seconds=60)
    assert held is not None
    assert _calls(store) == []
    nxt = make_continuation(KEYS, leaves=2, run_id="run-cp").model_copy(update={"seq": 1})
    nxt = nxt.sign(KEYS)
    assert await store.checkpoint(nxt, previous=held, owner=None) is None
    assert _calls(store) == [("expire_at", nxt.id, 1, earliest_deadline(nxt))]


@pytest.mark.asyncio
async def test_a_failing_dispatcher_loses_nothing(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """The write stays committed; DispatchFailed names the continuation; one error line."""
    recorder = store.dispatcher
    assert isinstance(recorder, Recorder)
    recorder.failing = True
    cont = make_continuation(KEYS, leaves=1)
    with pytest.raises(DispatchFailed) as saved:
        await store.save(cont)
    assert saved.value.continuation_id == cont.id
    assert (await store.get(cont.id)).status == "waiting"
    for i in range(len(cont.requests) - 1):
        await store.decide(cont.id, decision(cont, i))
    last = decision(cont, len(cont.requests) - 1)
    with (
        caplog.at_level(logging.ERROR, logger="continuations.store"),
        pytest.raises(DispatchFailed, match="is stored, but its dispatcher") as decided,
    ):
        await store.decide(cont.id, last)
    assert decided.value.continuation_id == cont.id
    assert isinstance(decided.value.__cause__, ConnectionError)
    record = await store.get(cont.id)
    assert record.status == "ready"
    assert len(record.continuation.decisions) == len(cont.requests)
    assert [r.message for r in caplog.records if "dispatch_failed" in r.message]
    # The engine finds it in the store: a claim takes it, under the usual rules.
    recorder.failing = False
    claim = await store.claim_next("w1")
    assert claim is not None and claim.id == cont.id


def test_stores_use_the_built_in_dispatcher_unless_told() -> None:
    """Every store starts with the built-in dispatcher; open_store installs another."""
    assert isinstance(BUILTIN, StoreDispatcher)
    assert MemoryStore().dispatcher is BUILTIN
    assert open_store("memory://").dispatcher is BUILTIN
    recorder = Recorder()
    assert open_store("memory://", dispatcher=recorder).dispatcher is recorder
    assert MemoryStore().dispatcher is BUILTIN  # one store's dispatcher is not another's


SPEC = payer(
    Call("lookup", {"who": "bob"}),
    Call("transfer", BIG),
    transfer=replace(TRANSFER, expires=timedelta(hours=4)),
)


async def test_runs_go_on_while_the_dispatcher_is_down(harness: Harness, tmp_path: Path) -> None:
    """A durable run suspends and resumes in-process with a failing dispatcher: nothing is
    lost, the gated tool runs once, and each dispatch was tried once."""
    recorder = Recorder()
    recorder.failing = True
    async with open_store(f"sqlite:///{tmp_path / 's.db'}", dispatcher=recorder) as store:
        ledger = Ledger()
        agent = harness.build(SPEC, ledger)
        cont = suspended(await harness.run(agent, "go", keys=KEYS, store=store))
        assert (await store.get(cont.id)).status == "waiting"
        assert ledger.count("transfer") == 0
        when = cont.requests[0].expires_at
        assert when is not None
        assert recorder.calls == [("expire_at", cont.id, cont.seq, when)]
        approved = cont.approve(cont.requests[0].path, by="bob")
        outcome = await harness.resume(agent, approved, keys=KEYS, store=store)
        assert isinstance(outcome, Completed)
        assert ledger.runs("transfer") == [BIG]
        assert recorder.calls[1:] == [("ready", cont.id, cont.seq, None)]
        assert (await store.get(cont.id)).status == "done"


@pytest.mark.asyncio
async def test_a_retry_that_makes_a_continuation_ready_dispatches_it(store: Store) -> None:
    """An operator's retry of a failed, decided continuation dispatches ready once; a failed
    one with undecided requests goes back to waiting (and dispatches nothing)."""
    decided = make_continuation(KEYS, leaves=1)
    await store.save(decided)
    for i in range(len(decided.requests)):
        await store.decide(decided.id, decision(decided, i))
    await store.fail_unreadable(decided.id, RuntimeError("broken"), actor="test")
    undecided = make_continuation(KEYS, leaves=1)
    await store.save(undecided)
    await store.fail_unreadable(undecided.id, RuntimeError("expired"), actor="expiry")
    calls = _calls(store)
    calls.clear()
    assert (await store.retry(decided.id, by="ops")).status == "ready"
    assert calls == [("ready", decided.id, decided.seq, None)]
    calls.clear()
    assert (await store.retry(undecided.id, by="ops")).status == "waiting"
    assert calls == []
    for i in range(len(undecided.requests)):
        ready = await store.decide(undecided.id, decision(undecided, i))
    assert ready.status == "ready"
    assert calls == [("ready", undecided.id, undecided.seq, None)]
