"""Claim races: 8 worker processes draining one store, with ``claim_next`` and the old way.

Per backend, one repetition stores ``races`` ready continuations (untimed), then starts 8
processes that each open the store, wait at a barrier and claim until nothing is left:

- ``claim_next``: ``store.claim_next(owner)`` until the shared count of claims reaches the
  total; an empty answer before then is counted (another process held the last rows);
- ``scan+claim``: the worker's path before ``claim_next``: ``store.claimable(limit=1)``, then
  ``store.claim(id)``; a claim refused because another process took the id first is a lost
  race.

Every continuation must be claimed exactly once by one path: a double claim or one left
unclaimed fails the figure.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from collections import Counter
from typing import Any

from continuations_core.errors import AlreadyClaimed, ConflictError
from continuations_core.stores import Claim, open_store

from ._backends import Unavailable, namespace
from ._config import Config
from ._report import Figure, summarize

__all__ = ["WORKERS", "measure"]

WORKERS = 8
LEASE_SECONDS = 600.0
_MODES = ("claim_next", "scan+claim")


def _drain(url: str, mode: str, owner: str, total: int, barrier: Any, count: Any, out: Any) -> None:
    """Process target: claim until ``count`` reaches ``total``; put (ids, lost, empty, secs)."""

    async def run() -> tuple[list[str], int, int, float]:
        ids: list[str] = []
        claims: list[Claim] = []
        lost = empty = 0
        async with open_store(url) as store:
            await store.claimable(limit=1)  # connect and migrate before the race starts
            barrier.wait(120)
            start = time.perf_counter()
            while count.value < total:
                if mode == "claim_next":
                    claim = await store.claim_next(owner, lease_seconds=LEASE_SECONDS)
                    if claim is None:
                        empty += 1
                        await asyncio.sleep(0.001)
                        continue
                else:
                    found = await store.claimable(limit=1)
                    if not found:
                        empty += 1
                        await asyncio.sleep(0.001)
                        continue
                    try:
                        claim = await store.claim(
                            found[0], owner=owner, lease_seconds=LEASE_SECONDS
                        )
                    except (AlreadyClaimed, ConflictError):
                        lost += 1
                        continue
                claims.append(claim)
                ids.append(claim.id)
                with count.get_lock():
                    count.value += 1
            secs = time.perf_counter() - start
            for held in claims:  # untimed: the next repetition starts from an idle store
                await store.complete(held, output=None)
            return ids, lost, empty, secs

    out.put(asyncio.run(run()))


def _race(url: str, mode: str, total: int) -> tuple[list[str], int, int, float]:
    """Race ``WORKERS`` processes over ``total`` ready continuations at ``url``."""
    ctx = multiprocessing.get_context("spawn")
    barrier, count, out = ctx.Barrier(WORKERS), ctx.Value("i", 0), ctx.Queue()
    procs = [
        ctx.Process(target=_drain, args=(url, mode, f"{mode}-{i}", total, barrier, count, out))
        for i in range(WORKERS)
    ]
    for p in procs:
        p.start()
    try:
        results = [out.get(timeout=600) for _ in procs]
        for p in procs:
            p.join(timeout=60)
            if p.exitcode != 0:
                raise RuntimeError(f"a {mode} racer exited with {p.exitcode}")
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
    ids = [cid for got, *_ in results for cid in got]
    lost = sum(r[1] for r in results)
    empty = sum(r[2] for r in results)
    return ids, lost, empty, max(r[3] for r in results)


async def _ready(url: str, n: int) -> set[str]:
    from .claims import ready_continuations

    async with open_store(url) as store:
        return set(await ready_continuations(store, n))


async def measure(cfg: Config) -> list[Figure]:
    """Race 8 processes with each claiming path on every database backend."""
    n = cfg.races
    reps = min(cfg.reps, 3)  # each repetition spawns 16 processes; the spread is small
    cells: dict[str, dict[str, dict[str, list[float]]]] = {}
    unavailable: dict[str, str] = {}
    for backend in cfg.backends:
        if backend == "memory":
            continue  # one process only: nothing to race across processes
        try:
            async with namespace(backend, cfg.tmp) as url:
                for rep in range(cfg.warmup + reps):
                    for mode in _MODES:
                        want = await _ready(url, n)
                        ids, lost, empty, secs = await asyncio.to_thread(_race, url, mode, n)
                        twice = sum(c - 1 for c in Counter(ids).values() if c > 1)
                        missing = len(want - set(ids))
                        if twice or missing or set(ids) - want:
                            raise RuntimeError(
                                f"{backend} {mode}: {twice} double claims, {missing} never "
                                f"claimed, {len(set(ids) - want)} foreign ids"
                            )
                        if rep >= cfg.warmup:
                            cell = cells.setdefault(backend, {}).setdefault(mode, {})
                            for key, value in (
                                ("lost", 1000 * lost / n), ("empty", 1000 * empty / n),
                                ("rate", n / secs), ("twice", float(twice)),
                            ):  # fmt: skip
                                cell.setdefault(key, []).append(value)
        except Unavailable as exc:
            unavailable[backend] = str(exc)
    fig = Figure(
        key="races",
        title=f"Claim races: {WORKERS} worker processes draining one store",
        columns=[
            "backend",
            "path",
            "lost races per 1,000",
            "empty answers per 1,000",
            "double claims",
            "claims/s (all processes)",
        ],
        raw={"samples": cells, "unavailable": unavailable, "n": n, "workers": WORKERS},
    )
    for backend, modes in cells.items():
        for mode, cell in modes.items():
            per_lost, per_empty, rate = (summarize(cell[k]) for k in ("lost", "empty", "rate"))
            fig.rows.append([
                backend, f"`{mode}`", f"{per_lost.median:,.0f}", f"{per_empty.median:,.0f}",
                f"{int(max(cell['twice']))}", f"{rate.median:,.0f} ±{rate.spread * 100:.0f}%",
            ])  # fmt: skip
    fig.notes.append(
        f"Medians of {reps} repetitions. {n} ready continuations per repetition, drained by {WORKERS} processes (each its "
        "own store connection) that start together. A lost race is a `claim` refused because "
        "another process took that id between its `claimable()` and its `claim`; an empty "
        "answer is a `claim_next` (or `claimable()`) that found nothing while other processes "
        "still held the last rows. Every continuation was checked to be claimed exactly once. "
        "Target: 0 lost races with `claim_next`."
    )
    for backend, reason in unavailable.items():
        fig.notes.append(f"Not measured: {backend} ({reason}).")
    return [fig]
