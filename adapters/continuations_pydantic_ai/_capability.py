"""The ``Continuations`` capability: makes any Pydantic AI agent continuation-aware.

It hooks Pydantic AI's own tool-execution path through public capability hooks only:

- ``wrap_tool_execute`` gates marked tools, answers decided calls on resume, replays the
  results of sibling calls that completed before the suspension, and catches a sub-agent's
  :class:`~continuations_core.FrameSuspended` so the call becomes a ``child`` pending call;
- ``wrap_node_run`` ends a tool batch that left pending calls by raising ``FrameSuspended``
  with this agent's frame, counts model turns and evaluates suspension policies before each
  model request;
- ``wrap_run`` makes a nested run replay a journaled result or resume its frame;
- ``prepare_tools`` records the tool fingerprint and detects drift before any tool runs.

A suspended step is resumed by running the agent on its history, which ends with the model
response that made the calls; the calls are then answered by this capability, never by
resuming a history that ends in a request (which Pydantic AI would answer "interrupted").
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic_ai import CallToolsNode, ModelRequestNode, RunContext
from pydantic_ai.capabilities import (
    AbstractCapability,
    AgentNode,
    RawToolArgs,
    ValidatedToolArgs,
    WrapNodeRunHandler,
    WrapRunHandler,
    WrapToolExecuteHandler,
)
from pydantic_ai.exceptions import ApprovalRequired, CallDeferred
from pydantic_ai.messages import ModelMessage, ModelResponse, ToolCallPart
from pydantic_ai.models import Model
from pydantic_ai.run import AgentRunResult
from pydantic_ai.tools import ToolDefinition
from pydantic_ai.toolsets import AbstractToolset
from pydantic_graph import End

from continuations_core import (
    ApprovalSpec,
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
)
from continuations_core._durable import (
    CHECKPOINTER,
    INTERRUPTED_MESSAGE,
    enter_call,
    exit_call,
)
from continuations_core._policies import Clock, default_clock
from continuations_core._protocol import (
    CURRENT_CALL,
    MANAGED,
    check_fingerprint,
    unmanaged_suspension,
)

from . import _translate as t

__all__ = ["Continuations"]

_PLACEHOLDER = "(suspended: awaiting a decision)"


@dataclass
class _Resume:
    """Handed from ``resume()`` or an outer ``wrap_run`` to the run that resumes a frame."""

    plan: FramePlan
    scope: CallScope | None
    ordinal: int | None
    agent_name: str


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
    scope: CallScope | None = None
    ordinal: int | None = None
    plan: FramePlan | None = None
    drift_checked: bool = False
    policy: PolicyState = field(default_factory=PolicyState)
    gated: dict[str, ApprovalSpec] = field(default_factory=dict)
    not_idempotent: set[str] = field(default_factory=set)
    fingerprint: dict[str, str] = field(default_factory=dict)
    replay: dict[str, dict[str, Any]] = field(default_factory=dict)
    pending: dict[str, PendingCall] = field(default_factory=dict)
    journal: dict[str, dict[str, Any]] = field(default_factory=dict)
    shares_usage: bool = False


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
        """Record which tools are gated; the toolset itself is not changed."""
        self._st.gated, self._st.not_idempotent = t.gated_tools(toolset)
        return None

    async def prepare_tools(
        self, ctx: RunContext[Any], tool_defs: list[ToolDefinition]
    ) -> list[ToolDefinition]:
        """Fingerprint the tools and, when resuming, refuse a drifted agent before tools run.

        Tools flagged ``requires_approval=True`` are gated by this capability instead of
        Pydantic AI's in-run deferral, so their kind is reset to ``function``.
        """
        st = self._st
        st.fingerprint = t.fingerprint(tool_defs)
        if st.active and st.plan is not None and not st.drift_checked:
            st.drift_checked = True
            check_fingerprint(
                st.plan, framework=t.FRAMEWORK, agent=st.agent_name, fingerprint=st.fingerprint
            )
        return [
            dataclasses.replace(td, kind="function")
            if td.kind == "unapproved" and td.name in st.gated
            else td
            for td in tool_defs
        ]

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
            st.scope, st.ordinal = resume.scope, resume.ordinal
            self._load_plan(resume.plan)
        else:
            scope = CURRENT_CALL.get()
            if scope is not None:
                ordinal = scope.next_ordinal()
                recorded = scope.replayed(ordinal)
                if recorded is not None:
                    return t.load_run_result(recorded["result"], t.output_type_of(ctx.agent))
                plan = scope.resume_plan(ordinal)
                if plan is not None:
                    return await self._resume_nested(ctx, plan, scope, ordinal)
                st.scope, st.ordinal = scope, ordinal
                st.path, st.agents = scope.path, scope.agents
                st.shares_usage = scope.owner is ctx.usage
        st.managed = MANAGED.get()
        CURRENT_CALL.set(None)
        MANAGED.set(False)
        try:
            result = await handler()
        except FrameSuspended as suspended:
            if st.scope is not None and st.ordinal is not None:
                st.scope.suspended(st.ordinal, suspended.frame)
            raise
        if st.scope is not None and st.ordinal is not None:
            st.scope.record(
                st.ordinal,
                {
                    "framework": t.FRAMEWORK,
                    "agent": st.agent_name,
                    "result": t.dump_run_result(result),
                },
            )
        return result

    async def on_run_error(
        self, ctx: RunContext[Any], *, error: BaseException
    ) -> AgentRunResult[Any]:
        """Refuse a suspension of a root run that was not started through ``run``/``resume``.

        Raising here replaces the run's error; every other error is raised unchanged.
        """
        st = self._st
        if isinstance(error, FrameSuspended) and st.active and st.scope is None and not st.managed:
            raise unmanaged_suspension(error.frame, "continuations_pydantic_ai.run") from None
        raise error

    def _load_plan(self, plan: FramePlan) -> None:
        st = self._st
        st.plan = plan
        st.path = plan.path
        st.agents = st.scope.agents if st.scope is not None else ()
        state = plan.frame.state
        st.policy = PolicyState.from_dict(plan.frame.policy_state)
        st.replay = dict(state.get("journal", {}))
        st.shares_usage = bool(state.get("shares_usage", False))

    async def _resume_nested(
        self, ctx: RunContext[Any], plan: FramePlan, scope: CallScope, ordinal: int
    ) -> AgentRunResult[Any]:
        """Run this agent again from its suspended frame instead of the fresh prompt."""
        agent = ctx.agent
        if agent is None:  # pragma: no cover - Pydantic AI always sets it
            raise RuntimeError("RunContext.agent is not set")
        state = plan.frame.state
        usage = ctx.usage if state.get("shares_usage") else t.load_usage(state.get("usage"))
        token = _RESUME.set(_Resume(plan, scope, ordinal, _agent_name(ctx)))
        run_token = _RUN_ID.set(None)
        try:
            result: AgentRunResult[Any] = await agent.run(
                message_history=t.load_messages(state["messages"]),
                deps=ctx.deps,
                model=ctx.model if isinstance(ctx.model, Model) else None,
                usage=usage,
                usage_limits=ctx.usage_limits,
            )
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
        cp = CHECKPOINTER.get() if st.scope is None else None
        if isinstance(node, ModelRequestNode):
            history = [*ctx.messages, node.request]
            fired = st.policy.firing(self.policies, self.clock) if self.policies else None
            if fired is not None:
                raise FrameSuspended(self._frame(ctx, history, f"policy:{fired.key}"))
            if cp is not None:
                # Before every model request (the first included): a crash from here on
                # repeats at most this request.
                await cp.step(self._frame(ctx, history, "checkpoint", pending=False))
        if isinstance(node, CallToolsNode):
            st.pending.clear()
            st.journal.clear()
        result = await handler(node)
        if isinstance(node, ModelRequestNode) and isinstance(result, CallToolsNode):
            st.policy.record_turn(result.model_response.usage.total_tokens)
            if cp is not None:
                await cp.step(self._frame(ctx, list(ctx.messages), "checkpoint", pending=False))
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
        """Gate, answer, replay or re-enter the call; record what it left pending."""
        st = self._st
        if not st.active:
            return await handler(args)
        call_id = call.tool_call_id
        recorded = st.replay.get(call_id)
        if recorded is not None:
            st.journal[call_id] = recorded
            return t.load_tool_result(recorded)
        call_plan = self._call_plan(call)
        if call_plan is not None and call_plan.decision is not None:
            decision = call_plan.decision
            if isinstance(decision, Deny):
                return decision.message
            if isinstance(decision, Respond):
                return decision.value
            ctx.tool_call_approved = True
            return await self._execute(ctx, call, tool_def, args, handler, call_plan)
        spec = st.gated.get(call.tool_name)
        if call_plan is None and spec is not None and spec.applies(args):
            expires = datetime.now(UTC) + spec.expires if spec.expires is not None else None
            self._add_pending(call, tool_def, "approval", reason=spec.reason, expires_at=expires)
            return _PLACEHOLDER
        return await self._execute(ctx, call, tool_def, args, handler, call_plan)

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
        segment = f"{call.tool_name}:{call.tool_call_id}"
        scope = CallScope(
            path=(*st.path, segment), agents=(*st.agents, st.agent_name), owner=ctx.usage
        )
        if call_plan is not None and call_plan.child is not None:
            scope.resume = call_plan
            scope.replay = list(call_plan.call.metadata.get("journal", []))
            scope.suspended_ordinal = int(call_plan.call.metadata.get("ordinal", 0))
        cp = CHECKPOINTER.get()
        if cp is not None:
            earlier = cp.replay(scope.path, idempotent=call.tool_name not in st.not_idempotent)
            if earlier is not None:
                if earlier.get("interrupted"):
                    return INTERRUPTED_MESSAGE
                st.journal[call.tool_call_id] = earlier
                return t.load_tool_result(earlier)
            approved = call_plan is not None and isinstance(call_plan.decision, Approve)
            await cp.tool_started(scope.path, call.tool_name, approved=approved)
        token = CURRENT_CALL.set(scope)
        key_token = enter_call(scope.path)
        try:
            result = await handler(args)
        except FrameSuspended as suspended:
            ordinal = scope.suspension_ordinal
            self._add_pending(
                call,
                tool_def,
                "child",
                child=suspended.frame,
                metadata=scope.child_metadata(ordinal),
            )
            await self._suspended_call(scope.path, call.tool_name)
            return _PLACEHOLDER
        except CallDeferred as deferred:
            self._add_pending(
                call,
                tool_def,
                "input",
                metadata={"deferred": deferred.metadata or {}, "deferred_kind": deferred.kind},
            )
            await self._suspended_call(scope.path, call.tool_name)
            return _PLACEHOLDER
        except ApprovalRequired as required:
            reason = (required.metadata or {}).get("reason")
            self._add_pending(
                call,
                tool_def,
                "approval",
                reason=str(reason) if reason is not None else None,
                metadata={"deferred": required.metadata or {}},
            )
            await self._suspended_call(scope.path, call.tool_name)
            return _PLACEHOLDER
        finally:
            exit_call(key_token)
            CURRENT_CALL.reset(token)
        recorded = t.dump_tool_result(result)
        st.journal[call.tool_call_id] = recorded
        if cp is not None:
            await cp.tool_completed(scope.path, call.tool_name, recorded)
        return result

    def _call_plan(self, call: ToolCallPart) -> CallPlan | None:
        plan = self._st.plan
        return plan.calls.get(call.tool_call_id) if plan is not None else None

    async def _suspended_call(self, path: tuple[str, ...], tool: str) -> None:
        cp = CHECKPOINTER.get()
        if cp is not None:
            await cp.tool_suspended(path, tool)

    def _add_pending(
        self,
        call: ToolCallPart,
        tool_def: ToolDefinition,
        kind: str,
        *,
        reason: str | None = None,
        expires_at: datetime | None = None,
        child: Frame | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self._st.pending[call.tool_call_id] = PendingCall.model_validate(
            {
                "call_id": call.tool_call_id,
                "tool": call.tool_name,
                "args": call.args_as_dict(),
                "kind": kind,
                "reason": reason,
                "expires_at": expires_at,
                "args_schema": tool_def.parameters_json_schema,
                "child": child,
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
