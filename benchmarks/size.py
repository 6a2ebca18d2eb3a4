"""Continuation size and envelope cost by history length (DESIGN section 7, "Size", "Envelope").

For each framework and history length the plain framework first builds a real conversation
of ``k`` sequential tool steps (untimed, once), about ``2k + 2`` messages. Each repetition
then continues that conversation by one step, a call of the ``transfer`` tool, and measures:

- plain: the framework alone, ungated; no pause: the adapter, ungated (what the capability
  costs on its own); suspend: the adapter until it suspends at the gated call, plus
  ``to_json``; resume: ``from_json``, the approval and ``resume`` (no store) to completion;
- the native state: the suspended frame's history serialized by the framework's own code
  (``ModelMessagesTypeAdapter`` for Pydantic AI, ``take_snapshot(preset="session")`` for
  Strands), its size and its round trip (serialize, parse, restore);
- the continuation's JSON size, and gzip-compressed.
"""

from __future__ import annotations

import gzip
import json
import time
from typing import Any

from continuations_core import Continuation
from continuations_core.testing.spec import AgentSpec, Call, Ledger, ungated

from ._agents import (
    KEYS,
    LOOKUP,
    PAY,
    PROMPT,
    TRANSFER,
    approve_all,
    bare,
    build,
    check,
    harness,
    native_run,
    run_kwargs,
    suspended,
)
from ._config import Config
from ._report import Figure, fmt_bytes, fmt_ms, fmt_ratio, summarize

__all__ = ["history_of", "measure", "steps_for"]

#: Tool steps per run while building a history: Strands' event loop recurses once per tool
#: cycle, and a few hundred steps in one invocation exceed Python's recursion limit.
CHUNK_STEPS = 100


