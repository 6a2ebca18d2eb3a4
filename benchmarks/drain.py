"""Worker drain: decided continuations resumed per second by 1, 2 and 4 worker processes.

One repetition, per backend and worker count, stores ``n`` decided continuations of a trivial
pause (:mod:`benchmarks.drain_agents`), starts the workers with the real command
(``python -m continuations_core worker``), releases them together from a start barrier once
all have started, and waits until they exit idle. The rate is ``n`` over the time from the
first claim to the last completion, both read from the store's audit trail. Every run must
have completed exactly once and its tool run exactly once, or the measurement is refused.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from continuations_core import Continuation
from continuations_core.stores import Store, open_store
from continuations_core.testing.spec import Ledger

from ._agents import KEYS, approve_all, harness, suspended
from ._backends import Unavailable, namespace
from ._config import Config
from ._report import Figure, summarize
from .drain_agents import SPEC

__all__ = ["measure"]

ROOT = Path(__file__).resolve().parent.parent
#: Backends that several processes can share (the memory store lives in one process).
SHARED_BACKENDS = ("sqlite", "postgres", "redis")
WORKER_TIMEOUT_SECONDS = 600.0
POLL_SECONDS = "0.05"


async def _template() -> Continuation:
    """One real suspension of the drain agent, with its request approved."""
    agent = harness("pydantic-ai").build(SPEC, Ledger())
    return approve_all(suspended(await harness("pydantic-ai").run(agent, "go", keys=KEYS)))


async def _decided(store: Store, template: Continuation, n: int) -> list[str]:
    """Store ``n`` decided copies of ``template`` (each its own run); return their run ids."""
    run_ids = []
    for _ in range(n):
        run_id = uuid.uuid4().hex
        fresh = {"id": uuid.uuid4().hex, "run_id": run_id, "decisions": ()}
        cont = approve_all(template.model_copy(update=fresh).sign(KEYS))
        if (await store.save(cont)).status != "ready":
            raise RuntimeError("a decided continuation was not stored ready")
        run_ids.append(run_id)
    return run_ids


def _spawn(url: str, workers: int, tmp: Path, start: Path, ledger: Path) -> list[Any]:
    env = {
        **os.environ,
        "CONTINUATIONS_SIGNING_KEYS": KEYS.export(),
        "BENCH_START": str(start),
        "BENCH_LEDGER": str(ledger),
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    procs = []
    for i in range(workers):
        log = (tmp / f"{start.name}-w{i}.log").open("w")
        command = [
            sys.executable,
            "-m",
            "continuations_core",
            "worker",
            "--store",
            url,
            "--agents",
            "benchmarks.drain_agents:AGENTS",
            "--poll",
            POLL_SECONDS,
            "--idle-exit",
            "1",
            "--owner",
            f"bench-w{i}",
        ]
        procs.append((subprocess.Popen(command, env=env, stdout=log, stderr=log, cwd=ROOT), log))
    return procs


async def _drain(
    url: str, store: Store, template: Continuation, workers: int, cfg: Config
) -> float:
    run_ids = await _decided(store, template, cfg.drain)
    tag = uuid.uuid4().hex[:8]
    start, ledger = cfg.tmp / f"start-{tag}", cfg.tmp / f"ledger-{tag}.jsonl"
    procs = _spawn(url, workers, cfg.tmp, start, ledger)
    try:
        deadline = time.monotonic() + WORKER_TIMEOUT_SECONDS
        while len(list(cfg.tmp.glob(f"{start.name}.*"))) < workers:
            if time.monotonic() > deadline or any(p.poll() is not None for p, _ in procs):
                raise RuntimeError("a worker did not start; see its log in " + str(cfg.tmp))
            await asyncio.sleep(0.02)
        start.touch()
        for proc, _ in procs:
            await asyncio.to_thread(proc.wait, max(1.0, deadline - time.monotonic()))
            if proc.returncode != 0:
                raise RuntimeError(f"a worker exited {proc.returncode}; logs in {cfg.tmp}")
    finally:
        for proc, log in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()
    first_claim, last_done = None, None
    for run_id in run_ids:
        events = await store.audit(run_id)
        completed = [e.at for e in events if e.kind == "completed"]
        claimed = [e.at for e in events if e.kind == "claimed"]
        if len(completed) != 1 or not claimed:
            raise RuntimeError(f"run {run_id} completed {len(completed)} times")
        first_claim = min(claimed[0], first_claim or claimed[0])
        last_done = max(completed[0], last_done or completed[0])
    ran = Ledger(path=ledger).count("transfer")
    if ran != cfg.drain:
        raise RuntimeError(f"the workers ran the tool {ran} times for {cfg.drain} runs")
    assert first_claim is not None and last_done is not None
    return cfg.drain / max((last_done - first_claim).total_seconds(), 1e-6)


async def measure(cfg: Config) -> list[Figure]:
    """Measure drain rates for every shared backend and worker count."""
    samples: dict[str, dict[int, list[float]]] = {}
    unavailable: dict[str, str] = {}
    for backend in (b for b in cfg.backends if b in SHARED_BACKENDS):
        try:
            async with namespace(backend, cfg.tmp) as url, open_store(url) as store:
                template = await _template()
                cell = samples.setdefault(backend, {})
                for rep in range(cfg.warmup + cfg.reps):
                    for workers in cfg.workers:
                        rate = await _drain(url, store, template, workers, cfg)
                        if rep >= cfg.warmup:
                            cell.setdefault(workers, []).append(rate)
        except Unavailable as exc:
            unavailable[backend] = str(exc)
    fig = Figure(
        key="drain",
        title="Worker drain: continuations resumed per second",
        columns=[
            "backend",
            *(f"{w} worker{'s' * (w > 1)} (/s)" for w in cfg.workers),
            f"{max(cfg.workers)} ÷ 1",
        ],
        raw={"samples_per_s": samples, "unavailable": unavailable, "n": cfg.drain},
    )
    for backend, by_workers in samples.items():
        medians = {w: summarize(v) for w, v in by_workers.items()}
        cells = [f"{m.median:,.1f} ±{m.spread * 100:.0f}%" for m in medians.values()]
        scale = medians[max(medians)].median / medians[min(medians)].median
        fig.rows.append([backend, *cells, f"{scale:.2f}×"])
    fig.notes.append(
        f"{cfg.drain} decided continuations of a trivial pause (one approved tool call, then "
        "the answer) per repetition; `python -m continuations_core worker --poll 0.05`; from "
        "the first claim to the last completion in the audit trail. Every run completed once "
        "and its tool ran once. Workers share the machine's cores with the store's server."
    )
    for backend, reason in unavailable.items():
        fig.notes.append(f"Not measured: {backend} ({reason}).")
    return [fig]
