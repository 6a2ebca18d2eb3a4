"""Import time of ``continuations_core`` and start-up of the CLI's ``list`` and ``show``.

Each line is a fresh interpreter, timed from the outside (wall clock, and the child's CPU time,
which the machine's load distorts less), the first run discarded. Bytecode is cached in a
private folder (``PYTHONPYCACHEPREFIX``), as an installed package has it, unless the row says
otherwise. The floors, in the same run: an empty interpreter, and pydantic defining one model
(the least any package whose public types are pydantic models can cost).
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from continuations_core.stores import SyncStore, open_store
from continuations_core.testing.store_scenarios import make_continuation

from ._agents import KEYS
from ._config import Config
from ._report import Figure, fmt_ms, fmt_ratio, summarize

__all__ = ["measure"]

PYDANTIC_FLOOR = "from pydantic import BaseModel\nclass M(BaseModel):\n    x: int"
#: Continuations in the store the CLI lists.
CLI_STORE_SIZE = 20


def _time(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU milliseconds of one child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return wall * 1000, cpu * 1000


def _cli_store(tmp: Path) -> tuple[str, str]:
    url = f"sqlite:///{tmp / 'cli-bench.db'}"
    with SyncStore(open_store(url)) as store:
        ids = [store.save(make_continuation(KEYS)).id for _ in range(CLI_STORE_SIZE)]
    return url, ids[-1]


def measure(cfg: Config) -> list[Figure]:
    """Time the interpreter floors, the package import and the CLI start-up."""
    cached = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    cached["PYTHONPYCACHEPREFIX"] = str(cfg.tmp / "pycache")
    uncached = {**cached, "PYTHONDONTWRITEBYTECODE": "1"}
    uncached["PYTHONPYCACHEPREFIX"] = str(cfg.tmp / "pycache-empty")
    url, show_id = _cli_store(cfg.tmp)
    py = [sys.executable]
    cli = [*py, "-m", "continuations_core"]
    rows = {
        "empty interpreter (`python -c pass`)": ([*py, "-c", "pass"], cached),
        "floor: pydantic, one model": ([*py, "-c", PYDANTIC_FLOOR], cached),
        "`import continuations_core`": ([*py, "-c", "import continuations_core"], cached),
        "`import continuations_core`, no bytecode cache": (
            [*py, "-c", "import continuations_core"],
            uncached,
        ),
        f"`continuations list` ({CLI_STORE_SIZE} stored)": ([*cli, "list", "--store", url], cached),
        "`continuations show ID`": ([*cli, "show", "--store", url, show_id], cached),
    }
    samples: dict[str, dict[str, list[float]]] = {name: {"wall": [], "cpu": []} for name in rows}
    for rep in range(1 + max(cfg.import_reps, 1)):  # the first round fills the bytecode cache
        for name, (argv, env) in rows.items():
            wall, cpu = _time(argv, env)
            if rep >= 1:
                samples[name]["wall"].append(wall)
                samples[name]["cpu"].append(cpu)
    floor = summarize(samples["floor: pydantic, one model"]["cpu"]).median
    fig = Figure(
        key="imports",
        title="Import and CLI start-up time",
        columns=["what", "wall (ms)", "CPU (ms)", "CPU ÷ pydantic floor"],
        raw={"samples_ms": samples, "reps": cfg.import_reps},
    )
    for name, cell in samples.items():
        clock, spent = summarize(cell["wall"]), summarize(cell["cpu"])
        fig.rows.append([name, fmt_ms(clock), fmt_ms(spent), fmt_ratio(spent.median / floor)])
    fig.notes.append(
        "Fresh interpreters; the first round is discarded. Bytecode cached as in an installed "
        "package, except the row that says not (every module compiled from source, as with "
        "`PYTHONDONTWRITEBYTECODE=1` and no cache). Target: `import continuations_core` "
        "≤150 ms."
    )
    return [fig]
