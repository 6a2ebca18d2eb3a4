"""Suspend + resume latency by nesting depth (DESIGN section 7, "Nesting").

At depth ``d`` a chain of ``d`` delegating agents sits above a leaf whose model calls a gated
tool. One repetition times, per framework and depth:

- ``plain``: the same tree, ungated and without the capability, run by the framework;
- ``suspend``: the adapter's ``run`` until it suspends, plus ``to_json`` of the continuation;
- ``resume``: ``Continuation.from_json``, the approval, and the adapter's ``resume`` (with a
  freshly built agent tree, as another process would have) to completion.

Without a store: ``resume(..., single_use=False)``, so the figure is the envelope itself.
"""

from __future__ import annotations

import time

from continuations_core import Continuation
from continuations_core.testing.spec import Ledger

from ._agents import (
    KEYS,
    PROMPT,
    approve_all,
    bare,
    chain_spec,
    check,
    harness,
    native_run,
    run_kwargs,
    suspended,
)
from ._config import Config
from ._report import Figure, fmt_ms, fmt_ratio, summarize

__all__ = ["measure"]


async def _once(framework: str, depth: int) -> dict[str, float]:
    h = harness(framework)
    spec = chain_spec(depth)
    ledger = Ledger()
    plain_agent = h.build(bare(spec), ledger)
    start = time.perf_counter()
    await native_run(framework, plain_agent)
    plain = time.perf_counter() - start
    check(ledger, "transfer", 1)

    ledger = Ledger()
    agent = h.build(spec, ledger)
    start = time.perf_counter()
    outcome = await h.run(agent, PROMPT, keys=KEYS, **run_kwargs(framework))
    text = suspended(outcome).to_json()
    suspend = time.perf_counter() - start
    check(ledger, "transfer", 0)

    resumer = h.build(spec, ledger)
    start = time.perf_counter()
    cont = approve_all(Continuation.from_json(text))
    done = await h.resume(resumer, cont, keys=KEYS, single_use=False, **run_kwargs(framework))
    resume = time.perf_counter() - start
    check(ledger, "transfer", 1, done)
    return {"plain": plain * 1000, "suspend": suspend * 1000, "resume": resume * 1000}


async def measure(cfg: Config) -> list[Figure]:
    """Time suspend and resume at every depth, for every framework."""
    samples: dict[str, dict[int, dict[str, list[float]]]] = {}
    for framework in cfg.frameworks:
        by_depth = samples.setdefault(framework, {})
        for rep in range(cfg.warmup + cfg.reps):
            for depth in cfg.depths:  # interleaved across depths
                one = await _once(framework, depth)
                if rep >= cfg.warmup:
                    cell = by_depth.setdefault(depth, {})
                    for key, value in one.items():
                        cell.setdefault(key, []).append(value)
    fig = Figure(
        key="nesting",
        title="Suspend + resume latency by nesting depth",
        columns=[
            "framework",
            "depth",
            "plain run (ms)",
            "suspend (ms)",
            "resume (ms)",
            "suspend+resume ÷ plain",
            "resume added per level (ms)",
        ],
        raw={"samples_ms": samples},
    )
    for framework, by_depth in samples.items():
        base_resume = summarize(by_depth[min(by_depth)]["resume"]).median
        for depth, cell in sorted(by_depth.items()):
            plain, suspend, resume = (summarize(cell[k]) for k in ("plain", "suspend", "resume"))
            per_level = (resume.median - base_resume) / depth if depth else None
            fig.rows.append(
                [
                    framework,
                    str(depth),
                    fmt_ms(plain),
                    fmt_ms(suspend),
                    fmt_ms(resume),
                    fmt_ratio((suspend.median + resume.median) / plain.median),
                    "—" if per_level is None else f"{per_level:.1f}",
                ]
            )
    fig.notes.append(
        "Depth d: d delegating agents above the agent that calls the gated tool. Suspend "
        "includes `to_json`; resume includes `from_json`, the approval and the run to "
        "completion with freshly built agents, without a store (`single_use=False`). Linear "
        "growth shows as a constant per-level figure."
    )
    return [fig]
