"""Store migrations: data written by the first layout survives the upgrade and gains G14 fields.

Each test builds a store the way version 1 of the package left it (its shipped migration or
key layout, with a waiting, a ready and a claimed continuation), opens it with this version,
and checks that nothing was lost and that the new statuses, tokens and attempts work on it.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from _backends import POSTGRES_URL, REDIS_URL
from _backends import enter_namespace as _enter

from continuations_core import Continuation, Keyring, SQLiteStore, Store, open_store
from continuations_core.testing.store_scenarios import make_continuation

KEYS = Keyring.generate("migrate")
NOW = datetime.now(UTC)


def _v1_rows() -> list[dict[str, Any]]:
    """Three continuations as version 1 stored them: waiting, ready (decided) and claimed."""
    rows = []
    for status in ("waiting", "ready", "claimed"):
        cont = make_continuation(KEYS, leaves=0)
        decisions: list[dict[str, Any]] = []
        if status != "waiting":
            decided = cont.respond(cont.requests[0], "CC-7", by="alice")
            decisions = [r.model_dump(mode="json") for r in decided.decisions]
        rows.append(
            {
                "id": cont.id,
                "run_id": cont.run_id,
                "seq": cont.seq,
                "version": 2 if decisions else 1,
                "status": status,
                "created_at": NOW,
                "updated_at": NOW,
                "claimed_by": "old-worker" if status == "claimed" else None,
                "claim_token": "ab" * 16 if status == "claimed" else None,
                "lease_until": NOW - timedelta(seconds=5) if status == "claimed" else None,
                "document": cont.to_json(),
                "decisions": json.dumps(decisions),
            }
        )
    return rows


async def _check_upgraded(store: Store, rows: list[dict[str, Any]]) -> None:
    """Every v1 row loads intact; the expired v1 claim is taken over with token 1 and can fail."""
    for row in rows:
        stored = await store.get(row["id"])
        assert stored.status == row["status"] and stored.version == row["version"]
        assert stored.fence == 0 and stored.attempts == 0 and stored.last_error is None
        stored.continuation.verify(KEYS)
        document = stored.continuation.model_copy(update={"decisions": ()})
        assert document.to_json() == Continuation.from_json(row["document"]).to_json()
        kept = [r.model_dump(mode="json") for r in stored.continuation.decisions]
        assert kept == json.loads(row["decisions"])
    claimed = rows[2]["id"]
    assert claimed in await store.claimable()
    claim = await store.claim(claimed, owner="new-worker")
    assert claim.token == 1 and claim.attempt == 1
    failed = await store.fail(claim, RuntimeError("boom"), permanent=True)
    assert failed.status == "failed"
    assert [r.id for r in await store.list(status="failed")] == [claimed]
    retried = await store.retry(claimed, by="ops")
    assert retried.status == "ready"
    ready = await store.claim(rows[1]["id"], owner="new-worker")
    await store.complete(ready, output={"ok": 1})
    assert (await store.status(rows[1]["run_id"])).output == {"ok": 1}


@pytest.mark.asyncio
async def test_sqlite_version_1_database_is_migrated_in_place(tmp_path: Path) -> None:
    """A version-1 SQLite file keeps its rows (and their order) and gains the G14 columns."""
    from continuations_core.stores.sqlite import MIGRATIONS

    path = tmp_path / "v1.db"
    rows = _v1_rows()
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT)"
        )
        for statement in MIGRATIONS[0]:
            conn.execute(statement)
        conn.execute("INSERT INTO schema_migrations VALUES (1, 'then')")
        for row in rows:
            values = {k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()}
            conn.execute(
                f"INSERT INTO continuations ({', '.join(values)}) "
                f"VALUES ({', '.join('?' * len(values))})",
                tuple(values.values()),
            )
    conn.close()
    async with SQLiteStore(path) as store:
        assert [r.id for r in await store.list()] == [r["id"] for r in reversed(rows)]
        await _check_upgraded(store, rows)
    with sqlite3.connect(path) as conn:
        versions = conn.execute("SELECT version FROM schema_migrations").fetchall()
    conn.close()
    assert versions == [(v,) for v in range(1, len(MIGRATIONS) + 1)]


@pytest.mark.asyncio
async def test_sqlite_version_4_segments_survive_the_rowid_rebuild(tmp_path: Path) -> None:
    """A held checkpoint's segments, written in the version-4 table, load the same after it."""
    from continuations_core._segments import chain_start, diff, new_segment
    from continuations_core.stores.sqlite import MIGRATIONS
    from continuations_core.testing.store_segments import grown

    path = tmp_path / "v4.db"
    base = make_continuation(KEYS, leaves=0, run_id="run-v4")
    base = base.model_copy(update={"root": base.root.model_copy(update={"pending": ()})})
    base = base.sign(KEYS)
    async with SQLiteStore(path) as store:
        claim = await store.checkpoint(base, owner="w1", lease_seconds=600)
        assert claim is not None
        assert base.signature is not None
        prev, frame = chain_start(base.id, base.signature.mac), base.root
        for step in range(1, 4):
            nxt = grown(frame, step)
            old, new = frame.model_dump(mode="json"), nxt.model_dump(mode="json")
            seg = new_segment(base.id, step, base.seq + step, prev, diff(old, new), KEYS)
            await store.append_segment(seg, claim=claim)
            prev, frame = seg.mac, nxt
        before = await store.load(base.id)
    # Put the file back the way version 4 left it: a WITHOUT ROWID segments table.
    conn = sqlite3.connect(path, isolation_level=None)
    stored = conn.execute("SELECT base_id, idx, body FROM segments ORDER BY idx").fetchall()
    assert len(stored) == 3
    conn.execute("DROP TABLE segments")
    for statement in MIGRATIONS[3]:
        conn.execute(statement)
    conn.executemany("INSERT INTO segments VALUES (?, ?, ?)", stored)
    conn.execute("DROP INDEX continuations_due")  # and the claim indexes of version 6
    conn.execute("DROP INDEX continuations_owner")
    for statement in MIGRATIONS[2]:
        conn.execute(statement)
    conn.execute("DELETE FROM schema_migrations WHERE version > 4")
    conn.close()
    async with SQLiteStore(path) as store:
        after = await store.load(base.id)
        assert after == before and after.root == frame and after.seq == base.seq + 3
        after.verify(KEYS)
        nxt = grown(frame, 4)
        seg = new_segment(
            base.id, 4, base.seq + 4, prev, diff(frame.model_dump(mode="json"),
            nxt.model_dump(mode="json")), KEYS,
        )  # fmt: skip
        await store.append_segment(seg, claim=claim)  # the chain goes on in the new table
        assert (await store.load(base.id)).root == nxt
    conn = sqlite3.connect(path)
    (sql,) = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'segments'").fetchone()
    versions = conn.execute("SELECT version FROM schema_migrations").fetchall()
    conn.close()
    assert "WITHOUT ROWID" not in sql
    assert versions == [(v,) for v in range(1, len(MIGRATIONS) + 1)]


