"""Pydantic AI names and (de)serialization, kept in one place.

Everything here depends on the Pydantic AI release (pinned to ``pydantic-ai-slim>=2.68,<3``).
The rest of the adapter goes through these helpers, so a rename upstream is fixed here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pydantic_core
from pydantic import TypeAdapter, ValidationError
from pydantic_ai import Agent, ModelMessagesTypeAdapter, RunContext, RunUsage
from pydantic_ai.capabilities import AbstractCapability
from pydantic_ai.capabilities.abstract import leaf_capabilities
from pydantic_ai.messages import ModelMessage, ModelResponse, ToolCallPart, ToolReturn
from pydantic_ai.run import AgentRunResult
from pydantic_ai.tools import ToolDefinition
from pydantic_ai.toolsets import AbstractToolset, FunctionToolset
from pydantic_ai.toolsets.abstract import ToolsetTool
from pydantic_ai.toolsets.function import FunctionToolsetTool

from continuations_core import ApprovalSpec, approval_spec
from continuations_core.spi import digest

FRAMEWORK = "pydantic-ai"

_USAGE = TypeAdapter(RunUsage)
_TOOL_RETURN: TypeAdapter[ToolReturn[Any]] = TypeAdapter(ToolReturn)
_ANY_RESULT: TypeAdapter[AgentRunResult[Any]] = TypeAdapter(AgentRunResult[Any])


def dump_messages(messages: list[ModelMessage]) -> list[Any]:
    """Serialize a message history with Pydantic AI's own adapter."""
    dumped: list[Any] = ModelMessagesTypeAdapter.dump_python(messages, mode="json")
    return dumped


#: Messages at the end of a reused prefix that are dumped again all the same: Pydantic AI may
#: still add to the newest messages of a history in place.
_REDUMPED = 2


@dataclass
class HistoryDumps:
    """A run's dumped messages by position, so a step dumps only the messages that are new.

    A durable run serializes its history at every step; dumping all of it each time would
    cost as much as the history is long. Messages are reused while the history holds the very
    same message objects (a history processor that rebuilds them makes them dumped again);
    the newest ones are always dumped again, and kept as the same objects when unchanged.
    """

    _messages: list[ModelMessage] = field(default_factory=list)
    _dumped: list[Any] = field(default_factory=list)

    def dump(self, messages: list[ModelMessage]) -> list[Any]:
        """``messages`` serialized as :func:`dump_messages` does (a new list, shared items)."""
        same, limit = 0, min(len(messages), len(self._messages))
        while same < limit and messages[same] is self._messages[same]:
            same += 1
        keep = max(same - _REDUMPED, 0)
        fresh = dump_messages(messages[keep:])
        for i in range(keep, same):
            if fresh[i - keep] == self._dumped[i]:
                fresh[i - keep] = self._dumped[i]
        dumped = [*self._dumped[:keep], *fresh]
        self._messages, self._dumped = list(messages), dumped
        return list(dumped)


def load_messages(data: list[Any]) -> list[ModelMessage]:
    """Rebuild a message history serialized by :func:`dump_messages`."""
    return ModelMessagesTypeAdapter.validate_python(data)


def build_message_adapter() -> None:
    """Build Pydantic AI's message validator and serializer now (it builds them on first use)."""
    dump_messages(load_messages([]))


def dump_usage(usage: RunUsage) -> dict[str, Any]:
    """Serialize run usage."""
    dumped: dict[str, Any] = _USAGE.dump_python(usage, mode="json")
    return dumped


def load_usage(data: dict[str, Any] | None) -> RunUsage:
    """Rebuild run usage (an empty one for ``None``)."""
    return _USAGE.validate_python(data) if data else RunUsage()


def dump_tool_result(value: Any) -> dict[str, Any]:
    """Record a tool's return value so a resumed step can replay it without running the tool."""
    if isinstance(value, ToolReturn):
        return {"tool_return": _TOOL_RETURN.dump_python(value, mode="json")}
    return {"value": pydantic_core.to_jsonable_python(value, bytes_mode="base64")}


def load_tool_result(data: dict[str, Any]) -> Any:
    """Rebuild a value recorded by :func:`dump_tool_result`."""
    if "tool_return" in data:
        return _TOOL_RETURN.validate_python(data["tool_return"])
    return data.get("value")


