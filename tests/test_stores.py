"""The store suite: every conformance scenario on every backend, plus backend specifics."""

from __future__ import annotations

import asyncio
import importlib
import multiprocessing
import sqlite3
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from _backends import POSTGRES_URL, REDIS_URL
from _backends import enter_namespace as _enter

from continuations_core import (
    Claim,
    ClaimSuperseded,
    ConfigurationError,
    Continuation,
    ContinuationTampered,
    DecisionRecord,
    Keyring,
    MemoryStore,
    MissingExtra,
    SQLiteStore,
    Store,
    StoreUnavailable,
    open_store,
)
from continuations_core.stores import StoredContinuation, SyncStore
from continuations_core.stores.sqlite import MIGRATIONS as SQLITE_MIGRATIONS
from continuations_core.testing import store_fencing, store_scenarios
from continuations_core.testing.store_fencing import (
    claim_next_oldest_first,
    claim_next_runs_out_of_attempts,
    claim_next_skips_backoff_and_live_claims,
    claim_next_takes_expired_leases,
)
from continuations_core.testing.store_scenarios import (
    STORE_SCENARIOS,
    Scenario,
    drain_with_claim_next,
    make_continuation,
    race_to_claim,
    ready,
)
from continuations_core.testing.store_segments import claim_next_record_reads_what_get_reads

SERVICE_PARAMS = [
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    pytest.param("redis", id="redis", marks=pytest.mark.redis),
]
SHARED_PARAMS = [pytest.param("sqlite", id="sqlite"), *SERVICE_PARAMS]
BACKEND_PARAMS = [pytest.param("memory", id="memory"), *SHARED_PARAMS]


@pytest_asyncio.fixture(params=BACKEND_PARAMS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """A fresh store of each backend; an unreachable service skips (fails in CI)."""
    name: str = request.param
    async with AsyncExitStack() as stack:
        opened = (
            MemoryStore() if name == "memory" else open_store(await _enter(stack, name, tmp_path))
        )
        async with opened:
            yield opened


@pytest_asyncio.fixture(params=SHARED_PARAMS)
async def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """The URL of a fresh store that several processes share (sqlite, postgres, redis)."""
    async with AsyncExitStack() as stack:
        yield await _enter(stack, request.param, tmp_path)


@pytest_asyncio.fixture(params=SERVICE_PARAMS)
async def service_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """The URL of a fresh store on a server (postgres, redis)."""
    async with AsyncExitStack() as stack:
        yield await _enter(stack, request.param, tmp_path)


@pytest.mark.parametrize("store", BACKEND_PARAMS, indirect=True)
@pytest.mark.parametrize("scenario", STORE_SCENARIOS, ids=lambda s: s.__name__)
@pytest.mark.asyncio
async def test_store_scenario(scenario: Scenario, store: Store) -> None:
    """Each backend passes each conformance scenario."""
    await scenario(store, make_continuation)


# -- claims across processes (G5) ------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_restarted_owner_takes_back_a_dead_holders_claims_but_never_a_live_ones(
    shared_url: str,
) -> None:
    """Owner restart (G14): same explicit owner or a provably dead pid take over at once."""
    await store_fencing.owner_restart(shared_url)


@pytest.mark.asyncio
async def test_eight_processes_claim_one_continuation_exactly_one_wins(shared_url: str) -> None:
    """Of 8 processes claiming one ready continuation, exactly one wins; 7 get AlreadyClaimed."""
    url = shared_url
    cont = make_continuation(leaves=0)
    async with open_store(url) as store:
        await store.save(cont)
        await store.decide(cont.id, cont.respond(cont.requests[0], "CC-1").decisions[0])
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(8)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=race_to_claim, args=(url, cont.id, f"w{i}", barrier, results))
        for i in range(8)
    ]
    for p in procs:
        p.start()
    try:
        outcomes = [results.get(timeout=120) for _ in procs]
        for p in procs:
            p.join(timeout=60)
            assert p.exitcode == 0
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
    kinds = sorted(outcome for _, outcome in outcomes)
    assert kinds == ["AlreadyClaimed"] * 7 + ["won"]
    async with open_store(url) as store:
        stored = await store.get(cont.id)
        winner = next(owner for owner, outcome in outcomes if outcome == "won")
        assert stored.status == "claimed" and stored.claimed_by == winner
        claims = [e for e in await store.audit(cont.run_id) if e.kind == "claimed"]
        assert [e.actor for e in claims] == [winner]


class _ScanningStore(MemoryStore):
    """A store relying on the base class's claim_next (scan, then claim), as third parties do."""

    claim_next = Store.claim_next


@pytest.mark.parametrize(
    "scenario",
    [
        claim_next_oldest_first,
        claim_next_skips_backoff_and_live_claims,
        claim_next_takes_expired_leases,
        claim_next_runs_out_of_attempts,
    ],
    ids=lambda s: s.__name__,
)
@pytest.mark.asyncio
async def test_the_default_claim_next_of_a_third_party_store_passes_the_scenarios(
    scenario: Scenario,
) -> None:
    """Store.claim_next's default (claimable, then claim) follows the same rules."""
    async with _ScanningStore() as store:
        await scenario(store, make_continuation)


