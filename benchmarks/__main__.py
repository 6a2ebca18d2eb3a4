"""``python -m benchmarks`` (or ``scripts/dev bench``): measure, print and save every figure.

Options: ``--quick`` (fewer sizes), ``--smoke`` (tiny sizes, to check the code paths),
``--reps N``, ``--only KEY`` (repeatable: imports, steps, nesting, size, claims, races, drain, peers),
``--no-peers`` and ``--out DIR`` (default ``benchmarks/results``). Writes ``latest.md`` and
``latest.json`` (the raw samples) there; exits 1 if any figure failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from ._config import FULL, QUICK, SMOKE, Config
from ._report import MIN_REPS, Figure, machine

GROUPS = ("imports", "steps", "nesting", "size", "claims", "races", "drain", "peers")
RESULTS = Path(__file__).resolve().parent / "results"


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/dev bench", description=__doc__)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="fewer sizes (10 and 50 steps, ...)")
    size.add_argument("--smoke", action="store_true", help="tiny sizes: check the code paths")
    parser.add_argument("--reps", type=int, default=None, help="timed repetitions per cell")
    parser.add_argument("--only", action="append", choices=GROUPS, help="measure only these")
    parser.add_argument("--no-peers", action="store_true", help="skip LangGraph and OpenAI Agents")
    parser.add_argument("--backends", default=None, help="comma-separated, e.g. memory,sqlite")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where to write the results")
    return parser.parse_args(argv)


def _config(args: argparse.Namespace, tmp: Path) -> Config:
    cfg = SMOKE if args.smoke else QUICK if args.quick else FULL
    cfg = replace(cfg, tmp=tmp)
    if args.reps is not None:
        cfg = replace(cfg, reps=args.reps)
    if args.backends:
        cfg = replace(cfg, backends=tuple(b.strip() for b in args.backends.split(",")))
    if args.no_peers:
        cfg = replace(cfg, peers=False)
    elif args.only and "peers" in args.only:
        cfg = replace(cfg, peers=True)  # asked for by name, even at smoke size
    return cfg


def _groups(cfg: Config, only: list[str] | None) -> list[str]:
    chosen = [g for g in GROUPS if only is None or g in only]
    return [g for g in chosen if g != "peers" or cfg.peers]


def _measure(group: str, cfg: Config, done: dict[str, Figure]) -> list[Figure]:
    from . import claims, drain, imports, nesting, peers, races, size, steps

    jobs: dict[str, Callable[[], list[Figure]]] = {
        "imports": lambda: imports.measure(cfg),
        "steps": lambda: asyncio.run(steps.measure(cfg)),
        "nesting": lambda: asyncio.run(nesting.measure(cfg)),
        "size": lambda: asyncio.run(size.measure(cfg)),
        "claims": lambda: asyncio.run(claims.measure(cfg)),
        "races": lambda: asyncio.run(races.measure(cfg)),
        "drain": lambda: asyncio.run(drain.measure(cfg)),
        "peers": lambda: peers.measure(cfg, done),
    }
    if group == "peers" and "size" not in done:
        raise RuntimeError("the RunState figure compares with `size`: measure it too")
    return jobs[group]()


def _header(cfg: Config, info: dict[str, Any]) -> str:
    load = ", ".join(str(x) for x in info["loadavg"])
    lines = [
        "## Benchmarks",
        "",
        f"Measured {info['date']} on {info['cpus']} CPUs ({info['platform']}, Python "
        f"{info['python']}); load average at the start: {load}.",
        "",
        f"Medians of {cfg.reps} repetitions after {cfg.warmup} discarded warm-up "
        "repetition(s); ± is half the interquartile range. Every ratio compares numbers from "
        "this one run on this one machine. Absolute times depend on the machine and on what "
        "else runs on it (a load average above the CPU count means the benchmarks competed "
        "for the CPUs, which inflates absolute times and spreads; compare ratios).",
    ]
    if cfg.reps < MIN_REPS:
        lines += ["", f"**Fewer than {MIN_REPS} repetitions: these numbers are not results.**"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks; return 0, or 1 if a figure failed."""
    args = _parse(argv)
    with tempfile.TemporaryDirectory(prefix="continuations-bench-") as scratch:
        tmp = Path(scratch)
        # Resumes without store= must never touch the user's default store.
        os.environ["CONTINUATIONS_STORE"] = f"sqlite:///{tmp / 'default-store.db'}"
        cfg = _config(args, tmp)
        info = machine()
        print(_header(cfg, info), flush=True)
        done: dict[str, Figure] = {}
        failed: dict[str, str] = {}
        seconds: dict[str, float] = {}
        for group in _groups(cfg, args.only):
            print(f"==> {group}", file=sys.stderr, flush=True)
            start = time.perf_counter()
            try:
                figures = _measure(group, cfg, done)
            except Exception:
                failed[group] = traceback.format_exc()
                print(f"\n### {group}: FAILED\n\n```\n{failed[group]}```", flush=True)
                continue
            finally:
                seconds[group] = round(time.perf_counter() - start, 1)
            for fig in figures:
                done[fig.key] = fig
                print("\n" + fig.markdown(), flush=True)
        info["loadavg_end"] = machine()["loadavg"]
    end_load = ", ".join(str(x) for x in info["loadavg_end"])
    footer = f"\nLoad average at the end: {end_load}."
    print(footer)
    markdown = "\n\n".join(
        [_header(cfg, info), *(f.markdown() for f in done.values()), footer.strip()]
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latest.md").write_text(markdown + "\n", encoding="utf-8")
    report = {
        "machine": info,
        "config": {k: v for k, v in vars(cfg).items() if k != "tmp"},
        "seconds": seconds,
        "failed": failed,
        "figures": {key: fig.as_json() for key, fig in done.items()},
    }
    (args.out / "latest.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    print(f"==> wrote {args.out / 'latest.md'} and latest.json", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
