"""Conformance harness: builds real Pydantic AI agents from neutral specs.

Used by the shared conformance suite in :mod:`continuations_core.testing`. Models are
Pydantic AI's own ``FunctionModel`` driven by the spec's script; tools are real functions,
registered with ``@agent.tool``/``tool_plain`` and marked with ``@requires_approval``, that
write each execution to the :class:`~continuations_core.testing.spec.Ledger`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from pydantic_ai import Agent, RunContext
from pydantic_ai.exceptions import CallDeferred
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
)
from pydantic_ai.models.function import AgentInfo, FunctionModel

from continuations_core import Continuation, Keyring, Outcome, requires_approval
from continuations_core._policies import default_clock
from continuations_core.testing.spec import PARAMS, AgentSpec, Ledger, ToolSpec, final_text

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


def scripted_model(spec: AgentSpec, ledger: Ledger) -> FunctionModel:
    """A ``FunctionModel`` that plays ``spec.turns`` and records what it receives."""

    def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        turn = sum(1 for m in messages if isinstance(m, ModelResponse))
        last = messages[-1] if messages else None
        received = _results([last]) if isinstance(last, ModelRequest) else []
        ledger.model(spec.name, turn, received)
        ledger.advance(spec.seconds_per_turn)
        if turn < len(spec.turns):
            return ModelResponse(
                parts=[
                    ToolCallPart(call.tool, dict(call.args), tool_call_id=spec.call_id(turn, i))
                    for i, call in enumerate(spec.turns[turn])
                ]
            )
        return ModelResponse(parts=[TextPart(final_text(spec.name, _results(messages)))])

    return FunctionModel(respond, model_name=f"scripted-{spec.name}")


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


class PydanticAIHarness:
    """Builds Pydantic AI agents from specs and runs them through this adapter.

    Args:
        child_harness: Builds sub-agents (another framework's harness, for mixed trees).
    """

    framework = "pydantic-ai"

    def __init__(self, child_harness: Any = None) -> None:
        self.child_harness = child_harness

    def build(self, spec: AgentSpec, ledger: Ledger) -> Agent[None, str]:
        """Build the agent tree of ``spec``."""
        clock = ledger.clock if spec.seconds_per_turn else default_clock
        agent: Agent[None, str] = Agent(
            scripted_model(spec, ledger),
            name=spec.name,
            capabilities=[Continuations(policies=spec.policies, clock=clock)],
        )
        for tool in spec.tools:
            self._add_tool(agent, spec, tool, ledger)
        return agent

    def _add_tool(
        self, agent: Agent[None, str], spec: AgentSpec, tool: ToolSpec, ledger: Ledger
    ) -> None:
        if tool.kind == "delegate":
            builder = self.child_harness or self
            children = [builder.build(child, ledger) for child in tool.children]

            async def delegate(ctx: RunContext[None], **args: Any) -> str:
                ledger.tool(spec.name, tool.name, args)
                outputs = [await run_child(child, args["task"], ctx) for child in children]
                return " / ".join(outputs)

            agent.tool(_typed(delegate, tool.name, tool.params, with_ctx=True))
            return
        if tool.kind == "input":

            def ask(**args: Any) -> str:
                ledger.tool(spec.name, tool.name, args)
                raise CallDeferred(metadata={"question": f"value for {tool.name}"})

            agent.tool_plain(_typed(ask, tool.name, tool.params, with_ctx=False))
            return

        def body(**args: Any) -> str:
            ledger.tool(spec.name, tool.name, args)
            return f"{tool.name}({', '.join(f'{k}={v}' for k, v in sorted(args.items()))}) ok"

        fn = _typed(body, tool.name, tool.params, with_ctx=False)
        if tool.kind == "gated":
            over = tool.amount_over
            when = (lambda a: int(a["amount"]) > over) if over is not None else None
            fn = requires_approval(reason=tool.reason, when=when, expires=tool.expires)(fn)
        agent.tool_plain(fn)

    async def run(self, agent: Any, prompt: str, *, keys: Keyring | None) -> Outcome[Any]:
        """Start a run with :func:`continuations_pydantic_ai.run`."""
        return await run(agent, prompt, keys=keys)

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