class _ClaimThenGetStore(MemoryStore):
    """A store relying on the base class's claim_next_record (claim_next, then get), as third
    parties do; ``get`` fails while ``failing`` counts down (the store out of reach)."""

    claim_next_record = Store.claim_next_record
    failing = 0

    async def get(self, id: str) -> StoredContinuation:
        if self.failing:
            self.failing -= 1
            raise StoreUnavailable("the store is out of reach")
        return await super().get(id)


@pytest.mark.asyncio
async def test_the_default_claim_next_record_reads_what_get_reads() -> None:
    """Store.claim_next_record's default claims, then gets: the segment scenario passes."""
    async with _ClaimThenGetStore() as store:
        await claim_next_record_reads_what_get_reads(store, make_continuation)


@pytest.mark.asyncio
async def test_the_default_claim_next_record_releases_a_claim_it_could_not_read() -> None:
    """A read that fails after the claim gives the claim back before the error is raised, so
    the continuation is claimable again at once, not after its lease; nothing ran."""
    async with _ClaimThenGetStore() as store:
        cont = await ready(store, make_continuation)
        store.failing = 1
        with pytest.raises(StoreUnavailable):
            await store.claim_next_record("w1", lease_seconds=600)
        released = await store.get(cont.id)
        assert released.status == "ready" and released.fence == 1
        kinds = [e.kind for e in await store.audit(cont.run_id)]
        assert kinds[-2:] == ["claimed", "released"]
        found = await store.claim_next_record("w2", lease_seconds=600)
        assert found is not None
        claim, record = found
        assert claim.id == cont.id and claim.token == 2 and claim.owner == "w2"
        assert record.status == "claimed" and record.fence == 2 and record.claimed_by == "w2"


@pytest.mark.asyncio
async def test_a_restarted_owner_takes_back_its_claims_with_claim_next(shared_url: str) -> None:
    """claim_next by a restarted owner takes back a dead predecessor's claim, never a live one's."""
    await store_fencing.owner_restart_next(shared_url)


_DRAINED = 48


async def _claimed_exactly_once(url: str, ids: list[str], drained: dict[str, list[str]]) -> None:
    """Every id was claimed by exactly one claimer, as the store and its audit trail say."""
    claimed = [cid for got in drained.values() for cid in got]
    assert sorted(claimed) == sorted(ids)  # each id once: no double claim, none left behind
    owner_of = {cid: owner for owner, got in drained.items() for cid in got}
    async with open_store(url) as store:
        for cid in ids:
            stored = await store.get(cid)
            assert stored.status == "claimed" and stored.claimed_by == owner_of[cid]
            assert stored.fence == 1 and stored.attempts == 1
            claims = [e for e in await store.audit(stored.run_id) if e.kind == "claimed"]
            assert [e.actor for e in claims] == [owner_of[cid]]
        assert await store.claim_next("late") is None


@pytest.mark.asyncio
async def test_eight_processes_draining_with_claim_next_claim_each_continuation_once(
    shared_url: str,
) -> None:
    """8 processes racing claim_next over 48 continuations: every one claimed exactly once."""
    async with open_store(shared_url) as store:
        ids = [(await ready(store, make_continuation)).id for _ in range(_DRAINED)]
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(8)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=drain_with_claim_next, args=(shared_url, f"w{i}", barrier, results))
        for i in range(8)
    ]
    for p in procs:
        p.start()
    try:
        drained = dict(results.get(timeout=180) for _ in procs)
        for p in procs:
            p.join(timeout=60)
            assert p.exitcode == 0
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
    await _claimed_exactly_once(shared_url, ids, drained)


@pytest.mark.asyncio
async def test_eight_stores_on_one_sqlite_file_draining_with_claim_next_claim_each_once(
    tmp_path: Path,
) -> None:
    """8 SQLite store objects (own connections) on one file race claim_next: each claimed once."""
    url = f"sqlite:///{tmp_path / 'race.db'}"
    async with open_store(url) as store:
        ids = [(await ready(store, make_continuation)).id for _ in range(_DRAINED)]
    stores = [open_store(url) for _ in range(8)]

    async def drain(store: Store, owner: str) -> list[str]:
        got = []
        while (claim := await store.claim_next(owner, lease_seconds=600)) is not None:
            got.append(claim.id)
        return got

    try:
        found = await asyncio.gather(*(drain(s, f"w{i}") for i, s in enumerate(stores)))
    finally:
        for opened in stores:
            await opened.close()
    await _claimed_exactly_once(url, ids, {f"w{i}": got for i, got in enumerate(found)})


@pytest.mark.asyncio
async def test_eight_threads_sharing_a_memory_store_claim_each_continuation_once() -> None:
    """8 threads (each its own event loop) race claim_next on one MemoryStore: each claimed once."""
    store = MemoryStore()
    ids = [(await ready(store, make_continuation)).id for _ in range(_DRAINED)]

    def drain(owner: str) -> list[str]:
        async def run() -> list[str]:
            got = []
            while (claim := await store.claim_next(owner, lease_seconds=600)) is not None:
                got.append(claim.id)
            return got

        return asyncio.run(run())

    found = await asyncio.gather(*(asyncio.to_thread(drain, f"w{i}") for i in range(8)))
    drained = {f"w{i}": got for i, got in enumerate(found)}
    claimed = sorted(cid for got in drained.values() for cid in got)
    assert claimed == sorted(ids)
    for owner, got in drained.items():
        for cid in got:
            stored = await store.get(cid)
            assert stored.claimed_by == owner and stored.fence == 1
            claims = [e for e in await store.audit(stored.run_id) if e.kind == "claimed"]
            assert [e.actor for e in claims] == [owner]


