"""The store conformance suite: plain async scenarios that any :class:`Store` must pass.

Each scenario takes a fresh, empty store and a continuation factory, and raises
``AssertionError`` on failure. The G14 scenarios (fencing, attempts, failure, retry) live in
:mod:`.store_fencing` and are part of ``STORE_SCENARIOS``. They need no test framework, so authors of third-party
backends can run them::

    for scenario in STORE_SCENARIOS:
        async with MyStore(...) as store:
            await scenario(store, make_continuation)
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import uuid
from typing import Any

from .._protocol import new_run_id
from .._schema import Approve, Continuation, DecisionRecord, Frame, Respond
from .._signing import Keyring
from ..errors import (
    AlreadyClaimed,
    AlreadyDecided,
    ConflictError,
    ContinuationFailed,
    ContinuationNotFound,
    InvalidDecision,
    MissingDecisions,
    UnknownPath,
)
from ..stores import Store, open_store
from ._store_kit import (
    ContinuationFactory,
    Scenario,
    check,
    decision,
    make_continuation,
    raises,
    ready,
)
from .store_fencing import FENCING_SCENARIOS

__all__ = [
    "STORE_SCENARIOS",
    "ContinuationFactory",
    "Scenario",
    "audit_order",
    "decide_cas",
    "decide_concurrent",
    "drain_with_claim_next",
    "isolation",
    "lease_expiry",
    "list_by_status",
    "make_continuation",
    "no_decision_revives_a_failure",
    "one_decision_per_path",
    "race_to_claim",
    "release_and_reclaim",
    "save_load",
    "single_use_claim",
    "waiting_cannot_claim",
]


def _policy_suspension() -> Continuation:
    frame = Frame(framework="test", agent="orchestrator", suspended_by="every_n_turns")
    return Continuation(run_id=new_run_id(), root=frame)


async def save_load(store: Store, make: ContinuationFactory) -> None:
    """A saved continuation loads back equal, and its signature still verifies."""
    keys = Keyring.generate()
    cont = make(keys)
    stored = await store.save(cont, actor="agent")
    check(stored.version == 1 and stored.status == "waiting", f"bad new record {stored}")
    check(stored.requests == cont.requests, "requests changed on save")
    loaded = await store.load(cont.id)
    loaded.verify(keys)
    check(loaded.to_dict() == cont.to_dict(), "loaded document differs from the saved one")
    check(loaded.signed_payload() == cont.signed_payload(), "signed bytes changed")
    await raises(ConflictError, store.save(cont), "saving an id twice")

    predecided = make(keys).approve(cont.requests[0].path, by="bob")
    await store.save(predecided)
    again = await store.load(predecided.id)
    again.verify(keys)
    check(again.decisions == predecided.decisions, "decisions given to save were lost")

    exc = await raises(ContinuationNotFound, store.load("no-such-id"), "loading a missing id")
    check("no-such-id" in str(exc), f"the error should name the id: {exc}")


async def list_by_status(store: Store, make: ContinuationFactory) -> None:
    """``list`` filters by status and run, newest first, and honours ``limit``."""
    waiting = make()
    await store.save(waiting)
    decided = await ready(store, make)
    policy = _policy_suspension()
    stored = await store.save(policy)
    check(stored.status == "ready", "a continuation without requests is ready")

    def ids(records: list[Any]) -> list[str]:
        return [r.id for r in records]

    check(ids(await store.list(status="waiting")) == [waiting.id], "waiting list")
    check(ids(await store.list(status="ready")) == [policy.id, decided.id], "ready list")
    check(ids(await store.list()) == [policy.id, decided.id, waiting.id], "newest first")
    check(ids(await store.list(run_id=decided.run_id)) == [decided.id], "filter by run")
    check(ids(await store.list(limit=1)) == [policy.id], "limit")
    check(await store.list(status="done") == [], "nothing is done yet")


async def decide_cas(store: Store, make: ContinuationFactory) -> None:
    """Decisions are compare-and-set, and invalid ones change nothing."""
    cont = make(leaves=2)
    await store.save(cont)
    first = await store.decide(cont.id, decision(cont, 0), expected_version=1)
    check(first.version == 2 and first.status == "waiting", f"after one decision: {first}")
    stale = store.decide(cont.id, decision(cont, 1), expected_version=1)
    await raises(ConflictError, stale, "a stale expected_version")

    call = cont.pending_call(cont.requests[1].path)
    bad_args = DecisionRecord(
        path=cont.requests[1].path,
        tool=call.tool,
        args_digest=call.args_digest,
        decision=Approve(args={"amount": "lots"}),
    )
    await raises(InvalidDecision, store.decide(cont.id, bad_args), "args against the schema")
    wrong_kind = bad_args.model_copy(update={"decision": Respond(value=1)})
    await raises(InvalidDecision, store.decide(cont.id, wrong_kind), "respond to an approval")
    unknown = bad_args.model_copy(update={"path": ("nope:call_0",), "decision": Approve()})
    await raises(UnknownPath, store.decide(cont.id, unknown), "an unknown path")
    after = await store.get(cont.id)
    check(after.version == 2, f"failed decisions changed the version to {after.version}")
    check(after.continuation.decisions == first.continuation.decisions, "decisions changed")

    for i in (1, 2):
        last = await store.decide(cont.id, decision(cont, i))
    check(last.status == "ready" and last.version == 4, f"after all decisions: {last}")


async def one_decision_per_path(store: Store, make: ContinuationFactory) -> None:
    """A decided path refuses a second decision (naming who and when); replace=True is audited."""
    cont = make(leaves=1)
    await store.save(cont)
    path = cont.requests[0].path
    denied = cont.deny(path, "over budget", by="alice").decisions[0]
    first = await store.decide(cont.id, denied)
    approve = cont.approve(path, by="mallory").decisions[0]
    exc = await raises(AlreadyDecided, store.decide(cont.id, approve), "a second decision")
    check("alice" in str(exc) and getattr(exc, "by", None) == "alice", f"names the decider: {exc}")
    after = await store.get(cont.id)
    check(after.version == first.version, "a refused decision changed the version")
    check(after.continuation.decision_for(path) == denied, "a refused decision replaced one")

    replaced = await store.decide(cont.id, approve, replace=True)
    check(replaced.continuation.decision_for(path) == approve, "replace=True did not replace")
    events = [e for e in await store.audit(cont.run_id) if e.kind == "decided"]
    check(
        events[-1].actor == "mallory" and events[-1].detail["replaced"]["by"] == "alice",
        f"the replacement is not audited with what it replaced: {events[-1].detail}",
    )
    twice = make(leaves=1)
    doubled = twice.model_copy(update={"decisions": (*twice.deny(path, "no").decisions, approve)})
    await raises(AlreadyDecided, store.save(doubled), "saving two decisions for one path")


async def no_decision_revives_a_failure(store: Store, make: ContinuationFactory) -> None:
    """A failed continuation takes no decision: only an audited retry makes it run again.

    (An expiry engine fails a continuation whose request expired undecided; a late decision
    must not make it ``ready`` behind the operator's back.)
    """
    cont = make(leaves=1)
    await store.save(cont)
    changed = await store.fail_unreadable(cont.id, RuntimeError("expired"), actor="expiry")
    check(changed, "a waiting continuation can be failed")
    failed = await store.get(cont.id)
    late = store.decide(cont.id, decision(cont, 0))
    await raises(ContinuationFailed, late, "a decision on a failed continuation")
    after = await store.get(cont.id)
    check(after.status == "failed", f"a decision revived a failed continuation: {after.status}")
    check(after.version == failed.version, "a refused decision changed the version")


async def decide_concurrent(store: Store, make: ContinuationFactory) -> None:
    """Decisions made concurrently are all kept."""
    cont = make(leaves=3)
    await store.save(cont)
    n = len(cont.requests)
    await asyncio.gather(*(store.decide(cont.id, decision(cont, i)) for i in range(n)))
    stored = await store.get(cont.id)
    check(len(stored.continuation.decisions) == n, "a concurrent decision was lost")
    check(stored.version == 1 + n and stored.status == "ready", f"final record {stored}")


async def single_use_claim(store: Store, make: ContinuationFactory) -> None:
    """Only one claim wins, and a completed continuation can never be claimed again."""
    cont = await ready(store, make)
    version = (await store.get(cont.id)).version
    await raises(
        ConflictError,
        store.claim(cont.id, owner="w0", expected_version=version - 1),
        "a claim with a stale version",
    )
    claim = await store.claim(cont.id, owner="w1", expected_version=version)
    check(claim.version == version + 1 and claim.owner == "w1", f"bad claim {claim}")
    await raises(AlreadyClaimed, store.claim(cont.id, owner="w2"), "a second claim")
    await raises(AlreadyClaimed, store.decide(cont.id, decision(cont, 0)), "decide when claimed")
    renewed = await store.heartbeat(claim, lease_seconds=600)
    check(renewed.lease_until > claim.lease_until, "heartbeat did not extend the lease")
    held = await store.get(cont.id)
    check(held.version == claim.version, f"a heartbeat changed the version to {held.version}")
    check(
        held.status == "claimed" and held.lease_until is not None
        and abs((held.lease_until - renewed.lease_until).total_seconds()) < 0.001,
        f"stored lease {held.lease_until}, renewed claim's {renewed.lease_until}",
    )  # fmt: skip
    await store.complete(renewed, output={"paid": 2})
    stored = await store.get(cont.id)
    check(stored.status == "done", f"completed should be done, got {stored.status}")
    await raises(AlreadyClaimed, store.claim(cont.id, owner="w2"), "a claim after complete")
    await raises(AlreadyClaimed, store.complete(renewed), "completing twice")


async def release_and_reclaim(store: Store, make: ContinuationFactory) -> None:
    """A released continuation is ready again, and the released claim stops holding."""
    cont = await ready(store, make)
    first = await store.claim(cont.id, owner="w1")
    await store.release(first)
    check((await store.get(cont.id)).status == "ready", "release should make it ready")
    second = await store.claim(cont.id, owner="w2")
    await raises(AlreadyClaimed, store.release(first), "releasing a lost claim")
    await raises(AlreadyClaimed, store.complete(first), "completing a lost claim")
    await raises(AlreadyClaimed, store.heartbeat(first), "a heartbeat of a lost claim")
    await store.complete(second, next_id="next-continuation", output="not kept")
    stored = await store.get(cont.id)
    check(stored.status == "done" and stored.output is None, f"resumed into another: {stored}")
    last = (await store.audit(cont.run_id))[-1]
    check(last.kind == "resumed", f"resumed into another continuation ended with {last.kind}")
    check(last.detail == {"next_id": "next-continuation"}, f"resumed detail {last.detail}")
    check(last.actor == "w2", f"resumed actor {last.actor}")


async def waiting_cannot_claim(store: Store, make: ContinuationFactory) -> None:
    """Claiming a continuation with undecided requests names them and changes nothing."""
    cont = make()
    await store.save(cont)
    await store.decide(cont.id, decision(cont, 0))
    before = await store.get(cont.id)
    exc = await raises(MissingDecisions, store.claim(cont.id, owner="w1"), "claim waiting")
    assert isinstance(exc, MissingDecisions)
    check(
        exc.paths == before.continuation.undecided,
        f"named {exc.paths}, undecided {before.continuation.undecided}",
    )
    after = await store.get(cont.id)
    check(after.status == "waiting" and after.version == before.version, "claim changed it")


async def lease_expiry(store: Store, make: ContinuationFactory) -> None:
    """An expired lease is taken over, and the dead worker's claim no longer holds."""
    cont = await ready(store, make)
    dead = await store.claim(cont.id, owner="dead-worker", lease_seconds=0.05)
    await asyncio.sleep(0.15)
    live = await store.claim(cont.id, owner="live-worker")
    await raises(AlreadyClaimed, store.complete(dead), "completing an expired claim")
    await raises(AlreadyClaimed, store.heartbeat(dead), "heartbeat of an expired claim")
    await store.complete(live)
    kinds = [e.kind for e in await store.audit(cont.run_id)]
    check("expired" in kinds, f"the takeover was not audited: {kinds}")
    check(kinds[-2:] == ["resumed", "completed"], f"bad ending {kinds}")


async def audit_order(store: Store, make: ContinuationFactory) -> None:
    """The audit trail records who did what, in order."""
    cont = make()
    other = make()
    await store.save(cont, actor="agent")
    await store.save(other)
    n = len(cont.requests)
    for i in range(n):
        await store.decide(cont.id, decision(cont, i, by=f"person-{i}"))
    claim = await store.claim(cont.id, owner="worker-1")
    await store.complete(claim, output={"paid": [100, 200]})
    events = await store.audit(cont.run_id)
    kinds = [e.kind for e in events]
    expected = ["suspended", *["decided"] * n, "claimed", "resumed", "completed"]
    check(kinds == expected, f"audit kinds {kinds}, expected {expected}")
    check({e.continuation_id for e in events} == {cont.id}, "another run's events leaked in")
    check(events[0].actor == "agent", "suspended actor")
    paths = [r.path for r in cont.requests]
    check(events[0].detail["requests"] == [list(p) for p in paths], "suspended detail")
    for i, event in enumerate(events[1 : n + 1]):
        check(event.actor == f"person-{i}", f"decided actor {event.actor}")
        check(event.detail["path"] == list(paths[i]), f"decided path {event.detail}")
        check("kind" in event.detail["decision"], f"decided decision {event.detail}")
    check(events[-3].actor == "worker-1", "claimed actor")
    check(events[-1].detail["output"] == {"paid": [100, 200]}, f"output {events[-1].detail}")
    check(events[-2].detail == {"next_id": None}, f"resumed detail {events[-2].detail}")
    check(events[-2].actor == events[-1].actor == "worker-1", "resumed and completed actors")
    stored = await store.get(cont.id)
    check(stored.output == {"paid": [100, 200]}, f"stored output {stored.output}")
    check(stored.version == claim.version + 1, f"version {stored.version} after complete")
    check(all(a.at <= b.at for a, b in itertools.pairwise(events)), "time order")


async def isolation(store: Store, make: ContinuationFactory) -> None:
    """A fresh store holds nothing of another store or of earlier tests."""
    check(await store.list() == [], "a fresh store is not empty")
    check(await store.audit("run-isolation") == [], "a fresh store has audit events")
    cont = make(run_id="run-isolation")
    await store.save(cont)
    check([r.id for r in await store.list()] == [cont.id], "saved one, listed another")


async def claimable_order(store: Store, make: ContinuationFactory) -> None:
    """claimable() lists ready continuations and expired leases by last change, never live claims."""
    conts = [make(leaves=0) for _ in range(3)]
    for cont in conts:
        await store.save(cont.with_decisions([decision(cont, 0)]))
    await store.save(make())  # waiting: never claimable
    ids = [c.id for c in conts]
    check(await store.claimable() == ids, "ready continuations, oldest change first")
    check(await store.claimable(limit=2) == ids[:2], "limit is respected")
    live = await store.claim(ids[1], owner="live")
    await store.claim(ids[0], owner="dying", lease_seconds=0.3)
    check(await store.claimable() == [ids[2]], "live claims are not claimable")
    await asyncio.sleep(0.4)
    check(await store.claimable() == [ids[2], ids[0]], "an expired lease is claimable again")
    await store.complete(live)


async def checkpoint_chain(store: Store, make: ContinuationFactory) -> None:
    """checkpoint() saves the next continuation (claimed, or waiting) and retires the last one."""
    run_id = f"run-{uuid.uuid4().hex[:8]}"
    first, second, third = (make(leaves=0, run_id=run_id) for _ in range(3))
    claim1 = await store.checkpoint(first, owner="w1", lease_seconds=60)
    check(claim1 is not None and claim1.owner == "w1", "a held checkpoint returns its claim")
    assert claim1 is not None
    held = await store.get(first.id)
    check(
        held.status == "claimed" and held.claimed_by == "w1" and held.version == 1,
        "the checkpoint is held, at version 1",
    )
    await store.record(
        run_id, "tool_started", continuation_id=first.id, actor="w1",
        detail={"path": "a/b", "ids": (1, 2)},
    )  # fmt: skip
    claim2 = await store.checkpoint(second, previous=claim1, owner="w1")
    check(claim2 is not None, "the next checkpoint is held")
    assert claim2 is not None
    check((await store.get(first.id)).status == "done", "the previous checkpoint is retired")
    await raises(AlreadyClaimed, store.checkpoint(third, previous=claim1), "retired claim")
    await raises(ContinuationNotFound, store.get(third.id), "nothing written on a lost claim")
    check(await store.checkpoint(third, previous=claim2) is None, "a suspension is not held")
    check((await store.get(third.id)).status == "waiting", "a suspension waits for decisions")
    await raises(ConflictError, store.checkpoint(third), "an id is stored once")
    events = await store.audit(run_id)
    kinds = ["checkpoint", "tool_started", "resumed", "checkpoint", "resumed", "suspended"]
    check([e.kind for e in events] == kinds, f"audit order: {[e.kind for e in events]}")
    check(events[1].detail == {"path": "a/b", "ids": [1, 2]}, "recorded detail is JSON")
    check(events[1].actor == "w1", "recorded actor")
    check(events[2].detail == {"next_id": second.id}, "a retired checkpoint names its successor")


STORE_SCENARIOS: list[Scenario] = [
    save_load,
    list_by_status,
    decide_cas,
    no_decision_revives_a_failure,
    one_decision_per_path,
    decide_concurrent,
    single_use_claim,
    release_and_reclaim,
    waiting_cannot_claim,
    lease_expiry,
    audit_order,
    isolation,
    claimable_order,
    checkpoint_chain,
    *FENCING_SCENARIOS,
]


def race_to_claim(url: str, continuation_id: str, owner: str, barrier: Any, results: Any) -> None:
    """Process target for claim races: open ``url``, wait at ``barrier``, claim once.

    Puts ``(owner, outcome)`` on the ``results`` queue, where outcome is ``"won"`` or the
    name of the error raised.
    """

    async def attempt() -> str:
        store = open_store(url)
        try:
            barrier.wait(60)  # line every process up, so the claims really race
            await store.claim(continuation_id, owner=owner)
            return "won"
        except Exception as exc:
            return type(exc).__name__
        finally:
            # Stay alive until every process tried: a claim whose holder process has exited
            # is rightly taken over (stores._owners), which is not the race under test.
            with contextlib.suppress(Exception):
                barrier.wait(60)
            await store.close()

    results.put((owner, asyncio.run(attempt())))


def drain_with_claim_next(url: str, owner: str, barrier: Any, results: Any) -> None:
    """Process target for claim_next races: open ``url``, wait at ``barrier``, claim until empty.

    Puts ``(owner, ids)`` on the ``results`` queue: the ids this process claimed, in order.
    """

    async def drain() -> list[str]:
        async with open_store(url) as store:
            await store.claimable(limit=1)  # connect and migrate before the race starts
            barrier.wait(60)
            ids = []
            try:
                while (claim := await store.claim_next(owner, lease_seconds=600)) is not None:
                    ids.append(claim.id)
            finally:
                # Stay alive until every process drained: the claims of a process that exited
                # are rightly taken over (stores._owners), which is not the race under test.
                with contextlib.suppress(Exception):
                    barrier.wait(60)
            return ids

    results.put((owner, asyncio.run(drain())))
