"""Framework-neutral descriptions of agents for the conformance suite.

A scenario describes agents as :class:`AgentSpec` values; each adapter's harness turns a spec
into a real agent of its framework, with a scripted model and real tool functions that write
to a :class:`Ledger`. Scenarios then assert on the ledger: which tool bodies actually ran, with
which args and how often, and what each model actually received.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal, Protocol

from .._policies import SuspensionPolicy
from .._protocol import Outcome
from .._schema import Continuation
from .._signing import Keyring

__all__ = [
    "AgentSpec",
    "Call",
    "Harness",
    "Ledger",
    "ToolSpec",
    "final_text",
    "ungated",
]

ToolKind = Literal["plain", "gated", "input", "delegate"]

# Parameter lists the harnesses know how to build typed tool functions for.
PARAMS: dict[str, tuple[tuple[str, type], ...]] = {
    "payment": (("to", str), ("amount", int)),
    "task": (("task", str),),
    "who": (("who", str),),
}


@dataclass(frozen=True)
class Call:
    """One tool call a scripted model makes.

    Attributes:
        tool: The tool name.
        args: The call's args.
        call_id: A fixed call id (a hostile or careless model reusing ids); by default the
            spec's :meth:`AgentSpec.call_id`.
    """

    tool: str
    args: dict[str, Any]
    call_id: str | None = None


@dataclass(frozen=True)
class ToolSpec:
    """A tool of a spec'd agent.

    Attributes:
        name: Tool name.
        kind: ``plain`` runs; ``gated`` is marked ``@requires_approval``; ``input`` asks for a
            value from outside; ``delegate`` runs each of ``children`` in turn from a plain body.
        params: Key of :data:`PARAMS` giving the tool's typed parameters.
        reason: Approval reason, for ``gated`` tools.
        amount_over: Gate only calls whose ``amount`` exceeds this (a ``when`` predicate).
        expires: Decision deadline, for ``gated`` tools.
        children: Sub-agents a ``delegate`` tool runs, in order.
        gate: Mark a ``delegate`` tool ``@requires_approval`` too (with ``reason``).
        concurrent: Run the ``children`` concurrently instead of in order, each with its own
            prompt (``"<task> <index>"``). How is the harness's choice: ``asyncio.gather``, a
            ``TaskGroup``, or threads that carry the tool call's context.
    """

    name: str
    kind: ToolKind = "plain"
    params: str = "who"
    reason: str | None = None
    amount_over: int | None = None
    expires: timedelta | None = None
    children: tuple[AgentSpec, ...] = ()
    gate: bool = False
    concurrent: bool = False


@dataclass(frozen=True)
class AgentSpec:
    """An agent with a scripted model.

    The model's n-th response makes the calls of ``turns[n]`` (in parallel); once the script is
    used up it answers with :func:`final_text` of every tool result it has seen, or, with
    ``output`` set, calls that output function with ``output_args``.

    Attributes:
        bare: Build the agent without the ``Continuations`` capability or plugin (a sub-agent
            whose author forgot it).
        output: An output function (Pydantic AI ``ToolOutput``) the model finishes with; its
            ``kind`` is ``gated`` or ``plain``. Only harnesses with ``output_functions``.
        latency: Seconds the scripted model takes to answer (real time), so concurrent
            sub-agents finish in a chosen order; the model's ledger entry is written when it
            answers.
    """

    name: str
    turns: tuple[tuple[Call, ...], ...]
    tools: tuple[ToolSpec, ...]
    policies: tuple[SuspensionPolicy, ...] = ()
    seconds_per_turn: float = 0.0
    bare: bool = False
    output: ToolSpec | None = None
    latency: float = 0.0

    def call_id(self, turn: int, index: int) -> str:
        """The id of call ``index`` of turn ``turn`` (a fixed ``Call.call_id`` wins)."""
        fixed = self.turns[turn][index].call_id if turn < len(self.turns) else None
        return fixed or f"{self.name}-t{turn}-c{index}"


def final_text(agent: str, results: Sequence[str]) -> str:
    """What a scripted model answers once its script is used up."""
    return f"{agent} done: " + " | ".join(results)


def ungated(spec: AgentSpec) -> AgentSpec:
    """The same agent tree with every ``gated`` tool turned ``plain`` (the native baseline)."""
    tools = tuple(
        replace(
            tool,
            kind="plain" if tool.kind == "gated" else tool.kind,
            children=tuple(ungated(c) for c in tool.children),
        )
        for tool in spec.tools
    )
    return replace(spec, tools=tools, policies=())


@dataclass
class Ledger:
    """What actually happened: tool executions and what each model received.

    With ``path`` set, entries are also appended to a JSON-lines file, so a test can count
    executions across processes.
    """

    path: Path | None = None
    entries: list[dict[str, Any]] = field(default_factory=list)
    now: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def _add(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self.entries.append(entry)
            if self.path is not None:
                with self.path.open("a", encoding="utf-8") as fh:
                    fh.write(json.dumps(entry, sort_keys=True) + "\n")
                    fh.flush()
                    os.fsync(fh.fileno())

    def tool(self, agent: str, tool: str, args: dict[str, Any]) -> None:
        """Record that a tool body ran."""
        self._add({"type": "tool", "agent": agent, "tool": tool, "args": args})

    def model(self, agent: str, turn: int, received: list[str]) -> None:
        """Record the tool results a model received on a turn."""
        self._add({"type": "model", "agent": agent, "turn": turn, "received": received})

    def clock(self) -> float:
        """A fake monotonic clock that scripted models advance."""
        return self.now

    def advance(self, seconds: float) -> None:
        """Advance the fake clock."""
        self.now += seconds

    def all(self) -> list[dict[str, Any]]:
        """Entries from this process, or from the file when it is set (every process)."""
        if self.path is not None and self.path.exists():
            # A line another process is appending right now has no newline yet: leave it for
            # the next read rather than parse half of it.
            text = self.path.read_text(encoding="utf-8")
            lines = text.split("\n")[:-1]  # the part after the last newline is incomplete
            return [json.loads(line) for line in lines if line.strip()]
        return list(self.entries)

    def runs(self, tool: str) -> list[dict[str, Any]]:
        """The args of every execution of ``tool``."""
        return [e["args"] for e in self.all() if e["type"] == "tool" and e["tool"] == tool]

    def count(self, tool: str) -> int:
        """How many times ``tool``'s body ran."""
        return len(self.runs(tool))

    def received(self, agent: str) -> list[str]:
        """Every tool result ``agent``'s model received, in order."""
        out: list[str] = []
        for e in self.all():
            if e["type"] == "model" and e["agent"] == agent:
                out.extend(e["received"])
        return out

    def turns(self, agent: str) -> int:
        """How many times ``agent``'s model was called."""
        return sum(1 for e in self.all() if e["type"] == "model" and e["agent"] == agent)


