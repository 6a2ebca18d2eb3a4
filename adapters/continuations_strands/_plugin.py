"""The ``Continuations`` plugin: makes any Strands agent continuation-aware.

It uses Strands' own public extension points only:

- a ``BeforeToolCallEvent`` hook gates marked tools with a native interrupt and, on resume,
  applies each decision (edited args through ``tool_use``, denial through ``cancel_tool``);
- an ``ExecuteToolStage`` wrap middleware gives each tool call a
  :class:`~continuations_core.CallScope`, waits for every sub-agent run its body started (in
  tasks or threads), and turns suspended ones into a native interrupt of the parent, so Strands
  itself keeps the sibling results of the suspended batch;
- a ``BeforeInvocationEvent`` hook gives a nested run its identity in its delegating call and
  makes it resume its frame (``load_snapshot``, ``messages=[]``), whatever prompt the tool body
  passed, or replay a run that completed: the run's recorded messages go into the history and
  an ``InvokeModelStage`` middleware answers with its recorded final response, so the body gets
  the same ``AgentResult`` (stop reason, message, structured output) and the agent object the
  same history, without a model call or a tool run;
- ``BeforeModelCallEvent``/``AfterModelCallEvent`` hooks count turns and apply suspension
  policies; an ``AfterInvocationEvent`` hook (last) raises ``FrameSuspended`` when the run
  stopped on interrupts.
"""

from __future__ import annotations

import asyncio
import contextvars
import weakref
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import Any

from strands import Agent, Plugin
from strands.hooks import (
    AfterInvocationEvent,
    AfterModelCallEvent,
    AfterToolsEvent,
    BeforeInvocationEvent,
    BeforeModelCallEvent,
    BeforeToolCallEvent,
    BeforeToolsEvent,
    HookOrder,
    MessageAddedEvent,
)
from strands.middleware import (
    ExecuteToolContext,
    ExecuteToolStage,
    InvokeModelContext,
    InvokeModelStage,
    ModelStopReason,
    ToolResultEvent,
)
from strands.types.events import TypedEvent

from continuations_core import (
    Approve,
    CallPlan,
    CallScope,
    ContinuationError,
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
    Checkpointer,
    enter_call,
    exit_call,
    is_idempotent,
)
from continuations_core._markers import admitted
from continuations_core._policies import Clock, default_clock
from continuations_core._protocol import (
    CURRENT_CALL,
    MANAGED,
    SubRun,
    check_fingerprint,
    check_unique_call_ids,
    fail_run,
    fatal_error,
    is_suspension,
    raise_refused,
    unmanaged_suspension,
)
from continuations_core._schema import segment
from continuations_core._scope import checkpoint_form, prompt_digest
from continuations_core._steps import journal

