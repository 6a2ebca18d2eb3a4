"""Applying a deadline (``expire_due``) on every backend: once, never after a decision."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from test_dispatch import Recorder
from test_dispatch import store as store  # each backend, with a recording dispatcher

from continuations_core import Continuation
from continuations_core.errors import ContinuationFailed
from continuations_core.spi import expire_due
from continuations_core.stores import Store
from continuations_core.testing._store_kit import decision, make_continuation
from continuations_core.testing.conformance import KEYS


async def _waiting(store: Store) -> tuple[Continuation, int]:
    """A stored suspension whose approval (index 0) has a deadline and whose input (index 1)
    is answered, so expiring the approval makes it ready."""
    cont = make_continuation(KEYS, leaves=1)
    assert cont.requests[0].expires_at is not None and cont.requests[1].expires_at is None
    await store.save(cont)
    await store.decide(cont.id, decision(cont, 1))
    assert isinstance(store.dispatcher, Recorder)
    store.dispatcher.calls.clear()
    return cont, 0


@pytest.mark.asyncio
async def test_an_expired_request_is_denied_once_and_the_continuation_dispatched(
    store: Store,
) -> None:
    cont, index = await _waiting(store)
    deadline = cont.requests[index].expires_at
    assert deadline is not None
    early = await expire_due(store, cont.id, on_expired="deny", now=deadline - timedelta(seconds=1))
    assert early.outcome == "not_due" and early.next_at == deadline
    late = deadline + timedelta(seconds=1)
    done = await expire_due(store, cont.id, on_expired="deny", now=late)
    assert done.outcome == "denied" and done.paths == (cont.requests[index].path,)
    again = await expire_due(store, cont.id, on_expired="deny", now=late)
    assert again.outcome == "nothing"
    record = await store.get(cont.id)
    assert record.status == "ready"
    denial = record.continuation.decision_for(cont.requests[index].path)
    assert denial is not None and denial.by == "expiry" and denial.decision.kind == "deny"
    assert isinstance(store.dispatcher, Recorder)
    assert [c[0] for c in store.dispatcher.calls] == ["ready"]


@pytest.mark.asyncio
async def test_a_request_decided_before_the_sweep_never_expires(store: Store) -> None:
    cont, index = await _waiting(store)
    await store.decide(cont.id, decision(cont, index, by="alice"))
    deadline = cont.requests[index].expires_at
    assert deadline is not None
    for mode in ("deny", "raise"):
        done = await expire_due(
            store,
            cont.id,
            on_expired=mode,
            now=deadline + timedelta(hours=1),  # type: ignore[arg-type]
        )
        assert done.outcome == "nothing"
    record = await store.get(cont.id)
    assert record.status == "ready"
    kept = record.continuation.decision_for(cont.requests[index].path)
    assert kept is not None and kept.by == "alice"


@pytest.mark.asyncio
async def test_two_engines_expiring_at_once_take_effect_once(store: Store) -> None:
    cont, index = await _waiting(store)
    deadline = cont.requests[index].expires_at
    assert deadline is not None
    late = deadline + timedelta(seconds=1)
    outcomes = await asyncio.gather(
        *(expire_due(store, cont.id, on_expired="deny", now=late) for _ in range(4))
    )
    assert sorted(o.outcome for o in outcomes) == ["denied", "nothing", "nothing", "nothing"]
    events = [e for e in await store.audit(cont.run_id) if e.kind == "decided"]
    assert [e.actor for e in events] == ["alice", "expiry"]


@pytest.mark.asyncio
async def test_raise_fails_the_continuation_once_and_refuses_late_decisions(store: Store) -> None:
    cont, index = await _waiting(store)
    deadline = cont.requests[index].expires_at
    assert deadline is not None
    late = deadline + timedelta(seconds=1)
    done = await expire_due(store, cont.id, on_expired="raise", now=late)
    assert done.outcome == "failed"
    assert (await expire_due(store, cont.id, on_expired="raise", now=late)).outcome == "nothing"
    record = await store.get(cont.id)
    assert record.status == "failed"
    assert record.last_error is not None and record.last_error.type == "ContinuationExpired"
    with pytest.raises(ContinuationFailed):
        await store.decide(cont.id, decision(cont, index))
    failures = [e for e in await store.audit(cont.run_id) if e.kind == "failed"]
    assert [e.actor for e in failures] == ["expiry"]