# -- Postgres and Redis: wake-ups and workers ------------------------------------------------


def _answer(cont: Continuation) -> DecisionRecord:
    """The decision for the single input request of ``make_continuation(leaves=0)``."""
    return cont.respond(cont.requests[0], "CC-7").decisions[0]


@pytest.mark.asyncio
async def test_wait_ready_wakes_on_another_connections_save_decide_and_release(
    service_url: str,
) -> None:
    """open_store picks the backend, and wait_ready(1s) wakes on ready-making changes elsewhere."""
    from continuations_core.stores.postgres import PostgresStore
    from continuations_core.stores.redis import RedisStore

    expected = PostgresStore if service_url.startswith("postgresql") else RedisStore
    listener, other = open_store(service_url), open_store(service_url)
    assert type(listener) is expected and type(other) is expected
    async with listener, other:
        assert await listener.wait_ready(0) == []  # starts listening
        cancelled = asyncio.create_task(listener.wait_ready(5))  # as a stopping worker does
        await asyncio.sleep(0.05)
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        waiting = make_continuation(leaves=0)
        await other.save(waiting)  # waiting: no wake-up
        assert await listener.claimable() == []

        waiter = asyncio.create_task(listener.wait_ready(1.0))
        await asyncio.sleep(0.05)  # let it block first: the wake-up must interrupt the wait
        await other.decide(waiting.id, _answer(waiting))
        assert await waiter == [waiting.id]

        predecided = make_continuation(leaves=0)
        await other.save(predecided.with_decisions([_answer(predecided)]))
        assert await listener.wait_ready(1.0) == [predecided.id]

        claim = await other.claim(waiting.id, owner="w1")
        assert await listener.wait_ready(0.2) == []  # a claim wakes no one
        await other.release(claim)
        assert await listener.wait_ready(1.0) == [waiting.id]


@pytest.mark.asyncio
async def test_a_closed_service_store_raises_store_unavailable(service_url: str) -> None:
    """Using a closed Postgres or Redis store raises StoreUnavailable, not a driver error."""
    store = open_store(service_url)
    await store.list()
    await store.close()
    with pytest.raises(StoreUnavailable):
        await store.list()


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("postgresql://postgres:s3cret@127.0.0.1:1/test", id="postgres"),
        pytest.param("redis://:s3cret@127.0.0.1:1/0", id="redis"),
    ],
)
@pytest.mark.asyncio
async def test_an_unreachable_server_raises_store_unavailable_naming_it_without_password(
    url: str,
) -> None:
    """Driver errors become StoreUnavailable; the message names the server, not the password."""
    pytest.importorskip("psycopg" if url.startswith("postgresql") else "redis")
    async with open_store(url) as store:
        with pytest.raises(StoreUnavailable) as info:
            await store.list()
    assert "127.0.0.1:1" in str(info.value) and "s3cret" not in str(info.value)
    assert info.value.__cause__ is not None


# -- SQLite specifics ------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_sqlite_stores_the_signed_document_byte_exact_and_detects_edits(
    tmp_path: Path,
) -> None:
    """The stored document is the exact signed text; editing it in the file is detected."""
    keys = Keyring.generate()
    cont = make_continuation(keys)
    path = tmp_path / "s.db"
    async with SQLiteStore(path) as store:
        await store.save(cont)
    with sqlite3.connect(path) as conn:
        (text,) = conn.execute("SELECT document FROM continuations").fetchone()
        assert text == cont.model_copy(update={"decisions": ()}).to_json()
        conn.execute("UPDATE continuations SET document = ?", (text.replace("100", "900"),))
    conn.close()
    async with SQLiteStore(path) as store:
        loaded = await store.load(cont.id)
    with pytest.raises(ContinuationTampered):
        loaded.verify(keys)


@pytest.mark.asyncio
async def test_sqlite_opens_in_wal_mode_and_records_migrations_once(tmp_path: Path) -> None:
    """Opening twice applies the migrations once and leaves the file in WAL mode."""
    path = tmp_path / "m.db"
    for _ in range(2):
        async with SQLiteStore(f"sqlite:///{path}"):
            pass
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        applied = conn.execute("SELECT version FROM schema_migrations").fetchall()
        assert applied == [(v,) for v in range(1, len(SQLITE_MIGRATIONS) + 1)]
    conn.close()


def test_sqlite_refuses_a_database_from_a_newer_version(tmp_path: Path) -> None:
    """A database migrated by a newer package version is refused with a clear error."""
    path = tmp_path / "new.db"
    SyncStore(SQLiteStore(path)).close()
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO schema_migrations VALUES (99, 'later')")
    conn.close()
    with pytest.raises(ConfigurationError, match="Upgrade agent-continuations"):
        SQLiteStore(path)


