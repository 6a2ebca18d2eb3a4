"""Nesting for Strands: nested invocations, replay, resume and tree checkpoints.

Mixed into the ``Continuations`` plugin (:mod:`._plugin`):

- a ``BeforeInvocationEvent`` hook gives an invocation started inside a tool body its identity
  in that tool call's :class:`~continuations_core.CallScope` and makes it resume its frame
  (``load_snapshot``, ``messages=[]``) whatever prompt the body passed, or replay a run that
  completed: the run's recorded messages go into the history and an ``InvokeModelStage``
  middleware answers with its recorded final response, so the body gets the same
  ``AgentResult`` (stop reason, message, structured output) and the agent object the same
  history, without a model call or a tool run;
- the ``AfterInvocationEvent`` hook (last) records a completed nested run, or raises
  ``FrameSuspended`` when the run stopped on interrupts, after its concurrent siblings stopped;
- with a store, a sub-agent's step boundary checkpoints the whole tree: each level adds its
  frame, with its delegating calls in flight pending on their runs' latest frames.
"""

from __future__ import annotations

import contextvars
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from strands import Agent
from strands.hooks import AfterInvocationEvent, BeforeInvocationEvent
from strands.middleware import InvokeModelContext, ModelStopReason
from strands.types.events import TypedEvent

from continuations_core import (
    CallScope,
    Deny,
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
    check_fingerprint,
    checkpoint_form,
    prompt_digest,
    unmanaged_suspension,
)

from . import _translate as t

__all__ = ["RESUME", "Invocation", "NestingHooks", "Resume", "prepared_snapshot"]


@dataclass
class Resume:
    """Handed from ``resume()`` to the root invocation that resumes a frame."""

    plan: FramePlan
    agent_name: str


RESUME: contextvars.ContextVar[Resume | None] = contextvars.ContextVar(
    "continuations_strands_resume", default=None
)


@dataclass
class Invocation:
    """State of one invocation of one agent."""

    agent_name: str
    path: tuple[str, ...] = ()
    agents: tuple[str, ...] = ()
    sub: SubRun | None = None
    plan: FramePlan | None = None
    policy: PolicyState = field(default_factory=PolicyState)
    usage: dict[str, int] = field(default_factory=dict)
    start: dict[str, int] = field(default_factory=dict)
    requests: int = 0
    structured_output: str | None = None
    restore: dict[str, Any] | None = None
    managed: bool = False
    children: dict[str, dict[str, Any]] = field(default_factory=dict)
    gates: dict[str, dict[str, Any]] = field(default_factory=dict)
    admitted: dict[str, Any] = field(default_factory=dict)
    inflight: dict[str, tuple[CallScope, int, dict[str, Any]]] = field(default_factory=dict)
    history: int = 0
    model_stop: str | None = None
    replay: t.Replay | None = None
    dumps: t.HistoryDumps = field(default_factory=t.HistoryDumps)


