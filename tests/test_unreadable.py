"""Records this version cannot read (a newer schema, or edited): failed at once, never blocking.

During a rolling upgrade a newer version may store a continuation an older worker cannot
parse. It must not stop that worker from claiming other work, and it is failed without being
parsed, with the reason kept, until someone retries it after upgrading.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import fleet_agents
import pytest
import pytest_asyncio
from _backends import REDIS_URL
from _backends import enter_namespace as _enter

from continuations_core import SCHEMA_VERSION, Keyring, SchemaError, UnsupportedSchemaVersion
from continuations_core.stores import open_store
from continuations_core.testing.store_scenarios import make_continuation

HERE = Path(__file__).resolve().parent
CURRENT = f'"schema":{SCHEMA_VERSION}'  # as stored: canonical JSON, no spaces
KEYS = Keyring.generate("unreadable")


async def corrupt(url: str, id: str) -> None:
    """Rewrite the stored document of ``id`` as if a future schema version had written it."""
    if url.startswith("sqlite"):
        import sqlite3

        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            conn.execute(
                "UPDATE continuations SET document = replace(document, ?, '\"schema\":99') "
                "WHERE id = ?",
                (CURRENT, id),
            )
        conn.close()
    elif url.startswith("postgresql"):
        import psycopg

        base, _, schema = url.partition("?schema=")
        async with await psycopg.AsyncConnection.connect(base, autocommit=True) as conn:
            await conn.execute(
                f'UPDATE "{schema}".continuations SET document = '
                "replace(document, %s, '\"schema\":99') WHERE id = %s",
                (CURRENT, id),
            )
    else:
        from redis.asyncio import Redis

        prefix = url.rpartition("?prefix=")[2]
        client = Redis.from_url(REDIS_URL, decode_responses=True)
        key = f"{prefix}:c:{id}"
        text = await client.hget(key, "document")
        await client.hset(key, "document", text.replace(CURRENT, '"schema":99'))
        await client.aclose()


@pytest_asyncio.fixture(
    params=[
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("redis", marks=pytest.mark.redis),
    ]
)
async def url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh shared store."""
    async with AsyncExitStack() as stack:
        yield await _enter(stack, request.param, tmp_path)


async def test_an_unreadable_record_is_failed_without_being_parsed(url: str) -> None:
    """claimable() still lists it, reading it names it, and fail_unreadable() fails it once."""
    cont = make_continuation(leaves=0)
    async with open_store(url) as store:
        await store.save(cont)
        await store.decide(cont.id, cont.respond(cont.requests[0], "CC-9").decisions[0])
        await corrupt(url, cont.id)
        assert await store.claimable() == [cont.id]
        with pytest.raises(UnsupportedSchemaVersion) as raised:
            await store.get(cont.id)
        assert raised.value.continuation_id == cont.id
        assert await store.fail_unreadable(cont.id, raised.value, actor="w1")
        assert not await store.fail_unreadable(cont.id, raised.value, actor="w1")
        assert await store.claimable() == []
        [event] = [e for e in await store.audit(cont.run_id) if e.kind == "failed"]
        assert event.actor == "w1" and event.detail["error"]["type"] == "UnsupportedSchemaVersion"


def test_a_worker_fails_an_unreadable_record_and_serves_on(tmp_path: Path) -> None:
    """A worker meeting a record it cannot parse fails it and completes the work behind it."""
    url = f"sqlite:///{tmp_path / 'runs.db'}"

    async def prepare() -> tuple[str, list[str]]:
        async with open_store(url) as store:
            bad = make_continuation(leaves=0)
            await store.save(bad)
            await store.decide(bad.id, bad.respond(bad.requests[0], "CC-9").decisions[0])
            await corrupt(url, bad.id)
            runs = [(await fleet_agents.decided_run(store, KEYS)).run_id for _ in range(2)]
            return bad.id, runs

    bad_id, runs = asyncio.run(prepare())
    env = {
        **os.environ,
        "CONTINUATIONS_SIGNING_KEYS": KEYS.export(),
        "FLEET_LEDGER": str(tmp_path / "ledger.jsonl"),
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "continuations_core", "worker", "--store", url,
         "--agents", "fleet_agents:AGENTS", "--once", "--poll", "0.05"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "event=failed" in proc.stderr and "UnsupportedSchemaVersion" in proc.stderr

    async def check() -> None:
        async with open_store(url) as store:
            assert [(await store.status(r)).state for r in runs] == ["completed"] * 2
            assert await store.claimable() == []
            with pytest.raises(SchemaError):
                await store.get(bad_id)

    asyncio.run(check())
