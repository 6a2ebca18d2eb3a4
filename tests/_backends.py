"""Isolated store namespaces for tests: a fresh SQLite file, Postgres schema or Redis prefix.

Each factory yields a URL that other processes can open too and cleans up afterwards. A service
that cannot be reached is skipped with the reason, except with
``CONTINUATIONS_REQUIRE_ALL_BACKENDS=1`` (CI), where it fails the test.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from continuations_core.errors import StoreUnavailable


class BackendUnavailable(Exception):
    """Raised by a namespace factory when its driver is missing or its service unreachable."""


# Loopback services; override to point the suite at others.
POSTGRES_URL = os.environ.get(
    "CONTINUATIONS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("CONTINUATIONS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _driver(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise BackendUnavailable(f"{module} is not installed") from exc


@asynccontextmanager
async def _sqlite_namespace(tmp: Path) -> AsyncIterator[str]:
    yield f"sqlite:///{tmp / 'store.db'}"


@asynccontextmanager
async def _postgres_namespace(tmp: Path) -> AsyncIterator[str]:
    """A fresh schema, dropped afterwards; its URL carries it as ``?schema=``."""
    psycopg = _driver("psycopg")
    schema = f"test_{uuid.uuid4().hex[:16]}"
    try:
        admin = await psycopg.AsyncConnection.connect(
            POSTGRES_URL, autocommit=True, connect_timeout=5
        )
    except psycopg.Error as exc:
        raise BackendUnavailable(f"{POSTGRES_URL}: {exc}") from exc
    async with admin:
        try:
            yield f"{POSTGRES_URL}?schema={schema}"
        finally:
            await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@asynccontextmanager
async def _redis_namespace(tmp: Path) -> AsyncIterator[str]:
    """A fresh key prefix, whose keys are deleted afterwards; the URL carries ``?prefix=``."""
    redis = _driver("redis.asyncio")
    prefix = f"test-{uuid.uuid4().hex[:16]}"
    admin = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=5)
    try:
        await admin.ping()
    except _driver("redis.exceptions").RedisError as exc:
        await admin.aclose()
        raise BackendUnavailable(f"{REDIS_URL}: {exc}") from exc
    try:
        yield f"{REDIS_URL}?prefix={prefix}"
    finally:
        keys = [key async for key in admin.scan_iter(match=f"{prefix}:*")]
        if keys:
            await admin.delete(*keys)
        await admin.aclose()


# Each factory yields the URL of an empty, isolated store that other processes can open too,
# and cleans up afterwards; it raises BackendUnavailable when its service is unreachable.
NAMESPACES: dict[str, Callable[[Path], AbstractAsyncContextManager[str]]] = {
    "sqlite": _sqlite_namespace,
    "postgres": _postgres_namespace,
    "redis": _redis_namespace,
}


async def enter_namespace(stack: AsyncExitStack, name: str, tmp: Path) -> str:
    """Enter ``name``'s namespace; an unreachable service skips (fails in CI)."""
    try:
        return await stack.enter_async_context(NAMESPACES[name](tmp))
    except (BackendUnavailable, StoreUnavailable) as exc:
        reason = f"{name} store unavailable: {exc}"
        if os.environ.get("CONTINUATIONS_REQUIRE_ALL_BACKENDS") == "1":
            pytest.fail(f"{reason} (CONTINUATIONS_REQUIRE_ALL_BACKENDS=1)")
        pytest.skip(reason)


def namespace_url(name: str, tmp: Path) -> Iterator[str]:
    """Synchronous form of :func:`enter_namespace` for tests that drive subprocesses."""
    loop = asyncio.new_event_loop()
    stack = AsyncExitStack()
    try:
        yield loop.run_until_complete(enter_namespace(stack, name, tmp))
    finally:
        loop.run_until_complete(stack.aclose())
        loop.close()