@pytest.mark.asyncio
@pytest.mark.parametrize("inline", [True, False], ids=["inline", "on a thread"])
async def test_a_sqlite_call_waiting_for_another_writer_leaves_the_event_loop_free(
    tmp_path: Path, inline: bool
) -> None:
    """While another process holds the write lock, a save waits on a thread, not on the event
    loop, and is stored once when the lock is released (an inline attempt that found the lock
    taken left nothing behind)."""
    path = tmp_path / "busy.db"
    cont = make_continuation()
    async with SQLiteStore(path, inline=inline) as store:
        await store.list()
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another writer holds the lock
        save = asyncio.create_task(store.save(cont))
        ticks = 0
        while ticks < 20:  # the loop keeps running other tasks while the save waits
            await asyncio.sleep(0.01)
            ticks += 1
        assert not save.done()
        other.execute("COMMIT")
        other.close()
        stored = await save
        assert stored.id == cont.id
        assert [s.id for s in await store.list()] == [cont.id]
        assert [e.kind for e in await store.audit(cont.run_id)] == ["suspended"]


@pytest.mark.asyncio
async def test_an_inline_sqlite_store_checkpoints_its_wal_into_the_database(
    tmp_path: Path,
) -> None:
    """Calls run inline never checkpoint inside a commit; the store checkpoints on a thread
    every 128 calls, so the database file itself holds what was written."""
    path = tmp_path / "wal.db"
    keys = Keyring.generate()
    async with SQLiteStore(path) as store:
        for _ in range(300):
            await store.save(make_continuation(keys))
        copy = tmp_path / "copy.db"
        copy.write_bytes(path.read_bytes())  # the database file without its WAL
        with sqlite3.connect(copy) as conn:
            (count,) = conn.execute("SELECT COUNT(*) FROM continuations").fetchone()
        conn.close()
    assert 300 - 128 <= count <= 300


@pytest.mark.asyncio
async def test_sqlite_uses_a_given_connection_and_leaves_it_open() -> None:
    """A caller's connection is used as is and stays open after close."""
    conn = sqlite3.connect(":memory:", check_same_thread=False)
    cont = make_continuation()
    async with SQLiteStore(connection=conn) as store:
        await store.save(cont)
    assert conn.execute("SELECT id FROM continuations").fetchall() == [(cont.id,)]
    conn.close()


@pytest.mark.asyncio
async def test_closed_store_raises_store_unavailable(tmp_path: Path) -> None:
    """Using a closed store raises StoreUnavailable rather than a driver error."""
    for store in (MemoryStore(), SQLiteStore(tmp_path / "c.db")):
        await store.close()
        with pytest.raises(StoreUnavailable):
            await store.list()


def test_sync_store_wraps_every_call(shared_url: str) -> None:
    """SyncStore runs the async protocol from blocking code, on every persistent backend."""
    cont = make_continuation(leaves=0)
    with SyncStore(open_store(shared_url)) as store:
        store.save(cont)
        store.decide(cont.id, cont.respond(cont.requests[0], 1).decisions[0])
        claim = store.claim(cont.id, owner="cli")
        store.complete(claim, output="ok")
        assert [s.status for s in store.list()] == ["done"]
        assert [e.kind for e in store.audit(cont.run_id)][-1] == "completed"


def test_incomplete_backend_fails_at_instantiation() -> None:
    """A backend missing a protocol method cannot be instantiated."""

    class Partial(Store):
        async def close(self) -> None:
            return None

    with pytest.raises(TypeError, match="abstract"):
        Partial()  # type: ignore[abstract]


# -- Postgres specifics ----------------------------------------------------------------------


@pytest_asyncio.fixture
async def postgres_url(tmp_path: Path) -> AsyncIterator[str]:
    """The URL of a fresh Postgres schema (``?schema=``), dropped afterwards."""
    async with AsyncExitStack() as stack:
        yield await _enter(stack, "postgres", tmp_path)


def _schema_of(url: str) -> str:
    return url.rpartition("?schema=")[2]


@pytest.mark.postgres
@pytest.mark.asyncio
async def test_postgres_stores_the_signed_document_byte_exact_and_detects_edits(
    postgres_url: str,
) -> None:
    """The stored document is the exact signed text; editing it in the table is detected."""
    import psycopg

    keys = Keyring.generate()
    cont = make_continuation(keys)
    async with open_store(postgres_url) as store:
        await store.save(cont)
        async with await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True) as conn:
            table = f'"{_schema_of(postgres_url)}".continuations'
            cur = await conn.execute(f"SELECT document FROM {table}")
            (text,) = await cur.fetchone()
            assert text == cont.model_copy(update={"decisions": ()}).to_json()
            await conn.execute(f"UPDATE {table} SET document = %s", (text.replace("100", "900"),))
        loaded = await store.load(cont.id)
    with pytest.raises(ContinuationTampered):
        loaded.verify(keys)


