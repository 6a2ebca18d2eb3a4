"""The per-call gate: decides on the tool a call actually resolves to (G13).

The capability wraps every *leaf* toolset of the run (``visit_and_replace``), so the gate sits
below prefixing, renaming, filtering and dynamic toolsets and sees each call under the name its
own toolset knows it by, with the function that will run. For each call it:

- finds the tool's ``@requires_approval`` spec (or Pydantic AI's own ``requires_approval=True``);
- holds an undecided gated call (:class:`Hold`, caught by the capability, which records a
  pending approval), unless its ``when=`` predicate is false;
- journals the call right before it runs, or replays a result recorded by an earlier attempt;
- hands the guarded body its one-shot pass (:func:`~continuations_core.spi.admitted`).

A call whose tool the gate cannot resolve in a function toolset is held, never run. Output
functions are resolved by Pydantic AI only when it calls them, so their gate decides inside the
guard (:class:`OutputGate`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from pydantic_ai import RunContext
from pydantic_ai.toolsets import AbstractToolset, WrapperToolset
from pydantic_ai.toolsets.abstract import ToolsetTool

from continuations_core import ApprovalSpec, Approve, UngatedCall
from continuations_core.spi import (
    CHECKPOINTER,
    INTERRUPTED_MESSAGE,
    GateKey,
    admitted,
    is_idempotent,
    journal,
    mark_tool_suspended,
    unresolved_call,
)

from . import _translate as t

__all__ = ["CALL_GATE", "ApprovedCalls", "CallGate", "GateToolset", "Hold", "OutputGate"]


class Hold(BaseException):
    """Raised by the gate for a call that must wait for a decision; never reaches user code.

    It derives from ``BaseException`` so that a toolset or tool body catching ``Exception``
    cannot turn a held call into a result.
    """

    def __init__(self, spec: ApprovalSpec, tool: str) -> None:
        super().__init__(f"{tool!r} waits for a decision")
        self.spec = spec


@dataclass
class CallGate:
    """The call being executed by one capability's ``wrap_tool_execute``.

    Attributes:
        owner: The capability run state that set it (a leaf gate of another run ignores it).
        path: The call's path from the root.
        tool: The tool name the model used.
        decision: ``Approve`` when a person approved this call, else ``None``.
        reentered: The signed frame records this call as entered and waiting on a sub-agent:
            a gate admitted it before, and re-entering it on resume is the same call.
        replayed: Set when the result came from the journal of an earlier attempt.
    """

    owner: object
    path: tuple[str, ...]
    tool: str
    decision: Approve | None
    reentered: bool = False
    replayed: bool = False

    @property
    def admitted(self) -> bool:
        """Whether the call runs without a new decision."""
        return isinstance(self.decision, Approve) or self.reentered

    async def before_running(self, idempotent: bool) -> tuple[bool, Any]:
        """Journal the call as started, or return ``(True, result)`` recorded earlier."""
        cp = CHECKPOINTER.get()
        if cp is None:
            return False, None
        earlier = cp.replay(self.path, idempotent=idempotent)
        if earlier is not None and earlier.get("interrupted") and self.reentered:
            # A delegating call in flight when the run crashed: its frame holds its sub-agent
            # runs and steps, so it is re-entered rather than answered "interrupted".
            earlier = None
        if earlier is not None:
            self.replayed = True
            if earlier.get("interrupted"):
                return True, INTERRUPTED_MESSAGE
            return True, t.load_tool_result(earlier)
        approved = isinstance(self.decision, Approve)
        await journal(cp, lambda: cp.tool_started(self.path, self.tool, approved=approved))
        return False, None


CALL_GATE: ContextVar[CallGate | None] = ContextVar("continuations_pai_call_gate", default=None)


@dataclass
class GateToolset(WrapperToolset[Any]):
    """Wraps one leaf toolset of a run and gates every call that reaches it.

    Attributes:
        owner: The run state of the capability that installed it.
        active: Tells whether that capability handles this run (another instance may).
    """

    owner: object = None
    active: Callable[[], bool] = field(default=lambda: True)

    def _gate(self, leaf: AbstractToolset[Any]) -> AbstractToolset[Any]:
        return GateToolset(leaf, owner=self.owner, active=self.active)

    def _view(self) -> AbstractToolset[Any]:
        """The toolset to list and call: a dynamic toolset's current tools get gates too."""
        leaves: list[AbstractToolset[Any]] = []
        self.wrapped.apply(leaves.append)
        if leaves == [self.wrapped]:
            return self.wrapped
        return self.wrapped.visit_and_replace(self._gate)

    async def get_tools(self, ctx: RunContext[Any]) -> dict[str, ToolsetTool[Any]]:
        """List the tools; natively gated ones (``requires_approval=True``) are gated here."""
        view = self._view()
        tools = await view.get_tools(ctx)
        if view is not self.wrapped or not self.active():
            return tools
        return {
            name: dataclasses.replace(
                tool, tool_def=dataclasses.replace(tool.tool_def, kind="function")
            )
            if tool.tool_def.kind == "unapproved" and t.is_function_toolset(self.wrapped)
            else tool
            for name, tool in tools.items()
        }

    async def call_tool(
        self, name: str, tool_args: dict[str, Any], ctx: RunContext[Any], tool: ToolsetTool[Any]
    ) -> Any:
        """Hold, replay or run the call, depending on the resolved tool and the decision."""
        view = self._view()
        if view is not self.wrapped:
            return await view.call_tool(name, tool_args, ctx, tool)
        if not self.active():
            return await self.wrapped.call_tool(name, tool_args, ctx, tool)
        gate = CALL_GATE.get()
        resolved = t.resolve_tool(self.wrapped, name, tool)
        if gate is None or gate.owner is not self.owner:
            if resolved is not None and resolved[1] is None:
                return await self.wrapped.call_tool(name, tool_args, ctx, tool)
            raise UngatedCall(
                f"Tool {name!r} was called outside the run that gates it; it did not run."
            )
        if resolved is None:
            # A function toolset that does not hold the name it was called by: the gate
            # cannot tell which function would run, so a person decides.
            held = ApprovalSpec(reason="The gate could not resolve which function this runs.")
            if not gate.admitted:
                mark_tool_suspended(name)
                raise Hold(held, name)
            return await self._run(gate, None, name, tool_args, ctx, tool)
        function, spec = resolved
        if spec is not None and not gate.admitted and spec.applies(tool_args):
            mark_tool_suspended(name)
            raise Hold(spec, name)
        return await self._run(gate, function, name, tool_args, ctx, tool)

    async def _run(
        self,
        gate: CallGate,
        function: Any,
        name: str,
        tool_args: dict[str, Any],
        ctx: RunContext[Any],
        tool: ToolsetTool[Any],
    ) -> Any:
        replayed, value = await gate.before_running(
            is_idempotent(function) if function is not None else True
        )
        if replayed:
            return value
        if function is None:  # approved, but the gate never saw which function runs
            with unresolved_call(name):
                return await self.wrapped.call_tool(name, tool_args, ctx, tool)
        with admitted(function, gate.path):
            return await self.wrapped.call_tool(name, tool_args, ctx, tool)


