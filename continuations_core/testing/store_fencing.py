"""Store conformance for G14: fencing tokens, attempts and backoff, failure, retry, owners.

Like :mod:`.store_scenarios`, each scenario takes a fresh store and a continuation factory and
raises ``AssertionError`` on failure. :func:`owner_restart` needs a store other processes can
open too (a URL), since it is about processes that died.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import socket
import uuid
from datetime import datetime
from typing import Any

from ..errors import (
    AlreadyClaimed,
    BackingOff,
    ClaimSuperseded,
    ConflictError,
    ContinuationFailed,
    ContinuationNotFound,
    UnsignedContinuation,
)
from ..stores import Store, open_store
from ..stores._owners import default_owner
from ._store_kit import (
    ContinuationFactory,
    Scenario,
    check,
    decision,
    make_continuation,
    raises,
    ready,
)

__all__ = [
    "FENCING_SCENARIOS",
    "attempts_and_backoff",
    "claim_next_oldest_first",
    "claim_next_orders_by_when_claimable",
    "claim_next_runs_out_of_attempts",
    "claim_next_skips_backoff_and_live_claims",
    "claim_next_takes_expired_leases",
    "crashed_attempts_run_out",
    "fencing_across_checkpoints",
    "hold_claims",
    "owner_restart",
    "owner_restart_next",
    "permanent_failure_and_retry",
    "run_status",
    "superseded_token_cannot_write",
]

_SHORT = 0.05  # a lease that expires while the scenario sleeps _PAST
_PAST = 0.2


async def superseded_token_cannot_write(store: Store, make: ContinuationFactory) -> None:
    """A claim whose token was superseded cannot journal, checkpoint, complete or fail."""
    cont = await ready(store, make)
    first = await store.claim(cont.id, owner="w1", lease_seconds=1.0)
    check(first.token == 1 and first.attempt == 1, f"the first claim: {first}")
    await raises(AlreadyClaimed, store.claim(cont.id, owner="w1"), "a second claim, same process")
    await store.record(cont.run_id, "tool_started", detail={"path": "a"}, claim=first)
    await asyncio.sleep(1.2)
    second = await store.claim(cont.id, owner="w2")
    check(second.token == first.token + 1, f"tokens grow by one: {first.token}, {second.token}")
    before = await store.audit(cont.run_id)
    follow = make(leaves=0, run_id=cont.run_id)
    stale: dict[str, Any] = {
        "journal": store.record(cont.run_id, "tool_started", detail={"path": "b"}, claim=first),
        "checkpoint": store.checkpoint(follow, previous=first, owner="w1"),
        "suspension": store.checkpoint(follow, previous=first),
        "complete": store.complete(first, output="zombie"),
        "heartbeat": store.heartbeat(first),
        "release": store.release(first),
        "fail": store.fail(first, RuntimeError("zombie")),
    }
    for what, write in stale.items():
        exc = await raises(ClaimSuperseded, write, f"a {what} under a superseded token")
        check("token 1" in str(exc), f"the refusal names the stale token: {exc}")
    await raises(ContinuationNotFound, store.get(follow.id), "a refused checkpoint wrote a row")
    check(await store.audit(cont.run_id) == before, "a refused write left an audit event")
    after = await store.get(cont.id)
    check(after.status == "claimed" and after.claimed_by == "w2", f"the live claim: {after}")
    await store.record(cont.run_id, "tool_started", detail={"path": "c"}, claim=second)
    journal = [e for e in await store.audit(cont.run_id) if e.kind == "tool_started"]
    check([e.detail["path"] for e in journal] == ["a", "c"], f"journal: {journal}")
    check(journal[-1].continuation_id == cont.id, "a fenced journal event names its continuation")
    await store.complete(second, output={"ok": True})


async def fencing_across_checkpoints(store: Store, make: ContinuationFactory) -> None:
    """A checkpoint keeps its claim's token; a takeover of it supersedes the whole chain."""
    run_id = f"run-{uuid.uuid4().hex[:8]}"
    one, two, three = (make(leaves=0, run_id=run_id) for _ in range(3))
    first = await store.checkpoint(one, owner="w1", lease_seconds=60)
    assert first is not None
    check(first.token == 1 and first.attempt == 1, f"a run's first checkpoint: {first}")
    held = await store.checkpoint(two, previous=first, owner="w1", lease_seconds=_SHORT)
    assert held is not None
    check(held.token == first.token, "a checkpoint keeps its claim's token")
    await raises(ClaimSuperseded, store.record(run_id, "tool_started", claim=first), "retired")
    await asyncio.sleep(_PAST)
    taken = await store.claim(two.id, owner="w2")
    check(taken.token == held.token + 1, f"a takeover gets the next token: {taken}")
    check(taken.attempt == 2, f"a takeover after a crash is attempt 2: {taken}")
    await raises(ClaimSuperseded, store.checkpoint(three, previous=held, owner="w1"), "zombie")
    await raises(ContinuationNotFound, store.get(three.id), "the zombie's checkpoint was stored")
    same = await store.checkpoint(three, previous=taken, owner="w2", progress=False)
    assert same is not None
    check(same.attempt == 2 and same.token == taken.token, f"no progress keeps attempts: {same}")
    stored = await store.get(three.id)
    check(stored.fence == taken.token and stored.attempts == 2, f"the stored row: {stored}")
    await store.complete(same, output=1)