class NestingHooks:
    """The plugin's hooks for nested invocations, replay, resume and tree checkpoints."""

    if TYPE_CHECKING:
        _runs: dict[int, Invocation]
        _finished: dict[int, dict[str, int]]

        def _inv(self, agent: Any) -> Invocation: ...

        def _frame(
            self, agent: Agent, inv: Invocation, reason: str, interrupts: list[Any]
        ) -> Frame: ...

        def _usage(self, agent: Agent, inv: Invocation) -> dict[str, int]: ...

    # -- invocation: nesting, replay, resume --------------------------------------------

    def _before_invocation(self, event: BeforeInvocationEvent) -> None:
        agent = event.agent
        inv = Invocation(agent_name=name_of(agent))
        # Strands accumulates usage per agent object, across invocations: count from here.
        inv.start = t.usage_of(agent)
        inv.managed = MANAGED.get()
        self._runs[id(agent)] = inv
        scope = CURRENT_CALL.get()
        if scope is None:
            inv.structured_output = t.STRUCTURED.get()
        resume = RESUME.get()
        if resume is not None and resume.agent_name == inv.agent_name:
            RESUME.set(None)
            self._load_plan(inv, resume.plan)
            return
        if scope is None:
            return
        sub = scope.start(inv.agent_name, prompt_digest(t.prompt_of(event.messages)))
        inv.sub = sub
        inv.path, inv.agents = sub.path, scope.agents
        if sub.replay is not None:
            # Completed before the suspension: give the body the same result, run nothing.
            inv.replay = t.Replay.of(sub.replay)
            if inv.replay is None:  # recorded by schema 2: its final text only
                event.cancel = str(sub.replay.get("text", ""))
            else:
                event.messages = inv.replay.messages
            return
        try:
            inv.restore = t.take(agent)
            inv.history = len(agent.messages)
            plan = sub.plan
            if plan is not None:
                check_fingerprint(
                    plan,
                    framework=t.FRAMEWORK,
                    agent=inv.agent_name,
                    fingerprint=t.fingerprint(agent),
                )
                self._load_plan(inv, plan)
                t.load(agent, prepared_snapshot(plan))
                event.messages = []
        except BaseException:
            sub.failed()  # the invocation ends here; its delegating call must not wait for it
            raise

    def _load_plan(self, inv: Invocation, plan: FramePlan) -> None:
        state = plan.frame.state
        inv.plan = plan
        inv.path = plan.path
        inv.policy = PolicyState.from_dict(plan.frame.policy_state)
        inv.usage = dict(state.get("usage", {}))
        inv.requests = int(inv.usage.pop("requests", 0))
        inv.history = int(state.get("history", 0))
        inv.structured_output = state.get("structured_output") or inv.structured_output

    async def _after_invocation(self, event: AfterInvocationEvent) -> None:
        agent = event.agent
        inv = self._inv(agent)
        result = event.result
        if result is not None and result.stop_reason == "interrupt" and inv.replay is None:
            await self._suspend(agent, inv, "calls", list(result.interrupts or []))
        self._runs.pop(id(agent), None)
        self._finished[id(agent)] = self._usage(agent, inv)
        sub = inv.sub
        if sub is None or inv.replay is not None or sub.replay is not None:
            return
        if result is None:
            sub.failed()
            return
        sub.completed(t.recorded_run(agent, result, inv.history, inv.model_stop))

    async def _suspend(
        self, agent: Agent, inv: Invocation, reason: str, interrupts: list[Any]
    ) -> None:
        frame = self._frame(agent, inv, reason, interrupts)
        self._runs.pop(id(agent), None)
        if inv.sub is not None:
            if inv.restore is not None:
                t.load(agent, inv.restore)  # leave the agent object reusable by its caller
            inv.sub.suspended(frame)
            # Leave the run only when the concurrent siblings have stopped too.
            await inv.sub.wait_for_siblings()
        elif not inv.managed:
            raise unmanaged_suspension(frame, "continuations_strands.run")
        raise FrameSuspended(frame)

    async def _checkpoint(
        self, agent: Agent, inv: Invocation, *, hold: bool = False, after_batch: bool = False
    ) -> None:
        """At a step boundary: the run's checkpoint; a sub-agent's goes into the whole tree.

        ``hold``: a root step may go with the run's next write (see ``Checkpointer.step``).
        ``after_batch``: before a model request, where the root may need no step of its own
        (see ``Checkpointer.after_batch``).
        """
        cp = CHECKPOINTER.get()
        if cp is None or inv.replay is not None:
            return
        if after_batch and inv.sub is None and await cp.after_batch():
            return
        frame = self._frame(agent, inv, "checkpoint", [])
        if inv.sub is None:
            await cp.step(frame, hold=hold)
        else:
            await inv.sub.checkpoint(frame, timeout=cp.lease_seconds)

    async def _checkpoint_tree(self, agent: Any, inv: Invocation, cp: Checkpointer) -> None:
        """Checkpoint the tree while a sub-agent of a call of this batch reached a boundary.

        This frame is the batch's model response with every delegating call pending on its
        sub-agent runs' latest frames; on recovery the batch runs again, calls that completed
        replay from the journal, and delegating calls are re-entered.
        """
        if self._runs.get(id(agent)) is not inv:  # the invocation is over
            return
        step = t.model_turn(agent.messages)
        uses = {str(u["toolUseId"]): u for u in t.tool_uses(agent.messages[-1])}
        schemas = t.tool_schemas(agent)
        pending: list[PendingCall] = []
        records = [
            (tuid, runs["children"], runs["metadata"]) for tuid, runs in inv.children.items()
        ]
        for tuid, (scope, _step, meta) in list(inv.inflight.items()):
            if scope.has_records:
                records.append((tuid, scope.checkpoint_children(), {**scope.metadata(), **meta}))
        for tuid, children, meta in records:
            use = uses.get(tuid)
            if use is None:
                continue
            tool = str(use.get("name"))
            pending.append(
                PendingCall.model_validate(
                    {
                        "call_id": tuid,
                        "tool": tool,
                        "step": step,
                        "args": dict(use.get("input") or {}),
                        "args_schema": schemas.get(tool),
                        "kind": "child",
                        "children": [
                            run.model_copy(update={"frame": checkpoint_form(run.frame)})
                            for run in children
                        ],
                        "metadata": meta,
                    }
                )
            )
        frame = self._frame(agent, inv, "checkpoint", [])
        frame = frame.model_copy(update={"pending": tuple(pending)})
        if inv.sub is None:
            await cp.tree_step(frame)
        else:
            await inv.sub.checkpoint(frame, timeout=cp.lease_seconds)

    async def _replay_model(
        self, ctx: InvokeModelContext, next_fn: Any
    ) -> AsyncGenerator[TypedEvent, None]:
        """Answer a replayed run's model call with its recorded final response."""
        inv = self._runs.get(id(ctx.agent))
        replay = inv.replay if inv is not None else None
        if replay is None:
            async for event in next_fn(ctx):
                yield event
            return
        yield ModelStopReason(
            stop_reason=replay.answer(inv.agent_name if inv is not None else "agent"),
            message=replay.final,
            usage={"inputTokens": 0, "outputTokens": 0, "totalTokens": 0},
            metrics={"latencyMs": 0},
        )


def prepared_snapshot(plan: FramePlan) -> dict[str, Any]:
    """The frame's snapshot with every ``input`` interrupt answered from the plan."""
    snapshot: dict[str, Any] = plan.frame.state["snapshot"]
    responses: dict[str, Any] = {}
    for call_plan in plan.calls.values():
        meta = call_plan.call.metadata
        interrupt_id = meta.get("interrupt_id")
        if interrupt_id is None:
            continue
        decision = call_plan.decision
        if (
            call_plan.call.kind == "input"
            and decision is not None
            and not isinstance(decision, Deny)
        ):
            responses[interrupt_id] = getattr(decision, "value", None)
        else:
            # Gates and delegating calls are decided from the plan by the hooks; the answer
            # only marks the interrupt as handled.
            responses[interrupt_id] = {"continuations": "resumed"}
    return t.answered(snapshot, responses)


def name_of(agent: Any) -> str:
    """An agent's name (``"agent"`` when it has none)."""
    return str(getattr(agent, "name", None) or "agent")
