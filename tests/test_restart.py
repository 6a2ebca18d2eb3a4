"""Restart under a stable owner (G14): a run SIGKILLed under ``owner="svc-1"`` is taken back at once.

The killed process held its checkpoint with the default 30-second lease. Restarted under the
same owner name, ``resume_run`` claims it without waiting for that lease (audited
``taken_over``), and at most the killed step runs again.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _backends import namespace_url

from continuations_core import Keyring
from continuations_core.stores import open_store
from continuations_core.testing.spec import Ledger

WORKER = Path(__file__).with_name("crash_worker.py")
KEYS = Keyring.generate("restart")
DEFAULT_LEASE = "30"
BASELINE_TURNS = 3  # model calls of an uninterrupted run: two tool batches and the answer


def _go(
    tmp: Path, phase: str, crash: str, url: str, framework: str
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CONTINUATIONS_SIGNING_KEYS": KEYS.export()}
    return subprocess.run(
        [sys.executable, str(WORKER), phase, "--store", url, "--run-id", "run-1",
         "--framework", framework, "--owner", "svc-1", "--lease", DEFAULT_LEASE,
         "--ledger", str(tmp / "ledger.jsonl"), "--crash", crash, "--result", str(tmp / "out.json")],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("redis", marks=pytest.mark.redis),
    ]
)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh shared store."""
    yield from namespace_url(request.param, tmp_path)


@pytest.mark.parametrize(
    ("framework", "crash"),
    [("pydantic-ai", "tool:1"), ("pydantic-ai", "charge:0"), ("strands", "tool:1")],
    ids=["pydantic-ai-mid-step", "pydantic-ai-inside-charge", "strands-mid-step"],
)
def test_a_run_killed_under_an_owner_is_taken_back_at_once_by_its_restart(
    url: str, framework: str, crash: str, tmp_path: Path
) -> None:
    """Restarted under the same owner, the run resumes without waiting out its 30 s lease."""
    killed = _go(tmp_path, "run", crash, url, framework)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    book = Ledger(path=tmp_path / "ledger.jsonl")
    recovered = _go(tmp_path, "recover", "none", url, framework)
    assert recovered.returncode == 0, recovered.stderr
    result = json.loads((tmp_path / "out.json").read_text())
    took = result["took_over_after"]
    print(f"\n[{framework} {crash}] restarted owner took the run back after {took * 1000:.0f} ms")
    assert took < 10, f"the restart waited {took:.1f} s: it waited for the lease"
    reasons = [e.detail["reason"] for e in asyncio.run(_audit(url)) if e.kind == "taken_over"]
    assert len(reasons) == 1 and "restarted" in reasons[0], reasons
    assert sorted(r["who"] for r in book.runs("charge")) == ["bob", "eve"], "charge ran twice"
    assert book.turns("crash") <= BASELINE_TURNS + 1, "more than the killed step repeated"
    assert set(r["who"] for r in book.runs("lookup")) == {"bob", "bob2", "eve", "eve2"}


async def _audit(url: str) -> list[Any]:
    async with open_store(url) as store:
        return await store.audit("run-1")
