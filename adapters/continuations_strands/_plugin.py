"""The ``Continuations`` plugin: makes any Strands agent continuation-aware.

It uses Strands' own public extension points only:

- a ``BeforeToolCallEvent`` hook gates marked tools with a native interrupt and, on resume,
  applies each decision (edited args through ``tool_use``, denial through ``cancel_tool``);
- an ``ExecuteToolStage`` wrap middleware gives each tool call a
  :class:`~continuations_core.CallScope`, waits for every sub-agent run its body started (in
  tasks or threads), and turns suspended ones into a native interrupt of the parent, so Strands
  itself keeps the sibling results of the suspended batch;
- ``BeforeInvocationEvent``/``AfterInvocationEvent`` hooks and an ``InvokeModelStage``
  middleware make nested runs replay, resume or run, and record them (:mod:`._nesting`);
- ``BeforeModelCallEvent``/``AfterModelCallEvent`` and ``MessageAddedEvent`` hooks count turns,
  apply suspension policies and write checkpoints at step boundaries.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncGenerator, Callable, Coroutine, Sequence
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
    InvokeModelStage,
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
    FrameSuspended,
    PendingCall,
    SuspensionPolicy,
    approval_spec,
)
from continuations_core.spi import (
    CHECKPOINTER,
    CURRENT_CALL,
    INTERRUPTED_MESSAGE,
    Checkpointer,
    Clock,
    admitted,
    check_unique_call_ids,
    default_clock,
    enter_call,
    exit_call,
    fail_run,
    fatal_error,
    is_idempotent,
    is_suspension,
    journal,
    raise_refused,
    segment,
)

from . import _translate as t
from ._gate import call_ids, decide, refusal
from ._nesting import Invocation, NestingHooks, name_of

__all__ = ["Continuations"]

_GATE = "continuations:approval"
_CHILD = "continuations:child"


#: The plugin attached to each agent, so ``run``/``resume`` can check it is there.
ATTACHED: weakref.WeakKeyDictionary[Any, Continuations] = weakref.WeakKeyDictionary()


class Continuations(NestingHooks, Plugin):
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
        self._runs: dict[int, Invocation] = {}
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

    def _inv(self, agent: Any) -> Invocation:
        inv = self._runs.get(id(agent))
        if inv is None:  # a hook fired outside an invocation we saw start
            inv = self._runs[id(agent)] = Invocation(agent_name=name_of(agent))
        return inv

    def _frame(self, agent: Agent, inv: Invocation, reason: str, interrupts: list[Any]) -> Frame:
        snapshot = inv.dumps.take(agent)
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

    def _usage(self, agent: Agent, inv: Invocation) -> dict[str, int]:
        now = t.usage_of(agent)
        totals = {k: inv.usage.get(k, 0) + v - inv.start.get(k, 0) for k, v in now.items()}
        return {**totals, "requests": inv.requests}

    def finished_usage(self, agent: Agent) -> dict[str, int]:
        """Usage of the run that ``agent`` just completed, across its suspensions."""
        return self._finished.pop(id(agent), {})

    def _pending(
        self, agent: Agent, inv: Invocation, snapshot: dict[str, Any], interrupts: list[Any]
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
        await self._checkpoint(event.agent, inv, after_batch=True)

    async def _message_added(self, event: MessageAddedEvent) -> None:
        message = event.message
        if message.get("role") == "assistant" and any("toolUse" in b for b in message["content"]):
            # After a model response that calls tools: a crash repeats at most this batch.
            # Held for the first call's tool_started, so it costs no write of its own.
            await self._checkpoint(event.agent, self._inv(event.agent), hold=True)

    def _after_model(self, event: AfterModelCallEvent) -> None:
        if event.stop_response is None:
            return
        inv = self._inv(event.agent)
        if inv.replay is not None:
            return
        inv.policy.record_turn(t.response_tokens(event.stop_response.message))
        inv.requests += 1
        inv.model_stop = str(event.stop_response.stop_reason)

    # -- tools --------------------------------------------------------------------------

    def _call_plan(self, inv: Invocation, tool_use_id: str, step: int) -> CallPlan | None:
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
        if inv.replay is not None:
            return  # a replayed run's calls get their recorded results; nothing runs
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
        if inv.replay is not None and not t.is_structured_output_tool(ctx.tool):
            # A replayed run: its final response's calls get their recorded results; no body
            # runs, so there is nothing to gate.
            yield ToolResultEvent(inv.replay.tool_result(tuid, inv.agent_name))
            return
        admitted_tool = inv.admitted.pop(tuid, None)
        if approval_spec(ctx.tool) is not None and admitted_tool is not ctx.tool:
            # The executor runs a marked tool the gate did not admit for this call.
            why = "no gate admitted this call" if admitted_tool is None else "the tool changed"
            error = refusal(name, inv.agent_name, why)
            fail_run(error)
            yield ToolResultEvent(_failed(tuid, str(error)))
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
            approved = call_plan is not None and isinstance(call_plan.decision, Approve)
            failed = await _journaled(cp, lambda: cp.tool_started(path, name, approved=approved))
            if failed is not None:  # the call did not run; the attempt ends after the batch
                yield ToolResultEvent(_failed(tuid, str(failed)), exception=failed)
                return
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
                failed = await _journaled(cp, lambda: cp.tool_suspended(path, name))
                if failed is not None:
                    yield ToolResultEvent(_failed(tuid, str(failed)), exception=failed)
                    return
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
            failed = await _journaled(cp, lambda: cp.tool_completed(path, name, recorded))
            if failed is not None:
                yield ToolResultEvent(_failed(tuid, str(failed)), exception=failed)
                return
        yield outcome


async def _journaled(
    cp: Checkpointer, make: Callable[[], Coroutine[Any, Any, None]]
) -> ContinuationError | None:
    """Write to the run's journal; a write that fails (the store, a lost claim) fails the run.

    Strands makes whatever a tool raises an error result for the model, and the model would
    carry on without the call, or run other tools; the run must stop after the batch instead
    (the checkpointer then records what did not run). Returns the error, if it failed.
    """
    try:
        await journal(cp, make)
    except ContinuationError as error:
        fail_run(error)
        return error
    return None


def _fatal(exception: BaseException | None) -> ContinuationError | None:
    """An error of ours that a tool body raised and that must fail the whole run."""
    if isinstance(exception, Exception):
        exception = t.unwrapped(exception)  # raised by a sub-agent's hook, inside Strands' wrap
    return exception if fatal_error(exception) else None


def _failed(tool_use_id: str, text: str) -> Any:
    return {"toolUseId": tool_use_id, "status": "error", "content": [{"text": text}]}


def _replayed(tool_use_id: str, recorded: dict[str, Any]) -> Any:
    """The tool result to give instead of running a call again after a crash."""
    if recorded.get("interrupted"):
        return _failed(tool_use_id, INTERRUPTED_MESSAGE)
    result = t.decode(recorded["tool_result"])
    return {**result, "toolUseId": tool_use_id}
