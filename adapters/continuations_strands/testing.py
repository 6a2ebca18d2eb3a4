"""Conformance harness: builds real Strands agents from neutral specs.

Used by the shared conformance suite in :mod:`continuations_core.testing`. The model is a small
scripted Strands ``Model`` that plays the spec's turns; tools are real ``@tool`` functions,
marked with ``@requires_approval``, that write each execution to the
:class:`~continuations_core.testing.spec.Ledger`.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import json
from collections.abc import AsyncGenerator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, cast

from strands import Agent, Plugin, tool
from strands.models import Model
from strands.tools.tools import PythonAgentTool
from strands.types.tools import ToolContext

from continuations_core import Continuation, Keyring, Outcome, requires_approval
from continuations_core.spi import default_clock
from continuations_core.testing.spec import (
    PARAMS,
    AgentSpec,
    Expectation,
    Ledger,
    ToolSpec,
    final_text,
)

from ._plugin import Continuations
from ._run import resume, run

__all__ = ["ScriptedModel", "StrandsHarness"]


def _results(messages: list[Any]) -> list[str]:
    out: list[str] = []
    for message in messages:
        for block in message.get("content", []):
            result = block.get("toolResult")
            if result:
                out.extend(str(c.get("text", c.get("json", ""))) for c in result.get("content", []))
    return out


class ScriptedModel(Model):
    """A Strands model that plays ``turns`` and then answers with :func:`final_text`."""

    def __init__(
        self,
        name: str,
        turns: Sequence[Sequence[tuple[Any, ...]]],
        *,
        on_call: Callable[[int, list[str]], None] | None = None,
        tokens: tuple[int, int] = (10, 5),
        latency: float = 0.0,
    ) -> None:
        self.name = name
        self.turns = turns
        self.on_call = on_call
        self.tokens = tokens
        self.latency = latency

    def update_config(self, **model_config: Any) -> None:
        """Nothing to configure."""

    def get_config(self) -> dict[str, Any]:
        """No configuration."""
        return {"model_id": f"scripted-{self.name}"}

    async def structured_output(self, *args: Any, **kwargs: Any) -> AsyncGenerator[Any, None]:
        """Not used: Strands asks for structured output through a tool call."""
        for _ in ():
            yield None
        raise NotImplementedError("ScriptedModel does not implement structured_output")

    async def stream(
        self, messages: Any, tool_specs: Any = None, system_prompt: Any = None, **kwargs: Any
    ) -> AsyncGenerator[Any, None]:
        """Stream the next scripted turn as Strands stream events."""
        turn = sum(1 for m in messages if m["role"] == "assistant")
        last = messages[-1] if messages else {}
        if self.latency:
            await asyncio.sleep(self.latency)
        if self.on_call is not None:
            self.on_call(turn, _results([last]) if last.get("role") == "user" else [])
        yield {"messageStart": {"role": "assistant"}}
        if turn < len(self.turns):
            for i, (name, args, *fixed) in enumerate(self.turns[turn]):
                call_id = fixed[0] if fixed else f"{self.name}-t{turn}-c{i}"
                start = {"toolUse": {"name": name, "toolUseId": call_id}}
                yield {"contentBlockStart": {"start": start}}
                yield {"contentBlockDelta": {"delta": {"toolUse": {"input": json.dumps(args)}}}}
                yield {"contentBlockStop": {}}
            yield {"messageStop": {"stopReason": "tool_use"}}
        else:
            yield {"contentBlockStart": {"start": {}}}
            text = final_text(self.name, _results(messages))
            yield {"contentBlockDelta": {"delta": {"text": text}}}
            yield {"contentBlockStop": {}}
            yield {"messageStop": {"stopReason": "end_turn"}}
        i, o = self.tokens
        usage = {"inputTokens": i, "outputTokens": o, "totalTokens": i + o}
        yield {"metadata": {"usage": usage, "metrics": {"latencyMs": 0}}}


def _typed(fn: Callable[..., Any], name: str, params: str, *, context: bool) -> Callable[..., Any]:
    fields = [
        inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=a)
        for n, a in PARAMS[params]
    ]
    if context:
        fields.append(
            inspect.Parameter(
                "tool_context", inspect.Parameter.KEYWORD_ONLY, annotation=ToolContext
            )
        )
    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = f"The {name} tool."
    sig = inspect.Signature(fields, return_annotation=str)
    fn.__signature__ = sig  # type: ignore[attr-defined]
    fn.__annotations__ = {p.name: p.annotation for p in sig.parameters.values()} | {"return": str}
    return fn


async def _run_child(child: Any, task: str) -> str:
    """Run a sub-agent from a plain async tool body, whatever framework built it."""
    if isinstance(child, Agent):
        return str(await child.invoke_async(task)).strip()
    result = await child.run(
        task
    )  # a Pydantic AI agent (duck-typed: adapters never import each other)
    return str(result.output)


def _call_child(child: Any, task: str) -> str:
    """Run a sub-agent from a plain sync tool body."""
    if isinstance(child, Agent):
        return str(child(task)).strip()
    return str(child.run_sync(task).output)


def _prompts(task: str, children: list[Any]) -> list[str]:
    return [f"{task} {i}" for i in range(len(children))]


async def _gather_children(children: list[Any], task: str) -> list[str]:
    """Run sub-agents concurrently from an async tool body: ``asyncio.gather``."""
    prompts = _prompts(task, children)
    return list(
        await asyncio.gather(*(_run_child(c, p) for c, p in zip(children, prompts, strict=True)))
    )


def _thread_children(children: list[Any], task: str) -> list[str]:
    """Run sub-agents concurrently from a sync tool body: one thread each, each started with
    a copy of the tool call's context (the supported way to use threads)."""
    prompts = _prompts(task, children)
    with ThreadPoolExecutor(max_workers=len(children)) as pool:
        futures = [
            pool.submit(contextvars.copy_context().run, _call_child, c, p)
            for c, p in zip(children, prompts, strict=True)
        ]
        return [future.result() for future in futures]