async def attempts_and_backoff(store: Store, make: ContinuationFactory) -> None:
    """A failed attempt backs off, is not claimable until then, and the last one fails it."""
    cont = await ready(store, make)
    claim = await store.claim(cont.id, owner="w1", max_attempts=3)
    failed = await store.fail(claim, RuntimeError("model down"), max_attempts=3, retry_in=0.3)
    check(failed.status == "ready" and failed.not_before is not None, f"backing off: {failed}")
    error = failed.last_error
    check(error is not None and error.type == "RuntimeError", f"the error is kept: {error}")
    check(error is not None and error.attempt == 1 and error.message == "model down", f"{error}")
    check(cont.id not in await store.claimable(), "a continuation backing off is claimable")
    exc = await raises(BackingOff, store.claim(cont.id, owner="w2"), "a claim while backing off")
    check("model down" in str(exc), f"the refusal says why it backs off: {exc}")
    await asyncio.sleep(0.35)
    check(cont.id in await store.claimable(), "a continuation whose backoff elapsed")
    for attempt in (2, 3):
        claim = await store.claim(cont.id, owner=f"w{attempt}", max_attempts=3)
        check(claim.attempt == attempt, f"attempt {attempt}: {claim}")
        last = await store.fail(claim, TimeoutError(f"try {attempt}"), max_attempts=3)
    check(last.status == "failed", f"the last allowed attempt fails it: {last}")
    check(last.last_error is not None and last.last_error.attempt == 3, f"{last.last_error}")
    await raises(ContinuationFailed, store.claim(cont.id, owner="w4"), "claim a failed one")
    check(cont.id not in await store.claimable(), "a failed continuation is claimable")
    kinds = [e.kind for e in await store.audit(cont.run_id)]
    check(kinds.count("attempt_failed") == 2 and kinds[-1] == "failed", f"audit: {kinds}")
    released = await ready(store, make)
    for _ in range(3):  # a release (a worker shutting down) does not use up an attempt
        claim = await store.claim(released.id, owner="w1")
        check(claim.attempt == 1, f"a release counted as an attempt: {claim}")
        await store.release(claim)


