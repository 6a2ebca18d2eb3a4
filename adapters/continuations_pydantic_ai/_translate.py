"""Pydantic AI names and (de)serialization, kept in one place.

Everything here depends on the Pydantic AI release (pinned to ``pydantic-ai-slim>=2.68,<3``).
The rest of the adapter goes through these helpers, so a rename upstream is fixed here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pydantic_core
from pydantic import TypeAdapter, ValidationError
from pydantic_ai import Agent, ModelMessagesTypeAdapter, RunUsage
from pydantic_ai.capabilities import AbstractCapability
from pydantic_ai.capabilities.abstract import leaf_capabilities
from pydantic_ai.messages import ModelMessage, ModelResponse, ToolReturn
from pydantic_ai.run import AgentRunResult
from pydantic_ai.tools import ToolDefinition
from pydantic_ai.toolsets import AbstractToolset, FunctionToolset

from continuations_core import ApprovalSpec, approval_spec
from continuations_core._durable import is_idempotent
from continuations_core._signing import digest

FRAMEWORK = "pydantic-ai"

_USAGE = TypeAdapter(RunUsage)
_TOOL_RETURN: TypeAdapter[ToolReturn[Any]] = TypeAdapter(ToolReturn)
_ANY_RESULT: TypeAdapter[AgentRunResult[Any]] = TypeAdapter(AgentRunResult[Any])


def dump_messages(messages: list[ModelMessage]) -> list[Any]:
    """Serialize a message history with Pydantic AI's own adapter."""
    dumped: list[Any] = ModelMessagesTypeAdapter.dump_python(messages, mode="json")
    return dumped


def load_messages(data: list[Any]) -> list[ModelMessage]:
    """Rebuild a message history serialized by :func:`dump_messages`."""
    return ModelMessagesTypeAdapter.validate_python(data)


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


def gated_tools(toolset: AbstractToolset[Any]) -> tuple[dict[str, ApprovalSpec], set[str]]:
    """The gated tools of ``toolset`` (``@requires_approval`` or ``requires_approval=True``),
    and the names of the tools marked ``@idempotent(False)``."""
    found: dict[str, ApprovalSpec] = {}
    not_idempotent: set[str] = set()

    def visit(leaf: AbstractToolset[Any]) -> None:
        if isinstance(leaf, FunctionToolset):
            for name, tool in leaf.tools.items():
                spec = approval_spec(tool.function)
                if spec is None and tool.requires_approval:
                    spec = ApprovalSpec()
                if spec is not None:
                    found[name] = spec
                if not is_idempotent(tool.function):
                    not_idempotent.add(name)

    toolset.apply(visit)
    return found, not_idempotent


def capabilities_of(agent: Agent[Any, Any]) -> list[AbstractCapability[Any]]:
    """The leaf capabilities an agent was built with."""
    return list(leaf_capabilities(agent.root_capability))


OutputTypeOf = Callable[[Agent[Any, Any]], Any]


def output_type_of(agent: Any) -> Any:
    """The agent's declared output type, or ``None`` when it is not a plain type."""
    return getattr(agent, "output_type", None)