@pytest.mark.postgres
@pytest.mark.asyncio
async def test_postgres_stores_starting_together_migrate_once(postgres_url: str) -> None:
    """Stores opening one new schema concurrently apply its migrations exactly once."""
    import psycopg

    stores = [open_store(postgres_url) for _ in range(6)]
    await asyncio.gather(*(s.list() for s in stores))
    await asyncio.gather(*(s.close() for s in stores))
    async with await psycopg.AsyncConnection.connect(POSTGRES_URL) as conn:
        schema = _schema_of(postgres_url)
        from continuations_core.stores.postgres import MIGRATIONS

        cur = await conn.execute(f'SELECT version FROM "{schema}".schema_migrations')
        assert await cur.fetchall() == [(v,) for v in range(1, len(MIGRATIONS) + 1)]
        await conn.execute(f'INSERT INTO "{schema}".schema_migrations VALUES (99, now())')
        await conn.commit()
    async with open_store(postgres_url) as newer:
        with pytest.raises(ConfigurationError, match="Upgrade agent-continuations"):
            await newer.list()


def _plan_nodes(plan: dict[str, object]) -> list[dict[str, object]]:
    """``plan`` and every node under it, depth first."""
    children = plan.get("Plans", [])
    assert isinstance(children, list)
    return [plan, *(node for child in children for node in _plan_nodes(child))]


@pytest.mark.postgres
@pytest.mark.asyncio
@pytest.mark.parametrize("analyzed", [False, True], ids=["no statistics", "analyzed"])
async def test_postgres_claim_next_walks_its_index_instead_of_sorting_the_ready_rows(
    postgres_url: str, analyzed: bool
) -> None:
    """The pick of claim_next stops at the first claimable row in index order, whatever the
    planner knows: a sort of every ready row would make each claim cost O(ready rows). Live
    claims that changed before every ready row are not walked past either: a fleet holding
    many long runs would make each claim cost O(live claims)."""
    import psycopg
    from psycopg.rows import dict_row

    from continuations_core.stores import _postgres_sql as q
    from continuations_core.stores.postgres import PostgresStore

    keys = Keyring.generate()
    schema = _schema_of(postgres_url)
    async with open_store(postgres_url) as store:
        assert isinstance(store, PostgresStore)
        for _ in range(300):  # a new schema: autovacuum has not analyzed it
            await store.save(make_continuation(keys, leaves=0))
        async with await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.row_factory = dict_row  # type: ignore[assignment]
            await conn.execute(f'UPDATE "{schema}".continuations SET status = %s', ("ready",))
            await conn.execute(  # the oldest half: live claims of another worker's long runs
                f'UPDATE "{schema}".continuations SET status = %s, claimed_by = %s, '
                "lease_until = clock_timestamp() + interval '1 hour', fence = 1, "
                f'holder = %s WHERE pos <= (SELECT MIN(pos) + 149 FROM "{schema}".continuations)',
                ("claimed", "other", "s/m/1/1"),
            )
            if analyzed:
                await conn.execute(f'ANALYZE "{schema}".continuations')
            params = {**store._claim_next_params("w", 300.0, 5), "skip": []}
            explain = psycopg.sql.SQL("EXPLAIN (ANALYZE, FORMAT JSON) ") + store._q(q.CLAIM_NEXT)
            row = await (await conn.execute(explain, params)).fetchone()
    assert row is not None
    [root] = row["QUERY PLAN"]
    [due] = [n for n in _plan_nodes(root["Plan"]) if n.get("Subplan Name") == "CTE due"]
    nodes = _plan_nodes(due)
    kinds = [n["Node Type"] for n in nodes]
    assert "Sort" not in kinds and "Incremental Sort" not in kinds, kinds
    [scan] = [n for n in nodes if n["Node Type"] == "Index Scan"]
    assert scan["Index Name"] == "continuations_due"
    assert scan["Actual Rows"] == 1  # it stopped at the first row
    assert scan.get("Rows Removed by Filter", 0) == 0  # and walked past no live claim


@pytest.mark.postgres
@pytest.mark.asyncio
async def test_postgres_uses_a_given_pool_or_connection_and_leaves_it_open(
    postgres_url: str,
) -> None:
    """A caller's pool or connection is used as is (autocommit or not) and stays open."""
    import psycopg
    from psycopg_pool import AsyncConnectionPool

    from continuations_core.stores.postgres import PostgresStore

    schema = _schema_of(postgres_url)
    async with AsyncConnectionPool(POSTGRES_URL, min_size=1, max_size=2, open=False) as pool:
        async with PostgresStore(pool, schema=schema) as store:
            await store_scenarios.release_and_reclaim(store, make_continuation)
            assert await store.wait_ready(0) == []
        assert not pool.closed
        async with pool.connection() as conn:
            assert (await (await conn.execute("SELECT 1")).fetchone()) == (1,)
    conn = await psycopg.AsyncConnection.connect(POSTGRES_URL)  # not autocommit
    async with PostgresStore(conn, schema=schema) as store:
        await store_scenarios.decide_concurrent(store, make_continuation)
        assert await store.wait_ready(0) == []  # listens on the same connection
    assert not conn.closed and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    await conn.close()


# -- Redis specifics -------------------------------------------------------------------------


@pytest_asyncio.fixture
async def redis_url(tmp_path: Path) -> AsyncIterator[str]:
    """The URL of a fresh Redis key prefix (``?prefix=``), cleaned up afterwards."""
    async with AsyncExitStack() as stack:
        yield await _enter(stack, "redis", tmp_path)


