"""Fault injection on DBOS: 4 DBOS workers drain decided runs while one is SIGKILLed at random.

Each killed worker is restarted under its own executor id (one stable id per pod, as the
README asks), so DBOS recovers its pending workflows at launch and the store's claims held
under that id are taken back at once. Every run must complete exactly once, none may be lost,
the non-idempotent transfer runs at most once, and every extra execution of an idempotent tool
is visible in the audit trail. The same table as the built-in test is printed.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import fleet_agents
import pytest
from _backends import POSTGRES_URL, namespace_url
from test_fault_injection import Tally, _audit, _stuck

from continuations_core import Keyring
from continuations_core.testing.spec import Ledger

HERE = Path(__file__).resolve().parent
RUNS = int(os.environ.get("FLEET_RUNS", "200"))
WORKERS = 4
KEYS = Keyring.generate("dbos-fleet")


@pytest.fixture(params=[pytest.param("postgres", marks=pytest.mark.postgres)])
def fleet(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A fresh store schema and a fresh DBOS schema on the local Postgres."""
    import psycopg

    schema = f"dbos_{uuid.uuid4().hex[:12]}"
    for url in namespace_url(request.param, tmp_path):
        try:
            yield url, schema
        finally:
            with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _spawn(
    url: str, schema: str, env: dict[str, str], n: int, logs: Path
) -> subprocess.Popen[bytes]:
    log = (logs / f"e{n}.log").open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "continuations_core", "worker", "--engine", "dbos",
         "--store", url, "--dbos-schema", schema, "--agents", "fleet_agents:AGENTS",
         "--lease", "5", "--poll", "0.05", "--executor-id", f"pod-{n}", "--concurrency", "4"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip


def _started(logs: Path, n: int, times: int) -> bool:
    return (logs / f"e{n}.log").read_text(errors="replace").count("event=engine_started") >= times


@pytest.mark.slow
def test_dbos_workers_killed_at_random_lose_and_duplicate_nothing(
    fleet: tuple[str, str], tmp_path: Path
) -> None:
    url, schema = fleet
    ledger_path = tmp_path / "ledger.jsonl"
    env = {
        **os.environ,
        "CONTINUATIONS_SIGNING_KEYS": KEYS.export(),
        "FLEET_LEDGER": str(ledger_path),
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
    }
    # Stored ready before any worker runs: each DBOS worker enqueues what the store holds ready
    # when it launches (the workflow ids make the three extra enqueues of each no-ops).
    run_ids = [c.run_id for c in asyncio.run(fleet_agents.decided_runs(url, KEYS, RUNS))]
    rng = random.Random(11)
    workers = {n: _spawn(url, schema, env, n, tmp_path) for n in range(WORKERS)}
    launches = dict.fromkeys(workers, 1)
    kills = 0
    begun = time.monotonic()
    deadline = begun + 300
    reported = False
    try:
        while time.monotonic() < deadline:
            time.sleep(rng.uniform(0.3, 0.7))
            book = Ledger(path=ledger_path)
            busy = book.count("receipt") and len({r["key"] for r in book.runs("receipt")}) < RUNS
            if busy and kills < 30:
                victim = rng.choice(sorted(workers))
                if _started(tmp_path, victim, launches[victim]):  # kill only a serving one
                    workers[victim].send_signal(signal.SIGKILL)
                    workers[victim].wait()
                    kills += 1
                    workers[victim] = _spawn(url, schema, env, victim, tmp_path)  # same pod id
                    launches[victim] += 1
            audit = asyncio.run(_audit(url, run_ids))
            if all(any(e["kind"] == "completed" for e in events) for events in audit.values()):
                break
            if not reported and time.monotonic() - begun > 90:
                reported = True
                print("\nstill unfinished after 90 s:", *asyncio.run(_stuck(url, run_ids)),
                      sep="\n  ")  # fmt: skip
    finally:
        # A worker restarted just now is still importing, before its SIGTERM handler exists:
        # let it start serving, so that stopping it tests a clean stop, not an import.
        settle = time.monotonic() + 60
        while time.monotonic() < settle and not all(
            _started(tmp_path, n, launches[n]) or proc.poll() is not None
            for n, proc in workers.items()
        ):
            time.sleep(0.1)
        for proc in workers.values():
            proc.send_signal(signal.SIGTERM)
        codes = {n: proc.wait(timeout=60) for n, proc in workers.items()}
    tally = Tally.of(url, run_ids, ledger_path)
    print(tally.line("dbos/postgres", kills=kills, stalls=0))
    assert kills > 0, "the run finished before any worker was killed; nothing was tested"
    assert set(codes.values()) <= {0}, f"workers did not stop cleanly: {codes}; see {tmp_path}"
    tally.check()
