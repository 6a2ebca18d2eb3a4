"""G13: where a store holds a continuation, the store's document and decisions are the truth."""

from __future__ import annotations

from pathlib import Path

import pytest

from continuations_core import (
    AlreadyClaimed,
    AlreadyDecided,
    Completed,
    ConflictError,
    Continuation,
    Store,
)
from continuations_core.stores import open_store
from continuations_core.testing.conformance import BIG, KEYS, payer, suspended
from continuations_core.testing.spec import Call, Harness, Ledger

SPEC = payer(Call("lookup", {"who": "bob"}), Call("transfer", BIG))


@pytest.fixture(params=["memory", "sqlite"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh store URL."""
    return "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'store.db'}"


async def _suspend(h: Harness, store: Store) -> tuple[object, Ledger, Continuation]:
    ledger = Ledger()
    agent = h.build(SPEC, ledger)
    cont = suspended(await h.run(agent, "go", keys=KEYS, store=store))
    return agent, ledger, cont


async def test_a_stored_denial_beats_the_callers_approval(harness: Harness, url: str) -> None:
    """Store says denied by alice; a caller's copy approved with new args is refused, nothing runs."""
    async with open_store(url) as store:
        agent, ledger, cont = await _suspend(harness, store)
        path = cont.requests[0].path
        await store.decide(cont.id, cont.deny(path, "no", by="alice").decisions[0])
        before = await store.get(cont.id)
        forged = cont.approve(path, args={"to": "mallory", "amount": 999}, by="mallory")
        with pytest.raises(AlreadyDecided) as caught:
            await harness.resume(agent, forged, keys=KEYS, store=store)
        assert caught.value.by == "alice" and "alice" in str(caught.value)
        after = await store.get(cont.id)
        assert (after.version, after.status) == (before.version, "ready")
        assert after.continuation.decisions == before.continuation.decisions
        assert ledger.count("transfer") == 0


async def test_the_callers_approval_is_recorded_then_runs_once(harness: Harness, url: str) -> None:
    """A copy approved in memory, passed with store=, is recorded (audited) and runs exactly once."""
    async with open_store(url) as store:
        agent, ledger, cont = await _suspend(harness, store)
        approved = cont.approve(cont.requests[0].path, by="bob")
        outcome = await harness.resume(agent, approved, keys=KEYS, store=store)
        assert isinstance(outcome, Completed)
        assert ledger.runs("transfer") == [BIG]
        stored = await store.get(cont.id)
        assert stored.status == "done"
        record = stored.continuation.decision_for(cont.requests[0].path)
        assert record is not None and record.by == "bob"
        decided = [e for e in await store.audit(cont.run_id) if e.kind == "decided"]
        assert [e.actor for e in decided] == ["bob"]
        with pytest.raises(AlreadyClaimed):
            await harness.resume(agent, approved, keys=KEYS, store=store)
        assert ledger.runs("transfer") == [BIG]


async def test_stored_decisions_are_used_for_an_undecided_copy(harness: Harness, url: str) -> None:
    """The caller's undecided copy resumes with the decisions the store holds."""
    async with open_store(url) as store:
        agent, ledger, cont = await _suspend(harness, store)
        edited = {"to": "bob", "amount": 4000}
        decided = cont.approve(cont.requests[0].path, args=edited, by="alice")
        await store.decide(cont.id, decided.decisions[0])
        outcome = await harness.resume(agent, cont, keys=KEYS, store=store)
        assert isinstance(outcome, Completed)
        assert ledger.runs("transfer") == [edited]


async def test_a_claim_on_another_continuation_is_refused(harness: Harness, url: str) -> None:
    """A claim passed for another continuation is refused; neither one runs or is marked done."""
    async with open_store(url) as store:
        agent, ledger, cont = await _suspend(harness, store)
        _other_agent, _other_ledger, other = await _suspend(harness, store)
        for c in (cont, other):
            await store.decide(c.id, c.approve(c.requests[0].path, by="ops").decisions[0])
        foreign = await store.claim(other.id, owner="w1")
        with pytest.raises(ConflictError):
            await harness.resume(agent, await store.load(cont.id), keys=KEYS, store=store,
                                 claim=foreign)  # fmt: skip
        assert ledger.count("transfer") == 0
        assert (await store.get(cont.id)).status == "ready"
        assert (await store.get(other.id)).status == "claimed"


async def test_a_lost_claim_is_refused(harness: Harness, url: str) -> None:
    """A claim that no longer holds (released, taken over) resumes nothing."""
    async with open_store(url) as store:
        agent, ledger, cont = await _suspend(harness, store)
        await store.decide(cont.id, cont.approve(cont.requests[0].path, by="ops").decisions[0])
        claim = await store.claim(cont.id, owner="w1")
        await store.release(claim)
        with pytest.raises(AlreadyClaimed):
            await harness.resume(agent, await store.load(cont.id), keys=KEYS, store=store,
                                 claim=claim)  # fmt: skip
        assert ledger.count("transfer") == 0
        assert (await store.get(cont.id)).status == "ready"


async def test_a_different_document_under_the_same_id_is_refused(
    harness: Harness, url: str
) -> None:
    """A validly signed document that differs from the stored one under its id is refused."""
    async with open_store(url) as store:
        agent, ledger, cont = await _suspend(harness, store)
        other = Continuation(id=cont.id, run_id=cont.run_id, seq=cont.seq, root=cont.root)
        other = other.model_copy(update={"started_by": "someone-else"}).sign(KEYS)
        approved = other.approve(other.requests[0].path, by="mallory")
        with pytest.raises(ConflictError):
            await harness.resume(agent, approved, keys=KEYS, store=store)
        assert ledger.count("transfer") == 0
        stored = await store.get(cont.id)
        assert stored.status == "waiting" and stored.continuation.decisions == ()
