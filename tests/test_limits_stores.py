"""Bounded input through real stores (G15): refusals leave every backend unchanged and unclaimed."""

from __future__ import annotations

import json
import random
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _backends import POSTGRES_URL, REDIS_URL, namespace_url
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_limits import json_value, nest, nest_text

from continuations_core import (
    MAX_DEPTH,
    MAX_VALUE_BYTES,
    MAX_VALUE_DEPTH,
    Approve,
    Continuation,
    ContinuationNotFound,
    DecisionRecord,
    MalformedContinuation,
    MemoryStore,
    Respond,
    open_store,
)
from continuations_core.stores import SyncStore
from continuations_core.testing.store_scenarios import make_continuation

SERVICE_PARAMS = [
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    pytest.param("redis", id="redis", marks=pytest.mark.redis),
]
SHARED_PARAMS = [pytest.param("sqlite", id="sqlite"), *SERVICE_PARAMS]
BACKEND_PARAMS = [pytest.param("memory", id="memory"), *SHARED_PARAMS]
# A fixture store serves every example of a property: each example uses fresh ids.
PER_STORE = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

# Generators for nesting thousands of levels deep: seeded, since st.randoms() draws hypothesis
# entropy per call and one draw per level exceeds its budget (a FailedHealthCheck).
SEEDED = st.integers(0, 2**32 - 1).map(random.Random)


class Raw:
    """Reads and overwrites one stored row's columns behind the store's back."""

    def __init__(self, name: str, url: str) -> None:
        self.name, self.url = name, url

    def read(self, id: str) -> dict[str, Any]:
        """The row's version, status, claim owner and raw ``document``/``decisions`` text."""
        fields = ("version", "status", "claimed_by", "document", "decisions")
        if self.name == "sqlite":
            with sqlite3.connect(self.url.removeprefix("sqlite:///")) as conn:
                row = conn.execute(
                    f"SELECT {', '.join(fields)} FROM continuations WHERE id = ?", (id,)
                ).fetchone()
            conn.close()
            return dict(zip(fields, row, strict=True))
        if self.name == "postgres":
            import psycopg

            schema = self.url.rpartition("?schema=")[2]
            with psycopg.connect(POSTGRES_URL) as conn:
                row = conn.execute(
                    f'SELECT {", ".join(fields)} FROM "{schema}".continuations WHERE id = %s',
                    (id,),
                ).fetchone()
            assert row is not None
            return dict(zip(fields, row, strict=True))
        import redis

        prefix = self.url.rpartition("?prefix=")[2]
        with redis.Redis.from_url(REDIS_URL, decode_responses=True) as client:
            found: dict[str, Any] = client.hgetall(f"{prefix}:c:{id}")
        return {f: int(found[f]) if f == "version" else found.get(f) for f in fields}

    def write(self, id: str, column: str, text: str) -> None:
        """Overwrite ``column`` (``document`` or ``decisions``) with ``text``."""
        assert column in ("document", "decisions")
        if self.name == "sqlite":
            with sqlite3.connect(self.url.removeprefix("sqlite:///")) as conn:
                conn.execute(f"UPDATE continuations SET {column} = ? WHERE id = ?", (text, id))
            conn.close()
        elif self.name == "postgres":
            import psycopg

            schema = self.url.rpartition("?schema=")[2]
            with psycopg.connect(POSTGRES_URL) as conn:
                conn.execute(
                    f'UPDATE "{schema}".continuations SET {column} = %s WHERE id = %s', (text, id)
                )
        else:
            import redis

            prefix = self.url.rpartition("?prefix=")[2]
            with redis.Redis.from_url(REDIS_URL) as client:
                client.hset(f"{prefix}:c:{id}", column, text)


