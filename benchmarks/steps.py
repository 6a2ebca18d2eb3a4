"""Step overhead: plain framework vs the capability/plugin vs each store, at N sequential steps.

For each framework and each N, one repetition runs every variant once, in turn (so load drift
hits all of them alike):

- ``plain``: the framework alone (no capability or plugin), its own ``run``/``invoke_async``;
- ``capability``: the adapter's ``run`` with the capability/plugin, no store;
- one per store: the adapter's ``run(..., store=...)``, a durable run that checkpoints.

Per-step overhead is ``(median(variant) - median(plain)) / N``; its growth is the overhead at
the largest N divided by the overhead at the smallest.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

from continuations_core.stores import open_store
from continuations_core.testing.spec import Ledger

from ._agents import KEYS, PROMPT, bare, build, check, harness, loop_spec, native_run, run_kwargs
from ._backends import Unavailable, namespace
from ._config import Config
from ._report import Figure, fmt_ms, fmt_ratio, summarize

__all__ = ["measure", "per_step", "sample"]

Variant = Callable[[int], Awaitable[tuple[float, float]]]
Samples = dict[str, dict[str, dict[int, list[float]]]]


class _Timer:
    """Wall-clock and process CPU milliseconds of a block (CPU is less distorted by load)."""

    def __enter__(self) -> _Timer:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = (time.perf_counter() - self.wall) * 1000
        self.cpu = (time.process_time() - self.cpu) * 1000


def _variants(framework: str, stores: dict[str, Any]) -> dict[str, Variant]:
    h = harness(framework)

    async def plain(steps: int) -> tuple[float, float]:
        ledger = Ledger()
        agent = build(framework, bare(loop_spec(steps)), ledger)
        with _Timer() as timer:
            await native_run(framework, agent)
        check(ledger, "lookup", steps)
        return timer.wall, timer.cpu

    def adapter(store: Any) -> Variant:
        async def go(steps: int) -> tuple[float, float]:
            ledger = Ledger()
            agent = build(framework, loop_spec(steps), ledger)
            kwargs = run_kwargs(framework) | ({} if store is None else {"store": store})
            with _Timer() as timer:
                outcome = await h.run(agent, PROMPT, keys=KEYS, **kwargs)
            check(ledger, "lookup", steps, outcome)
            return timer.wall, timer.cpu

        return go

    out: dict[str, Variant] = {"plain": plain, "capability": adapter(None)}
    out.update({name: adapter(store) for name, store in stores.items()})
    return out


async def sample(
    cfg: Config, steps_list: tuple[int, ...], backends: tuple[str, ...]
) -> tuple[Samples, Samples, dict[str, str]]:
    """Wall and CPU samples of every framework and variant at each N, and what was unavailable."""
    samples: Samples = {}
    cpu: Samples = {}
    unavailable: dict[str, str] = {}
    async with AsyncExitStack() as stack:
        stores: dict[str, Any] = {}
        for backend in backends:
            try:
                url = await stack.enter_async_context(namespace(backend, cfg.tmp))
            except Unavailable as exc:
                unavailable[backend] = str(exc)
                continue
            stores[backend] = await stack.enter_async_context(open_store(url))
        for framework in cfg.frameworks:
            variants = _variants(framework, stores)
            table = samples.setdefault(framework, {name: {} for name in variants})
            cpu_table = cpu.setdefault(framework, {name: {} for name in variants})
            for steps in steps_list:
                for rep in range(cfg.warmup + cfg.reps):
                    for name, variant in variants.items():
                        wall, spent = await variant(steps)
                        if rep >= cfg.warmup:
                            table[name].setdefault(steps, []).append(wall)
                            cpu_table[name].setdefault(steps, []).append(spent)
    return samples, cpu, unavailable


async def measure(cfg: Config) -> list[Figure]:
    """Measure every framework, variant and N; return the overhead and growth tables."""
    samples, cpu, unavailable = await sample(cfg, cfg.steps, cfg.backends)
    return [_overhead_figure(cfg, samples, cpu, unavailable), _growth_figure(cfg, samples, cpu)]


def per_step(samples: dict[str, dict[int, list[float]]], variant: str, steps: int) -> float:
    """Median per-step overhead of ``variant`` over plain, in milliseconds."""
    base = summarize(samples["plain"][steps]).median
    return (summarize(samples[variant][steps]).median - base) / steps


def _overhead_figure(
    cfg: Config, samples: Samples, cpu: Samples, unavailable: dict[str, str]
) -> Figure:
    fig = Figure(
        key="steps",
        title="Run cost: plain framework vs capability vs each store",
        columns=[
            "framework",
            "steps",
            "variant",
            "ms/run",
            "overhead/step (ms)",
            "vs plain",
            "CPU overhead/step (ms)",
            "CPU vs plain",
        ],
        raw={"samples_ms": samples, "cpu_ms": cpu, "unavailable": unavailable},
    )
    for framework, table in samples.items():
        for steps in cfg.steps:
            base = summarize(table["plain"][steps]).median
            cpu_base = summarize(cpu[framework]["plain"][steps]).median
            for name, by_steps in table.items():
                s = summarize(by_steps[steps])
                c = summarize(cpu[framework][name][steps])
                plain = name == "plain"
                over = "—" if plain else f"{per_step(table, name, steps):.2f}"
                cpu_over = "—" if plain else f"{per_step(cpu[framework], name, steps):.2f}"
                fig.rows.append(
                    [
                        framework,
                        str(steps),
                        name,
                        fmt_ms(s),
                        over,
                        fmt_ratio(s.median / base),
                        cpu_over,
                        fmt_ratio(c.median / cpu_base),
                    ]
                )
    fig.notes.append(
        "Scripted model, one tool call per model turn; `capability` is the adapter's `run` "
        "without a store, each store variant is a durable run (checkpoints and tool journal). "
        "Every run's tool executions are checked against its ledger. CPU is this process's "
        "CPU time (it leaves out the Postgres and Redis servers' own work, and is less "
        "distorted by other load on the machine than the wall clock)."
    )
    for backend, reason in unavailable.items():
        fig.notes.append(f"Not measured: {backend} ({reason}).")
    return fig


def _growth_figure(cfg: Config, samples: Samples, cpu: Samples) -> Figure:
    small, large = min(cfg.steps), max(cfg.steps)
    fig = Figure(
        key="growth",
        title=f"Per-step overhead growth ({large} steps ÷ {small} steps)",
        columns=[
            "framework",
            "variant",
            f"overhead/step @{small} (ms)",
            f"overhead/step @{large} (ms)",
            "growth",
            "CPU growth",
        ],
    )
    for framework, table in samples.items():
        for name in table:
            if name == "plain":
                continue
            a, b = per_step(table, name, small), per_step(table, name, large)
            ca, cb = per_step(cpu[framework], name, small), per_step(cpu[framework], name, large)
            fig.raw.setdefault(framework, {})[name] = {small: a, large: b, "cpu": [ca, cb]}
            growth = fmt_ratio(b / a) if a > 0 and b > 0 else "—"
            cpu_growth = fmt_ratio(cb / ca) if ca > 0 and cb > 0 else "—"
            fig.rows.append([framework, name, f"{a:.2f}", f"{b:.2f}", growth, cpu_growth])
    fig.raw["unit"] = "median overhead per step, ms"
    fig.notes.append(
        "Flat is 1.0×: a step then costs the same however long the run already is. A "
        "variant within noise of plain (an overhead at or below zero) shows —."
    )
    return fig
