"""The ``Continuations`` capability: makes any Pydantic AI agent continuation-aware.

It hooks Pydantic AI's own tool-execution path through public capability hooks only:

- ``get_wrapper_toolset`` puts a gate (:mod:`._gate`) on every leaf toolset of the run, so each
  call is decided from the tool it resolves to, whatever wraps, renames or builds the toolset;
- ``wrap_tool_execute`` answers decided calls on resume (a denial as Pydantic AI's own denied
  tool return), replays the results of sibling calls that completed before the suspension,
  turns a held call into a pending approval, and gives each call a
  :class:`~continuations_core.CallScope` whose sub-agent runs it waits for;
- ``wrap_output_process`` gates output functions the same way (:mod:`._output`);
- ``wrap_node_run`` ends a tool batch that left pending calls by raising ``FrameSuspended``
  with this agent's frame, counts model turns, evaluates suspension policies and writes
  checkpoints at step boundaries;
- ``wrap_run`` (with nested runs, delegating calls and tree checkpoints: :mod:`._nesting`)
  replays, resumes or runs a run started inside a tool body;
- ``prepare_tools`` records the tool fingerprint and detects drift before any tool runs.

A suspended step is resumed by running the agent on its history, which ends with the model
response that made the calls; the calls are then answered by this capability, never by
resuming a history that ends in a request (which Pydantic AI would answer "interrupted").
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic_ai import CallToolsNode, ModelRequestNode, RunContext, ToolDenied
from pydantic_ai.capabilities import (
    AbstractCapability,
    AgentNode,
    RawToolArgs,
    ValidatedToolArgs,
    WrapNodeRunHandler,
    WrapToolExecuteHandler,
)
from pydantic_ai.exceptions import ApprovalRequired, CallDeferred
from pydantic_ai.messages import ModelMessage, ModelResponse, ToolCallPart
from pydantic_ai.tools import ToolDefinition
from pydantic_ai.toolsets import AbstractToolset
from pydantic_graph import End

from continuations_core import (
    Approve,
    CallPlan,
    CallScope,
    Deny,
    Frame,
    FramePlan,
    FrameSuspended,
    PolicyState,
    Respond,
    SuspensionPolicy,
    UngatedCall,
)
from continuations_core.spi import (
    CHECKPOINTER,
    CURRENT_CALL,
    Clock,
    check_fingerprint,
    check_unique_call_ids,
    default_clock,
    enter_call,
    exit_call,
    is_suspension,
    journal,
    mark_tool_suspended,
    raise_refused,
    segment,
)

from . import _translate as t
from ._gate import CALL_GATE, ApprovedCalls, CallGate, GateToolset, Hold
from ._nesting import PLACEHOLDER, InFlight, NestingHooks, RunState, pending_call
from ._output import OutputHooks

__all__ = ["Continuations"]


@dataclass
class Continuations(NestingHooks, OutputHooks, AbstractCapability[Any]):
    """Make an agent suspend into continuations instead of blocking.

    Add it to every agent that may suspend, the root and each sub-agent::

        agent = Agent(model, capabilities=[Continuations()])

    Args:
        policies: Suspension policies evaluated before each model request (G7).
        clock: The monotonic clock that wall-clock policies read.
    """

    policies: Sequence[SuspensionPolicy] = ()
    clock: Clock = default_clock
    _state: RunState | None = field(default=None, repr=False, compare=False)

    async def for_run(self, ctx: RunContext[Any]) -> AbstractCapability[Any]:
        """Return a fresh instance holding this run's state."""
        return dataclasses.replace(self, _state=RunState())

    @property
    def _st(self) -> RunState:
        if self._state is None:  # pragma: no cover - for_run always runs first
            self._state = RunState()
        return self._state

    # -- toolset: find marked tools ---------------------------------------------------

    def get_wrapper_toolset(self, toolset: AbstractToolset[Any]) -> AbstractToolset[Any] | None:
        """Put a gate on every leaf toolset, below any prefixing, renaming or filtering."""
        st = self._st

        def gate(leaf: AbstractToolset[Any]) -> AbstractToolset[Any]:
            return GateToolset(leaf, owner=st, active=lambda: st.active)

        return ApprovedCalls(toolset.visit_and_replace(gate), owner=st)

    async def prepare_tools(
        self, ctx: RunContext[Any], tool_defs: list[ToolDefinition]
    ) -> list[ToolDefinition]:
        """Fingerprint the tools and, when resuming, refuse a drifted agent before tools run."""
        st = self._st
        st.fingerprint = t.fingerprint(tool_defs)
        if st.active and st.plan is not None and not st.drift_checked:
            st.drift_checked = True
            check_fingerprint(
                st.plan, framework=t.FRAMEWORK, agent=st.agent_name, fingerprint=st.fingerprint
            )
        return tool_defs

    # -- run: nesting, replay, resume -------------------------------------------------

    def _load_plan(self, plan: FramePlan) -> None:
        st = self._st
        st.plan = plan
        st.path = plan.path
        st.agents = st.sub.scope.agents if st.sub is not None else ()
        state = plan.frame.state
        st.policy = PolicyState.from_dict(plan.frame.policy_state)
        st.replay = dict(state.get("journal", {}))
        st.shares_usage = bool(state.get("shares_usage", False))

    # -- nodes: step boundaries -------------------------------------------------------

    async def wrap_node_run(
        self,
        ctx: RunContext[Any],
        *,
        node: AgentNode[Any],
        handler: WrapNodeRunHandler[Any],
    ) -> AgentNode[Any] | End[Any]:
        """Suspend after a tool batch with pending calls, and at policy boundaries."""
        st = self._st
        if not st.active:
            return await handler(node)
        cp = CHECKPOINTER.get()
        if isinstance(node, ModelRequestNode):
            if st.pending:  # never let a pending call's placeholder reach the model
                raise UngatedCall(
                    f"Agent {st.agent_name!r} has calls waiting for a decision "
                    f"({', '.join(c.tool for c in st.pending.values())}) but the run went on "
                    "to a model request; nothing was sent. Start runs with "
                    "continuations_pydantic_ai.run() or resume()."
                )
            history = [*ctx.messages, node.request]
            fired = st.policy.firing(self.policies, self.clock) if self.policies else None
            if fired is not None:
                raise FrameSuspended(self._frame(ctx, history, f"policy:{fired.key}"))
            if cp is not None and (st.sub is not None or not await cp.after_batch()):
                # Before every model request (the first included): a crash from here on
                # repeats at most this request. A sub-agent checkpoints the whole tree. After
                # a batch whose results the journal holds, the root writes just those.
                await self._checkpoint(cp, self._frame(ctx, history, "checkpoint", pending=False))
        if isinstance(node, CallToolsNode):
            check_unique_call_ids(t.call_ids(node.model_response), st.agent_name)
            st.pending.clear()
            st.journal.clear()
            st.in_calls_node = True
            st.batch, st.batch_ctx = list(ctx.messages), ctx
        try:
            result = await handler(node)
        finally:
            st.in_calls_node = False
            st.batch_ctx = None
        if isinstance(node, ModelRequestNode) and isinstance(result, CallToolsNode):
            st.policy.record_turn(result.model_response.usage.total_tokens)
            if cp is not None:
                # After the model response: held for the first call's tool_started.
                frame = self._frame(ctx, list(ctx.messages), "checkpoint", pending=False)
                await self._checkpoint(cp, frame, hold=True)
        if isinstance(node, CallToolsNode):
            st.replay.clear()
            st.plan = None
            if st.pending:
                raise FrameSuspended(self._frame(ctx, list(ctx.messages), "calls"))
        return result

    def _frame(
        self,
        ctx: RunContext[Any],
        messages: list[ModelMessage],
        reason: str,
        *,
        pending: bool = True,
    ) -> Frame:
        st = self._st
        usage = ctx.usage
        state = {
            "messages": st.dumps.dump(messages),
            "usage": t.dump_usage(usage),
            "shares_usage": st.shares_usage,
            "journal": dict(st.journal) if pending else {},
        }
        return Frame(
            framework=t.FRAMEWORK,
            agent=st.agent_name,
            fingerprint=dict(st.fingerprint),
            state=state,
            pending=tuple(st.pending.values()) if pending else (),
            policy_state=st.policy.to_dict(),
            suspended_by=reason,
        )

    # -- tools ------------------------------------------------------------------------

    async def before_tool_validate(
        self,
        ctx: RunContext[Any],
        *,
        call: ToolCallPart,
        tool_def: ToolDefinition,
        args: RawToolArgs,
    ) -> RawToolArgs:
        """Substitute the edited args of an approved call before Pydantic AI validates them."""
        call_plan = self._call_plan(call)
        decision = call_plan.decision if call_plan is not None else None
        if isinstance(decision, Approve) and decision.args is not None:
            return dict(decision.args)
        return args

    async def wrap_tool_execute(
        self,
        ctx: RunContext[Any],
        *,
        call: ToolCallPart,
        tool_def: ToolDefinition,
        args: ValidatedToolArgs,
        handler: WrapToolExecuteHandler,
    ) -> Any:
        """Answer, replay or execute the call; record what it left pending."""
        st = self._st
        if not st.active:
            return await handler(args)
        call_id = call.tool_call_id
        recorded = st.replay.get(call_id)
        if recorded is not None:
            st.journal[call_id] = recorded
            return t.load_tool_result(recorded)
        call_plan = self._call_plan(call)
        decision = call_plan.decision if call_plan is not None else None
        if isinstance(decision, Deny):
            # Pydantic AI's own denied return: ToolReturnPart(outcome='denied'), so the history,
            # Logfire and UI adapters show the call as denied.
            return ToolDenied(decision.message)
        if isinstance(decision, Respond):
            return decision.value
        if isinstance(decision, Approve):
            ctx.tool_call_approved = True
        return await self._execute(ctx, call, tool_def, args, handler, call_plan)

    def _where(self, ctx: RunContext[Any], tool: str, call_id: str) -> tuple[tuple[str, ...], int]:
        """A call's path and step (the model turn that made it)."""
        step = t.model_turn(list(ctx.messages))
        return (*self._st.path, segment(tool, call_id, step)), step

    async def _execute(
        self,
        ctx: RunContext[Any],
        call: ToolCallPart,
        tool_def: ToolDefinition,
        args: ValidatedToolArgs,
        handler: WrapToolExecuteHandler,
        call_plan: CallPlan | None,
    ) -> Any:
        st = self._st
        path, step = self._where(ctx, call.tool_name, call.tool_call_id)
        reentered = call_plan is not None and call_plan.reentered
        scope = CallScope(
            path=path,
            agents=(*st.agents, st.agent_name),
            owner=ctx.usage,
            resume=call_plan if reentered else None,
            loop=asyncio.get_running_loop(),
        )
        cp = CHECKPOINTER.get()
        if cp is not None:
            scope.on_checkpoint = lambda: self._checkpoint_tree(cp)
        decision = call_plan.decision if call_plan is not None else None
        gate = CallGate(
            owner=st,
            path=path,
            tool=call.tool_name,
            decision=decision if isinstance(decision, Approve) else None,
            reentered=reentered,
        )
        st.inflight[call.tool_call_id] = InFlight(scope, call, tool_def, step)
        token = CURRENT_CALL.set(scope)
        gate_token = CALL_GATE.set(gate)
        key_token = enter_call(path)
        try:
            try:
                result = await handler(args)
            finally:
                # Every sub-agent run started in the body has completed or suspended before
                # the call ends, however the body awaited (or forgot) them.
                await scope.settle()
        except Hold as held:
            self._hold(call, tool_def, step, held.spec)
            return PLACEHOLDER
        except FrameSuspended:
            mark_tool_suspended(call.tool_name)
            return await self._child(call, tool_def, step, scope)
        except BaseExceptionGroup as group:  # a TaskGroup whose sub-agents suspended
            if not (scope.suspended and is_suspension(group)):
                raise
            mark_tool_suspended(call.tool_name)
            return await self._child(call, tool_def, step, scope)
        except CallDeferred as deferred:
            mark_tool_suspended(call.tool_name)
            self._add_pending(
                call,
                tool_def,
                "input",
                step=step,
                metadata={"deferred": deferred.metadata or {}, "deferred_kind": deferred.kind},
            )
            await self._suspended_call(path, call.tool_name)
            return PLACEHOLDER
        except ApprovalRequired as required:
            mark_tool_suspended(call.tool_name)
            reason = (required.metadata or {}).get("reason")
            self._add_pending(
                call,
                tool_def,
                "approval",
                step=step,
                reason=str(reason) if reason is not None else None,
                metadata={"deferred": required.metadata or {}},
            )
            await self._suspended_call(path, call.tool_name)
            return PLACEHOLDER
        finally:
            st.inflight.pop(call.tool_call_id, None)
            exit_call(key_token)
            CALL_GATE.reset(gate_token)
            CURRENT_CALL.reset(token)
        raise_refused()  # a marked tool refused inside this call: fail the run loudly
        if scope.suspended:
            # The body went on past a suspended sub-agent (gather(return_exceptions=True), a
            # broad except): its result is not the call's; the call waits like any other.
            return await self._child(call, tool_def, step, scope)
        if reentered:
            scope.check_replayed(completed=True)
        recorded = t.dump_tool_result(result)
        st.journal[call.tool_call_id] = recorded
        if cp is not None and not gate.replayed:
            await journal(cp, lambda: cp.tool_completed(path, call.tool_name, recorded))
        return result

    def _hold(self, call: ToolCallPart, tool_def: ToolDefinition, step: int, spec: Any) -> None:
        """Record a call the gate held as a pending approval (the batch then suspends)."""
        st = self._st
        if not st.in_calls_node:
            raise UngatedCall(
                f"{call.tool_name!r} requires approval and did not run, but this run cannot "
                "suspend for a decision: agent.run_stream() (and running tool calls outside "
                "the agent graph) streams past tool calls. Use continuations_pydantic_ai.run() "
                "or resume(), or agent.iter() under them."
            )
        expires = datetime.now(UTC) + spec.expires if spec.expires is not None else None
        self._add_pending(
            call,
            tool_def,
            "approval",
            step=step,
            reason=spec.reason,
            expires_at=expires,
            approvers=spec.approvers,
        )

    # -- pending calls --------------------------------------------------------------------

    def _call_plan(self, call: ToolCallPart) -> CallPlan | None:
        """The plan for a call of the resumed step (the plan is dropped after that step)."""
        plan = self._st.plan
        return plan.calls.get(call.tool_call_id) if plan is not None else None

    def _add_pending(
        self,
        call: ToolCallPart,
        tool_def: ToolDefinition,
        kind: str,
        *,
        step: int,
        reason: str | None = None,
        expires_at: datetime | None = None,
        approvers: tuple[str, ...] = (),
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self._st.pending[call.tool_call_id] = pending_call(
            call,
            tool_def,
            kind,
            step=step,
            reason=reason,
            expires_at=expires_at,
            approvers=approvers,
            metadata=metadata,
        )


def last_response(messages: list[ModelMessage]) -> ModelResponse | None:
    """Re-exported for ``_run``: the response a suspended step's history ends with."""
    return t.last_response(messages)