@pytest.fixture(params=BACKEND_PARAMS)
def backend(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[SyncStore, Raw | None]]:
    """A store of each backend, with raw row access for the persistent ones."""
    name: str = request.param
    if name == "memory":
        with SyncStore(MemoryStore()) as store:
            yield store, None
        return
    for url in namespace_url(name, tmp_path):
        with SyncStore(open_store(url)) as store:
            yield store, Raw(name, url)


@pytest.fixture(params=SHARED_PARAMS)
def shared(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[SyncStore, Raw]]:
    """A persistent store (sqlite, postgres, redis) with raw row access."""
    for url in namespace_url(request.param, tmp_path):
        with SyncStore(open_store(url)) as store:
            yield store, Raw(request.param, url)


def snapshot(store: SyncStore, cont: Continuation) -> tuple[Any, ...]:
    """Everything a refused change must leave as it was."""
    stored = store.get(cont.id)
    decisions = [d.model_dump() for d in stored.continuation.decisions]
    audit = len(store.audit(cont.run_id))
    return stored.version, stored.status, stored.claimed_by, decisions, audit


@st.composite
def bad_values(draw: st.DrawFn) -> Any:
    """A decision value over a limit: too deep, too large, or holding NaN or infinity."""
    rng = draw(st.randoms(use_true_random=False))
    kind = draw(st.sampled_from(["deep", "large", "non-finite"]))
    if kind == "deep":
        return nest(draw(st.integers(MAX_VALUE_DEPTH + 1, 3000)), rng=rng)
    if kind == "large":
        return {"blob": "x" * draw(st.integers(MAX_VALUE_BYTES, MAX_VALUE_BYTES * 4))}
    bad = draw(st.sampled_from([float("nan"), float("inf"), -float("inf")]))
    return nest(draw(st.integers(0, 8)), [draw(json_value), bad], rng=rng)


def _record(cont: Continuation, index: int, decision: Respond | Approve) -> DecisionRecord:
    """A record for request ``index`` built directly, as a hostile caller could."""
    path = cont.requests[index].path
    call = cont.pending_call(path)
    return DecisionRecord(
        path=path, tool=call.tool, args_digest=call.args_digest, decision=decision
    )


@given(bad_values())
@PER_STORE
def test_deciding_a_value_over_a_limit_changes_nothing(
    backend: tuple[SyncStore, Raw | None], bad: Any
) -> None:
    """A respond value or edited args over a limit is refused; version, decisions and audit stay."""
    store, raw = backend
    cont = make_continuation(leaves=1)
    store.save(cont)
    before = snapshot(store, cont)
    raw_before = raw.read(cont.id) if raw is not None else None
    for record in (
        _record(cont, 1, Respond(value=bad)),
        _record(cont, 0, Approve(args={"to": "x", "amount": 5, "extra": bad})),
    ):
        with pytest.raises(MalformedContinuation):
            store.decide(cont.id, record)
        with pytest.raises(MalformedContinuation):
            store.decide(cont.id, record, replace=True)
    assert snapshot(store, cont) == before
    if raw is not None:
        assert raw.read(cont.id) == raw_before
    assert store.get(cont.id).status == "waiting"


@given(bad_values())
@PER_STORE
def test_saving_a_continuation_carrying_a_bad_decision_stores_nothing(
    backend: tuple[SyncStore, Raw | None], bad: Any
) -> None:
    """A continuation whose attached decision breaks a limit is not saved, nor audited."""
    store, _ = backend
    cont = make_continuation(leaves=1)
    carrying = cont.model_copy(update={"decisions": (_record(cont, 1, Respond(value=bad)),)})
    with pytest.raises(MalformedContinuation):
        store.save(carrying)
    with pytest.raises(ContinuationNotFound):
        store.get(cont.id)
    assert store.audit(cont.run_id) == []


