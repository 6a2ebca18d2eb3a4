"""Claims per second against the raw floor of the same database (DESIGN section 7, "Scale-out").

One repetition, per backend, stores ``n`` ready continuations (untimed) and then times:

- ``claim``: ``store.claim(id)`` on each, one after another, each followed by
- ``floor``: a bare transactional conditional update of one row of a one-table schema in the
  same database with the same driver: ``BEGIN IMMEDIATE; UPDATE ... WHERE status='ready';
  COMMIT`` on SQLite, one autocommitted ``UPDATE`` on Postgres, one Lua check-and-set on
  Redis (alternating the two keeps disk and CPU contention alike for both);
- ``claim_next``: the worker's path, ``store.claim_next(owner)`` (the oldest claimable one,
  picked and claimed in one atomic step), each followed by one floor update too;
- ``scan+claim``: the worker's path before ``claim_next``, ``store.claimable(limit=1)`` then
  ``store.claim``.
"""

from __future__ import annotations

import time
import uuid
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from continuations_core import Continuation, Frame
from continuations_core.stores import Store, open_store

from ._agents import KEYS
from ._backends import Unavailable, namespace
from ._config import Config
from ._report import Figure, fmt_ratio, summarize

__all__ = ["measure", "ready_continuations"]

OWNER = "bench"
LEASE_SECONDS = 300.0
#: The owner of the live claims held in the second claim_next measurement (long runs).
LONG_RUNS = "bench-long-runs"


async def ready_continuations(store: Store, n: int, *, agent: str = "bench") -> list[str]:
    """Store ``n`` signed continuations that are ready to claim (nothing pending)."""
    ids = []
    for _ in range(n):
        frame = Frame(framework="test", agent=agent, suspended_by="EveryNTurns")
        cont = Continuation(run_id=uuid.uuid4().hex, root=frame).sign(KEYS)
        stored = await store.save(cont)
        if stored.status != "ready":
            raise RuntimeError(f"a continuation with nothing pending was stored {stored.status}")
        ids.append(stored.id)
    return ids


async def _claim_each(store: Store, ids: list[str], floor: _Floor | None) -> dict[str, float]:
    """Claim ``ids`` one by one, each followed by one floor update: both see the same load."""
    claims, spent, floor_spent = [], 0.0, 0.0
    rows = await floor.rows(len(ids)) if floor is not None else []
    for i, cid in enumerate(ids):
        start = time.perf_counter()
        claims.append(await store.claim(cid, owner=OWNER, lease_seconds=LEASE_SECONDS))
        spent += time.perf_counter() - start
        if floor is not None:
            start = time.perf_counter()
            await floor.claim(rows[i])
            floor_spent += time.perf_counter() - start
    await _finish(store, claims)
    rates = {"claim": len(ids) / spent}
    if floor is not None:
        rates["floor"] = len(ids) / floor_spent
    return rates


async def _claim_next_each(store: Store, n: int, floor: _Floor | None) -> dict[str, float]:
    """Claim ``n`` ready continuations with claim_next, each followed by one floor update."""
    claims, spent, floor_spent = [], 0.0, 0.0
    rows = await floor.rows(n) if floor is not None else []
    for i in range(n):
        start = time.perf_counter()
        claim = await store.claim_next(OWNER, lease_seconds=LEASE_SECONDS)
        spent += time.perf_counter() - start
        if claim is None:
            raise RuntimeError("claim_next found nothing while continuations were ready")
        claims.append(claim)
        if floor is not None:
            start = time.perf_counter()
            await floor.claim(rows[i])
            floor_spent += time.perf_counter() - start
    if await store.claim_next(OWNER) is not None:
        raise RuntimeError("claim_next claimed more continuations than were ready")
    await _finish(store, claims)
    rates = {"claim_next": n / spent}
    if floor is not None:
        rates["floor_next"] = n / floor_spent
    return rates


async def _hold_live_claims(store: Store, n: int) -> None:
    """Leave ``n`` continuations claimed by other workers for an hour: long runs in flight."""
    await ready_continuations(store, n)
    for _ in range(n):
        if await store.claim_next(LONG_RUNS, lease_seconds=3600) is None:
            raise RuntimeError("a continuation to hold was not claimable")