async def permanent_failure_and_retry(store: Store, make: ContinuationFactory) -> None:
    """A permanent error fails at once; retry makes it ready again, audited with who."""
    cont = await ready(store, make)
    claim = await store.claim(cont.id, owner="w1")
    error = UnsignedContinuation("This continuation is not signed.")
    failed = await store.fail(claim, error, permanent=True)
    check(failed.status == "failed" and failed.attempts == 1, f"failed at once: {failed}")
    check([r.id for r in await store.list(status="failed")] == [cont.id], "list failed")
    events = await store.audit(cont.run_id)
    check(events[-1].kind == "failed", f"failure audited: {events[-1]}")
    check(events[-1].detail["error"]["type"] == "UnsignedContinuation", f"{events[-1].detail}")
    await raises(ContinuationNotFound, store.retry(make().id), "retry of an unknown id")
    again = await store.retry(cont.id, by="ops-oncall")
    check(again.status == "ready" and again.attempts == 0, f"retried: {again}")
    check(again.last_error == failed.last_error, "the last error stays on record")
    retried = (await store.audit(cont.run_id))[-1]
    check(retried.kind == "retried" and retried.actor == "ops-oncall", f"audit: {retried}")
    check(retried.detail["last_error"]["type"] == "UnsignedContinuation", f"{retried.detail}")
    await raises(ConflictError, store.retry(cont.id), "retry of a ready continuation")
    claim = await store.claim(cont.id, owner="w2")
    check(claim.attempt == 1 and claim.token == 2, f"the claim after a retry: {claim}")
    await store.complete(claim)
    await raises(ConflictError, store.retry(cont.id), "retry of a done continuation")


async def crashed_attempts_run_out(store: Store, make: ContinuationFactory) -> None:
    """Claims whose holders die (leases expire) count too: the last one fails it."""
    cont = await ready(store, make)
    for attempt in (1, 2):
        claim = await store.claim(cont.id, owner=f"w{attempt}", lease_seconds=_SHORT,
                                  max_attempts=2)  # fmt: skip
        check(claim.attempt == attempt, f"attempt {attempt}: {claim}")
        await asyncio.sleep(_PAST)
    exc = await raises(ContinuationFailed, store.claim(cont.id, owner="w3", max_attempts=2), "3rd")
    check("retry" in str(exc), f"the error says how to go on: {exc}")
    stored = await store.get(cont.id)
    check(stored.status == "failed", f"stored failed: {stored.status}")
    check(stored.last_error is not None and stored.last_error.type == "LeaseExpired", "why")
    kinds = [e.kind for e in await store.audit(cont.run_id)]
    check(kinds[-2:] == ["expired", "failed"], f"audit: {kinds}")


async def run_status(store: Store, make: ContinuationFactory) -> None:
    """status() tells waiting, ready, running, retrying, failed and completed runs apart."""
    check((await store.status("no-such-run")).state == "unknown", "an unknown run")
    waiting = make()
    await store.save(waiting)
    status = await store.status(waiting.run_id)
    check(status.state == "waiting" and status.pending == len(waiting.requests), f"{status}")
    cont = await ready(store, make)
    check((await store.status(cont.run_id)).state == "ready", "ready")
    claim = await store.claim(cont.id, owner="w1")
    running = await store.status(cont.run_id)
    check(running.state == "running" and running.claimed_by == "w1", f"running: {running}")
    await store.fail(claim, ValueError("bad"), retry_in=60)
    retrying = await store.status(cont.run_id)
    check(retrying.state == "retrying" and retrying.not_before is not None, f"{retrying}")
    check(retrying.last_error is not None and retrying.last_error.type == "ValueError", "error")
    await store.retry(cont.id, by="ops")
    claim = await store.claim(cont.id, owner="w1")
    await store.complete(claim, output={"paid": 300, "to": ["acct-001", "acct-002"]})
    done = await store.status(cont.run_id)
    check(done.state == "completed", f"completed: {done}")
    check(done.output == {"paid": 300, "to": ["acct-001", "acct-002"]}, f"output: {done.output}")
    other = await ready(store, make)
    claim = await store.claim(other.id, owner="w1")
    await store.fail(claim, KeyError("agent"), permanent=True)
    check((await store.status(other.run_id)).state == "failed", "failed")


