"""G5 across processes: of 8 processes resuming one continuation, exactly one wins."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import fleet_agents
import pytest
from _backends import namespace_url

from continuations_core import Keyring
from continuations_core.testing.spec import Ledger

HERE = Path(__file__).resolve().parent
KEYS = Keyring.generate("race")


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("redis", marks=pytest.mark.redis),
    ]
)
def shared(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh store that several processes open."""
    yield from namespace_url(request.param, tmp_path)


def test_eight_processes_resume_one_continuation_tool_runs_once(
    shared: str, tmp_path: Path
) -> None:
    """8 processes race to resume one decided continuation: one completes, 7 get AlreadyClaimed."""
    [decided] = asyncio.run(fleet_agents.decided_runs(shared, KEYS, 1))
    cid = decided.id
    go = tmp_path / "go"
    env = {
        **os.environ,
        "CONTINUATIONS_SIGNING_KEYS": KEYS.export(),
        "FLEET_LEDGER": str(tmp_path / "ledger.jsonl"),
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
    }
    procs = [
        subprocess.Popen(
            [sys.executable, str(HERE / "race_worker.py"), shared, cid, str(go)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(8)
    ]
    go.touch()
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        results.append(out.strip())
    assert sorted(results) == ["lost"] * 7 + ["won"]
    book = Ledger(path=tmp_path / "ledger.jsonl")
    assert book.count("transfer") == 1 and book.count("receipt") == 1
