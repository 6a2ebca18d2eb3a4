"""The README's main demo runs offline and shows suspend, review, approve and resume."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from continuations_core._scope import prompt_digest

ROOT = Path(__file__).resolve().parent.parent


def test_hr_demo_runs_across_processes(tmp_path: Path) -> None:
    """The HR demo suspends, shows the nested request, approves it and completes; each tool ran once."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("OPENAI_API_KEY", "CONTINUATIONS_SIGNING_KEYS")
    }
    env["HR_DEMO_DIR"] = str(tmp_path / "demo")
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "hr_demo.py")],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    [ticket] = set(re.findall(r"open_ticket (IT-[0-9a-f]{6})", out))
    run = f"accounts#{prompt_digest(f'payroll admin account for alice (ticket {ticket})')[:12]}.0"
    assert f"path:     open_accounts:hr_0_1@0 > {run} > authorize_account:accounts_1_0@1" in out
    assert "agents:   hr > accounts" in out
    assert '"role": "admin"' in out
    assert "completed: hr: email 'Welcome aboard' sent" in out
    assert "enabled as admin" in out
    log = (tmp_path / "demo" / "tool-calls.log").read_text().splitlines()
    assert sorted(line.split()[0] for line in log) == [
        "authorize_account",
        "create_account",
        "open_ticket",
        "send_email",
    ], "a tool body or the ticket step ran twice"
    assert f"completed: hr: email 'Welcome aboard' sent to alice@example.com; {ticket}:" in out
    key = tmp_path / "demo" / "hr.key"
    assert key.stat().st_mode & 0o777 == 0o600


def _run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


@pytest.mark.parametrize("mixed", [False, True], ids=["strands", "mixed"])
def test_strands_hr_example_across_processes(mixed: bool, tmp_path: Path) -> None:
    """The Strands (and mixed-framework) HR example suspends, is approved and resumes in new processes."""
    env = {k: v for k, v in os.environ.items() if k != "CONTINUATIONS_SIGNING_KEYS"}
    db = tmp_path / "s.db"
    flags = ["--mixed"] if mixed else []
    script = str(ROOT / "examples" / "hr_strands.py")
    started = _run(script, "--db", str(db), *flags, "start", env=env)
    assert "create_account" in started.stdout and "authorize_account" not in started.stdout
    cid = started.stderr.strip().splitlines()[-1]
    shown = _run("-m", "continuations_core", "show", "--store", f"sqlite:///{db}", cid, env=env)
    assert "hr > accounts" in shown.stdout and "authorize_account" in shown.stdout
    _run("-m", "continuations_core", "approve", "--store", f"sqlite:///{db}", cid, "1", env=env)
    resumed = _run(script, "--db", str(db), *flags, "resume", cid, env=env)
    assert resumed.stdout.count("[tool ran]") == 1
    assert "authorize_account user=alice system=payroll role=admin" in resumed.stdout
    assert "completed:" in resumed.stdout and "enabled as admin" in resumed.stdout
