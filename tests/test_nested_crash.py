"""G9 at depth 1: a run killed inside a sub-agent loses at most the sub-agent's step in flight."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from continuations_core import Keyring
from continuations_core.testing.spec import Ledger

WORKER = Path(__file__).with_name("nested_crash_worker.py")
KEYS = Keyring.generate("nested-crash")
STEPS = 5

#: Each boundary of the sub-agent's run: before response N is saved, and after it was.
BOUNDARIES = [f"model:{n}" for n in range(STEPS + 1)] + [f"tool:{n}" for n in range(STEPS)]


def _go(tmp: Path, phase: str, crash: str, framework: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CONTINUATIONS_SIGNING_KEYS": KEYS.export()}
    return subprocess.run(
        [sys.executable, str(WORKER), phase, "--framework", framework,
         "--store", f"sqlite:///{tmp / 'runs.db'}", "--run-id", "research-1",
         "--ledger", str(tmp / "ledger.jsonl"), "--crash", crash,
         "--result", str(tmp / "out.json")],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def _counts(tmp: Path) -> dict[str, Any]:
    book = Ledger(path=tmp / "ledger.jsonl")
    return {
        "researcher": [e["turn"] for e in book.all() if e.get("agent") == "researcher" and e["type"] == "model"],
        "hr": book.turns("hr"),
        "lookups": sorted(r["q"] for r in book.runs("lookup")),
    }  # fmt: skip


@pytest.fixture(scope="module", params=["pydantic-ai", "strands"])
def framework(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def baseline(
    framework: str, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("nested-baseline")
    done = _go(tmp, "run", "none", framework)
    assert done.returncode == 0, done.stderr
    return json.loads((tmp / "out.json").read_text())["output"], _counts(tmp)


@pytest.mark.parametrize("crash", BOUNDARIES)
def test_sigkill_inside_a_sub_agent_repeats_at_most_its_step_in_flight(
    crash: str, framework: str, baseline: tuple[str, dict[str, Any]], tmp_path: Path
) -> None:
    """Killed at a boundary of a depth-1 sub-agent's 5-step run, the recovered run repeats none of
    the sub-agent's completed model turns (only a response that was not saved), none of the
    root's, and no lookup that completed."""
    killed = _go(tmp_path, "run", crash, framework)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    recovered = _go(tmp_path, "recover", "none", framework)
    assert recovered.returncode == 0, recovered.stderr
    output, base = baseline
    assert json.loads((tmp_path / "out.json").read_text())["output"] == output
    counts = _counts(tmp_path)
    kind, _, at = crash.partition(":")
    in_flight = [int(at)] if kind == "model" else []
    assert sorted(counts["researcher"]) == sorted(base["researcher"] + in_flight), counts
    assert counts["hr"] == base["hr"], "the root's model turns were repeated"
    # A lookup is killed before its effect, so every lookup ran exactly once, journaled ones
    # replayed rather than run again.
    assert counts["lookups"] == base["lookups"], counts