@given(st.integers(MAX_DEPTH - 2, 400), SEEDED)
@PER_STORE
def test_saving_state_nested_too_deep_stores_nothing(
    backend: tuple[SyncStore, Raw | None], levels: int, rng: random.Random
) -> None:
    """A continuation whose framework state nests past MAX_DEPTH is refused by save."""
    store, _ = backend
    cont = make_continuation(leaves=0)
    root = cont.root.model_copy(update={"state": {"x": nest(levels, rng=rng)}})
    with pytest.raises(MalformedContinuation):
        store.save(cont.model_copy(update={"root": root}))
    with pytest.raises(ContinuationNotFound):
        store.get(cont.id)
    assert store.audit(cont.run_id) == []


def _repeat_a_key(text: str, rng: random.Random) -> str:
    """``text`` (a JSON object or list of objects) with one object repeating its first key."""
    starts = [i for i, c in enumerate(text) if c == "{" and text[i + 1] == '"']
    at = rng.choice(starts)
    key_end = text.index('":', at) + 1
    key = text[at + 1 : key_end]
    return text[: at + 1] + f"{key}:0," + text[at + 1 :]


@st.composite
def hostile_columns(draw: st.DrawFn) -> tuple[str, str]:
    """A column name and a change to its JSON: a repeated key, deep nesting, or NaN."""
    column = draw(st.sampled_from(["document", "decisions"]))
    kind = draw(st.sampled_from(["repeated key", "deep", "nan"]))
    return column, kind


def _spoil(text: str, kind: str, rng: random.Random, levels: int) -> str:
    if kind == "repeated key":
        return _repeat_a_key(text, rng)
    raw = nest_text(levels, "NaN" if kind == "nan" else "0", rng)
    # Both columns hold objects whose last character closes them: add one more member there.
    closing = text.rindex("}")
    return f'{text[:closing]},"spoiled":{raw}{text[closing:]}'


@given(hostile_columns(), SEEDED, st.integers(MAX_DEPTH + 1, 3000))
@PER_STORE
def test_a_hostile_stored_row_is_refused_and_left_as_it_was(
    shared: tuple[SyncStore, Raw], target: tuple[str, str], rng: random.Random, levels: int
) -> None:
    """A row edited to repeat a key, nest too deep or hold NaN is refused by get, claim and decide.

    Nothing is written: the row keeps its version, status and text, and is never claimed.
    """
    store, raw = shared
    cont = make_continuation(leaves=0)
    store.save(cont.respond(cont.requests[0].path, "CC-1", by="alice"))  # ready to claim
    column, kind = target
    spoiled = _spoil(raw.read(cont.id)[column], kind, rng, levels)
    raw.write(cont.id, column, spoiled)
    before = raw.read(cont.id)
    audit = len(store.audit(cont.run_id))
    # The NaN is nested past the depth limit too: which of the two the parser meets first
    # depends on the interpreter's recursion limit at the call (hypothesis raises it), so
    # either refusal is right.
    expected = {"repeated key": "appears twice", "deep": "limit of", "nan": "NaN|limit of"}[kind]
    with pytest.raises(MalformedContinuation, match=expected):
        store.get(cont.id)
    with pytest.raises(MalformedContinuation, match=expected):
        store.claim(cont.id, owner="w1")
    with pytest.raises(MalformedContinuation, match=expected):
        store.decide(cont.id, _record(cont, 0, Respond(value="CC-2")), replace=True)
    after = raw.read(cont.id)
    assert after == before and after["status"] == "ready" and after["claimed_by"] is None
    assert len(store.audit(cont.run_id)) == audit


def test_the_decisions_column_must_hold_decision_records(shared: tuple[SyncStore, Raw]) -> None:
    """Stored decisions that are JSON but not a list of records are a typed refusal."""
    store, raw = shared
    cont = make_continuation(leaves=0)
    store.save(cont)
    for text in ('{"path": []}', '[{"path": 5}]', "[1]", json.dumps("x")):
        raw.write(cont.id, "decisions", text)
        with pytest.raises(MalformedContinuation):
            store.get(cont.id)
