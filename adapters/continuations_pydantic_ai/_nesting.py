"""Nesting for Pydantic AI: nested runs, the delegating calls that wait on them, tree checkpoints.

Mixed into the ``Continuations`` capability (:mod:`._capability`):

- ``wrap_run`` gives a run started inside a tool body its identity in that tool call's
  :class:`~continuations_core.CallScope`; it replays a run that completed before (its journaled
  ``AgentRunResult``), resumes one that suspended (from its frame), or runs it, and records the
  result; a nested run that suspends waits for its concurrent siblings before its suspension
  leaves the run, so a ``TaskGroup`` does not cancel them and ``gather`` does not orphan them;
- a delegating call whose sub-agent runs suspended becomes one ``child`` pending call holding
  all of them, with the runs that completed and the steps it recorded;
- with a store, a sub-agent's step boundary checkpoints the whole tree: each level adds its
  frame, with its delegating calls in flight pending on their runs' latest frames.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic_ai import RunContext
from pydantic_ai.capabilities import WrapRunHandler
from pydantic_ai.messages import ModelMessage, ToolCallPart
from pydantic_ai.models import Model
from pydantic_ai.run import AgentRunResult
from pydantic_ai.tools import ToolDefinition

from continuations_core import (
    CallScope,
    Frame,
    FramePlan,
    FrameSuspended,
    PendingCall,
    PolicyState,
)
from continuations_core.spi import (
    CHECKPOINTER,
    CURRENT_CALL,
    MANAGED,
    Checkpointer,
    SubRun,
    checkpoint_form,
    journal,
    prompt_digest,
    unmanaged_suspension,
)

from . import _translate as t

__all__ = ["PLACEHOLDER", "RESUME", "NestingHooks", "Resume", "RunState", "pending_call"]

#: What a call waiting for a decision returns inside the run; it never reaches a model.
PLACEHOLDER = "(suspended: awaiting a decision)"


@dataclass
class Resume:
    """Handed from ``resume()`` or an outer ``wrap_run`` to the run that resumes a frame."""

    plan: FramePlan
    sub: SubRun | None
    agent_name: str


@dataclass
class InFlight:
    """A tool call of the current batch that is executing, for checkpoints of the tree."""

    scope: CallScope
    call: ToolCallPart
    tool_def: ToolDefinition
    step: int


RESUME: ContextVar[Resume | None] = ContextVar("continuations_pai_resume", default=None)
_RUN_ID: ContextVar[str | None] = ContextVar("continuations_pai_run_id", default=None)


@dataclass
class RunState:
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
    inflight: dict[str, InFlight] = field(default_factory=dict)
    dumps: t.HistoryDumps = field(default_factory=t.HistoryDumps)


def pending_call(
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
    """A pending call of this adapter's frames, for the tool call ``call``."""
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


class NestingHooks:
    """The capability's hooks and helpers for nested runs and delegating calls."""

    if TYPE_CHECKING:

        @property
        def _st(self) -> RunState: ...

        def _load_plan(self, plan: FramePlan) -> None: ...

        def _frame(
            self,
            ctx: RunContext[Any],
            messages: list[ModelMessage],
            reason: str,
            *,
            pending: bool = True,
        ) -> Frame: ...

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
        resume = RESUME.get()
        if resume is not None and resume.agent_name == st.agent_name:
            RESUME.set(None)
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

    async def _resume_nested(self, ctx: RunContext[Any], sub: SubRun) -> AgentRunResult[Any]:
        """Run this agent again from its suspended frame instead of the fresh prompt."""
        agent = ctx.agent
        if agent is None:  # pragma: no cover - Pydantic AI always sets it
            raise RuntimeError("RunContext.agent is not set")
        assert sub.plan is not None
        state = sub.plan.frame.state
        usage = ctx.usage if state.get("shares_usage") else t.load_usage(state.get("usage"))
        token = RESUME.set(Resume(sub.plan, sub, _agent_name(ctx)))
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
            RESUME.reset(token)
        return result

    async def _checkpoint(self, cp: Checkpointer, frame: Frame, *, hold: bool = False) -> None:
        """Write ``frame`` as the run's checkpoint; a sub-agent's goes into the whole tree.

        ``hold``: a root step may go with the run's next write (see ``Checkpointer.step``).
        """
        sub = self._st.sub
        if sub is None:
            await cp.step(frame, hold=hold)
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
                    pending_call(
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

    async def _child(
        self, call: ToolCallPart, tool_def: ToolDefinition, step: int, scope: CallScope
    ) -> Any:
        """Record a delegating call whose sub-agent runs suspended as a ``child`` pending call."""
        scope.check_replayed(completed=False)
        self._st.pending[call.tool_call_id] = pending_call(
            call,
            tool_def,
            "child",
            step=step,
            children=scope.children(),
            metadata=scope.metadata(),
        )
        await self._suspended_call(scope.path, call.tool_name)
        return PLACEHOLDER

    async def _suspended_call(self, path: tuple[str, ...], tool: str) -> None:
        cp = CHECKPOINTER.get()
        if cp is not None:
            await journal(cp, lambda: cp.tool_suspended(path, tool))


def _agent_name(ctx: RunContext[Any]) -> str:
    agent = ctx.agent
    name = getattr(agent, "name", None) if agent is not None else None
    return str(name) if name else "agent"
