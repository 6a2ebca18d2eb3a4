"""The ``Continuations`` plugin: makes any Strands agent continuation-aware.

It uses Strands' own public extension points only:

- a ``BeforeToolCallEvent`` hook gates marked tools with a native interrupt and, on resume,
  applies each decision (edited args through ``tool_use``, denial through ``cancel_tool``);
- an ``ExecuteToolStage`` wrap middleware gives each tool call a
  :class:`~continuations_core.CallScope`, and turns a sub-agent's
  :class:`~continuations_core.FrameSuspended` into a native interrupt of the parent, so Strands
  itself keeps the sibling results of the suspended batch;
- a ``BeforeInvocationEvent`` hook makes a nested run replay a journaled result (``cancel``) or
  resume its frame (``load_snapshot``, ``messages=[]``), whatever prompt the tool body passed;
- ``BeforeModelCallEvent``/``AfterModelCallEvent`` hooks count turns and apply suspension
  policies; an ``AfterInvocationEvent`` hook (last) raises ``FrameSuspended`` when the run
  stopped on interrupts.
"""

from __future__ import annotations

import contextvars
import weakref
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from strands import Agent, Plugin
from strands.hooks import (
    AfterInvocationEvent,
    AfterModelCallEvent,
    BeforeInvocationEvent,
    BeforeModelCallEvent,
    BeforeToolCallEvent,
    HookOrder,
    MessageAddedEvent,
)
from strands.middleware import ExecuteToolContext, ExecuteToolStage, ToolResultEvent
from strands.types.events import TypedEvent

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
    SuspensionPolicy,
    approval_spec,
)
from continuations_core._durable import (
    CHECKPOINTER,
    INTERRUPTED_MESSAGE,
    enter_call,
    exit_call,
    is_idempotent,
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

_GATE = "continuations:approval"
_CHILD = "continuations:child"


#: The plugin attached to each agent, so ``run``/``resume`` can check it is there.
ATTACHED: weakref.WeakKeyDictionary[Any, Continuations] = weakref.WeakKeyDictionary()


@dataclass
class _Resume:
    """Handed from ``resume()`` to the root invocation that resumes a frame."""

    plan: FramePlan
    agent_name: str


_RESUME: contextvars.ContextVar[_Resume | None] = contextvars.ContextVar(
    "continuations_strands_resume", default=None
)


@dataclass
class _Invocation:
    """State of one invocation of one agent."""

    agent_name: str
    path: tuple[str, ...] = ()
    agents: tuple[str, ...] = ()
    scope: CallScope | None = None
    ordinal: int | None = None
    plan: FramePlan | None = None
    policy: PolicyState = field(default_factory=PolicyState)
    usage: dict[str, int] = field(default_factory=dict)
    start: dict[str, int] = field(default_factory=dict)
    requests: int = 0
    structured_output: str | None = None
    restore: dict[str, Any] | None = None
    managed: bool = False
    children: dict[str, tuple[Frame, dict[str, Any]]] = field(default_factory=dict)
    gates: dict[str, dict[str, Any]] = field(default_factory=dict)


class Continuations(Plugin):
    """Make a Strands agent suspend into continuations instead of blocking.

    Add it to every agent that may suspend, the root and each sub-agent::

        agent = Agent(model=..., tools=[...], plugins=[Continuations()])

    Args:
        policies: Suspension policies evaluated before each model call (G7).
        clock: The monotonic clock that wall-clock policies read.
    """

    name = "agent-continuations"

    def __init__(
        self, policies: Sequence[SuspensionPolicy] = (), clock: Clock = default_clock
    ) -> None:
        super().__init__()
        self.policies = tuple(policies)
        self.clock = clock
        self._runs: dict[int, _Invocation] = {}
        self._finished: dict[int, dict[str, int]] = {}

    def init_agent(self, agent: Agent) -> None:
        """Register the hooks and middleware on ``agent``."""
        ATTACHED[agent] = self
        agent.add_hook(self._before_invocation, BeforeInvocationEvent, order=HookOrder.SDK_FIRST)
        agent.add_hook(self._gate, BeforeToolCallEvent)
        agent.add_hook(self._before_model, BeforeModelCallEvent)
        agent.add_hook(self._after_model, AfterModelCallEvent)
        agent.add_hook(self._after_invocation, AfterInvocationEvent, order=HookOrder.SDK_LAST)
        agent.add_hook(self._message_added, MessageAddedEvent)
        agent.add_middleware(ExecuteToolStage, self._wrap_tool)

    def _inv(self, agent: Any) -> _Invocation:
        inv = self._runs.get(id(agent))
        if inv is None:  # a hook fired outside an invocation we saw start
            inv = self._runs[id(agent)] = _Invocation(agent_name=_name(agent))
        return inv

    # -- invocation: nesting, replay, resume --------------------------------------------

    def _before_invocation(self, event: BeforeInvocationEvent) -> None:
        agent = event.agent
        inv = _Invocation(agent_name=_name(agent))
        # Strands accumulates usage per agent object, across invocations: count from here.
        inv.start = t.usage_of(agent)
        inv.managed = MANAGED.get()
        self._runs[id(agent)] = inv
        scope = CURRENT_CALL.get()
        if scope is None:
            inv.structured_output = t.STRUCTURED.get()
        resume = _RESUME.get()
        if resume is not None and resume.agent_name == inv.agent_name:
            _RESUME.set(None)
            self._load_plan(inv, resume.plan)
            return
        if scope is None:
            return
        ordinal = scope.next_ordinal()
        inv.scope, inv.ordinal = scope, ordinal
        inv.path, inv.agents = scope.path, scope.agents
        recorded = scope.replayed(ordinal)
        if recorded is not None:
            # Completed before the suspension: answer with its recorded text, run nothing.
            event.cancel = str(recorded.get("text", ""))
            return
        inv.restore = t.take(agent)
        plan = scope.resume_plan(ordinal)
        if plan is not None:
            check_fingerprint(
                plan, framework=t.FRAMEWORK, agent=inv.agent_name, fingerprint=t.fingerprint(agent)
            )
            self._load_plan(inv, plan)
            t.load(agent, prepared_snapshot(plan))
            event.messages = []

    def _load_plan(self, inv: _Invocation, plan: FramePlan) -> None:
        state = plan.frame.state
        inv.plan = plan
        inv.path = plan.path
        inv.policy = PolicyState.from_dict(plan.frame.policy_state)
        inv.usage = dict(state.get("usage", {}))
        inv.requests = int(inv.usage.pop("requests", 0))
        inv.structured_output = state.get("structured_output") or inv.structured_output

    def _after_invocation(self, event: AfterInvocationEvent) -> None:
        agent = event.agent
        inv = self._inv(agent)
        result = event.result
        if result is not None and result.stop_reason == "interrupt":
            self._suspend(agent, inv, "calls", list(result.interrupts or []))
        self._runs.pop(id(agent), None)
        self._finished[id(agent)] = self._usage(agent, inv)
        if inv.scope is not None and inv.ordinal is not None and result is not None:
            inv.scope.record(
                inv.ordinal,
                {"framework": t.FRAMEWORK, "agent": inv.agent_name, "text": str(result).strip()},
            )

    def _frame(self, agent: Agent, inv: _Invocation, reason: str, interrupts: list[Any]) -> Frame:
        snapshot = t.take(agent)
        return Frame(
            framework=t.FRAMEWORK,
            agent=inv.agent_name,
            fingerprint=t.fingerprint(agent),
            state={
                "snapshot": snapshot,
                "usage": self._usage(agent, inv),
                "structured_output": inv.structured_output,
            },
            pending=tuple(self._pending(agent, inv, snapshot, interrupts)),
            policy_state=inv.policy.to_dict(),
            suspended_by=reason,
        )

    def _suspend(self, agent: Agent, inv: _Invocation, reason: str, interrupts: list[Any]) -> None:
        frame = self._frame(agent, inv, reason, interrupts)
        self._runs.pop(id(agent), None)
        if inv.scope is not None and inv.ordinal is not None:
            if inv.restore is not None:
                t.load(agent, inv.restore)  # leave the agent object reusable by its caller
            inv.scope.suspended(inv.ordinal, frame)
        elif not inv.managed:
            raise unmanaged_suspension(frame, "continuations_strands.run")
        raise FrameSuspended(frame)

    def _usage(self, agent: Agent, inv: _Invocation) -> dict[str, int]:
        now = t.usage_of(agent)
        totals = {k: inv.usage.get(k, 0) + v - inv.start.get(k, 0) for k, v in now.items()}
        return {**totals, "requests": inv.requests}

    def finished_usage(self, agent: Agent) -> dict[str, int]:
        """Usage of the run that ``agent`` just completed, across its suspensions."""
        return self._finished.pop(id(agent), {})

    def _pending(
        self, agent: Agent, inv: _Invocation, snapshot: dict[str, Any], interrupts: list[Any]
    ) -> list[PendingCall]:
        uses = t.pending_tool_uses(snapshot)
        schemas = t.tool_schemas(agent)
        calls: dict[str, PendingCall] = {}
        for interrupt in interrupts:
            name = str(interrupt.name)
            tuid = t.tool_use_id_of(str(interrupt.id)) or ""
            use = uses.get(tuid, {})
            tool = str(use.get("name", "unknown"))
            base: dict[str, Any] = {
                "call_id": tuid,
                "tool": tool,
                "args": dict(use.get("input") or {}),
                "args_schema": schemas.get(tool),
                "metadata": {"interrupt_id": interrupt.id, "interrupt_name": name},
            }
            if name.startswith(_CHILD) and tuid in inv.children:
                frame, meta = inv.children[tuid]
                base["metadata"].update(meta)
                calls[tuid] = PendingCall.model_validate({**base, "kind": "child", "child": frame})
            elif name.startswith(_GATE):
                gate = inv.gates.get(tuid, {})
                calls[tuid] = PendingCall.model_validate({**base, "kind": "approval", **gate})
            elif tuid not in calls:
                reason = interrupt.reason
                calls[tuid] = PendingCall.model_validate(
                    {
                        **base,
                        "kind": "input",
                        "reason": reason
                        if isinstance(reason, str) or reason is None
                        else str(reason),
                    }
                )
        return list(calls.values())

    # -- model calls: policies ----------------------------------------------------------

    async def _before_model(self, event: BeforeModelCallEvent) -> None:
        inv = self._inv(event.agent)
        if self.policies:
            fired = inv.policy.firing(self.policies, self.clock)
            if fired is not None:
                self._suspend(event.agent, inv, f"policy:{fired.key}", [])
        await self._checkpoint(event.agent, inv)

    async def _message_added(self, event: MessageAddedEvent) -> None:
        message = event.message
        if message.get("role") == "assistant" and any("toolUse" in b for b in message["content"]):
            # After a model response that calls tools: a crash repeats at most this batch.
            await self._checkpoint(event.agent, self._inv(event.agent))

    async def _checkpoint(self, agent: Agent, inv: _Invocation) -> None:
        cp = CHECKPOINTER.get()
        if cp is not None and inv.scope is None:
            await cp.step(self._frame(agent, inv, "checkpoint", []))

    def _after_model(self, event: AfterModelCallEvent) -> None:
        if event.stop_response is None:
            return
        inv = self._inv(event.agent)
        inv.policy.record_turn(t.response_tokens(event.stop_response.message))
        inv.requests += 1

    # -- tools --------------------------------------------------------------------------

    def _call_plan(self, inv: _Invocation, tool_use_id: str) -> CallPlan | None:
        return inv.plan.calls.get(tool_use_id) if inv.plan is not None else None

    def _gate(self, event: BeforeToolCallEvent) -> None:
        inv = self._inv(event.agent)
        use = event.tool_use
        tuid = str(use["toolUseId"])
        call_plan = self._call_plan(inv, tuid)
        decision = call_plan.decision if call_plan is not None else None
        if isinstance(decision, Deny):
            event.cancel_tool = decision.message
            return
        if isinstance(decision, Approve) and decision.args is not None:
            event.tool_use = {**use, "input": dict(decision.args)}
        if call_plan is not None:
            return
        spec = approval_spec(event.selected_tool)
        args = dict(use.get("input") or {})
        if spec is None or not spec.applies(args):
            return
        expires = datetime.now(UTC) + spec.expires if spec.expires is not None else None
        inv.gates[tuid] = {"reason": spec.reason, "expires_at": expires}
        event.interrupt(f"{_GATE}:0", reason={"continuations": "approval", "reason": spec.reason})

    async def _wrap_tool(
        self, ctx: ExecuteToolContext, next_fn: Any
    ) -> AsyncGenerator[TypedEvent, None]:
        inv = self._inv(ctx.agent)
        tuid = str(ctx.tool_use["toolUseId"])
        segment = f"{ctx.tool_use['name']}:{tuid}"
        scope = CallScope(path=(*inv.path, segment), agents=(*inv.agents, inv.agent_name))
        call_plan = self._call_plan(inv, tuid)
        round_ = 0
        if call_plan is not None and call_plan.child is not None:
            meta = call_plan.call.metadata
            scope.resume = call_plan
            scope.replay = list(meta.get("journal", []))
            scope.suspended_ordinal = int(meta.get("ordinal", 0))
            round_ = int(meta.get("round", 0)) + 1
        cp = CHECKPOINTER.get()
        if cp is not None:
            earlier = cp.replay(scope.path, idempotent=is_idempotent(ctx.tool))
            if earlier is not None:
                yield ToolResultEvent(_replayed(tuid, earlier))
                return
            approved = call_plan is not None and isinstance(call_plan.decision, Approve)
            await cp.tool_started(scope.path, str(ctx.tool_use["name"]), approved=approved)
        token = CURRENT_CALL.set(scope)
        key_token = enter_call(scope.path)
        try:
            async for event in next_fn(ctx):
                if cp is not None and isinstance(event, ToolResultEvent):
                    recorded = {"tool_result": t.encode(dict(event.tool_result))}
                    await cp.tool_completed(scope.path, str(ctx.tool_use["name"]), recorded)
                yield event
        except FrameSuspended as suspended:
            if cp is not None:
                await cp.tool_suspended(scope.path, str(ctx.tool_use["name"]))
            meta = {**scope.child_metadata(scope.suspension_ordinal), "round": round_}
            inv.children[tuid] = (suspended.frame, meta)
            # Interrupt names must change per round: Strands derives the id from the name, and
            # an id that was answered before would return its old answer.
            ctx.interrupt(f"{_CHILD}:{round_}", reason={"continuations": "child"})
        finally:
            exit_call(key_token)
            CURRENT_CALL.reset(token)


def _replayed(tool_use_id: str, recorded: dict[str, Any]) -> Any:
    """The tool result to give instead of running a call again after a crash."""
    if recorded.get("interrupted"):
        return {
            "toolUseId": tool_use_id,
            "status": "error",
            "content": [{"text": INTERRUPTED_MESSAGE}],
        }
    result = t.decode(recorded["tool_result"])
    return {**result, "toolUseId": tool_use_id}


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


def _name(agent: Any) -> str:
    return str(getattr(agent, "name", None) or "agent")
