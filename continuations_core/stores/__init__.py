"""Stores: where continuations, decisions and the audit trail live (DESIGN.md section 5).

Every backend implements the abstract :class:`Store`; :func:`open_store` picks one by URL
scheme and imports it lazily, so importing this package never imports a database driver.

================================  ==============================================
URL                               Backend
================================  ==============================================
``memory://``                     :class:`MemoryStore` (this process only)
``sqlite:///relative/path.db``    :class:`SQLiteStore` (the embedded default)
``sqlite:////absolute/path.db``   also a bare path ending ``.db``/``.sqlite``/``.sqlite3``
``postgresql://…``                ``continuations_core.stores.postgres`` (extra ``postgres``)
``redis://…``                     ``continuations_core.stores.redis`` (extra ``redis``)
================================  ==============================================

:class:`SyncStore` wraps any store for blocking code such as the CLI.

A backend module opened by URL provides ``from_url(url: str) -> Store``; it may connect
lazily on first use, since :func:`open_store` itself is synchronous.
"""

from __future__ import annotations

import asyncio
import builtins
import importlib
import importlib.util
import os
from collections.abc import Coroutine
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from .._schema import Continuation, DecisionRecord
from .._segments import Segment
from ..dispatch import Dispatcher
from ..errors import ConfigurationError, MissingExtra
from ._base import (
    DEFAULT_MAX_ATTEMPTS,
    STATUSES,
    AuditEvent,
    Claim,
    LastError,
    RunStatus,
    Status,
    Store,
    StoredContinuation,
)
from ._urls import redact, scrub

if TYPE_CHECKING:
    from .memory import MemoryStore
    from .sqlite import SQLiteStore

# The embedded backends are imported on first use (PEP 562): SQLiteStore brings in sqlite3.
_LAZY: dict[str, str] = {"MemoryStore": ".memory", "SQLiteStore": ".sqlite"}


