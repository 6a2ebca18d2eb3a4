"""Incremental checkpoints: segments on every backend, broken chains, and what a run stores."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_stores import BACKEND_PARAMS, store  # noqa: F401  # the parametrized store fixture

from continuations_core import MemoryStore, SQLiteStore, Store
from continuations_core._segments import _apply, diff
from continuations_core._signing import canonical_json
from continuations_core.testing.store_scenarios import make_continuation
from continuations_core.testing.store_segments import (
    SEGMENT_SCENARIOS,
    Scenario,
    broken_chains_are_refused,
)


class Raw:
    """Each backend's stored segment texts, read and replaced behind the store's back."""

    async def read(self, store: Store, base_id: str) -> list[str]:  # noqa: F811  # not the fixture
        if isinstance(store, MemoryStore):
            return list(store._segments.get(base_id, []))
        if isinstance(store, SQLiteStore):
            sql = "SELECT body FROM segments WHERE base_id = ? ORDER BY idx"
            return store._sync(lambda c: [r[0] for r in c.execute(sql, (base_id,)).fetchall()])
        if type(store).__name__ == "PostgresStore":
            query: Any = "SELECT body FROM {s}.segments WHERE base_id = %s ORDER BY idx"
            async with store._tx() as conn:  # type: ignore[attr-defined]
                cur = await conn.execute(store._q(query), (base_id,))  # type: ignore[attr-defined]
                return [r[0] for r in await cur.fetchall()]
        client = await store._open()  # type: ignore[attr-defined]
        key = store._k("seg", base_id)  # type: ignore[attr-defined]
        return [v.decode() if isinstance(v, bytes) else v for v in await client.lrange(key, 0, -1)]

    async def write(self, store: Store, base_id: str, texts: list[str]) -> None:  # noqa: F811
        if isinstance(store, MemoryStore):
            store._segments[base_id] = list(texts)
            return
        rows = [(base_id, i, text) for i, text in enumerate(texts, start=1)]
        if isinstance(store, SQLiteStore):

            def replace(c: Any) -> None:
                c.execute("DELETE FROM segments WHERE base_id = ?", (base_id,))
                c.executemany("INSERT INTO segments VALUES (?, ?, ?)", rows)

            store._sync(replace)
            return
        if type(store).__name__ == "PostgresStore":
            drop: Any = "DELETE FROM {s}.segments WHERE base_id = %s"
            put: Any = "INSERT INTO {s}.segments (base_id, idx, body) VALUES (%s, %s, %s)"
            async with store._tx() as conn:  # type: ignore[attr-defined]
                await conn.execute(store._q(drop), (base_id,))  # type: ignore[attr-defined]
                async with conn.cursor() as cur:
                    await cur.executemany(store._q(put), rows)  # type: ignore[attr-defined]
            return
        client = await store._open()  # type: ignore[attr-defined]
        key = store._k("seg", base_id)  # type: ignore[attr-defined]
        await client.delete(key)
        if texts:
            await client.rpush(key, *texts)


RAW = Raw()


@pytest.mark.parametrize("store", BACKEND_PARAMS, indirect=True)
@pytest.mark.parametrize("scenario", SEGMENT_SCENARIOS, ids=lambda s: s.__name__)
@pytest.mark.asyncio
async def test_segment_scenario(scenario: Scenario, store: Store) -> None:  # noqa: F811
    """Each backend passes each segment conformance scenario."""
    await scenario(store, make_continuation)


@pytest.mark.parametrize("store", BACKEND_PARAMS, indirect=True)
@pytest.mark.asyncio
async def test_torn_missing_reordered_foreign_and_edited_segments_are_typed_errors(
    store: Store,  # noqa: F811
) -> None:
    """Every kind of broken chain raises BrokenCheckpoint on every backend, signed or not."""
    await broken_chains_are_refused(store, make_continuation, RAW)


@pytest.mark.parametrize("store", BACKEND_PARAMS, indirect=True)
@pytest.mark.asyncio
async def test_completing_a_checkpoint_drops_its_segments_and_a_stale_complete_keeps_them(
    store: Store,  # noqa: F811
) -> None:
    """A completion under a superseded claim writes nothing (its segments stay); the live one
    retires the checkpoint with its segments."""
    from continuations_core import ClaimSuperseded
    from continuations_core.testing.store_segments import KEYS, _held, grown

    base, claim, chain = await _held(store, make_continuation, KEYS, lease=0.05)
    frame = base.root
    for step in range(1, 3):
        frame = grown(frame, step)
        await store.append_segment(chain.next(frame), claim=claim)
    assert len(await RAW.read(store, base.id)) == 2
    await asyncio.sleep(0.1)
    live = await store.claim(base.id, owner="w2")  # the lease expired: taken over
    with pytest.raises(ClaimSuperseded):
        await store.complete(claim, output="zombie")
    assert len(await RAW.read(store, base.id)) == 2
    stored = await store.get(base.id)
    assert stored.status == "claimed" and stored.output is None
    await store.complete(live, output="done")
    assert await RAW.read(store, base.id) == []
    stored = await store.get(base.id)
    assert stored.status == "done" and stored.output == "done"
    kinds = [e.kind for e in await store.audit(base.run_id)]
    assert kinds[-2:] == ["resumed", "completed"] and kinds.count("completed") == 1


_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.floats(allow_nan=False, allow_infinity=False, width=16),
    st.text(max_size=3),
)
_json = st.recursive(
    _leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=6), st.dictionaries(st.text(max_size=3), inner, max_size=4)
    ),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(old=st.dictionaries(st.text(max_size=3), _json, max_size=4), data=st.data())
def test_a_delta_applied_to_the_old_value_gives_the_new_one(old: dict[str, Any], data: Any) -> None:
    """For any JSON objects, applying diff(old, new) to a JSON copy of old yields new exactly."""
    grow = st.builds(lambda tail: {**old, "messages": [*old.get("messages", []), *tail]},
                     st.lists(_json, max_size=3))  # fmt: skip
    new = data.draw(st.one_of(st.dictionaries(st.text(max_size=3), _json, max_size=4), grow))
    ops = diff(old, new)
    patched = json.loads(json.dumps(old))
    _apply(patched, json.loads(canonical_json(ops)))
    assert canonical_json(patched) == canonical_json(new)


def test_a_delta_tells_json_types_apart_inside_carried_over_messages() -> None:
    """1, 1.0 and true are different JSON values, also deep inside an old message."""
    old = {"messages": [{"a": 1, "b": [1.0]}], "n": 1}
    new = {"messages": [{"a": True, "b": [1]}, {"c": 2}], "n": 1.0}
    patched = json.loads(json.dumps(old))
    _apply(patched, json.loads(canonical_json(diff(old, new))))
    assert canonical_json(patched) == canonical_json(new)


@pytest.mark.parametrize("store", BACKEND_PARAMS, indirect=True)
@pytest.mark.asyncio
async def test_a_worker_fails_a_broken_checkpoint_it_claims_and_goes_on(
    store: Store,  # noqa: F811  # the fixture
) -> None:
    """An abandoned checkpoint whose appended segments were reordered is claimed with its read,
    refused as broken before anything runs, and failed under that one claim: it is not given
    back to be claimed again, and the worker goes on to the next continuation."""
    from continuations_core.stores import Claim
    from continuations_core.testing.store_segments import KEYS, grown
    from continuations_core.testing.store_segments import _Chain as Chain
    from continuations_core.worker import Worker

    base = make_continuation(KEYS, leaves=0, run_id="run-broken")
    base = base.model_copy(update={"root": base.root.model_copy(update={"pending": ()})})
    base = base.sign(KEYS)
    dead = await store.checkpoint(base, owner="crashed", lease_seconds=0.2)
    assert isinstance(dead, Claim)
    chain, frame = Chain(base, KEYS), base.root
    for step in (1, 2):
        frame = grown(frame, step)
        await store.append_segment(chain.next(frame), claim=dead)
    await RAW.write(store, base.id, list(reversed(await RAW.read(store, base.id))))
    await asyncio.sleep(0.3)  # the crashed process's lease ends
    worker = Worker(store, {}, keys=KEYS, owner="w", expiry_sweep_seconds=None)
    # Before the fix, the claim was given back and taken again without end.
    assert await asyncio.wait_for(worker.run(install_signals=False, once=True), 30) == 0
    assert worker.failed == 1
    events = await store.audit("run-broken")
    assert [e.kind for e in events][-2:] == ["claimed", "failed"]
    assert events[-1].actor == "w" and "Segment 1" in str(events[-1].detail)
    claims = [e for e in events if e.kind == "claimed"]
    assert [e.actor for e in claims] == ["w"]  # claimed once, never given back
    assert await store.claim_next("other") is None  # failed: nothing left to claim
