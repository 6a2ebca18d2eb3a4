"""Output functions for Pydantic AI: a ``@requires_approval`` output function is gated like a
tool call (G13).

Mixed into the ``Continuations`` capability (:mod:`._capability`). Pydantic AI resolves an output
function only when it calls it, so the gate decides inside the function's guard
(:class:`~._gate.OutputGate`): an undecided gated output call is held and the run suspends with
it pending; an approved one runs with the approved (possibly edited) args; a denied one is sent
back to the model as a retry with the denial message.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic_ai import RunContext
from pydantic_ai.capabilities import RawOutput, WrapOutputProcessHandler
from pydantic_ai.exceptions import ModelRetry
from pydantic_ai.messages import ModelMessage
from pydantic_ai.output import OutputContext

from continuations_core import (
    Approve,
    Deny,
    Frame,
    FrameSuspended,
    PendingCall,
    Respond,
    UngatedCall,
)
from continuations_core.spi import gate_hook

from . import _translate as t
from ._gate import Hold, OutputGate
from ._nesting import RunState

__all__ = ["OutputHooks"]


class OutputHooks:
    """The capability's hooks for output functions."""

    if TYPE_CHECKING:

        @property
        def _st(self) -> RunState: ...

        def _where(
            self, ctx: RunContext[Any], tool: str, call_id: str
        ) -> tuple[tuple[str, ...], int]: ...

        def _frame(
            self,
            ctx: RunContext[Any],
            messages: list[ModelMessage],
            reason: str,
            *,
            pending: bool = True,
        ) -> Frame: ...

    async def before_output_validate(
        self, ctx: RunContext[Any], *, output_context: OutputContext, output: RawOutput
    ) -> RawOutput:
        """Substitute the edited args of an approved output call before validation."""
        decision = self._output_decision(output_context)
        if isinstance(decision, Approve) and decision.args is not None:
            return dict(decision.args)
        return output

    async def wrap_output_process(
        self,
        ctx: RunContext[Any],
        *,
        output_context: OutputContext,
        output: Any,
        handler: WrapOutputProcessHandler,
    ) -> Any:
        """Gate a ``@requires_approval`` output function like a tool call."""
        st = self._st
        if not st.active or not output_context.has_function:
            return await handler(output)
        decision = self._output_decision(output_context)
        if isinstance(decision, Deny):
            raise ModelRetry(decision.message)  # the model is told, and the run goes on
        gate = OutputGate(
            function_name=output_context.function_name,
            decision=decision if isinstance(decision, Approve) else None,
            streaming=bool(ctx.partial_output),
            is_context=t.is_run_context,
        )
        try:
            with gate_hook(gate):
                return await handler(output)
        except Hold as held:
            call = output_context.tool_call
            tool = call.tool_name if call is not None else output_context.function_name
            call_id = call.tool_call_id if call is not None else "output"
            args = call.args_as_dict() if call is not None else dict(gate.held or {})
            _path, step = self._where(ctx, tool or "output", call_id)
            if not st.in_calls_node:
                raise UngatedCall(
                    f"Output function {tool!r} requires approval, but this run cannot suspend."
                ) from None
            expires = (
                datetime.now(UTC) + held.spec.expires if held.spec.expires is not None else None
            )
            self._st.pending[call_id] = PendingCall.model_validate(
                {
                    "call_id": call_id,
                    "tool": tool or "output",
                    "step": step,
                    "args": args,
                    "kind": "approval",
                    "reason": held.spec.reason,
                    "expires_at": expires,
                    "approvers": held.spec.approvers,
                    "args_schema": output_context.tool_def.parameters_json_schema
                    if output_context.tool_def is not None
                    else None,
                }
            )
            raise FrameSuspended(self._frame(ctx, list(ctx.messages), "calls")) from None

    def _output_decision(self, output_context: OutputContext) -> Approve | Deny | Respond | None:
        plan = self._st.plan
        call = output_context.tool_call
        if plan is None:
            return None
        call_plan = plan.calls.get(call.tool_call_id if call is not None else "output")
        return call_plan.decision if call_plan is not None else None
