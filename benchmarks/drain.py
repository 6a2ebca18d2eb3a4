"""Worker drain: decided continuations resumed per second by 1, 2 and 4 worker processes.

One repetition, per backend and worker count, stores ``n`` decided continuations of a trivial
pause (:mod:`benchmarks.drain_agents`), starts the workers with the real command
(``python -m continuations_core worker``), releases them together from a start barrier once
all have started, and waits until they exit idle. The rate is ``n`` over the time from the
first claim to the last completion, both read from the store's audit trail. Every run must
have completed exactly once and its tool run exactly once, or the measurement is refused.

On Postgres the same run also measures the DBOS engine (``worker --engine dbos``, package
``continuations_dbos``). Each repetition gets a fresh DBOS schema, migrated before any worker
starts; the decided continuations are dispatched to it as a decision dispatches them (one
``continuations.resume`` workflow each, enqueued through a ``DBOSClient``); then 1, 2 or 4
DBOS worker processes start, pass the same barrier and exit idle. The rate and the checks are
the built-in ones, plus: each run's audit shows the DBOS engine's own events. Built-in and
DBOS repetitions alternate, so both meet the same machine load.
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
from ._backends import Unavailable, dbos_schema, namespace
from ._config import Config
from ._report import Figure, fmt_ratio, summarize
from .drain_agents import SPEC

__all__ = ["measure"]

ROOT = Path(__file__).resolve().parent.parent
#: Backends that several processes can share (the memory store lives in one process).
SHARED_BACKENDS = ("sqlite", "postgres", "redis")
WORKER_TIMEOUT_SECONDS = 600.0
POLL_SECONDS = "0.05"
#: Resumes at once per worker process, for both engines (the CLI's default).
CONCURRENCY = 1
#: The backend the DBOS engine runs on, and its rows.
DBOS_BACKEND = "postgres"
DBOS_ROW = "postgres (DBOS)"
RATIO_ROW = "DBOS ÷ built-in"


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


def _spawn(
    url: str, workers: int, tmp: Path, start: Path, ledger: Path, dbos: str | None = None
) -> list[Any]:
    """Start ``workers`` worker processes: built-in ones, or DBOS ones on schema ``dbos``."""
    env = {
        **os.environ,
        "CONTINUATIONS_SIGNING_KEYS": KEYS.export(),
        "BENCH_START": str(start),
        "BENCH_LEDGER": str(ledger),
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    env.pop("CONTINUATIONS_DBOS_URL", None)  # DBOS's tables go to the store's database
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
            "--concurrency",
            str(CONCURRENCY),
            "--idle-exit",
            "1",
        ]
        command += ["--poll", POLL_SECONDS]
        if dbos is None:
            command += ["--engine", "builtin", "--owner", f"bench-w{i}"]
        else:
            command += [
                "--engine",
                "dbos",
                "--dbos-schema",
                dbos,
                "--executor-id",
                f"bench-dbos-w{i}",
            ]
        procs.append((subprocess.Popen(command, env=env, stdout=log, stderr=log, cwd=ROOT), log))
    return procs


async def _drain(
    url: str,
    store: Store,
    template: Continuation,
    workers: int,
    cfg: Config,
    dbos: str | None = None,
) -> float:
    """One repetition: ``cfg.drain`` continuations drained by ``workers`` processes; the rate.

    With ``dbos`` (a DBOS schema), DBOS workers drain them; ``store`` must then dispatch to
    that schema, so storing the decided continuations enqueues their workflows.
    """
    run_ids = await _decided(store, template, cfg.drain)
    tag = uuid.uuid4().hex[:8]
    start, ledger = cfg.tmp / f"start-{tag}", cfg.tmp / f"ledger-{tag}.jsonl"
    procs = _spawn(url, workers, cfg.tmp, start, ledger, dbos)
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
        if dbos is not None and not any(e.kind == "engine" for e in events):
            raise RuntimeError(f"run {run_id} was not resumed by a DBOS workflow")
        first_claim = min(claimed[0], first_claim or claimed[0])
        last_done = max(completed[0], last_done or completed[0])
    ran = Ledger(path=ledger).count("transfer")
    if ran != cfg.drain:
        raise RuntimeError(f"the workers ran the tool {ran} times for {cfg.drain} runs")
    assert first_claim is not None and last_done is not None
    return cfg.drain / max((last_done - first_claim).total_seconds(), 1e-6)


async def _drain_dbos(url: str, template: Continuation, workers: int, cfg: Config) -> float:
    """One DBOS repetition, in a fresh DBOS schema dropped afterwards."""
    from continuations_dbos import client_dispatcher

    async with dbos_schema(url) as schema, open_store(url) as store:
        dispatcher = client_dispatcher(store, url, schema=schema)
        try:
            return await _drain(url, store, template, workers, cfg, dbos=schema)
        finally:
            dispatcher.close()


def _dbos_missing() -> str | None:
    """Why the DBOS engine cannot be measured, or None if it can."""
    try:
        import continuations_dbos  # noqa: F401
    except ImportError as exc:
        return f"the DBOS engine is not installed: {exc}"
    return None


async def measure(cfg: Config) -> list[Figure]:
    """Measure drain rates for every shared backend and worker count, and DBOS's on Postgres."""
    samples: dict[str, dict[int, list[float]]] = {}
    unavailable: dict[str, str] = {}
    for backend in (b for b in cfg.backends if b in SHARED_BACKENDS):
        dbos = backend == DBOS_BACKEND
        try:
            async with namespace(backend, cfg.tmp) as url, open_store(url) as store:
                template = await _template()
                cell = samples.setdefault(backend, {})
                if dbos and (missing := _dbos_missing()) is not None:
                    unavailable[DBOS_ROW], dbos = missing, False
                dbos_cell = samples.setdefault(DBOS_ROW, {}) if dbos else {}
                for rep in range(cfg.warmup + cfg.reps):
                    for workers in cfg.workers:
                        rate = await _drain(url, store, template, workers, cfg)
                        if rep >= cfg.warmup:
                            cell.setdefault(workers, []).append(rate)
                        if dbos:
                            rate = await _drain_dbos(url, template, workers, cfg)
                            if rep >= cfg.warmup:
                                dbos_cell.setdefault(workers, []).append(rate)
        except Unavailable as exc:
            samples.pop(backend, None)
            unavailable[backend] = str(exc)
            if backend == DBOS_BACKEND:
                samples.pop(DBOS_ROW, None)
                unavailable.setdefault(DBOS_ROW, f"it runs on {DBOS_BACKEND}")
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
        if backend == DBOS_ROW and DBOS_BACKEND in samples:
            builtin = samples[DBOS_BACKEND]
            ratios = [
                summarize(by_workers[w]).median / summarize(builtin[w]).median for w in cfg.workers
            ]
            fig.rows.append([RATIO_ROW, *(fmt_ratio(r) for r in ratios), "—"])
    fig.notes.append(
        f"{cfg.drain} decided continuations of a trivial pause (one approved tool call, then "
        "the answer) per repetition; `python -m continuations_core worker --poll 0.05 "
        f"--concurrency {CONCURRENCY}`; from the first claim to the last completion in the "
        "audit trail. Every run completed once and its tool ran once. Workers share the "
        "machine's cores with the store's server."
    )
    if DBOS_ROW in samples:
        fig.notes.append(
            f"{DBOS_ROW}: the DBOS engine on the same Postgres, `worker --engine dbos "
            f"--concurrency {CONCURRENCY}` (the built-in workers' concurrency; DBOS's queue "
            "`worker_concurrency`), a distinct `--executor-id` per process, in a fresh DBOS "
            "schema per repetition, migrated before the workers start. DBOS polls its queue "
            f"every {POLL_SECONDS} s (`--poll`, as the built-in workers) and "
            "a poll starts at most `--concurrency` minus the running workflows, so a worker "
            f"starts at most about {CONCURRENCY / float(POLL_SECONDS):.0f} resumes a second, "
            "where a built-in worker claims its next as soon as one ends. The continuations "
            "are dispatched as a decision dispatches them (one `continuations.resume` "
            "workflow each, enqueued through a `DBOSClient`) before the workers start; each "
            "worker also re-enqueues the store's ready ones at launch (no-ops by workflow "
            "id). Built-in and DBOS repetitions alternate. Every run completed once, its tool "
            f"ran once and its audit shows DBOS's `engine` events. {RATIO_ROW}: the DBOS "
            "median over the built-in postgres median at each worker count."
        )
        fig.notes.append(
            "Start-up: workers of both engines import the agents and prepare them "
            "(`prepare_agents`, as a worker does before its first claim), then wait at the "
            "start barrier, before opening the store or launching DBOS; the window opens at "
            "the first claim, so the first worker's start-up is excluded. A later DBOS "
            "worker's launch (connecting, registering the queue, its queue thread starting "
            "within 1 s, re-enqueueing) can overlap the window; the built-in worker's start-up "
            "after the barrier is opening the store (its `Worker.prepare` finds the work done)."
        )
    for backend, reason in unavailable.items():
        fig.notes.append(f"Not measured: {backend} ({reason}).")
    return [fig]
