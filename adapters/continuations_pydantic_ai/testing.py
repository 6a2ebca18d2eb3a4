"""Conformance harness: builds real Pydantic AI agents from neutral specs.

Used by the shared conformance suite in :mod:`continuations_core.testing`. Models are
Pydantic AI's own ``FunctionModel`` driven by the spec's script; tools are real functions,
registered with ``@agent.tool``/``tool_plain`` and marked with ``@requires_approval``, that
write each execution to the :class:`~continuations_core.testing.spec.Ledger`.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal, cast

from pydantic import TypeAdapter
from pydantic_ai import Agent, RunContext, ToolOutput
from pydantic_ai.exceptions import CallDeferred
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
)
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, FunctionModel
from pydantic_ai.tools import Tool, ToolDefinition
from pydantic_ai.toolsets import AbstractToolset, FunctionToolset
from pydantic_ai.toolsets.abstract import ToolsetTool

from continuations_core import Continuation, Keyring, Outcome, requires_approval
from continuations_core.spi import default_clock
from continuations_core.testing.spec import (
    OUTPUT_ARGS,
    PARAMS,
    AgentSpec,
    Expectation,
    Ledger,
    ToolSpec,
    final_text,
)

from . import _translate as t
from ._capability import Continuations
from ._run import resume, run

__all__ = ["PydanticAIHarness", "scripted_model"]


def _results(messages: list[ModelMessage]) -> list[str]:
    return [
        str(part.content)
        for message in messages
        if isinstance(message, ModelRequest)
        for part in message.parts
        if isinstance(part, ToolReturnPart)
    ]


def scripted_model(
    spec: AgentSpec, ledger: Ledger, *, rename: Callable[[str], str] = str
) -> FunctionModel:
    """A ``FunctionModel`` that plays ``spec.turns`` and records what it receives.

    ``rename`` maps a spec'd tool name to the name the model calls it by (behind a wrapper).
    It streams too, so ``agent.run_stream()`` can be driven.
    """

    async def answer(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        if spec.latency:
            await asyncio.sleep(spec.latency)
        return respond(messages, info)

    def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        turn = sum(1 for m in messages if isinstance(m, ModelResponse))
        last = messages[-1] if messages else None
        received = _results([last]) if isinstance(last, ModelRequest) else []
        ledger.model(spec.name, turn, received)
        ledger.advance(spec.seconds_per_turn)
        if turn < len(spec.turns):
            return ModelResponse(
                parts=[
                    ToolCallPart(
                        rename(call.tool), dict(call.args), tool_call_id=spec.call_id(turn, i)
                    )
                    for i, call in enumerate(spec.turns[turn])
                ]
            )
        if spec.output is not None and info.output_tools:
            call = ToolCallPart(info.output_tools[0].name, dict(OUTPUT_ARGS), tool_call_id="out")
            return ModelResponse(parts=[call])
        return ModelResponse(parts=[TextPart(final_text(spec.name, _results(messages)))])

    async def stream(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[Any]:
        response = await answer(messages, info)
        for i, part in enumerate(response.parts):
            if isinstance(part, ToolCallPart):
                args = json.dumps(part.args_as_dict())
                yield {i: DeltaToolCall(part.tool_name, args, tool_call_id=part.tool_call_id)}
            elif isinstance(part, TextPart):
                yield part.content

    return FunctionModel(answer, stream_function=stream, model_name=f"scripted-{spec.name}")


def _signature(params: str, with_ctx: bool) -> inspect.Signature:
    fields = [
        inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=annotation)
        for name, annotation in PARAMS[params]
    ]
    if with_ctx:
        ctx = inspect.Parameter(
            "ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=RunContext[None]
        )
        fields.insert(0, ctx)
    return inspect.Signature(fields, return_annotation=str)


def _typed(fn: Callable[..., Any], name: str, params: str, *, with_ctx: bool) -> Callable[..., Any]:
    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = f"The {name} tool."
    sig = _signature(params, with_ctx)
    fn.__signature__ = sig  # type: ignore[attr-defined]
    fn.__annotations__ = {p.name: p.annotation for p in sig.parameters.values()} | {"return": str}
    return fn


async def run_child(child: Any, task: str, ctx: RunContext[None]) -> str:
    """Run a sub-agent from a plain tool body, whatever framework built it."""
    if hasattr(
        child, "invoke_async"
    ):  # a Strands agent (duck-typed: adapters never import each other)
        return str(await child.invoke_async(task)).strip()
    result = await child.run(task, usage=ctx.usage)
    return str(result.output)


def call_child(child: Any, task: str) -> str:
    """Run a sub-agent from synchronous code (a thread), whatever framework built it."""
    if hasattr(child, "invoke_async"):
        return str(child(task)).strip()
    return str(child.run_sync(task).output)


#: How a harness runs the children of a ``concurrent`` delegating tool.
Concurrency = Literal["gather", "taskgroup", "threads"]


async def run_children(
    how: Concurrency, children: list[Any], task: str, ctx: RunContext[None]
) -> list[str]:
    """Run sub-agents concurrently from a plain async tool body, each with its own prompt."""
    prompts = [f"{task} {i}" for i in range(len(children))]
    if how == "taskgroup":
        async with asyncio.TaskGroup() as group:
            tasks = [
                group.create_task(run_child(c, p, ctx))
                for c, p in zip(children, prompts, strict=True)
            ]
        return [task.result() for task in tasks]
    if how == "threads":  # asyncio.to_thread carries the tool call's context
        threads = (
            asyncio.to_thread(call_child, c, p) for c, p in zip(children, prompts, strict=True)
        )
        return list(await asyncio.gather(*threads))
    return list(
        await asyncio.gather(
            *(run_child(c, p, ctx) for c, p in zip(children, prompts, strict=True))
        )
    )


#: How a tool can reach a Pydantic AI agent other than ``agent.tool``, and what the gate must
#: do with a marked tool behind it.
WRAPPERS: dict[str, Expectation] = {
    "prefixed": "gate",
    "renamed": "gate",
    "filtered": "gate",
    "prepared": "gate",
    "dynamic": "gate",
    "dynamic-once": "gate",
    "tools-list": "gate",
    "native-flag": "gate",
    "approval-required-leaf": "gate",
    "leaf-calling-marked": "refuse",
}


class PydanticAIHarness:
    """Builds Pydantic AI agents from specs and runs them through this adapter.

    Args:
        child_harness: Builds sub-agents (another framework's harness, for mixed trees).
        concurrency: How a ``concurrent`` delegating tool runs its sub-agents.
    """

    framework = "pydantic-ai"
    output_functions = True
    wrappers = WRAPPERS

    def __init__(self, child_harness: Any = None, concurrency: Concurrency = "gather") -> None:
        self.child_harness = child_harness
        self.concurrency: Concurrency = concurrency

    def build(
        self, spec: AgentSpec, ledger: Ledger, *, wrapper: str | None = None
    ) -> Agent[None, Any]:
        """Build the agent tree of ``spec`` (its tools behind ``wrapper``, if given)."""
        clock = ledger.clock if spec.seconds_per_turn else default_clock
        capabilities = [] if spec.bare else [Continuations(policies=spec.policies, clock=clock)]
        output: Any = str
        if spec.output is not None:
            output = ToolOutput(self._function(spec, spec.output, ledger))
        if wrapper is None:
            agent: Agent[None, Any] = Agent(
                scripted_model(spec, ledger),
                name=spec.name,
                capabilities=capabilities,
                output_type=output,
            )
            for tool in spec.tools:
                self._add_tool(agent, spec, tool, ledger)
            return agent
        rename, toolsets, tools = self._wrapped(spec, ledger, wrapper)
        agent = Agent(
            scripted_model(spec, ledger, rename=rename),
            name=spec.name,
            capabilities=capabilities,
            output_type=output,
            toolsets=toolsets,
            tools=tools,
        )
        if wrapper.startswith("dynamic"):
            inner = toolsets_of(self, spec, ledger)

            @agent.toolset(per_run_step=wrapper == "dynamic")
            def dynamic(ctx: RunContext[None]) -> FunctionToolset[None]:
                return inner

        return agent

    def _wrapped(
        self, spec: AgentSpec, ledger: Ledger, wrapper: str
    ) -> tuple[Callable[[str], str], list[Any], list[Any]]:
        """Toolsets (or tools) holding the spec's tools behind ``wrapper``."""
        if wrapper.startswith("dynamic"):
            return str, [], []
        if wrapper == "tools-list":
            return str, [], [self._function(spec, t, ledger) for t in spec.tools]
        if wrapper == "native-flag":
            return str, [], [Tool(self._function(spec, t, ledger, marked=False),
                                  requires_approval=t.kind == "gated") for t in spec.tools]  # fmt: skip
        if wrapper in ("approval-required-leaf", "leaf-calling-marked"):
            leaf = _CallbackToolset(spec, ledger, marked=wrapper == "leaf-calling-marked")
            if wrapper == "leaf-calling-marked":
                return str, [leaf], []
            over = {t.name: t.amount_over for t in spec.tools if t.kind == "gated"}

            def needs(ctx: RunContext[None], td: ToolDefinition, args: dict[str, Any]) -> bool:
                limit = over.get(td.name, -1)
                return td.name in over and (limit is None or int(args["amount"]) > limit)

            return str, [leaf.approval_required(needs)], []
        inner = toolsets_of(self, spec, ledger)
        if wrapper == "prefixed":
            return (lambda name: f"w_{name}"), [inner.prefixed("w")], []
        if wrapper == "renamed":
            names = {f"send_{t.name}": t.name for t in spec.tools}
            return (lambda name: f"send_{name}"), [inner.renamed(names)], []
        if wrapper == "filtered":
            return str, [inner.filtered(lambda ctx, td: True)], []
        if wrapper == "prepared":

            async def same(ctx: RunContext[None], defs: list[ToolDefinition]) -> list[Any]:
                return defs

            return str, [inner.prepared(same)], []
        raise ValueError(f"unknown wrapper {wrapper!r}")

    def _function(
        self, spec: AgentSpec, tool: ToolSpec, ledger: Ledger, *, marked: bool = True
    ) -> Callable[..., Any]:
        """The plain (or marked, for ``gated``) function of a non-delegating tool."""

        def body(**args: Any) -> str:
            ledger.tool(spec.name, tool.name, args)
            return f"{tool.name}({', '.join(f'{k}={v}' for k, v in sorted(args.items()))}) ok"

        fn = _typed(body, tool.name, tool.params, with_ctx=False)
        if tool.kind == "gated" and marked:
            over = tool.amount_over
            when = (lambda a: int(a["amount"]) > over) if over is not None else None
            fn = requires_approval(reason=tool.reason, when=when, expires=tool.expires)(fn)
        return fn

    def _add_tool(
        self, agent: Agent[None, Any], spec: AgentSpec, tool: ToolSpec, ledger: Ledger
    ) -> None:
        if tool.kind == "delegate":
            builder = self.child_harness or self
            children = [builder.build(child, ledger) for child in tool.children]

            async def delegate(ctx: RunContext[None], **args: Any) -> str:
                ledger.tool(spec.name, tool.name, args)
                if tool.concurrent:
                    outputs = await run_children(self.concurrency, children, args["task"], ctx)
                else:
                    outputs = [await run_child(child, args["task"], ctx) for child in children]
                return " / ".join(outputs)

            fn = _typed(delegate, tool.name, tool.params, with_ctx=True)
            agent.tool(requires_approval(reason=tool.reason)(fn) if tool.gate else fn)
            return
        if tool.kind == "input":

            def ask(**args: Any) -> str:
                ledger.tool(spec.name, tool.name, args)
                raise CallDeferred(metadata={"question": f"value for {tool.name}"})

            agent.tool_plain(_typed(ask, tool.name, tool.params, with_ctx=False))
            return
        agent.tool_plain(self._function(spec, tool, ledger))

    async def run(
        self, agent: Any, prompt: str, *, keys: Keyring | None, **kwargs: Any
    ) -> Outcome[Any]:
        """Start a run with :func:`continuations_pydantic_ai.run`."""
        return await run(agent, prompt, keys=keys, **kwargs)

    async def stream(self, agent: Any, prompt: str) -> Any:
        """Run with ``agent.run_stream()`` to completion."""
        async with agent.run_stream(prompt) as streamed:
            return await streamed.get_output()

    def direct(self, agent: Any, tool: str) -> Any:
        """The function registered for ``tool`` on the agent (what user code would call)."""
        found = t.function_tool(agent, tool)
        if found is None:
            raise KeyError(tool)
        return found

    async def resume(
        self, agent: Any, continuation: Continuation, *, keys: Keyring | None, **kwargs: Any
    ) -> Outcome[Any]:
        """Resume with :func:`continuations_pydantic_ai.resume`."""
        return await resume(agent, continuation, keys=keys, **kwargs)

    def usage(self, outcome: Outcome[Any]) -> dict[str, int]:
        """Requests, tokens and tool calls of a completed outcome."""
        usage = getattr(outcome, "usage", None) or {}
        keys = ("requests", "input_tokens", "output_tokens", "tool_calls")
        return {k: int(usage.get(k, 0)) for k in keys}


def toolsets_of(
    harness: PydanticAIHarness, spec: AgentSpec, ledger: Ledger
) -> FunctionToolset[None]:
    """A function toolset holding the spec's non-delegating tools."""
    toolset: FunctionToolset[None] = FunctionToolset()
    for tool in spec.tools:
        toolset.add_function(harness._function(spec, tool, ledger))
    return toolset


class _CallbackToolset(AbstractToolset[None]):
    """A leaf toolset whose tools are described by JSON Schema and run by a callback, as an
    MCP server's are. With ``marked``, the callback calls a ``@requires_approval`` function
    (which no gate can see from the toolset)."""

    def __init__(self, spec: AgentSpec, ledger: Ledger, *, marked: bool) -> None:
        self.spec, self.ledger, self.marked = spec, ledger, marked
        self.harness = PydanticAIHarness()

    @property
    def id(self) -> str | None:
        return f"callback-{self.spec.name}"

    async def get_tools(self, ctx: RunContext[None]) -> dict[str, ToolsetTool[None]]:
        out: dict[str, ToolsetTool[None]] = {}
        for tool in self.spec.tools:
            properties = {name: {"type": "integer" if kind is int else "string"}
                          for name, kind in PARAMS[tool.params]}  # fmt: skip
            schema = {"type": "object", "properties": properties, "required": list(properties)}
            definition = ToolDefinition(name=tool.name, parameters_json_schema=schema)
            out[tool.name] = ToolsetTool(
                toolset=self,
                tool_def=definition,
                max_retries=1,
                args_validator=cast(Any, TypeAdapter(dict[str, Any]).validator),
            )
        return out

    async def call_tool(
        self, name: str, tool_args: dict[str, Any], ctx: RunContext[None], tool: Any
    ) -> Any:
        spec_tool = next(t for t in self.spec.tools if t.name == name)
        fn = self.harness._function(self.spec, spec_tool, self.ledger, marked=self.marked)
        return fn(**tool_args)
