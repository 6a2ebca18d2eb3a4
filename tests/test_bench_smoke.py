"""The benchmarks still run: every figure's code path at tiny sizes, no timing asserted."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PEERS_VENV = ROOT / "benchmarks" / ".peers-venv" / "bin" / "python"
# What `--smoke` measures (peers aside) and the figures each group yields.
FIGURES = {
    "imports",
    "steps",
    "growth",
    "nesting",
    "size",
    "envelope",
    "claims",
    "races",
    "drain",
}
ROW = re.compile(r"^\|( [^|]+ \|)+$|^\|(---\|)+$")


def _bench(tmp_path: Path, *args: str) -> tuple[dict, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--smoke", "--out", str(tmp_path), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "latest.json").read_text())
    return report, (tmp_path / "latest.md").read_text()


def _well_formed(report: dict, markdown: str, keys: set[str]) -> None:
    assert report["failed"] == {}
    assert set(report["figures"]) == keys
    for key, fig in report["figures"].items():
        assert fig["rows"], f"{key} has no rows"
        assert all(len(row) == len(fig["columns"]) for row in fig["rows"]), key
        assert all(cell.strip() for row in fig["rows"] for cell in row), key
        assert fig["raw"], f"{key} kept no raw samples"
        assert f"### {fig['title']}" in markdown
    tables = [line for line in markdown.splitlines() if line.startswith("|")]
    assert tables and all(ROW.match(line) for line in tables)
    assert "load average" in markdown.lower()
    assert "not results" in markdown  # one repetition is labelled as such


def test_every_figure_runs_at_smoke_size(tmp_path: Path) -> None:
    """`python -m benchmarks --smoke` produces every figure as a well-formed table and JSON."""
    report, markdown = _bench(tmp_path, "--backends", "memory,sqlite")
    _well_formed(report, markdown, FIGURES)
    steps = report["figures"]["steps"]
    assert {row[2] for row in steps["rows"]} == {"plain", "capability", "memory", "sqlite"}
    assert {row[0] for row in steps["rows"]} == {"pydantic-ai", "strands"}
    assert [row[0] for row in report["figures"]["claims"]["rows"]] == ["memory", "sqlite"]
    assert [row[0] for row in report["figures"]["drain"]["rows"]] == ["sqlite"]


@pytest.mark.skipif(not PEERS_VENV.exists(), reason="peers not installed: run scripts/dev bench")
def test_peer_figures_run_at_smoke_size(tmp_path: Path) -> None:
    """The LangGraph and OpenAI Agents figures build from the peer script's real output."""
    args = ("--backends", "memory,sqlite", "--only", "size", "--only", "peers")
    report, markdown = _bench(tmp_path, *args)
    _well_formed(report, markdown, {"size", "envelope", "peers_langgraph", "peers_runstate"})
    who = {row[0] for row in report["figures"]["peers_runstate"]["rows"]}
    assert who == {"OpenAI Agents SDK", "pydantic-ai", "strands"}
    rows = report["figures"]["peers_langgraph"]["rows"]
    assert {(row[0], row[1]) for row in rows} == {
        (backend, measure) for backend in ("memory", "sqlite") for measure in ("wall", "CPU")
    }