@pytest.mark.redis
@pytest.mark.asyncio
async def test_redis_stores_the_signed_document_byte_exact_and_detects_edits(
    redis_url: str,
) -> None:
    """The stored document is the exact signed text; editing it in Redis is detected."""
    from redis.asyncio import Redis

    keys = Keyring.generate()
    cont = make_continuation(keys)
    prefix = redis_url.rpartition("?prefix=")[2]
    client = Redis.from_url(REDIS_URL, decode_responses=True)
    async with open_store(redis_url) as store:
        await store.save(cont)
        key = f"{prefix}:c:{cont.id}"
        text = await client.hget(key, "document")
        assert text == cont.model_copy(update={"decisions": ()}).to_json()
        await client.hset(key, "document", text.replace("100", "900"))
        loaded = await store.load(cont.id)
    with pytest.raises(ContinuationTampered):
        loaded.verify(keys)
    await client.aclose()


@pytest.mark.redis
@pytest.mark.asyncio
async def test_redis_uses_a_given_client_and_refuses_a_newer_layout(redis_url: str) -> None:
    """A caller's client (decoding or not) is used as is and stays open; newer keys are refused."""
    from redis.asyncio import Redis

    from continuations_core.stores.redis import RedisStore

    prefix = redis_url.rpartition("?prefix=")[2]
    for decode in (False, True):
        client = Redis.from_url(REDIS_URL, decode_responses=decode)
        async with RedisStore(client, prefix=f"{prefix}:{decode}") as store:
            await store_scenarios.save_load(store, make_continuation)
            await store_scenarios.audit_order(store, make_continuation)
            assert await store.wait_ready(0) == []
        assert await client.ping()
        await client.set(f"{prefix}:{decode}:layout", 99)
        with pytest.raises(ConfigurationError, match="Upgrade agent-continuations"):
            await RedisStore(client, prefix=f"{prefix}:{decode}").list()
        await client.aclose()


# -- open_store ------------------------------------------------------------------------------


