"""Steps across processes: two resumes and a SIGKILL, and the step's side effect happened once."""

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

WORKER = Path(__file__).with_name("step_worker.py")
KEYS = Keyring.generate("steps")


def _go(tmp: Path, framework: str, phase: str, crash: str = "none") -> dict[str, Any] | None:
    env = {**os.environ, "CONTINUATIONS_SIGNING_KEYS": KEYS.export()}
    done = subprocess.run(
        [sys.executable, str(WORKER), phase, "--framework", framework,
         "--store", f"sqlite:///{tmp / 'runs.db'}", "--run-id", "onboarding-1",
         "--ledger", str(tmp / "ledger.jsonl"), "--result", str(tmp / "out.json"),
         "--crash", crash],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    if crash != "none":
        assert done.returncode == -signal.SIGKILL, done.stderr
        return None
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads((tmp / "out.json").read_text())
    return result


@pytest.mark.parametrize("framework", ["pydantic-ai", "strands"])
@pytest.mark.parametrize(
    "killed",
    ["first-entry", "third-entry"],
    ids=["killed-in-the-first-run", "killed-in-the-second-resume"],
)
def test_a_step_runs_once_across_two_resumes_and_a_sigkill(
    framework: str, killed: str, tmp_path: Path
) -> None:
    """The body is entered by the run, two resumes and a recovery after SIGKILL (in the first
    run, before the step's call suspended, or in the second resume); its steps ran once and
    each approved transfer ran once."""
    if killed == "first-entry":
        assert _go(tmp_path, framework, "run", crash="payer:0") is None  # after the steps ran
        assert _go(tmp_path, framework, "recover") == {"status": "suspended", "output": None}
    else:
        assert _go(tmp_path, framework, "run") == {"status": "suspended", "output": None}
    assert _go(tmp_path, framework, "resume") == {"status": "suspended", "output": None}
    if killed == "first-entry":
        done = _go(tmp_path, framework, "resume")
    else:
        assert _go(tmp_path, framework, "resume", crash="payer:2") is None  # the payer's last turn
        done = _go(tmp_path, framework, "recover")
    assert done is not None and done["status"] == "completed"
    assert "room on floor 3; told alice's manager" in done["output"]
    book = Ledger(path=tmp_path / "ledger.jsonl")
    assert book.runs("reserve") == [{"floor": 3}], "the reserve step ran again"
    assert book.runs("notify") == [{"who": "alice"}], "the notify step ran again"
    assert book.runs("transfer") == [{"amount": 100}, {"amount": 101}]