def jsonable(value: Any) -> Any:
    """A JSON-compatible copy of ``value`` (a prompt: text, or content parts with bytes)."""
    return pydantic_core.to_jsonable_python(value, bytes_mode="base64", fallback=repr)


def dump_run_result(result: AgentRunResult[Any]) -> dict[str, Any]:
    """Serialize a completed sub-agent run for the journal of its delegating call."""
    dumped: dict[str, Any] = _ANY_RESULT.dump_python(result, mode="json")
    return dumped


def load_run_result(data: dict[str, Any], output_type: Any) -> AgentRunResult[Any]:
    """Rebuild a journaled run result, typing its output as the agent's output type if possible."""
    if isinstance(output_type, type):
        try:
            typed: AgentRunResult[Any] = TypeAdapter(AgentRunResult[output_type]).validate_python(
                data
            )
            return typed
        except (ValidationError, TypeError, pydantic_core.SchemaError):
            pass
    return _ANY_RESULT.validate_python(data)


def fingerprint(tool_defs: list[ToolDefinition]) -> dict[str, str]:
    """Digest each function tool's parameter schema, keyed by tool name."""
    return {td.name: digest(td.parameters_json_schema) for td in tool_defs}


def last_response(messages: list[ModelMessage]) -> ModelResponse | None:
    """The last model response of a history, if the history ends with one."""
    if messages and isinstance(messages[-1], ModelResponse):
        return messages[-1]
    return None


def is_function_toolset(toolset: AbstractToolset[Any]) -> bool:
    """Whether ``toolset`` is a leaf holding Python functions (``FunctionToolset``)."""
    return isinstance(toolset, FunctionToolset)


def resolve_tool(
    leaf: AbstractToolset[Any], name: str, tool: ToolsetTool[Any]
) -> tuple[Any, ApprovalSpec | None] | None:
    """The function a call to leaf toolset ``leaf`` runs, and its approval spec.

    Function toolsets are resolved by the name the toolset holds the tool under (a tool's own
    ``prepare`` may have renamed it). Other leaves (MCP servers, external tools) run no marked
    Python function: ``(None, None)``. ``None`` means a function toolset that does not hold the
    tool it was called for, so the gate cannot tell what would run.
    """
    if not isinstance(leaf, FunctionToolset):
        return None, None
    original = (tool.original_name if isinstance(tool, FunctionToolsetTool) else None) or name
    found = leaf.tools.get(original)
    if found is None:
        return None
    spec = approval_spec(found.function)
    if spec is None and found.requires_approval:
        spec = ApprovalSpec()
    return found.function, spec


def function_tool(agent: Agent[Any, Any], name: str) -> Any:
    """The function an agent registered as tool ``name`` (for direct calls in tests)."""
    found: list[Any] = []

    def visit(leaf: AbstractToolset[Any]) -> None:
        if isinstance(leaf, FunctionToolset) and name in leaf.tools:
            found.append(leaf.tools[name].function)

    for toolset in agent.toolsets:
        toolset.apply(visit)
    return found[0] if found else None


def is_run_context(value: Any) -> bool:
    """Whether ``value`` is Pydantic AI's ``RunContext`` (not part of a call's args)."""
    return isinstance(value, RunContext)


def call_ids(response: ModelResponse) -> list[str]:
    """The tool-call ids of a model response, in order."""
    return [part.tool_call_id for part in response.parts if isinstance(part, ToolCallPart)]


def model_turn(messages: list[ModelMessage]) -> int:
    """The index of the last model response in ``messages`` (the step whose calls run now)."""
    return sum(1 for m in messages if isinstance(m, ModelResponse)) - 1


def capabilities_of(agent: Agent[Any, Any]) -> list[AbstractCapability[Any]]:
    """The leaf capabilities an agent was built with."""
    return list(leaf_capabilities(agent.root_capability))


OutputTypeOf = Callable[[Agent[Any, Any]], Any]


def output_type_of(agent: Any) -> Any:
    """The agent's declared output type, or ``None`` when it is not a plain type."""
    return getattr(agent, "output_type", None)
