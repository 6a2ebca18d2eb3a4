"""The worker command: drains decided continuations, and releases its claims on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import fleet_agents

from continuations_core import ConfigurationError, Keyring
from continuations_core.stores import open_store
from continuations_core.testing.spec import Ledger
from continuations_core.worker import load_agents

HERE = Path(__file__).resolve().parent
KEYS = Keyring.generate("worker")


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "CONTINUATIONS_SIGNING_KEYS": KEYS.export(),
        "FLEET_LEDGER": str(tmp / "ledger.jsonl"),
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        **extra,
    }


def _worker(url: str, env: dict[str, str], *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "continuations_core", "worker", "--store", url,
         "--agents", "fleet_agents:AGENTS", "--poll", "0.05", *extra],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def test_worker_resumes_every_decided_continuation_once(tmp_path: Path) -> None:
    """A worker process claims each decided continuation, resumes it and records completion."""
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    run_ids = [c.run_id for c in asyncio.run(fleet_agents.decided_runs(url, KEYS, 5))]
    proc = _worker(url, _env(tmp_path), "--idle-exit", "1")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "resuming 5 continuation(s)" in out

    async def completions() -> list[int]:
        async with open_store(url) as store:
            return [sum(e.kind == "completed" for e in await store.audit(rid)) for rid in run_ids]

    assert asyncio.run(completions()) == [1] * 5
    book = Ledger(path=tmp_path / "ledger.jsonl")
    assert book.count("transfer") == 5 and book.count("receipt") == 5


def test_sigterm_stops_the_worker_and_releases_its_claim(tmp_path: Path) -> None:
    """On SIGTERM a worker cancels its resume, gives the run back (ready) and exits 0."""
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    [run_id] = [c.run_id for c in asyncio.run(fleet_agents.decided_runs(url, KEYS, 1))]
    proc = _worker(url, _env(tmp_path, FLEET_SLOW="30"), "--owner", "slow-worker")

    async def held() -> str | None:
        async with open_store(url) as store:
            records = await store.list(run_id=run_id)
            claimed = [r for r in records if r.status == "claimed"]
            return claimed[0].claimed_by if claimed else None

    deadline = time.monotonic() + 60
    while asyncio.run(held()) != "slow-worker" or not Ledger(path=tmp_path / "ledger.jsonl").count(
        "transfer"
    ):
        assert time.monotonic() < deadline, "the worker never started the run"
        time.sleep(0.1)
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=20)
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
    assert time.monotonic() - started < 10

    async def state() -> tuple[list[str], list[str]]:
        async with open_store(url) as store:
            records = await store.list(run_id=run_id)
            return [r.status for r in records], [e.kind for e in await store.audit(run_id)]

    statuses, kinds = asyncio.run(state())
    assert "claimed" not in statuses and "ready" in statuses
    assert kinds[-1] == "released"


def test_load_agents_accepts_dicts_lists_and_single_agents() -> None:
    """--agents resolves a dict, a list or one agent by name, and explains a bad path."""
    sys.path.insert(0, str(HERE))
    assert set(load_agents("fleet_agents:AGENTS")) == {"payer"}
    assert set(load_agents("fleet_agents:payer")) == {"payer"}
    try:
        load_agents("fleet_agents")
    except ConfigurationError as exc:
        assert "module:attribute" in str(exc)
    else:
        raise AssertionError("a path without an attribute was accepted")
