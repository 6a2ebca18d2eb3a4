"""Isolated store namespaces for benchmarks: a fresh SQLite file, Postgres schema or Redis prefix.

Other processes (workers) can open the same URL. Everything created is removed afterwards, so
a benchmark never touches data of the tests or of other runs sharing the services.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

__all__ = ["BACKENDS", "POSTGRES_URL", "REDIS_URL", "Unavailable", "namespace"]

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