#: How a tool can reach a Strands agent other than ``@tool`` under its own name, and what the
#: gate must do with a marked tool behind it.
WRAPPERS: dict[str, Expectation] = {"renamed": "gate", "python-agent-tool": "refuse"}


class StrandsHarness:
    """Builds Strands agents from specs and runs them through this adapter."""

    framework = "strands"
    output_functions = False
    wrappers = WRAPPERS

    def __init__(
        self,
        *,
        sequential: bool = False,
        delegate: Literal["invoke_async", "call", "as_tool"] = "invoke_async",
        child_harness: Any = None,
        concurrency: Literal["gather", "threads"] = "gather",
    ) -> None:
        self.sequential = sequential
        self.delegate = delegate
        self.child_harness = child_harness
        self.concurrency = concurrency

    def build(self, spec: AgentSpec, ledger: Ledger, *, wrapper: str | None = None) -> Agent:
        """Build the agent tree of ``spec`` (its tools behind ``wrapper``, if given)."""

        def seen(turn: int, received: list[str]) -> None:
            ledger.model(spec.name, turn, received)
            ledger.advance(spec.seconds_per_turn)

        rename = (lambda name: f"send_{name}") if wrapper == "renamed" else str
        turns = [
            [(rename(c.tool), dict(c.args), spec.call_id(n, i)) for i, c in enumerate(turn)]
            for n, turn in enumerate(spec.turns)
        ]
        model = ScriptedModel(spec.name, turns, on_call=seen, latency=spec.latency)
        clock = ledger.clock if spec.seconds_per_turn else default_clock
        kwargs: dict[str, Any] = {}
        if self.sequential:
            from strands.tools.executors import SequentialToolExecutor

            kwargs["tool_executor"] = SequentialToolExecutor()
        plugins: list[Plugin] = (
            [] if spec.bare else [Continuations(policies=spec.policies, clock=clock)]
        )
        return Agent(
            model=model,
            name=spec.name,
            tools=[self._wrapped(spec, t, ledger, wrapper) for t in spec.tools],
            callback_handler=None,
            plugins=plugins,
            **kwargs,
        )

    def _wrapped(self, spec: AgentSpec, t: ToolSpec, ledger: Ledger, wrapper: str | None) -> Any:
        if wrapper is None or t.kind in ("delegate", "input"):
            return self._tool(spec, t, ledger)
        fn = self._function(spec, t, ledger)
        if wrapper == "renamed":
            return tool(name=f"send_{t.name}")(fn)
        if wrapper == "python-agent-tool":
            # A hand-made tool object around a marked function: no gate can see the marker
            # through it, so the function's own guard must refuse.
            def run_use(tool_use: Any, **kwargs: Any) -> dict[str, Any]:
                text = fn(**tool_use["input"])
                return {"toolUseId": tool_use["toolUseId"], "status": "success",
                        "content": [{"text": text}]}  # fmt: skip

            spec_ = tool(fn).tool_spec
            return PythonAgentTool(t.name, spec_, cast(Any, run_use))
        raise ValueError(f"unknown wrapper {wrapper!r}")

    def _tool(self, spec: AgentSpec, t: ToolSpec, ledger: Ledger) -> Any:
        if t.kind == "delegate":
            # A gated delegating tool: marked on its function (below @tool), or on the tool
            # object that as_tool() returns.
            gate: Callable[[Any], Any] = (
                requires_approval(reason=t.reason) if t.gate else (lambda fn: fn)
            )
            builder = self.child_harness or self
            children = [builder.build(child, ledger) for child in t.children]
            if t.concurrent and self.concurrency == "threads":

                def in_threads(**args: Any) -> str:
                    ledger.tool(spec.name, t.name, args)
                    return " / ".join(_thread_children(children, args["task"]))

                return tool(gate(_typed(in_threads, t.name, t.params, context=False)))
            if t.concurrent:

                async def gathered(**args: Any) -> str:
                    ledger.tool(spec.name, t.name, args)
                    return " / ".join(await _gather_children(children, args["task"]))

                return tool(gate(_typed(gathered, t.name, t.params, context=False)))
            if self.delegate == "as_tool" and len(children) == 1:
                return gate(children[0].as_tool(name=t.name, description=f"The {t.name} agent."))
            if self.delegate == "call":

                def call(**args: Any) -> str:
                    ledger.tool(spec.name, t.name, args)
                    return " / ".join(_call_child(child, args["task"]) for child in children)

                return tool(gate(_typed(call, t.name, t.params, context=False)))

            async def delegate(**args: Any) -> str:
                ledger.tool(spec.name, t.name, args)
                outputs = [await _run_child(child, args["task"]) for child in children]
                return " / ".join(outputs)

            return tool(gate(_typed(delegate, t.name, t.params, context=False)))
        if t.kind == "input":

            def ask(tool_context: ToolContext, **args: Any) -> str:
                ledger.tool(spec.name, t.name, args)
                answer = tool_context.interrupt("ask", reason=f"value for {t.name}")
                return str(answer)

            return tool(context=True)(_typed(ask, t.name, t.params, context=True))

        return tool(self._function(spec, t, ledger))

    def _function(self, spec: AgentSpec, t: ToolSpec, ledger: Ledger) -> Any:
        """The plain (or marked, for ``gated``) function of a non-delegating tool."""

        def body(**args: Any) -> str:
            ledger.tool(spec.name, t.name, args)
            return f"{t.name}({', '.join(f'{k}={v}' for k, v in sorted(args.items()))}) ok"

        fn = _typed(body, t.name, t.params, context=False)
        if t.kind == "gated":
            over = t.amount_over
            when = (lambda a: int(a["amount"]) > over) if over is not None else None
            fn = requires_approval(reason=t.reason, when=when, expires=t.expires)(fn)
        return fn

    async def run(
        self, agent: Any, prompt: str, *, keys: Keyring | None, **kwargs: Any
    ) -> Outcome[Any]:
        """Start a run with :func:`continuations_strands.run`."""
        return await run(agent, prompt, keys=keys, **kwargs)

    async def stream(self, agent: Any, prompt: str) -> Any:
        """Run with ``agent.stream_async()`` to completion; return the final result."""
        result = None
        async for event in agent.stream_async(prompt):
            if "result" in event:
                result = event["result"]
        return result

    def direct(self, agent: Any, tool_name: str) -> Any:
        """The tool object registered as ``tool_name`` (what user code would call)."""
        return agent.tool_registry.registry[tool_name]

    async def resume(
        self, agent: Any, continuation: Continuation, *, keys: Keyring | None, **kwargs: Any
    ) -> Outcome[Any]:
        """Resume with :func:`continuations_strands.resume`."""
        return await resume(agent, continuation, keys=keys, **kwargs)

    def usage(self, outcome: Outcome[Any]) -> dict[str, int]:
        """Token totals of a completed outcome."""
        usage = getattr(outcome, "usage", None) or {}
        keys = ("requests", "input_tokens", "output_tokens", "total_tokens")
        return {k: int(usage.get(k, 0)) for k in keys}