async def claim_next_oldest_first(store: Store, make: ContinuationFactory) -> None:
    """claim_next takes the continuation claimable longest ago, audited; None when none is."""
    check(await store.claim_next("w1") is None, "claim_next on an empty store")
    late = make()
    await store.save(late)  # waiting: not claimable until decided, and then the newest
    first, second = await ready(store, make), await ready(store, make)
    for i in range(len(late.requests)):
        await store.decide(late.id, decision(late, i))
    claim = await store.claim_next("w1", lease_seconds=60)
    check(claim is not None and claim.id == first.id, f"the oldest change first: {claim}")
    assert claim is not None
    check(claim.owner == "w1" and claim.token == 1 and claim.attempt == 1, f"{claim}")
    stored = await store.get(first.id)
    check(stored.status == "claimed" and stored.claimed_by == "w1", f"stored: {stored}")
    check(stored.version == claim.version and stored.fence == 1, f"version/fence: {stored}")
    check(stored.lease_until == claim.lease_until, f"lease: {stored.lease_until}")
    event = (await store.audit(first.run_id))[-1]
    check(event.kind == "claimed" and event.actor == "w1", f"audited: {event}")
    check(event.continuation_id == first.id and event.at == stored.updated_at, f"{event}")
    check(event.detail["token"] == 1 and event.detail["attempt"] == 1, f"{event.detail}")
    lease = datetime.fromisoformat(event.detail["lease_until"])
    check(lease == claim.lease_until, f"audited lease {lease} vs {claim.lease_until}")
    order = [claim.id]
    while (more := await store.claim_next("w1")) is not None:
        order.append(more.id)
    check(order == [first.id, second.id, late.id], f"claimed in order {order}")
    # Its own live claims are never taken back by the process holding them.
    check(await store.claim_next("w1") is None, "this process's live claims stay put")
    await store.complete(claim, output="ok")  # the claim is as good as claim()'s
    check((await store.get(first.id)).status == "done", "completed under the claim")


async def claim_next_skips_backoff_and_live_claims(store: Store, make: ContinuationFactory) -> None:
    """claim_next leaves live claims and continuations backing off alone until their time."""
    held, failing = await ready(store, make), await ready(store, make)
    await store.claim(held.id, owner="w1", lease_seconds=60)
    claim = await store.claim(failing.id, owner="w1")
    await store.fail(claim, RuntimeError("model down"), retry_in=0.3)
    check(await store.claim_next("w2") is None, "a live claim or a backoff was claimed")
    await asyncio.sleep(0.35)
    after = await store.claim_next("w2")
    check(after is not None and after.id == failing.id, f"the backoff elapsed: {after}")
    assert after is not None
    check(after.attempt == 2 and after.token == 2, f"the second attempt: {after}")
    check(await store.claim_next("w2") is None, "nothing else is claimable")


async def claim_next_takes_expired_leases(store: Store, make: ContinuationFactory) -> None:
    """An expired lease is claimed next with a new fencing token; the old claim stops holding."""
    cont = await ready(store, make)
    dead = await store.claim_next("w1", lease_seconds=_SHORT)
    check(dead is not None and dead.id == cont.id, f"the first claim: {dead}")
    assert dead is not None
    await asyncio.sleep(_PAST)
    live = await store.claim_next("w2")
    check(live is not None and live.id == cont.id, f"the expired lease was taken: {live}")
    assert live is not None
    check(live.token == dead.token + 1 and live.attempt == 2, f"a new token: {live}")
    await raises(ClaimSuperseded, store.complete(dead), "completing the expired claim")
    events = (await store.audit(cont.run_id))[-2:]
    check([e.kind for e in events] == ["expired", "claimed"], f"audit: {events}")
    check(events[0].actor == "w2" and events[0].detail["owner"] == "w1", f"{events[0]}")
    expired = datetime.fromisoformat(events[0].detail["lease_until"])
    check(expired == dead.lease_until, f"the expired lease: {expired} vs {dead.lease_until}")
    check(events[1].detail["token"] == live.token, f"{events[1].detail}")
    check(await store.claim_next("w3") is None, "a live claim was taken")
    await store.complete(live, output=None)


