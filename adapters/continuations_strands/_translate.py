"""Strands names and (de)serialization, kept in one place.

Everything here depends on the Strands release (pinned to ``strands-agents>=1.62,<2``): the
snapshot format, the interrupt-id scheme and where a suspended tool batch is kept.
"""

from __future__ import annotations

import contextvars
import copy
import importlib
from dataclasses import dataclass, field
from typing import Any

from strands import Agent
from strands.tools.structured_output.structured_output_tool import StructuredOutputTool
from strands.types import Snapshot
from strands.types.exceptions import EventLoopException
from strands.types.session import decode_bytes_values, encode_bytes_values

from continuations_core import ContinuationError, ReplayMismatch
from continuations_core.spi import digest

FRAMEWORK = "strands"
#: Snapshot fields a frame keeps; the system prompt comes from the agent definition instead.
SNAPSHOT_FIELDS = (
    "messages",
    "state",
    "conversation_manager_state",
    "interrupt_state",
    "model_state",
)


def take(agent: Agent) -> dict[str, Any]:
    """The agent's session snapshot as JSON-safe data (bytes base64-encoded)."""
    snapshot = agent.take_snapshot(preset="session")
    data: dict[str, Any] = encode_bytes_values(snapshot.to_dict())
    return data


@dataclass
class HistoryDumps:
    """A run's snapshot messages by position, so a step copies only the messages that are new.

    A durable run snapshots its agent at every step; ``take_snapshot`` deep-copies the whole
    history each time, which costs as much as the history is long. Here the snapshot is taken
    without its messages, and messages equal to the ones taken last time (compared in one
    pass) are reused; the rest are copied and encoded as :func:`take` does.
    """

    _seen: list[Any] = field(default_factory=list)  # copies of the messages as taken
    _encoded: list[Any] = field(default_factory=list)

    def take(self, agent: Agent) -> dict[str, Any]:
        """The agent's session snapshot, as :func:`take` returns it."""
        snapshot = agent.take_snapshot(preset="session", exclude=["messages"])
        data: dict[str, Any] = encode_bytes_values(snapshot.to_dict())
        messages = list(agent.messages)
        keep = len(self._seen)
        if len(messages) < keep or messages[:keep] != self._seen:
            keep = 0
            while keep < min(len(messages), len(self._seen)) and (
                messages[keep] == self._seen[keep]
            ):
                keep += 1
        new = copy.deepcopy(messages[keep:])
        self._seen = [*self._seen[:keep], *new]
        self._encoded = [*self._encoded[:keep], *encode_bytes_values(new)]
        data["data"] = {"messages": list(self._encoded), **data["data"]}
        return data


def load(agent: Agent, data: dict[str, Any]) -> None:
    """Restore a snapshot taken by :func:`take`."""
    agent.load_snapshot(Snapshot.from_dict(decode_bytes_values(copy.deepcopy(data))))


def answered(data: dict[str, Any], responses: dict[str, Any]) -> dict[str, Any]:
    """A copy of snapshot ``data`` whose interrupts carry ``responses`` (by interrupt id)."""
    out = copy.deepcopy(data)
    interrupts = out["data"]["interrupt_state"]["interrupts"]
    for interrupt_id, response in responses.items():
        if interrupt_id in interrupts:
            interrupts[interrupt_id]["response"] = response
    return out


def pending_tool_uses(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The tool uses of the suspended batch, by tool-use id."""
    state = data["data"].get("interrupt_state") or {}
    pending = state.get("pending_tool_execution") or {}
    message = pending.get("assistant_message") or {}
    uses: dict[str, dict[str, Any]] = {}
    for block in message.get("content", []):
        use = block.get("toolUse")
        if use:
            uses[str(use["toolUseId"])] = use
    return uses


def snapshot_messages(data: dict[str, Any]) -> list[Any]:
    """The messages of a snapshot taken by :func:`take`."""
    return list(data["data"].get("messages") or [])


def model_turn(messages: Any) -> int:
    """The index of the last model response in ``messages`` (the step whose calls run now)."""
    return sum(1 for m in messages if m.get("role") == "assistant") - 1


def is_activated(data: dict[str, Any]) -> bool:
    """Whether the snapshot is suspended on interrupts."""
    return bool((data["data"].get("interrupt_state") or {}).get("activated"))


def tool_use_id_of(interrupt_id: str) -> str | None:
    """The tool-use id inside a per-call interrupt id (``v1:<source>:<toolUseId>:<uuid>``)."""
    parts = interrupt_id.split(":")
    if len(parts) >= 4 and parts[0] == "v1":
        return ":".join(parts[2:-1])
    return None


def tool_schemas(agent: Agent) -> dict[str, dict[str, Any]]:
    """Each tool's input JSON Schema, by tool name."""
    schemas: dict[str, dict[str, Any]] = {}
    for spec in agent.tool_registry.get_all_tool_specs():
        schema = spec.get("inputSchema", {})
        schemas[spec["name"]] = dict(schema.get("json", schema))
    return schemas


def fingerprint(agent: Agent) -> dict[str, str]:
    """Digest each tool's input schema, keyed by tool name."""
    return {name: digest(schema) for name, schema in tool_schemas(agent).items()}


def usage_of(agent: Agent) -> dict[str, int]:
    """Token totals of the agent's current invocation."""
    usage = agent.event_loop_metrics.accumulated_usage
    return {
        "input_tokens": int(usage.get("inputTokens", 0)),
        "output_tokens": int(usage.get("outputTokens", 0)),
        "total_tokens": int(usage.get("totalTokens", 0)),
    }


def import_path(obj: type[Any] | None) -> str | None:
    """``module:qualname`` of a class, to find a structured output model again on resume."""
    if obj is None:
        return None
    return f"{obj.__module__}:{obj.__qualname__}"


def resolve(path: str | None) -> Any:
    """Import the object named by :func:`import_path`."""
    if not path:
        return None
    module, _, qualname = path.partition(":")
    target: Any = importlib.import_module(module)
    for part in qualname.split("."):
        target = getattr(target, part)
    return target


#: The structured output model of the run being started or resumed (``module:qualname``).
STRUCTURED: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "continuations_strands_structured", default=None
)