async def _scan_and_claim(store: Store, ids: list[str]) -> float:
    claims = []
    start = time.perf_counter()
    for _ in ids:
        [cid] = await store.claimable(limit=1)
        claims.append(await store.claim(cid, owner=OWNER, lease_seconds=LEASE_SECONDS))
    rate = len(ids) / (time.perf_counter() - start)
    if await store.claimable(limit=1):
        raise RuntimeError("scan+claim left claimable continuations behind")
    await _finish(store, claims)
    return rate


async def _finish(store: Store, claims: list[Any]) -> None:
    """Complete what was claimed (untimed), so the next repetition starts from an idle store."""
    for claim in claims:
        await store.complete(claim, output=None)


class _Floor:
    """The bare conditional update, on the database behind ``url``."""

    def __init__(self, backend: str, url: str) -> None:
        self.backend, self.url = backend, url
        self.conn: Any = None
        self.table = f"bench_floor_{uuid.uuid4().hex[:8]}"

    async def open(self) -> None:
        parts = urlsplit(self.url)
        query = dict(parse_qsl(parts.query))
        base = urlunsplit(parts._replace(query=""))
        if self.backend == "sqlite":
            import sqlite3

            self.conn = sqlite3.connect(self.url.removeprefix("sqlite:///"), isolation_level=None)
            self.conn.execute("PRAGMA journal_mode = WAL")
            self.conn.execute(
                f"CREATE TABLE {self.table} (id TEXT PRIMARY KEY, status TEXT, owner TEXT, "
                "version INTEGER)"
            )
        elif self.backend == "postgres":
            import psycopg

            self.conn = await psycopg.AsyncConnection.connect(base, autocommit=True)
            await self.conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{query["schema"]}"')
            self.table = f'"{query["schema"]}".{self.table}'
            await self.conn.execute(
                f"CREATE TABLE {self.table} (id TEXT PRIMARY KEY, status TEXT, owner TEXT, "
                "version INTEGER)"
            )
        else:
            import redis.asyncio as aioredis

            self.conn = aioredis.Redis.from_url(base)
            self.table = f"{query['prefix']}:{self.table}"
            self.script = self.conn.register_script(
                "if redis.call('HGET', KEYS[1], 'status') ~= 'ready' then return 0 end "
                "redis.call('HSET', KEYS[1], 'status', 'claimed', 'owner', ARGV[1]) "
                "redis.call('HINCRBY', KEYS[1], 'version', 1) return 1"
            )

    async def rows(self, n: int) -> list[str]:
        ids = [uuid.uuid4().hex for _ in range(n)]
        if self.backend == "sqlite":
            self.conn.executemany(
                f"INSERT INTO {self.table} VALUES (?, 'ready', NULL, 1)", [(i,) for i in ids]
            )
        elif self.backend == "postgres":
            async with self.conn.cursor() as cur:
                await cur.executemany(
                    f"INSERT INTO {self.table} VALUES (%s, 'ready', NULL, 1)", [(i,) for i in ids]
                )
        else:
            for i in ids:
                await self.conn.hset(f"{self.table}:{i}", mapping={"status": "ready", "version": 1})
        return ids

    async def claim(self, row: str) -> None:
        """One bare conditional update of ``row`` in its own transaction."""
        update = (
            f"UPDATE {self.table} SET status = 'claimed', owner = {{p}}, version = version + 1 "
            "WHERE id = {p} AND status = 'ready'"
        )
        if self.backend == "sqlite":
            self.conn.execute("BEGIN IMMEDIATE")
            won = self.conn.execute(update.format(p="?"), (OWNER, row)).rowcount
            self.conn.execute("COMMIT")
        elif self.backend == "postgres":
            won = (await self.conn.execute(update.format(p="%s"), (OWNER, row))).rowcount
        else:
            won = int(await self.script(keys=[f"{self.table}:{row}"], args=[OWNER]))
        if won != 1:
            raise RuntimeError(f"the floor did not claim row {row}")

    async def close(self) -> None:
        if self.backend == "sqlite":
            self.conn.close()
        elif self.backend == "postgres":
            await self.conn.close()
        else:
            await self.conn.aclose()