async def claim_next_runs_out_of_attempts(store: Store, make: ContinuationFactory) -> None:
    """An abandoned claim on its last attempt is failed by claim_next, as by claim()."""
    cont = await ready(store, make)
    for attempt in (1, 2):
        claim = await store.claim_next(f"w{attempt}", lease_seconds=_SHORT, max_attempts=2)
        check(claim is not None and claim.attempt == attempt, f"attempt {attempt}: {claim}")
        await asyncio.sleep(_PAST)
    other = await ready(store, make)  # changed after cont: claimed after it
    exc = await raises(ContinuationFailed, store.claim_next("w3", max_attempts=2), "3rd")
    named = isinstance(exc, ContinuationFailed) and exc.continuation_id == cont.id
    check(named and "retry" in str(exc), f"the error names it, says what to do: {exc!r}")
    stored = await store.get(cont.id)
    check(stored.status == "failed", f"stored failed: {stored.status}")
    check(stored.last_error is not None and stored.last_error.type == "LeaseExpired", "why")
    kinds = [e.kind for e in await store.audit(cont.run_id)]
    check(kinds[-2:] == ["expired", "failed"], f"audit: {kinds}")
    nxt = await store.claim_next("w3", max_attempts=2)
    check(nxt is not None and nxt.id == other.id, f"then the next one: {nxt}")
    check(await store.claim_next("w3") is None, "a failed continuation was claimed")


async def claim_next_orders_by_when_claimable(store: Store, make: ContinuationFactory) -> None:
    """claim_next takes what became claimable first, and never a live claim, however old.

    An expired lease is due when it ended, not when it was claimed: a continuation decided
    while the lease still ran goes first. A long run's claim, older than both, is not taken.
    """
    live, abandoned = await ready(store, make), await ready(store, make)
    held = await store.claim_next("w0", lease_seconds=600)
    check(held is not None and held.id == live.id, f"the long run's claim: {held}")
    dead = await store.claim_next("w1", lease_seconds=_PAST)
    check(dead is not None and dead.id == abandoned.id, f"the claim that dies: {dead}")
    fresh = await ready(store, make)  # decided while the other lease still runs
    await asyncio.sleep(_PAST + 0.1)
    order = []
    while (claim := await store.claim_next("w2", lease_seconds=600)) is not None:
        order.append(claim.id)
    check(order == [fresh.id, abandoned.id], f"claimed in order {order}")
    check(await store.claimable() == [], "nothing else is claimable")
    kept = await store.get(live.id)
    check(kept.claimed_by == "w0" and kept.fence == 1, f"the live claim was taken: {kept}")


FENCING_SCENARIOS: list[Scenario] = [
    superseded_token_cannot_write,
    fencing_across_checkpoints,
    attempts_and_backoff,
    permanent_failure_and_retry,
    crashed_attempts_run_out,
    run_status,
    claim_next_oldest_first,
    claim_next_skips_backoff_and_live_claims,
    claim_next_takes_expired_leases,
    claim_next_runs_out_of_attempts,
    claim_next_orders_by_when_claimable,
]


def hold_claims(url: str, held: dict[str, str], claimed: Any, release: Any) -> None:
    """Process target for :func:`owner_restart`: claim ``held`` (id: owner) and wait.

    Sets ``claimed`` once everything is claimed, then lives until ``release`` is set (a live
    holder) or exits at once when ``release`` is None (a dead one). An empty owner claims
    under the process's default name (host:pid).
    """

    async def claim_all() -> None:
        async with open_store(url) as store:
            for cid, owner in held.items():
                await store.claim(cid, owner=owner or default_owner(), lease_seconds=600)

    asyncio.run(claim_all())
    claimed.set()
    if release is not None:
        release.wait(120)


