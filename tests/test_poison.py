"""Poison continuations (G14): each ends ``failed`` within its attempts, and the worker goes on.

A worker process is handed, ahead of ordinary work: an unknown root agent, an unsigned document,
an expired approval, an approved tool that raises, a run suspended by another framework's
agent, an agent whose tools drifted, and a run whose model fails on every call after the
approval. Permanent errors fail
at once; the failing model backs off and fails after ``--max-attempts``. No approved call runs
twice, and the ordinary runs queued behind them all complete.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import g14_agents
import pytest
from _backends import namespace_url

from continuations_core import Keyring
from continuations_core.stores import open_store
from continuations_core.testing.spec import Ledger

HERE = Path(__file__).resolve().parent
KEYS = Keyring.generate("poison")
MAX_ATTEMPTS = 3


async def _queue(url: str) -> dict[str, str]:
    """Store the poison runs first, then three ordinary ones; return run ids by case."""
    runs: dict[str, str] = {}
    async with open_store(url) as store:
        cases: list[tuple[str, Any, Keyring | None]] = [
            ("unknown_agent", g14_agents.ghost, KEYS),
            ("unsigned", g14_agents.payer, None),
            ("expired", g14_agents.expiring, KEYS),
            ("approved_raises", g14_agents.wirer, KEYS),
            ("other_framework", g14_agents.strands_payer(), KEYS),
            ("model_down", g14_agents.broken, KEYS),
            ("drift", g14_agents.drifter_then, KEYS),
        ]
        for case, agent, keys in cases:
            runs[case] = (await g14_agents.decided(agent, store, keys)).run_id
        await asyncio.sleep(1.1)  # the expiring approval's deadline passes
        for n in range(3):
            runs[f"ordinary_{n}"] = (await g14_agents.decided(g14_agents.payer, store, KEYS)).run_id
    return runs


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """A fresh shared store."""
    yield from namespace_url(request.param, tmp_path)


def test_poison_continuations_fail_within_their_attempts_and_the_worker_goes_on(
    url: str, tmp_path: Path
) -> None:
    """Every poison ends failed with its error; approved calls ran at most once; work completes."""
    os.environ.pop("G14_LEDGER", None)
    runs = asyncio.run(_queue(url))
    ledger_path = tmp_path / "ledger.jsonl"
    env = {
        **os.environ,
        "CONTINUATIONS_SIGNING_KEYS": KEYS.export(),
        "G14_LEDGER": str(ledger_path),
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
    }
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "continuations_core", "worker", "--store", url,
         "--agents", "g14_agents:AGENTS", "--owner", "poison-worker", "--poll", "0.05",
         "--max-attempts", str(MAX_ATTEMPTS), "--backoff", "0.2", "--idle-exit", "3"],
        env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    logs = proc.stderr

    async def outcome() -> dict[str, Any]:
        async with open_store(url) as store:
            return {case: await store.status(rid) for case, rid in runs.items()}

    status = asyncio.run(outcome())
    expected_errors = {
        "unknown_agent": ("ConfigurationError", "No agent named 'ghost'"),
        "unsigned": ("UnsignedContinuation", ""),
        "expired": ("ContinuationExpired", "expired"),
        "approved_raises": ("ApprovedCallFailed", "bank refused"),
        "other_framework": ("ConfigurationError", "suspended by a strands agent"),
        "model_down": ("RuntimeError", "model provider is unavailable"),
        "drift": ("AgentDrift", "transfer"),
    }
    for case, (kind, words) in expected_errors.items():
        s = status[case]
        assert s.state == "failed", f"{case}: {s}"
        assert s.last_error is not None and s.last_error.type == kind, f"{case}: {s.last_error}"
        assert words in s.last_error.message, f"{case}: {s.last_error}"
        limit = MAX_ATTEMPTS if case == "model_down" else 1  # permanent errors fail at once
        assert s.attempts == limit, f"{case}: {s.attempts} attempts"
    for n in range(3):
        assert status[f"ordinary_{n}"].state == "completed", status[f"ordinary_{n}"]
    book = Ledger(path=ledger_path)
    assert book.count("wire") == 1, "an approved call that raised ran again"
    transfers = [r["to"] for r in book.runs("transfer")]
    assert sorted(transfers) == sorted(["bob"] * 3 + ["zed"]), transfers
    assert book.count("charge") == 3
    assert logs.count("event=failed") == len(expected_errors), logs
    assert logs.count("event=attempt_failed") == MAX_ATTEMPTS - 1, logs
    assert logs.count("event=completed") == 3, logs
    print(f"\npoison drain: {len(runs)} continuations in {elapsed:.1f} s (worker process)")