@dataclass
class ApprovedCalls(WrapperToolset[Any]):
    """Wraps the run's whole toolset: an approved call reaches every toolset as approved.

    Toolsets that gate with Pydantic AI's own mechanism (``toolset.approval_required(...)``,
    say, around an MCP server) read ``ctx.tool_call_approved``; this marks the calls a person
    approved through a continuation, as Pydantic AI does for its own deferred results.
    """

    owner: object = None

    async def call_tool(
        self, name: str, tool_args: dict[str, Any], ctx: RunContext[Any], tool: ToolsetTool[Any]
    ) -> Any:
        """Pass the call on, marked approved if a person approved it."""
        gate = CALL_GATE.get()
        if gate is not None and gate.owner is self.owner and isinstance(gate.decision, Approve):
            ctx = dataclasses.replace(ctx, tool_call_approved=True)
        return await self.wrapped.call_tool(name, tool_args, ctx, tool)


@dataclass
class OutputGate:
    """Decides on an output function inside its guard (Pydantic AI resolves it late).

    Attributes:
        function_name: The name of the output function Pydantic AI is about to run.
        decision: ``Approve`` when a person approved the output call.
        streaming: The output is partial (``run_stream``), which cannot suspend.
        is_context: Tells a ``RunContext`` argument, which is not part of the call's args.
    """

    function_name: str | None
    decision: Approve | None
    streaming: bool
    is_context: Callable[[Any], bool]
    used: bool = False
    held: dict[str, Any] | None = None

    def __call__(self, key: GateKey, spec: ApprovalSpec, arguments: dict[str, Any]) -> None:
        """Admit the output function, or raise :class:`Hold` / ``UngatedCall``."""
        if self.used or (self.function_name is not None and key.name != self.function_name):
            raise UngatedCall(
                f"{key.qualname!r} requires approval and was called while output function "
                f"{self.function_name!r} ran, so no gate decided on it; it did not run. Mark "
                "the output function itself, or call the tool from an agent."
            )
        self.used = True
        if isinstance(self.decision, Approve):
            return
        args = {k: v for k, v in arguments.items() if not self.is_context(v)}
        if not spec.applies(args):
            return
        if self.streaming:
            raise UngatedCall(
                f"Output function {key.qualname!r} requires approval, but a streamed run cannot "
                "suspend for a decision; it did not run. Use continuations_pydantic_ai.run()."
            )
        self.held = args
        mark_tool_suspended(key.name)
        raise Hold(spec, key.name)