def test_open_store_picks_the_backend_by_scheme(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """memory://, sqlite:/// (relative and absolute) and bare .db paths open the right store."""
    monkeypatch.chdir(tmp_path)
    assert isinstance(open_store("memory://"), MemoryStore)
    for url, created in [
        ("sqlite:///rel/a.db", tmp_path / "rel" / "a.db"),
        (f"sqlite:///{tmp_path / 'abs.db'}", tmp_path / "abs.db"),
        (str(tmp_path / "bare.sqlite"), tmp_path / "bare.sqlite"),
    ]:
        SyncStore(open_store(url)).close()
        assert created.exists(), url


def test_open_store_rejects_unknown_schemes_listing_supported_ones() -> None:
    """An unknown scheme raises ConfigurationError naming the supported ones."""
    with pytest.raises(ConfigurationError) as info:
        open_store("ftp://x")
    for scheme in ("memory://", "sqlite:///", "postgresql://", "redis://"):
        assert scheme in str(info.value)


@pytest.mark.parametrize(
    ("url", "driver", "extra"),
    [("postgresql://localhost/db", "psycopg", "postgres"), ("redis://localhost", "redis", "redis")],
)
def test_open_store_names_the_extra_when_the_driver_is_missing(
    url: str, driver: str, extra: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without its driver, a backend's error says which pip extra to install."""
    monkeypatch.setitem(sys.modules, driver, None)  # makes the driver unimportable
    with pytest.raises(MissingExtra) as info:
        open_store(url)
    assert f'pip install "agent-continuations[{extra}]"' in str(info.value)
    assert MissingExtra(driver, extra).extra == extra


@pytest.mark.parametrize("url", ["postgres://localhost/db", "redis://localhost"])
def test_open_store_reports_a_backend_missing_from_this_version(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the driver present but no backend module, the error says so."""
    module = "postgres" if url.startswith("postgres") else "redis"
    pytest.importorskip("psycopg" if module == "postgres" else "redis")
    monkeypatch.setitem(sys.modules, f"continuations_core.stores.{module}", None)
    with pytest.raises(ConfigurationError, match="not available in this version"):
        open_store(url)


@pytest.mark.parametrize(
    ("module", "hidden"),
    [("postgres", ["psycopg"]), ("redis", ["redis", "redis.asyncio", "redis.exceptions"])],
    ids=["postgres", "redis"],
)
def test_a_backend_module_without_its_driver_names_the_extra(
    module: str, hidden: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Importing a backend whose driver is missing raises MissingExtra naming the pip extra."""
    for name in hidden:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.delitem(sys.modules, f"continuations_core.stores.{module}", raising=False)
    with pytest.raises(MissingExtra) as info:
        importlib.import_module(f"continuations_core.stores.{module}")
    assert f'pip install "agent-continuations[{module}]"' in str(info.value)


@pytest.mark.parametrize(
    ("url", "where", "namespace"),
    [
        ("postgresql://u@127.0.0.1/db?schema=app_1&sslmode=disable", "schema", "app_1"),
        ("redis://127.0.0.1:6379/2?prefix=app-1", "prefix", "app-1"),
    ],
    ids=["postgres", "redis"],
)
def test_from_url_takes_the_namespace_from_the_query(url: str, where: str, namespace: str) -> None:
    """``?schema=`` (Postgres) and ``?prefix=`` (Redis) pick the namespace; nothing connects."""
    pytest.importorskip("psycopg" if where == "schema" else "redis")
    store = open_store(url)
    assert getattr(store, where) == namespace
    SyncStore(store).close()


async def _stored_document(store: Store, id: str, text: str | None = None) -> str:
    """Continuation ``id``'s stored document text, read (and replaced by ``text`` if given)
    behind the store's back, on a SQLite, Postgres or Redis store."""
    if isinstance(store, SQLiteStore):

        def swap(c: sqlite3.Connection) -> str:
            [(old,)] = c.execute("SELECT document FROM continuations WHERE id = ?", (id,))
            if text is not None:
                c.execute("UPDATE continuations SET document = ? WHERE id = ?", (text, id))
            return str(old)

        return store._sync(swap)
    if type(store).__name__ == "PostgresStore":
        read: Any = "SELECT document FROM {s}.continuations WHERE id = %s"
        write: Any = "UPDATE {s}.continuations SET document = %s WHERE id = %s"
        async with store._tx() as conn:  # type: ignore[attr-defined]
            cur = await conn.execute(store._q(read), (id,))  # type: ignore[attr-defined]
            [(old,)] = await cur.fetchall()
            if text is not None:
                await conn.execute(store._q(write), (text, id))  # type: ignore[attr-defined]
            return str(old)
    client = await store._open()  # type: ignore[attr-defined]
    key = store._k("c", id)  # type: ignore[attr-defined]
    old = await client.hget(key, "document")
    if text is not None:
        await client.hset(key, "document", text)
    return old.decode() if isinstance(old, bytes) else str(old)


async def _unparseable_claimed(store: Store) -> tuple[Continuation, Claim, str]:
    """A claimed continuation whose stored document can no longer be parsed, and the text it
    had."""
    from continuations_core.errors import SchemaError

    cont = await ready(store, make_continuation)
    claim = await store.claim(cont.id, owner="w1", lease_seconds=30)
    text = await _stored_document(store, cont.id, '{"not": "a continuation"}')
    with pytest.raises(SchemaError):
        await store.get(cont.id)  # what parsing it would do
    return cont, claim, text


@pytest.mark.parametrize("store", SHARED_PARAMS, indirect=True)
@pytest.mark.asyncio
async def test_a_heartbeat_reads_the_claim_not_the_document(store: Store) -> None:
    """A heartbeat checks the claim's columns and extends the lease; it does not read or parse
    the document, so it costs the same however long the run's history is. Shown with a
    document no reader can parse: the heartbeat still succeeds, and a lost claim's is refused."""
    cont, claim, text = await _unparseable_claimed(store)
    renewed = await store.heartbeat(claim, lease_seconds=600)
    assert renewed.lease_until > claim.lease_until and renewed.token == claim.token
    stale = claim.model_copy(update={"token": claim.token - 1})
    with pytest.raises(ClaimSuperseded):
        await store.heartbeat(stale)
    await _stored_document(store, cont.id, text)  # readable again: what was stored?
    held = await store.get(cont.id)
    assert held.status == "claimed" and held.version == claim.version
    assert held.lease_until is not None
    assert abs((held.lease_until - renewed.lease_until).total_seconds()) < 0.001


@pytest.mark.parametrize(
    "store", [p for p in SHARED_PARAMS if p.id in ("sqlite", "postgres")], indirect=True
)
@pytest.mark.asyncio
async def test_a_completion_reads_the_claim_not_the_document(store: Store) -> None:
    """A completion checks the claim's columns, retires the row and audits; it does not parse
    the document. Shown with a document no reader can parse."""
    cont, claim, text = await _unparseable_claimed(store)
    await store.complete(claim, output={"paid": 1})
    events = await store.audit(cont.run_id)
    assert [e.kind for e in events[-2:]] == ["resumed", "completed"]
    assert events[-1].detail == {"output": {"paid": 1}} and events[-1].actor == "w1"
    await _stored_document(store, cont.id, text)
    done = await store.get(cont.id)
    assert done.status == "done" and done.version == claim.version + 1
    assert done.output == {"paid": 1}
    with pytest.raises(ClaimSuperseded):
        await store.complete(claim)


@pytest.mark.parametrize("store", SHARED_PARAMS, indirect=True)
@pytest.mark.asyncio
async def test_claim_next_record_names_an_unreadable_record_and_keeps_its_claim(
    store: Store,
) -> None:
    """A claimed record that cannot be parsed raises SchemaError naming it, after the claim
    committed: the claim holds (no other worker takes it meanwhile) and the caller fails it
    without parsing it; the next call claims the next record."""
    from continuations_core.errors import SchemaError

    bad = await ready(store, make_continuation)
    text = await _stored_document(store, bad.id, '{"not": "a continuation"}')
    good = await ready(store, make_continuation)
    with pytest.raises(SchemaError) as raised:
        await store.claim_next_record("w1", lease_seconds=60)
    assert raised.value.continuation_id == bad.id
    assert await store.fail_unreadable(bad.id, raised.value, actor="w1")
    found = await store.claim_next_record("w1", lease_seconds=60)
    assert found is not None and found[0].id == good.id and found[1].id == good.id
    assert await store.claim_next_record("w2") is None
    await _stored_document(store, bad.id, text)  # readable again: what was stored?
    failed = await store.get(bad.id)
    assert failed.status == "failed" and failed.fence == 1 and failed.claimed_by == "w1"
    assert [e.kind for e in await store.audit(bad.run_id)][-2:] == ["claimed", "failed"]


@pytest.mark.parametrize("store", SHARED_PARAMS, indirect=True)
@pytest.mark.asyncio
async def test_claim_next_passes_over_this_processs_own_claims_without_reading_them(
    store: Store,
) -> None:
    """The live claims this process holds under the owner name are never candidates, so
    claim_next does not read them, however many there are: shown with one whose stored
    document no reader can parse, which claim_next passes over to claim the next one."""
    held = [await ready(store, make_continuation) for _ in range(3)]
    for cont in held:
        assert (found := await store.claim_next("w1", lease_seconds=600)) is not None
        assert found.id == cont.id
    text = await _stored_document(store, held[0].id, '{"not": "a continuation"}')
    nxt = await ready(store, make_continuation)
    claim = await store.claim_next("w1", lease_seconds=600)
    assert claim is not None and claim.id == nxt.id
    assert await store.claim_next("w1") is None
    await _stored_document(store, held[0].id, text)
    for cont in held:
        record = await store.get(cont.id)
        assert record.status == "claimed" and record.fence == 1 and record.claimed_by == "w1"


@pytest.mark.asyncio
async def test_sqlite_claim_next_walks_a_range_of_its_due_index(tmp_path: Path) -> None:
    """SQLite's claim_next walks ``continuations_due`` from its start up to now, in index order
    (no sort), so live claims, due when their lease ends, are outside the range it reads; a
    restarted owner's candidates are read through the owner index, either side of this
    session's holders."""
    from continuations_core.stores.sqlite import _DUE_WALK, _TAKEBACK

    path = tmp_path / "plan.db"
    async with SQLiteStore(path):
        pass
    conn = sqlite3.connect(path)
    terms = {"now": "x", "owner": "w", "session": "s", "explicit": True, "machine": "m"}
    due = [r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + _DUE_WALK, terms)]
    back = [r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + _TAKEBACK, terms)]
    conn.close()
    assert due == ["SEARCH continuations USING INDEX continuations_due (<expr><?)"], due
    # either side of this session's holders: its own claims are not read
    owner = "SEARCH continuations USING INDEX continuations_owner (claimed_by=? AND holder"
    assert [p for p in back if p.startswith("SEARCH")] == [owner + "<?)", owner + ">?)"], back


@pytest.mark.redis
@pytest.mark.asyncio
async def test_redis_claim_next_rescores_queue_entries_an_older_version_scored_by_last_change(
    tmp_path: Path,
) -> None:
    """Older versions scored the queue by last change, so a live claim sat among the due
    entries: claim_next passes over it once, scores it by its lease end, and never meets it
    again until then."""
    async with AsyncExitStack() as stack:
        url = await _enter(stack, "redis", tmp_path)
        async with open_store(url) as store:
            live = await ready(store, make_continuation)
            held = await store.claim_next("w0", lease_seconds=600)
            assert held is not None and held.id == live.id
            client = await store._open()  # type: ignore[attr-defined]
            queue = store._k("queue")  # type: ignore[attr-defined]
            await client.zadd(queue, {live.id: 0})  # as an older version left it
            nxt = await ready(store, make_continuation)
            claim = await store.claim_next("w1", lease_seconds=600)
            assert claim is not None and claim.id == nxt.id
            lease = held.lease_until - datetime(1970, 1, 1, tzinfo=UTC)
            assert await client.zscore(queue, live.id) == lease // timedelta(microseconds=1)
            assert await store.claim_next("w1") is None
            assert (await store.get(live.id)).claimed_by == "w0"


@pytest.mark.redis
@pytest.mark.asyncio
async def test_redis_owner_index_is_scored_by_holder_session_and_older_scores_heal(
    tmp_path: Path,
) -> None:
    """Claims under an owner name are scored by their holder's session, so claim_next reads
    only other sessions' claims there; one an older version scored by creation is read once
    and rescored, and this session's own claim is never taken back."""
    from continuations_core.stores._redis_codec import session_score

    async with AsyncExitStack() as stack:
        url = await _enter(stack, "redis", tmp_path)
        async with open_store(url) as store:
            mine = await ready(store, make_continuation)
            held = await store.claim_next("svc", lease_seconds=600)
            assert held is not None and held.id == mine.id
            client = await store._open()  # type: ignore[attr-defined]
            owners = store._k("owner", "svc")  # type: ignore[attr-defined]
            raw = await client.hget(store._k("c", mine.id), "holder")  # type: ignore[attr-defined]
            holder = raw.decode() if isinstance(raw, bytes) else str(raw)
            assert await client.zscore(owners, mine.id) == session_score(holder)
            await client.zadd(owners, {mine.id: 0})  # as an older version left it
            assert await store.claim_next("svc") is None  # its own claim stays put
            assert await client.zscore(owners, mine.id) == session_score(holder)
            assert (await store.get(mine.id)).fence == 1