from . import _translate as t
from ._gate import call_ids, decide, refusal

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
        agent.add_hook(self._before_tools, BeforeToolsEvent, order=HookOrder.SDK_FIRST)
        agent.add_hook(self._after_tools, AfterToolsEvent, order=HookOrder.SDK_FIRST)
        agent.add_hook(self._before_model, BeforeModelCallEvent)
        agent.add_hook(self._after_model, AfterModelCallEvent)
        agent.add_hook(self._after_invocation, AfterInvocationEvent, order=HookOrder.SDK_LAST)
        agent.add_hook(self._message_added, MessageAddedEvent)
        agent.add_middleware(ExecuteToolStage, self._wrap_tool)
        agent.add_middleware(InvokeModelStage, self._replay_model)

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
        inv.restore = t.take(agent)
        inv.history = len(agent.messages)
        plan = sub.plan
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
                "history": inv.history,
            },
            pending=tuple(self._pending(agent, inv, snapshot, interrupts)),
            policy_state=inv.policy.to_dict(),
            suspended_by=reason,
        )

    async def _suspend(
        self, agent: Agent, inv: _Invocation, reason: str, interrupts: list[Any]
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
        step = t.model_turn(t.snapshot_messages(snapshot))
        calls: dict[str, PendingCall] = {}
        for interrupt in interrupts:
            name = str(interrupt.name)
            tuid = t.tool_use_id_of(str(interrupt.id)) or ""
            use = uses.get(tuid, {})
            tool = str(use.get("name", "unknown"))
            base: dict[str, Any] = {
                "call_id": tuid,
                "tool": tool,
                "step": step,
                "args": dict(use.get("input") or {}),
                "args_schema": schemas.get(tool),
                "metadata": {"interrupt_id": interrupt.id, "interrupt_name": name},
            }
            if name.startswith(_CHILD) and tuid in inv.children:
                child = inv.children[tuid]
                base["metadata"].update(child["metadata"])
                calls[tuid] = PendingCall.model_validate(
                    {**base, "kind": "child", "children": child["children"]}
                )
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
                await self._suspend(event.agent, inv, f"policy:{fired.key}", [])
        await self._checkpoint(event.agent, inv)

    async def _message_added(self, event: MessageAddedEvent) -> None:
        message = event.message
        if message.get("role") == "assistant" and any("toolUse" in b for b in message["content"]):
            # After a model response that calls tools: a crash repeats at most this batch.
            await self._checkpoint(event.agent, self._inv(event.agent))

    async def _checkpoint(self, agent: Agent, inv: _Invocation) -> None:
        """At a step boundary: the run's checkpoint; a sub-agent's goes into the whole tree."""
        cp = CHECKPOINTER.get()
        if cp is None or inv.replay is not None:
            return
        frame = self._frame(agent, inv, "checkpoint", [])
        if inv.sub is None:
            await cp.step(frame)
        else:
            await inv.sub.checkpoint(frame, timeout=cp.lease_seconds)

    async def _checkpoint_tree(self, agent: Any, inv: _Invocation, cp: Checkpointer) -> None:
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

    def _after_model(self, event: AfterModelCallEvent) -> None:
        if event.stop_response is None:
            return
        inv = self._inv(event.agent)
        if inv.replay is not None:
            return
        inv.policy.record_turn(t.response_tokens(event.stop_response.message))
        inv.requests += 1
        inv.model_stop = str(event.stop_response.stop_reason)

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

    # -- tools --------------------------------------------------------------------------

    def _call_plan(self, inv: _Invocation, tool_use_id: str, step: int) -> CallPlan | None:
        """The plan for a call of the resumed batch: same id and same model turn (a call id
        the model reuses in a later turn is a different call)."""
        found = inv.plan.calls.get(tool_use_id) if inv.plan is not None else None
        if found is None or found.call.step not in (None, step):
            return None
        return found

    def _before_tools(self, event: BeforeToolsEvent) -> None:
        check_unique_call_ids(call_ids(dict(event.message)), self._inv(event.agent).agent_name)

    def _after_tools(self, event: AfterToolsEvent) -> None:
        raise_refused()  # a marked tool refused in this batch (or the like): stop here

    def _gate(self, event: BeforeToolCallEvent) -> None:
        inv = self._inv(event.agent)
        use = event.tool_use
        tuid = str(use["toolUseId"])
        call_plan = self._call_plan(inv, tuid, t.model_turn(event.agent.messages))
        decision = call_plan.decision if call_plan is not None else None
        if isinstance(decision, Deny):
            event.cancel_tool = decision.message
            return
        if isinstance(decision, Approve) and decision.args is not None:
            event.tool_use = use = {**use, "input": dict(decision.args)}
        admission = decide(event.selected_tool, dict(use.get("input") or {}), call_plan)
        if admission.hold is None:
            inv.admitted[tuid] = admission.tool
            return
        inv.gates[tuid] = admission.gate_fields()
        reason = admission.hold.reason
        event.interrupt(f"{_GATE}:0", reason={"continuations": "approval", "reason": reason})

    async def _wrap_tool(
        self, ctx: ExecuteToolContext, next_fn: Any
    ) -> AsyncGenerator[TypedEvent, None]:
        inv = self._inv(ctx.agent)
        tuid = str(ctx.tool_use["toolUseId"])
        name = str(ctx.tool_use["name"])
        step = t.model_turn(ctx.agent.messages)
        path = (*inv.path, segment(name, tuid, step))
        admitted_tool = inv.admitted.pop(tuid, None)
        if approval_spec(ctx.tool) is not None and admitted_tool is not ctx.tool:
            # The executor runs a marked tool the gate did not admit for this call.
            why = "no gate admitted this call" if admitted_tool is None else "the tool changed"
            error = refusal(name, inv.agent_name, why)
            fail_run(error)
            yield ToolResultEvent(_failed(tuid, str(error)))
            return
        if inv.replay is not None and not t.is_structured_output_tool(ctx.tool):
            # A replayed run: its final response's calls get their recorded results.
            yield ToolResultEvent(inv.replay.tool_result(tuid, inv.agent_name))
            return
        call_plan = self._call_plan(inv, tuid, step)
        reentered = call_plan is not None and call_plan.reentered
        round_ = int(call_plan.call.metadata.get("round", 0)) + 1 if call_plan and reentered else 0
        scope = CallScope(
            path=path,
            agents=(*inv.agents, inv.agent_name),
            resume=call_plan if reentered else None,
            loop=asyncio.get_running_loop(),
        )
        cp = CHECKPOINTER.get()
        if cp is not None:
            earlier = cp.replay(path, idempotent=is_idempotent(ctx.tool))
            if earlier is not None and earlier.get("interrupted") and reentered:
                earlier = None  # in flight at a crash: its frame holds its runs, re-enter it
            if earlier is not None:
                yield ToolResultEvent(_replayed(tuid, earlier))
                return
            await journal(cp, lambda: cp.tool_started(path, name))
            scope.on_checkpoint = lambda: self._checkpoint_tree(ctx.agent, inv, cp)
        inv.inflight[tuid] = (scope, step, {"round": round_})
        token = CURRENT_CALL.set(scope)
        key_token = enter_call(path)
        outcome: ToolResultEvent | None = None
        suspended = False
        try:
            with admitted(ctx.tool, path):
                try:
                    async for event in next_fn(ctx):
                        if isinstance(event, ToolResultEvent):
                            outcome = event
                        else:
                            yield event
                finally:
                    # Every sub-agent run the body started (in tasks or threads) has completed
                    # or suspended before the call ends, however the body awaited them.
                    await scope.settle()
        except FrameSuspended:
            suspended = True
        except BaseExceptionGroup as group:  # a TaskGroup whose sub-agents suspended
            if not (scope.suspended and is_suspension(group)):
                raise
            suspended = True
        finally:
            inv.inflight.pop(tuid, None)
            exit_call(key_token)
            CURRENT_CALL.reset(token)
        if suspended or scope.suspended:
            try:
                scope.check_replayed(completed=False)
            except ContinuationError as mismatch:
                fail_run(mismatch)
                yield ToolResultEvent(_failed(tuid, str(mismatch)), exception=mismatch)
                return
            if cp is not None:
                await journal(cp, lambda: cp.tool_suspended(path, name))
            inv.children[tuid] = {
                "children": scope.children(),
                "metadata": {**scope.metadata(), "round": round_},
            }
            # Interrupt names must change per round: Strands derives the id from the name, and
            # an id that was answered before would return its old answer.
            ctx.interrupt(f"{_CHILD}:{round_}", reason={"continuations": "child"})
        if outcome is None:
            return
        fatal = _fatal(outcome.exception)
        if fatal is None and reentered and outcome.tool_result.get("status") != "error":
            try:
                scope.check_replayed(completed=True)
            except ContinuationError as mismatch:
                fatal = mismatch
        if fatal is not None:
            fail_run(fatal)  # the framework made it a tool result; the run must stop instead
            yield ToolResultEvent(_failed(tuid, str(fatal)), exception=fatal)
            return
        if cp is not None:
            recorded = {"tool_result": t.encode(dict(outcome.tool_result))}
            await journal(cp, lambda: cp.tool_completed(path, name, recorded))
        yield outcome


def _fatal(exception: BaseException | None) -> ContinuationError | None:
    """An error of ours that a tool body raised and that must fail the whole run."""
    return exception if fatal_error(exception) else None


def _failed(tool_use_id: str, text: str) -> Any:
    return {"toolUseId": tool_use_id, "status": "error", "content": [{"text": text}]}


def _replayed(tool_use_id: str, recorded: dict[str, Any]) -> Any:
    """The tool result to give instead of running a call again after a crash."""
    if recorded.get("interrupted"):
        return _failed(tool_use_id, INTERRUPTED_MESSAGE)
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
