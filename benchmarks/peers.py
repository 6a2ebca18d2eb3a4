"""Peers in the same run: LangGraph's checkpointers and the OpenAI Agents SDK's ``RunState``.

The peers are installed from PyPI at the exact versions of ``benchmarks/peers/requirements.txt``
into their own virtualenv, ``benchmarks/.peers-venv`` (created on first use with the project's
``uv``; nothing goes into the project's dependencies or lock file), and measured by
``benchmarks/peers/peer_bench.py`` run with that virtualenv's Python. Our side of the
LangGraph comparison is the step loop run again right before the peers; our side of the
``RunState`` comparison is the same run's size and envelope figure.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from ._backends import POSTGRES_URL
from ._config import Config
from ._report import Figure, fmt_bytes, fmt_ms, fmt_ratio, summarize
from .size import steps_for
from .steps import per_step, sample

__all__ = ["measure", "peer_python"]

HERE = Path(__file__).resolve().parent
REQUIREMENTS = HERE / "peers" / "requirements.txt"
SCRIPT = HERE / "peers" / "peer_bench.py"
VENV = HERE / ".peers-venv"
PEER_TIMEOUT_SECONDS = 3600
LANGGRAPH_BACKENDS = ("memory", "sqlite", "postgres")


def _uv() -> str:
    for candidate in (os.environ.get("UV"), shutil.which("uv"), HERE.parent / ".tools/bin/uv"):
        if candidate and Path(candidate).exists():
            return str(candidate)
    raise RuntimeError("uv not found: run the benchmarks with `scripts/dev bench`")


def peer_python() -> Path:
    """The peers' interpreter, installing them first if the pinned list changed."""
    python = VENV / "bin" / "python"
    stamp = VENV / "requirements.sha256"
    wanted = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    uv = _uv()
    base = getattr(sys, "_base_executable", "") or sys.executable
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}
    env.pop("VIRTUAL_ENV", None)
    print(f"==> installing the peers into {VENV} (pinned, from PyPI)", file=sys.stderr)
    subprocess.run([uv, "venv", "--clear", "--python", base, str(VENV)], check=True, env=env)
    subprocess.run(
        [uv, "pip", "install", "--python", str(python), "-r", str(REQUIREMENTS)],
        check=True,
        env=env,
    )
    stamp.write_text(wanted)
    return python


