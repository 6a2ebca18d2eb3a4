"""The store suite: every conformance scenario on every backend, plus backend specifics."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import pytest_asyncio

from continuations_core import (
    ConfigurationError,
    ContinuationTampered,
    Keyring,
    MemoryStore,
    MissingExtra,
    SQLiteStore,
    Store,
    StoreUnavailable,
    open_store,
)
from continuations_core.stores import SyncStore
from continuations_core.testing.store_scenarios import (
    STORE_SCENARIOS,
    Scenario,
    make_continuation,
    race_to_claim,
)


class BackendUnavailable(Exception):
    """Raised by a backend factory when its service cannot be reached."""


# Each factory gets a fresh temporary folder and returns an empty, isolated store, or raises
# BackendUnavailable. Postgres and Redis join here (with pytest.mark.postgres/redis) once
# their backends exist; their factories probe the service and raise when it is unreachable.
BACKENDS: dict[str, Callable[[Path], Store]] = {
    "memory": lambda tmp: MemoryStore(),
    "sqlite": lambda tmp: SQLiteStore(tmp / "store.db"),
}
BACKEND_PARAMS = [pytest.param(name, id=name) for name in BACKENDS]


@pytest_asyncio.fixture(params=BACKEND_PARAMS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """A fresh store of each backend; an unreachable service skips (fails in CI)."""
    name: str = request.param
    try:
        opened = BACKENDS[name](tmp_path)
    except (BackendUnavailable, StoreUnavailable) as exc:
        reason = f"{name} store unavailable: {exc}"
        if os.environ.get("CONTINUATIONS_REQUIRE_ALL_BACKENDS") == "1":
            pytest.fail(f"{reason} (CONTINUATIONS_REQUIRE_ALL_BACKENDS=1)")
        pytest.skip(reason)
    async with opened:
        yield opened


@pytest.mark.parametrize("store", BACKEND_PARAMS, indirect=True)
@pytest.mark.parametrize("scenario", STORE_SCENARIOS, ids=lambda s: s.__name__)
@pytest.mark.asyncio
async def test_store_scenario(scenario: Scenario, store: Store) -> None:
    """Each backend passes each conformance scenario."""
    await scenario(store, make_continuation)


# -- claims across processes (G5) ------------------------------------------------------------


@pytest.mark.asyncio
async def test_eight_processes_claim_one_continuation_exactly_one_wins(tmp_path: Path) -> None:
    """Of 8 processes claiming one ready SQLite continuation, exactly one wins."""
    url = f"sqlite:///{tmp_path / 'race.db'}"
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
        assert conn.execute("SELECT version FROM schema_migrations").fetchall() == [(1,)]
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


def test_sync_store_wraps_every_call(tmp_path: Path) -> None:
    """SyncStore runs the async protocol from blocking code."""
    cont = make_continuation(leaves=0)
    with SyncStore(SQLiteStore(tmp_path / "sync.db")) as store:
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
def test_open_store_reports_a_backend_missing_from_this_version(url: str) -> None:
    """With the driver present but no backend module, the error says so."""
    import importlib.util

    module = "postgres" if url.startswith("postgres") else "redis"
    if importlib.util.find_spec(f"continuations_core.stores.{module}") is not None:
        pytest.skip(f"the {module} backend exists now")
    if importlib.util.find_spec("psycopg" if module == "postgres" else "redis") is None:
        pytest.skip("driver not installed")
    with pytest.raises(ConfigurationError, match="not available in this version"):
        open_store(url)