#: The output function's args a scripted model sends when the spec has ``output``.
OUTPUT_ARGS: dict[str, Any] = {"to": "bob", "amount": 5000}

Expectation = Literal["gate", "refuse"]


class Harness(Protocol):
    """What an adapter provides to run the conformance suite.

    Attributes:
        framework: The adapter's framework name.
        output_functions: Whether the framework has output functions (``AgentSpec.output``).
        wrappers: The ways this framework lets a tool reach an agent other than registering
            it directly (renaming, prefixing, dynamic toolsets, tool objects...), each with what
            the gate must do with a marked tool behind it: ``gate`` (suspend, then run once
            when approved) or ``refuse`` (a typed error, nothing ran).
    """

    framework: str
    output_functions: bool
    wrappers: dict[str, Expectation]

    def build(self, spec: AgentSpec, ledger: Ledger, *, wrapper: str | None = None) -> Any:
        """Build a real agent (and its sub-agents) of this framework from ``spec``.

        With ``wrapper``, the root agent's tools reach it through that wrapper, and its model
        calls them by the names the wrapper gives them.
        """
        ...

    async def run(
        self, agent: Any, prompt: str, *, keys: Keyring | None, **kwargs: Any
    ) -> Outcome[Any]:
        """Start a run with the adapter's ``run`` (``kwargs`` like ``store``)."""
        ...

    async def stream(self, agent: Any, prompt: str) -> Any:
        """Run ``agent`` with the framework's own streaming entry point, to completion."""
        ...

    def direct(self, agent: Any, tool: str) -> Any:
        """What user code would call to invoke the agent's tool ``tool`` directly."""
        ...

    async def resume(
        self, agent: Any, continuation: Continuation, *, keys: Keyring | None, **kwargs: Any
    ) -> Outcome[Any]:
        """Resume with the adapter's ``resume`` (``kwargs`` like ``on_expired``)."""
        ...

    def usage(self, outcome: Outcome[Any]) -> dict[str, int]:
        """Comparable usage totals of a completed outcome (requests, tokens, tool calls)."""
        ...