def unwrapped(exc: Exception) -> Exception:
    """Our own error inside Strands' ``EventLoopException`` (raised by a hook), or ``exc``."""
    if isinstance(exc, EventLoopException) and isinstance(
        exc.original_exception, ContinuationError
    ):
        return exc.original_exception
    return exc


def response_tokens(message: Any) -> int:
    """Total tokens of one model response, from the usage Strands attaches to the message."""
    usage = (message.get("metadata") or {}).get("usage") or {}
    return int(usage.get("totalTokens", 0))


def encode(value: Any) -> Any:
    """JSON-safe copy of Strands data (bytes base64-encoded)."""
    return encode_bytes_values(copy.deepcopy(value))


def decode(value: Any) -> Any:
    """Undo :func:`encode`."""
    return decode_bytes_values(copy.deepcopy(value))


def prompt_of(messages: Any) -> Any:
    """The prompt of an invocation (its new messages, roles and content only), JSON-safe."""
    return encode([{"role": m.get("role"), "content": m.get("content")} for m in messages or []])


def tool_uses(message: Any) -> list[dict[str, Any]]:
    """The tool uses of an assistant message."""
    if not isinstance(message, dict) or message.get("role") != "assistant":
        return []
    return [block["toolUse"] for block in message.get("content", []) if "toolUse" in block]


def is_structured_output_tool(tool: Any) -> bool:
    """Whether ``tool`` is the tool Strands adds for a structured output model (no user code)."""
    return isinstance(tool, StructuredOutputTool)


def recorded_run(agent: Agent, result: Any, start: int, model_stop: str | None) -> dict[str, Any]:
    """What the journal keeps of a completed sub-agent run, to give its caller the same result.

    The messages the run added to the agent's history, split at its final model response (the
    one that ended the run, e.g. text, or a structured output call); the model's stop reason
    for that response; the result's stop reason and text.
    """
    added = list(agent.messages[start:])
    final = max((i for i, m in enumerate(added) if m.get("role") == "assistant"), default=None)
    entry: dict[str, Any] = {
        "framework": FRAMEWORK,
        "text": str(result).strip(),
        "stop_reason": str(result.stop_reason),
    }
    if final is None:  # pragma: no cover - a completed run always has a model response
        return entry
    return {
        **entry,
        "messages": encode(added[:final]),
        "final": encode(added[final]),
        "tail": encode(added[final + 1 :]),
        "model_stop": model_stop or str(result.stop_reason),
    }


@dataclass
class Replay:
    """A completed sub-agent run being replayed from its journal entry.

    Its earlier messages go into the history through ``BeforeInvocationEvent.messages``; the
    model call is answered with the recorded final response; the calls of that response (a
    structured output call) get their recorded results, except the structured output tool,
    which runs again (it only validates) so Strands captures the output.
    """

    messages: list[Any]
    final: Any
    model_stop: str
    results: dict[str, Any] = field(default_factory=dict)
    answered: bool = False

    @classmethod
    def of(cls, entry: dict[str, Any]) -> Replay | None:
        """The replay of a journal entry (``None`` for an entry with its final text only)."""
        if "final" not in entry:
            return None
        results: dict[str, Any] = {}
        for message in decode(entry.get("tail") or []):
            for block in message.get("content", []):
                if "toolResult" in block:
                    results[str(block["toolResult"]["toolUseId"])] = block["toolResult"]
        return cls(
            messages=decode(entry.get("messages") or []),
            final=decode(entry["final"]),
            model_stop=str(entry.get("model_stop") or entry.get("stop_reason") or "end_turn"),
            results=results,
        )

    def answer(self, agent: str) -> Any:
        """The stop reason of the recorded final response (the run's one model call)."""
        if self.answered:
            raise ReplayMismatch(
                f"Replaying completed sub-agent {agent!r} needed a second model call; the agent "
                "no longer ends its run the way it did. Deploy the version that recorded it."
            )
        self.answered = True
        return self.model_stop

    def tool_result(self, tool_use_id: str, agent: str) -> Any:
        """The recorded result of a call of the final response."""
        found = self.results.get(tool_use_id)
        if found is None:
            raise ReplayMismatch(
                f"Replaying completed sub-agent {agent!r} reached call {tool_use_id!r}, which "
                "has no recorded result; nothing ran."
            )
        return dict(found)
