"""The per-call gate: decides on the tool a call actually resolves to (G13).

Strands resolves every call to a tool object before its ``BeforeToolCallEvent`` hooks run, so
the gate decides there, from ``event.selected_tool``: a ``@requires_approval`` tool whose call
is undecided is held with a native interrupt, unless its ``when=`` predicate (given the call's
args validated against the function's signature, as on every framework) is false. A call it
admits (approved, or ``when=`` false, or a delegating call re-entered on resume) is recorded as
admitted for that very tool; the ``ExecuteToolStage`` middleware hands the guarded body its
one-shot pass only for the tool the executor actually runs, and refuses a marked tool that no
gate admitted (a later hook swapped the tool, say).

"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from continuations_core import (
    ApprovalSpec,
    Approve,
    CallPlan,
    UngatedCall,
    approval_spec,
)
from continuations_core.spi import original_function, validated_args

__all__ = ["Admission", "call_ids", "decide", "refusal"]


@dataclass(frozen=True)
class Admission:
    """What the gate decided for one call.

    Attributes:
        tool: The marked tool object admitted to run (``None``: the tool is not marked, or
            the call is held).
        hold: The spec of a held call (it waits for a decision), else ``None``.
    """

    tool: Any = None
    hold: ApprovalSpec | None = None

    def gate_fields(self) -> dict[str, Any]:
        """The pending approval's fields for a held call."""
        assert self.hold is not None
        spec = self.hold
        expires = datetime.now(UTC) + spec.expires if spec.expires is not None else None
        return {"reason": spec.reason, "expires_at": expires, "approvers": spec.approvers}


def decide(tool: Any, raw_args: dict[str, Any], call_plan: CallPlan | None) -> Admission:
    """Decide on a call of ``tool`` (the resolved tool object) with ``raw_args``."""
    spec = approval_spec(tool) if tool is not None else None
    if spec is None:
        return Admission()
    if call_plan is not None:
        if isinstance(call_plan.decision, Approve):
            return Admission(tool=tool)
        if call_plan.reentered:
            # The signed frame records this call as entered and waiting on its sub-agent: a
            # gate admitted it before, and re-entering it is the same call.
            return Admission(tool=tool)
    args = _validated(tool, raw_args)
    if args is None or spec.applies(args):  # args the gate cannot validate: a person decides
        return Admission(hold=spec)
    return Admission(tool=tool)


def _validated(tool: Any, raw_args: dict[str, Any]) -> dict[str, Any] | None:
    if not inspect.isfunction(original_function(tool)):
        return raw_args  # a tool object with no Python function behind it (``as_tool()``)
    spec = getattr(tool, "tool_spec", None) or {}
    schema = spec.get("inputSchema", {})
    properties = dict(schema.get("json", schema)).get("properties", {})
    try:
        return validated_args(tool, raw_args, tuple(properties))
    except ValueError:
        return None


def refusal(tool_name: str, agent: str, why: str) -> UngatedCall:
    """The error for a marked tool the executor was about to run without an admission."""
    return UngatedCall(
        f"{tool_name!r} requires approval and did not run: {why}. Agent {agent!r}'s gate "
        "decides on the tool a call resolves to; a hook that replaces the tool after it is "
        "not supported for marked tools."
    )


def call_ids(message: dict[str, Any]) -> list[str]:
    """The tool-use ids of an assistant message, in order."""
    return [
        str(block["toolUse"].get("toolUseId"))
        for block in message.get("content", [])
        if "toolUse" in block
    ]
