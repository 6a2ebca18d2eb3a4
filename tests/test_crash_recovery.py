"""G9: a run killed with SIGKILL at each step boundary resumes from its last checkpoint."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _backends import namespace_url

from continuations_core import Keyring, open_store
from continuations_core.testing.spec import Ledger

WORKER = Path(__file__).with_name("crash_worker.py")
KEYS = Keyring.generate("crash")


FRAMEWORKS = ["pydantic-ai", "strands"]


def _go(
    tmp: Path, phase: str, crash: str, url: str, framework: str
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CONTINUATIONS_SIGNING_KEYS": KEYS.export()}
    return subprocess.run(
        [sys.executable, str(WORKER), phase, "--store", url, "--run-id", "run-1",
         "--framework", framework,
         "--ledger", str(tmp / "ledger.jsonl"), "--crash", crash, "--result", str(tmp / "out.json")],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def _counts(tmp: Path) -> dict[str, Any]:
    book = Ledger(path=tmp / "ledger.jsonl")
    return {
        "charge": sorted((r["who"], r["amount"]) for r in book.runs("charge")),
        "lookup": sorted(r["who"] for r in book.runs("lookup")),
        "model": book.turns("crash"),
    }


@pytest.fixture(scope="module", params=FRAMEWORKS)
def framework(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def baseline(
    framework: str, tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[str, Any], dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("baseline")
    done = _go(tmp, "run", "none", f"sqlite:///{tmp / 'runs.db'}", framework)
    assert done.returncode == 0, done.stderr
    return json.loads((tmp / "out.json").read_text()), _counts(tmp)


# Every step boundary of the two-batch run, as crash points of tests/crash_worker.py.
BOUNDARIES = ["model:0", "tool:0", "mid:0", "model:1", "tool:1", "mid:1", "model:2"]
BOUNDARY_IDS = [
    "before-first-response-saved",
    "after-first-response",
    "mid-first-batch",
    "after-first-batch",
    "after-second-response",
    "mid-second-batch",
    "after-second-batch",
]


@pytest.mark.parametrize("crash", BOUNDARIES, ids=BOUNDARY_IDS)
def test_sigkill_at_each_boundary_resumes_from_checkpoint(
    crash: str, framework: str, baseline: tuple[dict[str, Any], dict[str, Any]], tmp_path: Path
) -> None:
    """Killed at a step boundary, the run resumes from its checkpoint; at most one step repeats."""
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    killed = _go(tmp_path, "run", crash, url, framework)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    if crash != "model:0":  # past the run's first checkpoint: the later steps are segments
        assert _segments(tmp_path / "runs.db") > 0, "the killed run appended no segment"
    recovered = _go(tmp_path, "recover", "none", url, framework)
    assert recovered.returncode == 0, recovered.stderr
    assert _segments(tmp_path / "runs.db") == 0, "the completed run left segments behind"
    out = json.loads((tmp_path / "out.json").read_text())
    base_out, base = baseline
    counts = _counts(tmp_path)
    assert out["output"] == base_out["output"]
    assert counts["charge"] == base["charge"], "a non-idempotent tool ran twice or not at all"
    extra_lookups = len(counts["lookup"]) - len(base["lookup"])
    assert 0 <= extra_lookups <= 1 and set(counts["lookup"]) == set(base["lookup"])
    assert 0 <= counts["model"] - base["model"] <= 1, "more than the step in flight repeated"


async def _steps_stored(url: str) -> tuple[int, int]:
    """The full checkpoints written (audited) and the latest checkpoint's seq as it loads."""
    async with open_store(url) as store:
        full = sum(1 for e in await store.audit("run-1") if e.kind == "checkpoint")
        latest = max(await store.list(run_id="run-1"), key=lambda r: r.seq)
        return full, latest.continuation.seq


def _segments(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM segments").fetchone()[0])


@pytest.fixture(
    params=[
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("redis", marks=pytest.mark.redis),
    ]
)
def server_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from namespace_url(request.param, tmp_path)


@pytest.mark.parametrize("crash", BOUNDARIES, ids=BOUNDARY_IDS)
def test_sigkill_recovers_from_a_checkpoint_and_its_segments_on_server_stores(
    crash: str,
    framework: str,
    baseline: tuple[dict[str, Any], dict[str, Any]],
    server_url: str,
    tmp_path: Path,
) -> None:
    """On Postgres and Redis too, a run killed at any step boundary recovers from its
    checkpoint plus segments; at most the step in flight repeats."""
    killed = _go(tmp_path, "run", crash, server_url, framework)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    full, seq = asyncio.run(_steps_stored(server_url))
    if crash != "model:0":  # past the run's first checkpoint: the later steps are segments
        assert seq > full, f"no step was appended as a segment ({full} full, seq {seq})"
    recovered = _go(tmp_path, "recover", "none", server_url, framework)
    assert recovered.returncode == 0, recovered.stderr
    out = json.loads((tmp_path / "out.json").read_text())
    base_out, base = baseline
    counts = _counts(tmp_path)
    assert out["output"] == base_out["output"]
    assert counts["charge"] == base["charge"], "a non-idempotent tool ran twice or not at all"
    assert 0 <= len(counts["lookup"]) - len(base["lookup"]) <= 1
    assert 0 <= counts["model"] - base["model"] <= 1, "more than the step in flight repeated"


def test_non_idempotent_tool_is_never_repeated_after_an_unjournaled_crash(
    framework: str, baseline: tuple[dict[str, Any], dict[str, Any]], tmp_path: Path
) -> None:
    """Killed inside a non-idempotent tool before its result was journaled, it is not run again."""
    from continuations_core._durable import INTERRUPTED_MESSAGE

    url = f"sqlite:///{tmp_path / 'runs.db'}"
    assert _go(tmp_path, "run", "charge:0", url, framework).returncode == -signal.SIGKILL
    recovered = _go(tmp_path, "recover", "none", url, framework)
    assert recovered.returncode == 0, recovered.stderr
    out = json.loads((tmp_path / "out.json").read_text())
    assert _counts(tmp_path)["charge"] == baseline[1]["charge"]
    assert INTERRUPTED_MESSAGE in out["output"]