@pytest_asyncio.fixture
async def postgres_url(tmp_path: Path) -> AsyncIterator[str]:
    """A fresh Postgres schema (``?schema=``), dropped afterwards."""
    async with AsyncExitStack() as stack:
        yield await _enter(stack, "postgres", tmp_path)


@pytest.mark.postgres
@pytest.mark.asyncio
async def test_postgres_version_1_schema_is_migrated_in_place(postgres_url: str) -> None:
    """A version-1 Postgres schema keeps its rows and gains the G14 columns and status."""
    import psycopg
    from psycopg import sql

    from continuations_core.stores._postgres_sql import BOOTSTRAP, MIGRATIONS

    schema = postgres_url.rpartition("?schema=")[2]
    rows = _v1_rows()
    async with await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True) as conn:
        ident = sql.Identifier(schema)
        await conn.execute(sql.SQL(BOOTSTRAP).format(s=ident))
        await conn.execute(sql.SQL(MIGRATIONS[0]).format(s=ident))
        insert = "INSERT INTO {s}.schema_migrations (version) VALUES (1)"
        await conn.execute(sql.SQL(insert).format(s=ident))
        for row in rows:
            query = sql.SQL("INSERT INTO {s}.continuations ({cols}) VALUES ({marks})").format(
                s=ident,
                cols=sql.SQL(", ").join(map(sql.Identifier, row)),
                marks=sql.SQL(", ").join(sql.Placeholder() * len(row)),
            )
            await conn.execute(query, tuple(row.values()))
    async with open_store(postgres_url) as store:
        await _check_upgraded(store, rows)
    async with await psycopg.AsyncConnection.connect(POSTGRES_URL) as conn:
        query = sql.SQL("SELECT version FROM {s}.schema_migrations ORDER BY version")
        cur = await conn.execute(query.format(s=sql.Identifier(schema)))
        assert await cur.fetchall() == [(v,) for v in range(1, len(MIGRATIONS) + 1)]


