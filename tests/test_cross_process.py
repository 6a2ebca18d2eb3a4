"""Suspend in one OS process, decide in another, resume in a third (G1)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from _harnesses import HARNESSES

from continuations_core import Continuation, Keyring
from continuations_core.testing.spec import Ledger

WORKER = Path(__file__).with_name("xproc_worker.py")
KEYS = Keyring.generate("xproc")


def _proc(tmp: Path, *args: str) -> dict[str, Any]:
    env = {**os.environ, "CONTINUATIONS_SIGNING_KEYS": KEYS.export()}
    result = tmp / "result.json"
    done = subprocess.run(
        [sys.executable, str(WORKER), *args, "--result", str(result)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    loaded: dict[str, Any] = json.loads(result.read_text())
    return loaded


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "continuations_core", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("adapter", sorted(HARNESSES))
def test_resume_from_json_file_in_new_process(adapter: str, tmp_path: Path) -> None:
    """A depth-3 run suspended by one process is resumed by another holding only the JSON file."""
    ledger, doc = tmp_path / "ledger.jsonl", tmp_path / "cont.json"
    common = ["--adapter", adapter, "--spec", "chain3", "--ledger", str(ledger)]
    assert _proc(tmp_path, "run", *common, "--file", str(doc))["status"] == "suspended"
    cont = Continuation.from_json(doc.read_text())
    [req] = cont.requests
    assert req.agents == ("level1", "level2", "level3") and req.tool == "transfer"
    doc.write_text(cont.approve(req.path, by="alice").to_json())
    out = _proc(tmp_path, "resume", *common, "--file", str(doc))
    assert out["status"] == "completed" and "level3 done" in out["output"]
    book = Ledger(path=ledger)
    assert book.count("transfer") == 1 and book.count("lookup") == 3


@pytest.mark.parametrize("adapter", sorted(HARNESSES))
def test_resume_from_sqlite_file_in_new_process(adapter: str, tmp_path: Path) -> None:
    """Suspend into SQLite, approve with the CLI in a second process, resume in a third."""
    ledger, url = tmp_path / "ledger.jsonl", f"sqlite:///{tmp_path / 'runs.db'}"
    common = ["--adapter", adapter, "--spec", "chain3", "--ledger", str(ledger), "--store", url]
    cid = _proc(tmp_path, "run", *common)["id"]
    shown = _cli("show", "--store", url, cid)
    assert shown.returncode == 0, shown.stderr
    assert "level1 > level2 > level3" in shown.stdout and '"amount": 5000' in shown.stdout
    approved = _cli("approve", "--store", url, cid, "1", "--by", "alice")
    assert approved.returncode == 0, approved.stderr
    out = _proc(tmp_path, "resume", *common, "--id", cid)
    assert out["status"] == "completed"
    again = subprocess.run(
        [
            sys.executable,
            str(WORKER),
            "resume",
            *common,
            "--id",
            cid,
            "--result",
            str(tmp_path / "r2"),
        ],
        env={**os.environ, "CONTINUATIONS_SIGNING_KEYS": KEYS.export()},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode != 0 and "AlreadyClaimed" in again.stderr
    assert Ledger(path=ledger).count("transfer") == 1


@pytest.mark.parametrize("adapter", sorted(HARNESSES))
def test_policy_state_survives_processes(adapter: str, tmp_path: Path) -> None:
    """EveryNTurns(2) behaves the same when each resume happens in a new process (G7)."""
    ledger, doc = tmp_path / "ledger.jsonl", tmp_path / "cont.json"
    common = ["--adapter", adapter, "--spec", "every2", "--ledger", str(ledger), "--file", str(doc)]
    statuses = [_proc(tmp_path, "run", *common)["status"]]
    turns = [Continuation.from_json(doc.read_text()).root.policy_state["turns"]]
    while statuses[-1] == "suspended" and len(statuses) < 6:
        statuses.append(_proc(tmp_path, "resume", *common)["status"])
        if statuses[-1] == "suspended":
            turns.append(Continuation.from_json(doc.read_text()).root.policy_state["turns"])
    assert statuses == ["suspended", "suspended", "completed"]
    assert turns == [2, 4]
    book = Ledger(path=ledger)
    assert book.count("lookup") == 5 and book.turns("looper") == 6