def __getattr__(name: str) -> Any:
    """Import a lazily exported backend on first access."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "DEFAULT_MAX_ATTEMPTS",
    "STATUSES",
    "AuditEvent",
    "Claim",
    "LastError",
    "MemoryStore",
    "RunStatus",
    "SQLiteStore",
    "Segment",
    "Status",
    "Store",
    "StoredContinuation",
    "SyncStore",
    "default_store",
    "default_store_url",
    "open_store",
]

#: The environment variable naming the store used when ``resume`` is given no ``store=``.
STORE_ENV = "CONTINUATIONS_STORE"

_SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
# scheme -> (backend module, driver module, pip extra)
_DRIVER_BACKENDS = {
    "postgresql": ("postgres", "psycopg", "postgres"),
    "postgres": ("postgres", "psycopg", "postgres"),
    "redis": ("redis", "redis", "redis"),
    "rediss": ("redis", "redis", "redis"),
}
SUPPORTED = "memory://, sqlite:///path.db, postgresql://, postgres://, redis://"
T = TypeVar("T")


def open_store(url: str, *, dispatcher: Dispatcher | None = None) -> Store:
    """Open the store that ``url`` names, choosing the backend by scheme.

    Args:
        url: ``memory://``, ``sqlite:///path.db`` (or a bare ``*.db`` path),
            ``postgresql://…``/``postgres://…`` or ``redis://…``.
        dispatcher: Told when a continuation becomes ready or is stored with a deadline
            (see :mod:`continuations_core.dispatch`); the built-in one when omitted.

    Raises:
        ConfigurationError: If the scheme is unknown, the URL does not parse, or its backend
            is not in this version. Messages never repeat a password from the URL.
        MissingExtra: If the backend's driver is not installed; it names the pip extra.
    """
    store = _open(url)
    if dispatcher is not None:
        store.dispatcher = dispatcher
    return store


def _open(url: str) -> Store:
    scheme, sep, _ = url.partition("://")
    scheme = scheme.lower() if sep else ""
    if scheme == "memory":
        from .memory import MemoryStore

        return MemoryStore()
    if scheme == "sqlite" or url.startswith("sqlite:"):
        from .sqlite import SQLiteStore

        return SQLiteStore(url)
    if not sep and url.lower().endswith(_SQLITE_SUFFIXES):
        from .sqlite import SQLiteStore

        return SQLiteStore(url)
    if scheme in _DRIVER_BACKENDS:
        return _open_driver_backend(url, *_DRIVER_BACKENDS[scheme])
    raise ConfigurationError(
        f"Unknown store URL {redact(url)!r}. Supported: {SUPPORTED}, or a path ending "
        f"{'/'.join(_SQLITE_SUFFIXES)}."
    )


def default_store_url() -> str:
    """The store ``resume`` uses for single use when it is given no ``store=``.

    ``$CONTINUATIONS_STORE`` when set; otherwise a per-user SQLite file,
    ``$XDG_DATA_HOME/agent-continuations/continuations.db`` (``XDG_DATA_HOME`` defaults to
    ``~/.local/share``).
    """
    configured = os.environ.get(STORE_ENV)
    if configured:
        return configured
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(Path.home(), ".local", "share")
    return f"sqlite:///{os.path.join(base, 'agent-continuations', 'continuations.db')}"


def default_store() -> Store:
    """Open the store named by :func:`default_store_url`."""
    return open_store(default_store_url())


def _open_driver_backend(url: str, module: str, driver: str, extra: str) -> Store:
    if importlib.util.find_spec(driver) is None:
        raise MissingExtra(driver, extra)
    name = f"{__name__}.{module}"
    try:
        backend = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != name:
            raise
        raise ConfigurationError(
            f"The {module} store backend is not available in this version of "
            "agent-continuations. Use sqlite:///path.db, or upgrade the package."
        ) from exc
    try:
        store = backend.from_url(url)
    except ValueError as exc:  # the URL does not parse; drivers may repeat parts of it
        raise ConfigurationError(
            f"Invalid store URL {redact(url)!r}: {scrub(str(exc), url)}. Check its form: "
            f"{SUPPORTED}."
        ) from None
    if not isinstance(store, Store):
        raise ConfigurationError(f"{name}.from_url did not return a Store.")
    return store


class SyncStore:
    """A thin blocking wrapper around a :class:`Store`, for scripts and the CLI.

    Each call runs on one private event loop, so backends whose connections are bound to a
    loop keep working across calls. Do not use it from inside a running event loop.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._runner = asyncio.Runner()

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._runner.run(coro)

    def save(self, cont: Continuation, *, actor: str | None = None) -> StoredContinuation:
        """See :meth:`Store.save`."""
        return self._run(self.store.save(cont, actor=actor))

    def load(self, id: str) -> Continuation:
        """See :meth:`Store.load`."""
        return self._run(self.store.load(id))

    def get(self, id: str) -> StoredContinuation:
        """See :meth:`Store.get`."""
        return self._run(self.store.get(id))

    def list(
        self, *, status: Status | None = None, run_id: str | None = None, limit: int = 100
    ) -> builtins.list[StoredContinuation]:
        """See :meth:`Store.list`."""
        return self._run(self.store.list(status=status, run_id=run_id, limit=limit))

    def decide(
        self,
        id: str,
        record: DecisionRecord,
        *,
        expected_version: int | None = None,
        replace: bool = False,
    ) -> StoredContinuation:
        """See :meth:`Store.decide`."""
        return self._run(
            self.store.decide(id, record, expected_version=expected_version, replace=replace)
        )

    def claim(
        self,
        id: str,
        *,
        owner: str,
        lease_seconds: float = 300.0,
        expected_version: int | None = None,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    ) -> Claim:
        """See :meth:`Store.claim`."""
        return self._run(
            self.store.claim(
                id, owner=owner, lease_seconds=lease_seconds, expected_version=expected_version,
                max_attempts=max_attempts,
            )
        )  # fmt: skip

    def heartbeat(self, claim: Claim, *, lease_seconds: float = 300.0) -> Claim:
        """See :meth:`Store.heartbeat`."""
        return self._run(self.store.heartbeat(claim, lease_seconds=lease_seconds))

    def release(self, claim: Claim) -> None:
        """See :meth:`Store.release`."""
        self._run(self.store.release(claim))

    def complete(self, claim: Claim, *, next_id: str | None = None, output: Any = None) -> None:
        """See :meth:`Store.complete`."""
        self._run(self.store.complete(claim, next_id=next_id, output=output))

    def fail(
        self,
        claim: Claim,
        error: BaseException,
        *,
        permanent: bool = False,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        retry_in: float = 0.0,
    ) -> StoredContinuation:
        """See :meth:`Store.fail`."""
        return self._run(
            self.store.fail(
                claim, error, permanent=permanent, max_attempts=max_attempts, retry_in=retry_in
            )
        )

    def retry(self, id: str, *, by: str | None = None) -> StoredContinuation:
        """See :meth:`Store.retry`."""
        return self._run(self.store.retry(id, by=by))

    def status(self, run_id: str) -> RunStatus:
        """See :meth:`Store.status`."""
        return self._run(self.store.status(run_id))

    def audit(self, run_id: str) -> builtins.list[AuditEvent]:
        """See :meth:`Store.audit`."""
        return self._run(self.store.audit(run_id))

    def close(self) -> None:
        """Close the store and the private event loop."""
        try:
            self._run(self.store.close())
        finally:
            self._runner.close()

    def __enter__(self) -> SyncStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