def steps_for(messages: int) -> int:
    """Tool steps before the gated call that give a history of about ``messages`` messages."""
    return max(0, (messages - 2) // 2)


def _native(framework: str, cont: Continuation) -> tuple[int, int, float]:
    """Messages, bytes and round-trip milliseconds of the frame's native state."""
    state = cont.root.state
    if framework == "pydantic-ai":
        from pydantic_ai import ModelMessagesTypeAdapter

        messages = ModelMessagesTypeAdapter.validate_python(state["messages"])
        start = time.perf_counter()
        data = ModelMessagesTypeAdapter.dump_json(messages)
        ModelMessagesTypeAdapter.validate_json(data)
        return len(messages), len(data), (time.perf_counter() - start) * 1000
    from strands import Agent
    from strands.agent.conversation_manager import NullConversationManager
    from strands.types import Snapshot

    agent = Agent(callback_handler=None, conversation_manager=NullConversationManager())
    agent.load_snapshot(Snapshot.from_dict(state["snapshot"]))
    start = time.perf_counter()
    text = json.dumps(agent.take_snapshot(preset="session").to_dict(), separators=(",", ":"))
    agent.load_snapshot(Snapshot.from_dict(json.loads(text)))
    elapsed = (time.perf_counter() - start) * 1000
    return len(agent.messages), len(text.encode()), elapsed


async def history_of(framework: str, k: int) -> tuple[Any, int]:
    """A real conversation of ``k`` sequential ``lookup`` steps, and its model response count.

    The plain framework builds it, at most :data:`CHUNK_STEPS` steps per run, each run
    continuing the conversation of the one before.
    """
    ledger, history, responses, done = Ledger(), None, 0, 0
    while done < k:
        m = min(CHUNK_STEPS, k - done)
        chunk = tuple((Call("lookup", {"who": f"p{done + i}"}),) for i in range(m))
        spec = bare(AgentSpec(name="loop", turns=_skip(responses) + chunk, tools=(LOOKUP,)))
        agent = build(framework, spec, ledger, history=history)
        history = await native_run(framework, agent, history=history)
        responses, done = responses + m + 1, done + m  # the chunk's calls and its answer
    check(ledger, "lookup", k)
    return history, responses


def _skip(responses: int) -> tuple[tuple[Call, ...], ...]:
    # Scripted models play turn n when the conversation holds n responses: earlier turns of
    # the script were played by the runs that built the history.
    return ((),) * responses


async def _once(framework: str, history: Any, responses: int) -> dict[str, float]:
    h = harness(framework)
    tail = AgentSpec(name="loop", turns=(*_skip(responses), (PAY,)), tools=(LOOKUP, TRANSFER))
    pai = {"message_history": history} if framework == "pydantic-ai" else {}
    kwargs = run_kwargs(framework) | pai

    ledger = Ledger()
    plain_agent = build(framework, bare(tail), ledger, history=history)
    start = time.perf_counter()
    await native_run(framework, plain_agent, history=history)
    plain = (time.perf_counter() - start) * 1000
    check(ledger, "transfer", 1)

    ledger = Ledger()
    unpaused = build(framework, ungated(tail), ledger, history=history)
    start = time.perf_counter()
    finished = await h.run(unpaused, PROMPT, keys=KEYS, **kwargs)
    capability = (time.perf_counter() - start) * 1000
    check(ledger, "transfer", 1, finished)

    ledger = Ledger()
    agent = build(framework, tail, ledger, history=history)
    start = time.perf_counter()
    text = suspended(await h.run(agent, PROMPT, keys=KEYS, **kwargs)).to_json()
    suspend = (time.perf_counter() - start) * 1000

    resumer = build(framework, tail, ledger)
    start = time.perf_counter()
    cont = approve_all(Continuation.from_json(text))
    done = await h.resume(resumer, cont, keys=KEYS, single_use=False, **run_kwargs(framework))
    resume = (time.perf_counter() - start) * 1000
    check(ledger, "transfer", 1, done)

    messages, native_bytes, round_trip = _native(framework, cont)
    raw = text.encode()
    return {
        "plain_ms": plain,
        "capability_ms": capability,
        "suspend_ms": suspend,
        "resume_ms": resume,
        "native_round_trip_ms": round_trip,
        "messages": float(messages),
        "native_bytes": float(native_bytes),
        "continuation_bytes": float(len(raw)),
        "gzip_bytes": float(len(gzip.compress(raw))),
    }


async def measure(cfg: Config) -> list[Figure]:
    """Measure size and envelope cost at every history length, for every framework."""
    samples: dict[str, dict[int, dict[str, list[float]]]] = {}
    for framework in cfg.frameworks:
        by_history = samples.setdefault(framework, {})
        built = {n: await history_of(framework, steps_for(n)) for n in cfg.histories}
        for rep in range(cfg.warmup + cfg.reps):
            for n, (history, responses) in built.items():
                one = await _once(framework, history, responses)
                if rep >= cfg.warmup:
                    cell = by_history.setdefault(n, {})
                    for key, value in one.items():
                        cell.setdefault(key, []).append(value)
    return [_size_figure(samples), _envelope_figure(samples)]


def _median(cell: dict[str, list[float]], key: str) -> float:
    return summarize(cell[key]).median


def _size_figure(samples: dict[str, dict[int, dict[str, list[float]]]]) -> Figure:
    fig = Figure(
        key="size",
        title="Continuation size vs the raw native state",
        columns=[
            "framework",
            "messages",
            "native state",
            "continuation",
            "÷ native",
            "gzip ÷ native",
        ],
        raw={"samples": samples},
    )
    for framework, by_history in samples.items():
        for _, cell in sorted(by_history.items()):
            native, ours = _median(cell, "native_bytes"), _median(cell, "continuation_bytes")
            fig.rows.append(
                [
                    framework,
                    f"{_median(cell, 'messages'):.0f}",
                    fmt_bytes(native),
                    fmt_bytes(ours),
                    fmt_ratio(ours / native),
                    fmt_ratio(_median(cell, "gzip_bytes") / native),
                ]
            )
    fig.notes.append(
        "Native state: the suspended frame's history as the framework serializes it (compact "
        "JSON). The continuation is the whole signed document (every frame, pending call, "
        "fingerprint and signature). Budget: ≤1.1×; gzip below 0.5×."
    )
    return fig


def _envelope_figure(samples: dict[str, dict[int, dict[str, list[float]]]]) -> Figure:
    fig = Figure(
        key="envelope",
        title="Envelope cost: suspend + resume overhead vs the native history round trip",
        columns=[
            "framework",
            "messages",
            "plain run (ms)",
            "no pause (ms)",
            "suspend (ms)",
            "resume (ms)",
            "envelope (ms)",
            "native round trip (ms)",
            "envelope ÷ round trip",
        ],
    )
    for framework, by_history in samples.items():
        for _, cell in sorted(by_history.items()):
            s: Any = {k: summarize(cell[k]) for k in cell}
            pause = s["suspend_ms"].median + s["resume_ms"].median
            overhead = pause - s["capability_ms"].median
            trip = s["native_round_trip_ms"]
            fig.raw.setdefault(framework, {})[int(s["messages"].median)] = {
                "envelope_ms": overhead,
                "native_round_trip_ms": trip.median,
            }
            fig.rows.append(
                [
                    framework,
                    f"{s['messages'].median:.0f}",
                    fmt_ms(s["plain_ms"]),
                    fmt_ms(s["capability_ms"]),
                    fmt_ms(s["suspend_ms"]),
                    fmt_ms(s["resume_ms"]),
                    fmt_ms(overhead),
                    fmt_ms(trip),
                    fmt_ratio(overhead / trip.median),
                ]
            )
    fig.notes.append(
        "Each run continues a conversation of that many messages by one tool call. Plain: the "
        "framework alone, ungated. No pause: the adapter, ungated (the capability's own "
        "cost). Envelope: suspend + resume (approval included, no store) minus no pause, i.e. "
        "what stopping and resuming adds. Native round trip: serialize, parse and restore the "
        "same history with the framework's own code. Budget: envelope ≤1.2× the round trip."
    )
    return fig
