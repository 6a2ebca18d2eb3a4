"""Isolated store namespaces for benchmarks: a fresh SQLite file, Postgres schema or Redis prefix.

Other processes (workers) can open the same URL. Everything created is removed afterwards, so
a benchmark never touches data of the tests or of other runs sharing the services.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

__all__ = ["BACKENDS", "POSTGRES_URL", "REDIS_URL", "Unavailable", "dbos_schema", "namespace"]

POSTGRES_URL = os.environ.get(
    "CONTINUATIONS_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("CONTINUATIONS_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
BACKENDS = ("memory", "sqlite", "postgres", "redis")


class Unavailable(Exception):
    """A backend's driver is missing or its service cannot be reached."""


@asynccontextmanager
async def namespace(backend: str, tmp: Path) -> AsyncIterator[str]:
    """Yield the URL of an empty, isolated store of ``backend``; clean it up afterwards.

    Raises:
        Unavailable: If the service cannot be reached.
    """
    if backend == "memory":
        yield "memory://"
    elif backend == "sqlite":
        path = tmp / f"bench-{uuid.uuid4().hex[:8]}.db"
        try:
            yield f"sqlite:///{path}"
        finally:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
    elif backend == "postgres":
        async with _postgres() as url:
            yield url
    elif backend == "redis":
        async with _redis() as url:
            yield url
    else:
        raise ValueError(f"unknown backend {backend!r}")


@asynccontextmanager
async def _postgres() -> AsyncIterator[str]:
    try:
        import psycopg
    except ImportError as exc:
        raise Unavailable("psycopg is not installed") from exc
    schema = f"bench_{uuid.uuid4().hex[:16]}"
    try:
        admin = await psycopg.AsyncConnection.connect(
            POSTGRES_URL, autocommit=True, connect_timeout=5
        )
    except psycopg.Error as exc:
        raise Unavailable(f"{POSTGRES_URL}: {exc}") from exc
    async with admin:
        try:
            yield f"{POSTGRES_URL}?schema={schema}"
        finally:
            await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@asynccontextmanager
async def _redis() -> AsyncIterator[str]:
    try:
        import redis.asyncio as aioredis
        from redis.exceptions import RedisError
    except ImportError as exc:
        raise Unavailable("redis is not installed") from exc
    prefix = f"bench-{uuid.uuid4().hex[:16]}"
    admin: Any = aioredis.Redis.from_url(REDIS_URL, socket_connect_timeout=5)
    try:
        await admin.ping()
    except RedisError as exc:
        await admin.aclose()
        raise Unavailable(f"{REDIS_URL}: {exc}") from exc
    try:
        yield f"{REDIS_URL}?prefix={prefix}"
    finally:
        keys = [key async for key in admin.scan_iter(match=f"{prefix}:*")]
        if keys:
            await admin.delete(*keys)
        await admin.aclose()


@asynccontextmanager
async def dbos_schema(store_url: str) -> AsyncIterator[str]:
    """Yield a fresh, migrated DBOS system schema in the Postgres of ``store_url``; drop it after.

    The DBOS engine's workers (``--dbos-schema``) and clients share it. Migrating it here, before
    any worker starts, keeps DBOS's schema creation (which its workers serialize on an advisory
    lock, polled once a second) out of the measurement.

    Raises:
        Unavailable: If the DBOS engine (the ``[dbos]`` extra) or psycopg is not installed.
    """
    try:
        import psycopg
        from dbos import DBOS

        from continuations_dbos import system_url
    except ImportError as exc:
        raise Unavailable(f"the DBOS engine is not installed ({exc})") from exc
    schema = f"bench_dbos_{uuid.uuid4().hex[:16]}"
    url = system_url(store_url)
    try:
        await asyncio.to_thread(DBOS.migrate, url, schema=schema)
        yield schema
    finally:
        async with await psycopg.AsyncConnection.connect(
            url, autocommit=True, connect_timeout=5
        ) as admin:
            await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