@pytest_asyncio.fixture
async def redis_url(tmp_path: Path) -> AsyncIterator[str]:
    """A fresh Redis key prefix (``?prefix=``), deleted afterwards."""
    async with AsyncExitStack() as stack:
        yield await _enter(stack, "redis", tmp_path)


@pytest.mark.redis
@pytest.mark.asyncio
async def test_redis_layout_1_keys_are_migrated_in_place(redis_url: str) -> None:
    """Version-1 Redis keys keep their records, and claims are indexed by owner (layout 2)."""
    from redis.asyncio import Redis

    from continuations_core.stores.redis import LAYOUT_VERSION

    prefix = redis_url.rpartition("?prefix=")[2]
    rows = _v1_rows()
    client = Redis.from_url(REDIS_URL)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    for row in rows:
        score = (row["created_at"] - epoch) // timedelta(microseconds=1)
        fields = {
            k: (v.isoformat(timespec="microseconds") if isinstance(v, datetime) else v)
            for k, v in row.items()
            if v is not None
        }
        await client.hset(f"{prefix}:c:{row['id']}", mapping=fields)
        await client.zadd(f"{prefix}:all", {row["id"]: score})
        await client.zadd(f"{prefix}:run:{row['run_id']}", {row["id"]: score})
        await client.zadd(f"{prefix}:status:{row['status']}", {row["id"]: score})
        if row["status"] in ("ready", "claimed"):
            await client.zadd(f"{prefix}:queue", {row["id"]: score})
        if row["status"] == "claimed":
            lease = (row["lease_until"] - epoch) // timedelta(microseconds=1)
            await client.zadd(f"{prefix}:leases", {row["id"]: lease})
    await client.set(f"{prefix}:layout", 1)
    async with open_store(redis_url) as store:
        found = await store.claimable(owner="old-worker")
        assert found[0] == rows[2]["id"], "an owner's own claims come first"
        assert set(found) == {rows[1]["id"], rows[2]["id"]}
        assert int(await client.get(f"{prefix}:layout") or 0) == LAYOUT_VERSION
        await _check_upgraded(store, rows)
        assert await client.zrange(f"{prefix}:owner:old-worker", 0, -1) == []
    await client.aclose()


@pytest.mark.postgres
@pytest.mark.asyncio
async def test_a_postgres_process_paused_mid_transaction_blocks_no_one_for_long(
    postgres_url: str,
) -> None:
    """A paused holder of the migration lock or of a row lock never hangs other processes.

    Opening a migrated schema takes no lock at all; a row lock held by a paused transaction
    makes a change fail (transiently, ``StoreUnavailable``) after the lock timeout instead of
    waiting for the paused process to wake up.
    """
    import asyncio as aio
    import hashlib

    import psycopg

    from continuations_core import StoreUnavailable

    schema = postgres_url.rpartition("?schema=")[2]
    cont = make_continuation(leaves=0)
    async with open_store(postgres_url) as store:
        await store.save(cont)
        await store.decide(cont.id, cont.respond(cont.requests[0], "CC-2").decisions[0])
    key = hashlib.blake2b(f"agent-continuations:{schema}".encode(), digest_size=8)
    lock_id = int.from_bytes(key.digest(), "big", signed=True)
    async with await psycopg.AsyncConnection.connect(POSTGRES_URL) as paused:
        await paused.execute("SELECT pg_advisory_xact_lock(%s)", (lock_id,))
        await paused.execute(
            f'SELECT 1 FROM "{schema}".continuations WHERE id = %s FOR UPDATE', (cont.id,)
        )  # this transaction now holds both locks and does nothing more, like a paused process
        async with open_store(postgres_url) as other:
            listed = await aio.wait_for(other.list(), timeout=30)
            assert [r.id for r in listed] == [cont.id]
            with pytest.raises(StoreUnavailable, match="lock"):
                await aio.wait_for(other.claim(cont.id, owner="w2"), timeout=30)
        await paused.rollback()
    async with open_store(postgres_url) as store:
        claim = await store.claim(cont.id, owner="w2")
        assert claim.token == 1