def _run_peers(cfg: Config) -> dict[str, Any]:
    histories = ",".join(str(steps_for(h)) for h in cfg.histories)
    argv = [
        str(peer_python()),
        str(SCRIPT),
        "--steps",
        str(cfg.peer_steps),
        "--reps",
        str(cfg.reps),
        "--warmup",
        str(cfg.warmup),
        "--history-steps",
        histories,
    ]
    if "postgres" in cfg.backends:
        argv += ["--postgres", POSTGRES_URL]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run(
        argv, env=env, capture_output=True, text=True, timeout=PEER_TIMEOUT_SECONDS, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"the peer benchmark failed:\n{done.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def measure(cfg: Config, figures: dict[str, Figure]) -> list[Figure]:
    """Run the peers and compare them with ours: the loop again now, and the ``size`` figure.

    Our side of the LangGraph comparison is measured again right before the peers, on the
    backends LangGraph has, so that both sides see the same load on the machine.
    """
    backends = tuple(b for b in cfg.backends if b in LANGGRAPH_BACKENDS)
    ours = asyncio.run(sample(cfg, (cfg.peer_steps,), backends))
    peers = _run_peers(cfg)
    versions = ", ".join(f"{k} {v}" for k, v in peers["versions"].items())
    return [_langgraph(cfg, peers, ours, versions), _runstate(peers, figures, versions)]


def _langgraph(cfg: Config, peers: dict[str, Any], ours: Any, versions: str) -> Figure:
    n = cfg.peer_steps
    lg = peers["langgraph"]
    ours_wall, ours_cpu, _ = ours
    fig = Figure(
        key="peers_langgraph",
        title=f"Per-step checkpoint overhead vs LangGraph, {n} sequential tool steps",
        columns=[
            "backend",
            "measure",
            "LangGraph (ms/step)",
            "pydantic-ai (ms/step)",
            "strands (ms/step)",
            "pydantic-ai ÷ LangGraph",
            "strands ÷ LangGraph",
        ],
        raw={
            "langgraph": lg,
            "ours_ms": ours_wall,
            "ours_cpu_ms": ours_cpu,
            "versions": peers["versions"],
        },
    )
    measures = (("wall", lg["samples"], ours_wall), ("CPU", lg["cpu_samples"], ours_cpu))
    for backend in LANGGRAPH_BACKENDS:
        for measure_name, theirs_by, ours_by in measures:
            if backend not in theirs_by:
                continue
            base = summarize(theirs_by["plain"]).median
            theirs = (summarize(theirs_by[backend]).median - base) / n
            mine = [
                per_step(ours_by[fw], backend, n) if backend in ours_by.get(fw, {}) else None
                for fw in _FWS
            ]
            row = [backend, measure_name, f"{theirs:.2f}"]
            row += [f"{v:.2f}" if v is not None else "—" for v in mine]
            row += [fmt_ratio(v / theirs) if v is not None and theirs > 0 else "—" for v in mine]
            fig.rows.append(row)
    fig.notes.append(
        "LangGraph: a scripted model node and the prebuilt `ToolNode`, plain (no checkpointer, "
        f"{fmt_ms(summarize(lg['samples']['plain']))} ms/run) vs `InMemorySaver`, `SqliteSaver`, "
        "`PostgresSaver`; per step = (with − plain) ÷ steps, as for ours, whose loop is run "
        "again right before the peers (same load); CPU is each process's own CPU time. "
        "Target: ours ≤0.33× LangGraph's SqliteSaver. "
        f"Peers: {versions}."
    )
    for backend, reason in lg.get("errors", {}).items():
        fig.notes.append(f"LangGraph {backend} not measured: {reason}")
    return fig


_FWS = ("pydantic-ai", "strands")


def _runstate(peers: dict[str, Any], figures: dict[str, Figure], versions: str) -> Figure:
    fig = Figure(
        key="peers_runstate",
        title="Paused-run document and suspend + resume vs the OpenAI Agents SDK RunState",
        columns=[
            "who",
            "messages",
            "document",
            "suspend (ms)",
            "resume (ms)",
            "suspend+resume ÷ plain run",
        ],
        raw={"openai_agents": peers["openai_agents"]},
    )
    for k, cell in peers["openai_agents"].items():
        s = {key: summarize(values) for key, values in cell.items()}
        pause = s["suspend_ms"].median + s["resume_ms"].median
        fig.rows.append(
            [
                "OpenAI Agents SDK",
                f"{s['messages'].median:.0f}",
                fmt_bytes(s["compact_bytes"].median),
                fmt_ms(s["suspend_ms"]),
                fmt_ms(s["resume_ms"]),
                fmt_ratio(pause / s["plain_ms"].median),
            ]
        )
        for framework, by_history in figures["size"].raw["samples"].items():
            mine = next((c for h, c in by_history.items() if steps_for(h) == int(k)), None)
            if mine is None:
                continue
            m = {key: summarize(values) for key, values in mine.items()}
            ours = m["suspend_ms"].median + m["resume_ms"].median
            fig.rows.append(
                [
                    framework,
                    f"{m['messages'].median:.0f}",
                    fmt_bytes(m["continuation_bytes"].median),
                    fmt_ms(m["suspend_ms"]),
                    fmt_ms(m["resume_ms"]),
                    fmt_ratio(ours / m["plain_ms"].median),
                ]
            )
    fig.notes.append(
        "The same script on each: a conversation of k plain tool calls continued by one call "
        "needing approval; suspend = run to the pause and serialize (`RunState.to_string`, "
        "compact size shown; `Continuation.to_json`), resume = load, approve, run to "
        "completion; plain = the same step without approval. The RunState is not signed; "
        f"ours is. Peers: {versions}."
    )
    return fig