async def owner_restart(url: str) -> None:
    """Claims of a dead process are taken back at once by its restarted owner, never a live one's.

    Another process claims under explicit and default owner names with long leases, and
    either dies or stays alive. Here: the same explicit owner takes a dead holder's claim at
    once; a dead default-named holder's claim is taken by anyone on this machine; a live
    holder keeps its claim against any other name, and against its own name when that name
    has the ``host:pid`` form (two containers may share one).
    """
    make = make_continuation
    async with open_store(url) as store:
        names = ("dead", "dead_default", "live", "live_default", "live_lookalike")
        conts = {name: await ready(store, make) for name in names}
        lookalike = f"{socket.gethostname()}:4242"  # a host:pid-shaped name is never trusted
        ctx = multiprocessing.get_context("spawn")
        dead_ready = ctx.Event()
        dead = ctx.Process(
            target=hold_claims,
            args=(url, {conts["dead"].id: "svc-1", conts["dead_default"].id: ""}, dead_ready, None),
        )
        live_ready, release = ctx.Event(), ctx.Event()
        live = ctx.Process(
            target=hold_claims,
            args=(url, {conts["live"].id: "svc-2", conts["live_default"].id: "",
                        conts["live_lookalike"].id: lookalike}, live_ready, release),
        )  # fmt: skip
        dead.start()
        live.start()
        try:
            for proc, flag in ((dead, dead_ready), (live, live_ready)):
                ok = await asyncio.to_thread(flag.wait, 120)
                check(ok, f"the holder process {proc.name} never claimed")
            await asyncio.to_thread(dead.join, 60)
            taken = await store.claim(conts["dead"].id, owner="svc-1", lease_seconds=30)
            check(taken.attempt == 2 and taken.token == 2, f"restarted owner: {taken}")
            events = await store.audit(conts["dead"].run_id)
            check(events[-2].kind == "taken_over", f"audited as a takeover: {events[-2:]}")
            check("restarted" in events[-2].detail["reason"], f"why: {events[-2].detail}")
            anyone = await store.claim(conts["dead_default"].id, owner="svc-9")
            check(anyone.token == 2, f"a dead default-named holder's claim: {anyone}")
            reason = (await store.audit(conts["dead_default"].run_id))[-2].detail["reason"]
            check("dead" in reason, f"why: {reason}")
            live_claims = (
                ("live", "svc-1"),
                ("live_default", "svc-2"),
                ("live_lookalike", lookalike),
            )
            for name, who in live_claims:
                await raises(
                    AlreadyClaimed, store.claim(conts[name].id, owner=who), f"{name} by {who}"
                )
        finally:
            release.set()
            for proc in (dead, live):
                await asyncio.to_thread(proc.join, 60)
                if proc.is_alive():
                    proc.kill()


async def owner_restart_next(url: str) -> None:
    """claim_next by a restarted owner takes back its dead predecessor's claim, audited.

    Another process claims one continuation as ``svc-1`` and dies, a third one as ``svc-2``
    and stays alive. Here ``claim_next("svc-1")`` takes the older ready one first, then the
    dead predecessor's claim at once (``taken_over``), and never the live holder's.
    """
    make = make_continuation
    async with open_store(url) as store:
        free, held, kept = [await ready(store, make) for _ in range(3)]
        ctx = multiprocessing.get_context("spawn")
        dead_ready, live_ready, release = ctx.Event(), ctx.Event(), ctx.Event()
        dead = ctx.Process(target=hold_claims, args=(url, {held.id: "svc-1"}, dead_ready, None))
        live = ctx.Process(target=hold_claims, args=(url, {kept.id: "svc-2"}, live_ready, release))
        dead.start()
        live.start()
        try:
            for proc, flag in ((dead, dead_ready), (live, live_ready)):
                ok = await asyncio.to_thread(flag.wait, 120)
                check(ok, f"the holder process {proc.name} never claimed")
            await asyncio.to_thread(dead.join, 60)
            first = await store.claim_next("svc-1", lease_seconds=30)
            check(first is not None and first.id == free.id, f"the oldest change: {first}")
            taken = await store.claim_next("svc-1", lease_seconds=30)
            check(taken is not None and taken.id == held.id, f"taken back: {taken}")
            assert taken is not None
            check(taken.attempt == 2 and taken.token == 2, f"restarted owner: {taken}")
            events = (await store.audit(held.run_id))[-2:]
            check([e.kind for e in events] == ["taken_over", "claimed"], f"audit: {events}")
            check("restarted" in events[0].detail["reason"], f"why: {events[0].detail}")
            check(await store.claim_next("svc-1") is None, "a live holder's claim was taken")
            check(await store.claim_next("svc-3") is None, "a live holder's claim was taken")
            stored = await store.get(kept.id)
            check(stored.claimed_by == "svc-2" and stored.fence == 1, f"kept: {stored}")
        finally:
            release.set()
            for proc in (dead, live):
                await asyncio.to_thread(proc.join, 60)
                if proc.is_alive():
                    proc.kill()