async def measure(cfg: Config) -> list[Figure]:
    """Measure claims/s and the floor on every backend."""
    samples: dict[str, dict[str, list[float]]] = {}
    unavailable: dict[str, str] = {}
    for backend in cfg.backends:
        try:
            async with namespace(backend, cfg.tmp) as url, open_store(url) as store:
                floor = None if backend == "memory" else _Floor(backend, url)
                if floor is not None:
                    await floor.open()
                try:
                    cell = samples.setdefault(backend, {})
                    for rep in range(cfg.warmup + cfg.reps):
                        ids = await ready_continuations(store, cfg.claims)
                        rates = await _claim_each(store, ids, floor)
                        ids = await ready_continuations(store, cfg.claims)
                        rates["scan+claim"] = await _scan_and_claim(store, ids)
                        await ready_continuations(store, cfg.claims)
                        rates.update(await _claim_next_each(store, cfg.claims, floor))
                        if rep >= cfg.warmup:
                            for key, value in rates.items():
                                cell.setdefault(key, []).append(value)
                    # The same claim_next while other workers hold many live claims (long
                    # runs), older than every ready continuation.
                    await _hold_live_claims(store, held_claims(cfg))
                    for rep in range(cfg.warmup + cfg.reps):
                        await ready_continuations(store, cfg.claims)
                        rate = (await _claim_next_each(store, cfg.claims, None))["claim_next"]
                        if rep >= cfg.warmup:
                            cell.setdefault("claim_next_held", []).append(rate)
                finally:
                    if floor is not None:
                        await floor.close()
        except Unavailable as exc:
            unavailable[backend] = str(exc)
    fig = Figure(
        key="claims",
        title="Claims per second vs the raw floor of the same database",
        columns=[
            "backend",
            "claim (/s)",
            "claim_next (/s)",
            "scan+claim (/s)",
            "raw floor (/s)",
            "claim ÷ floor",
            "claim_next ÷ floor",
            "scan+claim ÷ floor",
            f"claim_next, {held_claims(cfg):,} live claims (/s)",
            "÷ claim_next",
        ],
        raw={"samples_per_s": samples, "unavailable": unavailable, "n": cfg.claims},
    )
    for backend, cell in samples.items():
        claim, scan = summarize(cell["claim"]), summarize(cell["scan+claim"])
        nxt = summarize(cell["claim_next"])
        row = [backend, _rate(claim), _rate(nxt), _rate(scan)]
        if "floor" in cell:
            floor_rate = summarize(cell["floor"] + cell["floor_next"])
            row += [
                _rate(floor_rate),
                fmt_ratio(claim.median / floor_rate.median),
                fmt_ratio(nxt.median / floor_rate.median),
                fmt_ratio(scan.median / floor_rate.median),
            ]
        else:
            row += ["—", "—", "—", "—"]
        held = summarize(cell["claim_next_held"])
        row += [_rate(held), fmt_ratio(held.median / nxt.median)]
        fig.rows.append(row)
    fig.notes.append(
        f"{cfg.claims} ready continuations per repetition, claimed one after another by one "
        "client: by id (`claim`), the way the worker finds work (`claim_next`: the oldest "
        "claimable one, picked and claimed in one atomic step), each followed by one floor "
        "update, and the way workers found work before `claim_next` (`claimable(limit=1)`, "
        "then `claim`). The floor is the median over both alternations. Claimed "
        "continuations are completed between repetitions, so the store grows by "
        f"{3 * cfg.claims} done records per repetition. Budget: ≥0.6× the floor. The memory "
        "store has no database floor."
    )
    fig.notes.append(
        f"claim_next, {held_claims(cfg):,} live claims: after those repetitions, other "
        f"workers hold {held_claims(cfg):,} claims for an hour (long runs in flight), all "
        f"older than the ready ones; then {cfg.claims} ready continuations are claimed with "
        "`claim_next` as above (no floor). ÷ claim_next: over the idle store's claim_next. "
        "Live claims are never walked past, so it should stay near 1×."
    )
    for backend, reason in unavailable.items():
        fig.notes.append(f"Not measured: {backend} ({reason}).")
    return [fig]


def held_claims(cfg: Config) -> int:
    """How many live claims other workers hold in the second claim_next measurement."""
    return 5 * cfg.claims


def _rate(s: Any) -> str:
    return f"{s.median:,.0f} ±{s.spread * 100:.0f}%"
