"""The ``Continuations`` capability: makes any Pydantic AI agent continuation-aware.

It hooks Pydantic AI's own tool-execution path through public capability hooks only:

- ``get_wrapper_toolset`` puts a gate (:mod:`._gate`) on every leaf toolset of the run, so each
  call is decided from the tool it resolves to, whatever wraps, renames or builds the toolset;
- ``wrap_tool_execute`` answers decided calls on resume (a denial as Pydantic AI's own denied
  tool return), replays the results of sibling calls that completed before the suspension,
  turns a held call into a pending approval, and gives each call a
  :class:`~continuations_core.CallScope`: when sub-agents run in the body (one after another or
  concurrently) it waits for all of them, and records those that suspended in one ``child``
  pending call;
- ``wrap_output_process`` gates output functions the same way;
- ``wrap_node_run`` ends a tool batch that left pending calls by raising ``FrameSuspended``
  with this agent's frame, counts model turns and evaluates suspension policies before each
  model request;
- ``wrap_run`` gives a nested run its identity in its delegating call, and makes it replay a
  journaled result or resume its frame; a nested run that suspends waits for its concurrent
  siblings before its suspension leaves the run;
- ``prepare_tools`` records the tool fingerprint and detects drift before any tool runs.

A suspended step is resumed by running the agent on its history, which ends with the model
response that made the calls; the calls are then answered by this capability, never by
resuming a history that ends in a request (which Pydantic AI would answer "interrupted").
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic_ai import CallToolsNode, ModelRequestNode, RunContext, ToolDenied
from pydantic_ai.capabilities import (
    AbstractCapability,
    AgentNode,
    RawOutput,
    RawToolArgs,
    ValidatedToolArgs,
    WrapNodeRunHandler,
    WrapOutputProcessHandler,
    WrapRunHandler,
    WrapToolExecuteHandler,
)
from pydantic_ai.exceptions import ApprovalRequired, CallDeferred, ModelRetry
from pydantic_ai.messages import ModelMessage, ModelResponse, ToolCallPart
from pydantic_ai.models import Model
from pydantic_ai.output import OutputContext
from pydantic_ai.run import AgentRunResult
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
    PendingCall,
    PolicyState,
    Respond,
    SuspensionPolicy,
    UngatedCall,
)
from continuations_core._durable import CHECKPOINTER, Checkpointer, enter_call, exit_call
from continuations_core._markers import gate_hook
from continuations_core._policies import Clock, default_clock
from continuations_core._protocol import (
    CURRENT_CALL,
    MANAGED,
    SubRun,
    check_fingerprint,
    check_unique_call_ids,
    is_suspension,
    raise_refused,
    unmanaged_suspension,
)
from continuations_core._schema import segment
from continuations_core._scope import checkpoint_form, prompt_digest
from continuations_core._steps import journal

from . import _translate as t
from ._gate import CALL_GATE, ApprovedCalls, CallGate, GateToolset, Hold, OutputGate

__all__ = ["Continuations"]

_PLACEHOLDER = "(suspended: awaiting a decision)"


@dataclass
class _Resume:
    """Handed from ``resume()`` or an outer ``wrap_run`` to the run that resumes a frame."""

    plan: FramePlan
    sub: SubRun | None
    agent_name: str


@dataclass
class _InFlight:
    """A tool call of the current batch that is executing, for checkpoints of the tree."""

    scope: CallScope
    call: ToolCallPart
    tool_def: ToolDefinition
    step: int


_RESUME: ContextVar[_Resume | None] = ContextVar("continuations_pai_resume", default=None)
_RUN_ID: ContextVar[str | None] = ContextVar("continuations_pai_run_id", default=None)


@dataclass
class _RunState:
    """Per-run state of one capability instance (created by ``for_run``)."""

    active: bool = False
    managed: bool = False
    agent_name: str = "agent"
    path: tuple[str, ...] = ()
    agents: tuple[str, ...] = ()
    sub: SubRun | None = None
    plan: FramePlan | None = None
    drift_checked: bool = False
    in_calls_node: bool = False
    policy: PolicyState = field(default_factory=PolicyState)
    fingerprint: dict[str, str] = field(default_factory=dict)
    replay: dict[str, dict[str, Any]] = field(default_factory=dict)
    pending: dict[str, PendingCall] = field(default_factory=dict)
    journal: dict[str, dict[str, Any]] = field(default_factory=dict)
    shares_usage: bool = False
    batch: list[ModelMessage] = field(default_factory=list)
    batch_ctx: RunContext[Any] | None = None
    inflight: dict[str, _InFlight] = field(default_factory=dict)


@dataclass
class Continuations(AbstractCapability[Any]):
    """Make an agent suspend into continuations instead of blocking.

    Add it to every agent that may suspend, the root and each sub-agent::

        agent = Agent(model, capabilities=[Continuations()])

    Args:
        policies: Suspension policies evaluated before each model request (G7).
        clock: The monotonic clock that wall-clock policies read.
    """

    policies: Sequence[SuspensionPolicy] = ()
    clock: Clock = default_clock
    _state: _RunState | None = field(default=None, repr=False, compare=False)

    async def for_run(self, ctx: RunContext[Any]) -> AbstractCapability[Any]:
        """Return a fresh instance holding this run's state."""
        return dataclasses.replace(self, _state=_RunState())

    @property
    def _st(self) -> _RunState:
        if self._state is None:  # pragma: no cover - for_run always runs first
            self._state = _RunState()
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

    async def wrap_run(
        self, ctx: RunContext[Any], *, handler: WrapRunHandler
    ) -> AgentRunResult[Any]:
        """Replay or resume a nested run, and turn a suspension into ``FrameSuspended``."""
        st = self._st
        if _RUN_ID.get() == ctx.run_id:
            return await handler()  # another Continuations instance already handles this run
        _RUN_ID.set(ctx.run_id)
        st.active = True
        st.agent_name = _agent_name(ctx)
        resume = _RESUME.get()
        if resume is not None and resume.agent_name == st.agent_name:
            _RESUME.set(None)
            st.sub = resume.sub
            self._load_plan(resume.plan)
        else:
            scope = CURRENT_CALL.get()
            if scope is not None:
                sub = scope.start(st.agent_name, prompt_digest(t.jsonable(ctx.prompt)))
                if sub.replay is not None:
                    return t.load_run_result(sub.replay["result"], t.output_type_of(ctx.agent))
                if sub.plan is not None:
                    return await self._resume_nested(ctx, sub)
                st.sub = sub
                st.path, st.agents = sub.path, scope.agents
                st.shares_usage = scope.owner is ctx.usage
        st.managed = MANAGED.get()
        CURRENT_CALL.set(None)
        MANAGED.set(False)
        nested = st.sub
        try:
            result = await handler()
        except FrameSuspended as suspended:
            if nested is not None:
                nested.suspended(suspended.frame)
                # Leave the run only when the concurrent siblings have stopped too: a
                # TaskGroup would cancel them, gather would leave them running unrecorded.
                await nested.wait_for_siblings()
            raise
        except BaseException:
            if nested is not None:
                nested.failed()
            raise
        if nested is not None:
            nested.completed({"framework": t.FRAMEWORK, "result": t.dump_run_result(result)})
        return result

    async def on_run_error(
        self, ctx: RunContext[Any], *, error: BaseException
    ) -> AgentRunResult[Any]:
        """Refuse a suspension of a root run that was not started through ``run``/``resume``.

        Raising here replaces the run's error; every other error is raised unchanged.
        """
        st = self._st
        if isinstance(error, FrameSuspended) and st.active and st.sub is None and not st.managed:
            raise unmanaged_suspension(error.frame, "continuations_pydantic_ai.run") from None
        raise error

    def _load_plan(self, plan: FramePlan) -> None:
        st = self._st
        st.plan = plan
        st.path = plan.path
        st.agents = st.sub.scope.agents if st.sub is not None else ()
        state = plan.frame.state
        st.policy = PolicyState.from_dict(plan.frame.policy_state)
        st.replay = dict(state.get("journal", {}))
        st.shares_usage = bool(state.get("shares_usage", False))

    async def _resume_nested(self, ctx: RunContext[Any], sub: SubRun) -> AgentRunResult[Any]:
        """Run this agent again from its suspended frame instead of the fresh prompt."""
        agent = ctx.agent
        if agent is None:  # pragma: no cover - Pydantic AI always sets it
            raise RuntimeError("RunContext.agent is not set")
        assert sub.plan is not None
        state = sub.plan.frame.state
        usage = ctx.usage if state.get("shares_usage") else t.load_usage(state.get("usage"))
        token = _RESUME.set(_Resume(sub.plan, sub, _agent_name(ctx)))
        run_token = _RUN_ID.set(None)
        try:
            result: AgentRunResult[Any] = await agent.run(
                message_history=t.load_messages(state["messages"]),
                deps=ctx.deps,
                model=ctx.model if isinstance(ctx.model, Model) else None,
                usage=usage,
                usage_limits=ctx.usage_limits,
            )
        except FrameSuspended:
            raise
        except BaseException:
            sub.failed()  # it may have failed before its own run took it over
            raise
        finally:
            _RUN_ID.reset(run_token)
            _RESUME.reset(token)
        return result

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
            if cp is not None:
                # Before every model request (the first included): a crash from here on
                # repeats at most this request. A sub-agent checkpoints the whole tree.
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
                frame = self._frame(ctx, list(ctx.messages), "checkpoint", pending=False)
                await self._checkpoint(cp, frame)
        if isinstance(node, CallToolsNode):
            st.replay.clear()
            st.plan = None
            if st.pending:
                raise FrameSuspended(self._frame(ctx, list(ctx.messages), "calls"))
        return result

    async def _checkpoint(self, cp: Checkpointer, frame: Frame) -> None:
        """Write ``frame`` as the run's checkpoint; a sub-agent's goes into the whole tree."""
        sub = self._st.sub
        if sub is None:
            await cp.step(frame)
        else:
            await sub.checkpoint(frame, timeout=cp.lease_seconds)

    async def _checkpoint_tree(self, cp: Checkpointer) -> None:
        """Checkpoint the tree while a sub-agent of a call of this batch reached a boundary.

        This frame is the batch's model response, the results of the calls that completed, and
        every delegating call pending on its sub-agent runs' latest frames; a crash then loses
        at most the step each sub-agent was in.
        """
        st = self._st
        ctx = st.batch_ctx
        if ctx is None:  # the batch is over: its results are in the next checkpoint
            return
        pending: list[PendingCall] = []
        for call in st.pending.values():
            if call.kind == "child":
                runs = tuple(run.model_copy(update={"frame": checkpoint_form(run.frame)})
                             for run in call.children)  # fmt: skip
                pending.append(call.model_copy(update={"children": runs}))
        for flight in list(st.inflight.values()):
            if flight.scope.has_records:
                pending.append(
                    self._pending_call(
                        flight.call,
                        flight.tool_def,
                        "child",
                        step=flight.step,
                        children=flight.scope.checkpoint_children(),
                        metadata=flight.scope.metadata(),
                    )
                )
        frame = self._frame(ctx, st.batch, "checkpoint")
        await self._checkpoint(cp, frame.model_copy(update={"pending": tuple(pending)}))

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
            "messages": t.dump_messages(messages),
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
        st.inflight[call.tool_call_id] = _InFlight(scope, call, tool_def, step)
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
            return _PLACEHOLDER
        except FrameSuspended:
            return await self._child(call, tool_def, step, scope)
        except BaseExceptionGroup as group:  # a TaskGroup whose sub-agents suspended
            if not (scope.suspended and is_suspension(group)):
                raise
            return await self._child(call, tool_def, step, scope)
        except CallDeferred as deferred:
            self._add_pending(
                call,
                tool_def,
                "input",
                step=step,
                metadata={"deferred": deferred.metadata or {}, "deferred_kind": deferred.kind},
            )
            await self._suspended_call(path, call.tool_name)
            return _PLACEHOLDER
        except ApprovalRequired as required:
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
            return _PLACEHOLDER
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

    async def _child(
        self, call: ToolCallPart, tool_def: ToolDefinition, step: int, scope: CallScope
    ) -> Any:
        """Record a delegating call whose sub-agent runs suspended as a ``child`` pending call."""
        scope.check_replayed(completed=False)
        self._st.pending[call.tool_call_id] = self._pending_call(
            call,
            tool_def,
            "child",
            step=step,
            children=scope.children(),
            metadata=scope.metadata(),
        )
        await self._suspended_call(scope.path, call.tool_name)
        return _PLACEHOLDER

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

    # -- output functions ---------------------------------------------------------------

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

    # -- pending calls --------------------------------------------------------------------

    def _call_plan(self, call: ToolCallPart) -> CallPlan | None:
        """The plan for a call of the resumed step (the plan is dropped after that step)."""
        plan = self._st.plan
        return plan.calls.get(call.tool_call_id) if plan is not None else None

    async def _suspended_call(self, path: tuple[str, ...], tool: str) -> None:
        cp = CHECKPOINTER.get()
        if cp is not None:
            await journal(cp, lambda: cp.tool_suspended(path, tool))

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
        self._st.pending[call.tool_call_id] = self._pending_call(
            call,
            tool_def,
            kind,
            step=step,
            reason=reason,
            expires_at=expires_at,
            approvers=approvers,
            metadata=metadata,
        )

    @staticmethod
    def _pending_call(
        call: ToolCallPart,
        tool_def: ToolDefinition,
        kind: str,
        *,
        step: int,
        reason: str | None = None,
        expires_at: datetime | None = None,
        approvers: tuple[str, ...] = (),
        children: tuple[Any, ...] = (),
        metadata: dict[str, Any] | None = None,
    ) -> PendingCall:
        return PendingCall.model_validate(
            {
                "call_id": call.tool_call_id,
                "tool": call.tool_name,
                "step": step,
                "args": call.args_as_dict(),
                "kind": kind,
                "reason": reason,
                "expires_at": expires_at,
                "approvers": approvers,
                "args_schema": tool_def.parameters_json_schema,
                "children": children,
                "metadata": metadata or {},
            }
        )


def _agent_name(ctx: RunContext[Any]) -> str:
    agent = ctx.agent
    name = getattr(agent, "name", None) if agent is not None else None
    return str(name) if name else "agent"


def last_response(messages: list[ModelMessage]) -> ModelResponse | None:
    """Re-exported for ``_run``: the response a suspended step's history ends with."""
    return t.last_response(messages)
