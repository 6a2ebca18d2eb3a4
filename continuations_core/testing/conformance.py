"""The conformance suite: plain async scenarios that every adapter must pass.

Each scenario takes a :class:`~continuations_core.testing.spec.Harness` and raises
``AssertionError`` on failure; it needs no pytest, so third-party adapters can run it too.
``tests/test_conformance.py`` parametrizes :data:`SCENARIOS` over the adapters.
"""

from __future__ import annotations

import gc
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from .._decisions import EXPIRED_MESSAGE
from .._policies import EveryNTurns, TokenBudget, WallClockBudget
from .._protocol import Completed, Outcome, Suspended
from .._schema import Continuation
from .._signing import Keyring
from ..errors import (
    AgentDrift,
    AlreadyClaimed,
    ContinuationExpired,
    ContinuationTampered,
    InvalidDecision,
    MissingDecisions,
    UnknownPath,
    UnsignedContinuation,
)
from .spec import AgentSpec, Call, Harness, Ledger, ToolSpec, ungated

__all__ = ["KEYS", "SCENARIOS", "Scenario"]

KEYS = Keyring({"conformance": b"conformance-key-0123456789abcdef"})

Scenario = Callable[[Harness], Awaitable[None]]

TRANSFER = ToolSpec("transfer", "gated", "payment", reason="Moves money", amount_over=1000)
LOOKUP = ToolSpec("lookup")
BIG = {"to": "bob", "amount": 5000}


def payer(*calls: Call, name: str = "payer", transfer: ToolSpec = TRANSFER) -> AgentSpec:
    """One agent whose first turn makes ``calls`` in parallel."""
    return AgentSpec(name, turns=(calls,), tools=(LOOKUP, transfer, ToolSpec("ask", "input")))


def chain(depth: int, *, leaf_calls: tuple[Call, ...] | None = None) -> AgentSpec:
    """``depth`` agents, each delegating to the next through a plain tool body.

    Every level also makes a plain sibling call in the same step as its delegation.
    """
    leaf = AgentSpec(
        f"level{depth}",
        turns=(leaf_calls or (Call("lookup", {"who": "leaf"}), Call("transfer", BIG)),),
        tools=(LOOKUP, TRANSFER),
    )
    spec = leaf
    for level in range(depth - 1, 0, -1):
        spec = AgentSpec(
            f"level{level}",
            turns=((Call("lookup", {"who": f"l{level}"}), Call("delegate", {"task": "next"})),),
            tools=(LOOKUP, ToolSpec("delegate", "delegate", "task", children=(spec,))),
        )
    return spec


def roundtrip(cont: Continuation) -> Continuation:
    """Through JSON text and back, as a new process would see it."""
    return Continuation.from_json(cont.to_json())


def suspended(outcome: Outcome[Any]) -> Continuation:
    assert isinstance(outcome, Suspended), f"expected a suspension, got {outcome!r}"
    return roundtrip(outcome.continuation)


def completed(outcome: Outcome[Any]) -> Completed[Any]:
    assert isinstance(outcome, Completed), f"expected completion, got {outcome!r}"
    return outcome


async def start(h: Harness, spec: AgentSpec) -> tuple[Any, Ledger, Continuation]:
    ledger = Ledger()
    agent = h.build(spec, ledger)
    return agent, ledger, suspended(await h.run(agent, "go", keys=KEYS))


async def approve_runs_once(h: Harness) -> None:
    """Approve: the gated body runs exactly once, completed siblings never run again."""
    agent, ledger, cont = await start(
        h, payer(Call("lookup", {"who": "bob"}), Call("transfer", BIG))
    )
    assert ledger.count("transfer") == 0 and ledger.count("lookup") == 1
    [req] = cont.requests
    assert (req.tool, req.args, req.kind, req.reason) == (
        "transfer",
        BIG,
        "approval",
        "Moves money",
    )
    assert req.agents == ("payer",) and len(req.path) == 1
    out = completed(await h.resume(agent, cont.approve(req.path, by="alice"), keys=KEYS))
    assert ledger.runs("transfer") == [BIG]
    assert ledger.count("lookup") == 1
    assert "transfer(amount=5000, to=bob) ok" in ledger.received("payer")
    assert "transfer(amount=5000, to=bob) ok" in str(out.output)


async def when_predicate_gates_only_matching_calls(h: Harness) -> None:
    """A ``when`` predicate that is false lets the call run without suspending."""
    ledger = Ledger()
    agent = h.build(payer(Call("transfer", {"to": "bob", "amount": 10})), ledger)
    completed(await h.run(agent, "go", keys=KEYS))
    assert ledger.runs("transfer") == [{"to": "bob", "amount": 10}]


async def deny_never_runs(h: Harness) -> None:
    """Deny: the body never runs, the model receives the message, and the run continues."""
    agent, ledger, cont = await start(
        h, payer(Call("lookup", {"who": "bob"}), Call("transfer", BIG))
    )
    cont = cont.deny(cont.requests[0].path, "Over the daily limit", by="alice")
    out = completed(await h.resume(agent, cont, keys=KEYS))
    assert ledger.count("transfer") == 0
    assert "Over the daily limit" in ledger.received("payer")
    assert "Over the daily limit" in str(out.output)


async def edited_args_run(h: Harness) -> None:
    """Approve with edited args: the body runs once, with the edited args."""
    agent, ledger, cont = await start(h, payer(Call("transfer", BIG)))
    edited = {"to": "bob", "amount": 4000}
    cont = cont.approve(cont.requests[0].path, args=edited, by="alice")
    completed(await h.resume(agent, cont, keys=KEYS))
    assert ledger.runs("transfer") == [edited]


async def bad_edited_args_rejected(h: Harness) -> None:
    """Edited args that break the tool schema are refused and nothing runs."""
    _agent, ledger, cont = await start(h, payer(Call("transfer", BIG)))
    path = cont.requests[0].path
    for bad in ({"to": "bob", "amount": "lots"}, {"to": "bob"}):
        try:
            cont.approve(path, args=bad)
        except InvalidDecision:
            pass
        else:
            raise AssertionError(f"edited args {bad} were accepted")
    assert cont.decisions == () and ledger.count("transfer") == 0


async def respond_answers_input(h: Harness) -> None:
    """An input call answered with ``respond`` gives the model that value."""
    agent, ledger, cont = await start(h, payer(Call("ask", {"who": "bob"})))
    [req] = cont.requests
    assert req.kind == "input" and req.tool == "ask"
    completed(await h.resume(agent, cont.respond(req.path, "bob's IBAN is X"), keys=KEYS))
    assert "bob's IBAN is X" in ledger.received("payer")


async def nested_depth3_approve(h: Harness) -> None:
    """Depth 3: the leaf request names the chain; approval runs the leaf once, no sibling twice."""
    agent, ledger, cont = await start(h, chain(3))
    [req] = cont.requests
    assert req.agents == ("level1", "level2", "level3")
    # Calls alternate with the sub-agent runs they started: call, run, call, run, leaf call.
    assert [seg.split(":")[0] for seg in req.path[::2]] == ["delegate", "delegate", "transfer"]
    assert [seg.split("#")[0] for seg in req.path[1::2]] == ["level2", "level3"]
    assert (req.tool, req.args) == ("transfer", BIG)
    assert ledger.count("lookup") == 3 and ledger.count("transfer") == 0
    out = completed(await h.resume(agent, cont.approve(req.path), keys=KEYS))
    assert ledger.runs("transfer") == [BIG]
    assert ledger.count("lookup") == 3
    assert "transfer(amount=5000, to=bob) ok" in ledger.received("level3")
    assert "level3 done" in str(out.output)


async def nested_depth3_deny(h: Harness) -> None:
    """Depth 3 deny: the leaf never runs, its model gets the message, every level completes."""
    agent, ledger, cont = await start(h, chain(3))
    cont = cont.deny(cont.requests[0].path, "Not authorised")
    out = completed(await h.resume(agent, cont, keys=KEYS))
    assert ledger.count("transfer") == 0
    assert "Not authorised" in ledger.received("level3")
    assert "level1 done" in str(out.output) and "Not authorised" in str(out.output)


async def two_children_one_step(h: Harness) -> None:
    """Two sub-agents suspended in one parent step both surface and resume independently."""
    child_a = AgentSpec("alpha", turns=((Call("transfer", BIG),),), tools=(TRANSFER,))
    child_b = AgentSpec(
        "beta", turns=((Call("transfer", {"to": "eve", "amount": 9000}),),), tools=(TRANSFER,)
    )
    parent = AgentSpec(
        "parent",
        turns=((Call("to_alpha", {"task": "a"}), Call("to_beta", {"task": "b"})),),
        tools=(
            ToolSpec("to_alpha", "delegate", "task", children=(child_a,)),
            ToolSpec("to_beta", "delegate", "task", children=(child_b,)),
        ),
    )
    agent, ledger, cont = await start(h, parent)
    reqs = {r.agents[-1]: r for r in cont.requests}
    assert set(reqs) == {"alpha", "beta"} and len({r.path for r in cont.requests}) == 2
    cont = cont.approve(reqs["alpha"].path).deny(reqs["beta"].path, "No")
    completed(await h.resume(agent, cont, keys=KEYS))
    assert ledger.runs("transfer") == [BIG]
    assert "No" in ledger.received("beta")


async def mixed_parallel_batch(h: Harness) -> None:
    """A batch mixing auto and gated calls: each auto sibling ran once in total."""
    spec = payer(Call("lookup", {"who": "a"}), Call("transfer", BIG), Call("lookup", {"who": "b"}))
    agent, ledger, cont = await start(h, spec)
    completed(await h.resume(agent, cont.approve(cont.requests[0].path), keys=KEYS))
    assert sorted(a["who"] for a in ledger.runs("lookup")) == ["a", "b"]
    assert ledger.count("transfer") == 1
    received = ledger.received("payer")
    assert received.count("lookup(who=a) ok") == 1 and received.count("lookup(who=b) ok") == 1


async def replays_completed_children(h: Harness) -> None:
    """A re-entered delegating tool replays a sub-agent run that completed, not re-running it."""
    first = AgentSpec("first", turns=((Call("lookup", {"who": "x"}),),), tools=(LOOKUP,))
    second = AgentSpec("second", turns=((Call("transfer", BIG),),), tools=(TRANSFER,))
    parent = AgentSpec(
        "parent",
        turns=((Call("both", {"task": "t"}),),),
        tools=(ToolSpec("both", "delegate", "task", children=(first, second)),),
    )
    agent, ledger, cont = await start(h, parent)
    turns_before = ledger.turns("first")
    out = completed(await h.resume(agent, cont.approve(cont.requests[0].path), keys=KEYS))
    assert ledger.turns("first") == turns_before, "completed sub-agent was run again"
    assert ledger.count("lookup") == 1 and ledger.count("transfer") == 1
    assert "first done" in str(out.output) and "second done" in str(out.output)


async def gated_delegate_asks_once(h: Harness) -> None:
    """A gated delegating tool asks once; re-entered on resume for its sub-agent, it asks no more."""
    child = AgentSpec("child", turns=((Call("transfer", BIG),),), tools=(TRANSFER,))
    delegate = ToolSpec("delegate", "delegate", "task", reason="Delegates payments", gate=True,
                        children=(child,))  # fmt: skip
    parent = AgentSpec("parent", turns=((Call("delegate", {"task": "pay"}),),), tools=(delegate,))
    agent, ledger, cont = await start(h, parent)
    [first] = cont.requests
    assert (first.tool, first.agents, first.reason) == (
        "delegate",
        ("parent",),
        "Delegates payments",
    )
    assert ledger.count("delegate") == 0 and ledger.turns("child") == 0
    again = suspended(await h.resume(agent, cont.approve(first.path), keys=KEYS))
    [second] = again.requests
    assert second.tool == "transfer" and second.agents == ("parent", "child"), second
    assert ledger.count("transfer") == 0
    completed(await h.resume(agent, again.approve(second.path), keys=KEYS))
    assert ledger.runs("transfer") == [BIG]


def _looping(policy: Any, *, seconds: float = 0.0) -> AgentSpec:
    turns = tuple((Call("lookup", {"who": f"p{i}"}),) for i in range(5))
    return AgentSpec(
        "looper", turns=turns, tools=(LOOKUP,), policies=(policy,), seconds_per_turn=seconds
    )


async def _drive(h: Harness, spec: AgentSpec) -> tuple[list[Continuation], Ledger, Any]:
    """Run to completion, resuming every policy suspension from JSON in a fresh agent."""
    ledger = Ledger()
    outcome = await h.run(h.build(spec, ledger), "go", keys=KEYS)
    seen: list[Continuation] = []
    while isinstance(outcome, Suspended):
        cont = roundtrip(outcome.continuation)
        assert cont.requests == [], "a policy suspension has nothing to decide"
        seen.append(cont)
        assert len(seen) < 20, "policy never let the run finish"
        outcome = await h.resume(h.build(spec, ledger), cont, keys=KEYS)
    return seen, ledger, completed(outcome)


async def policy_every_n_turns(h: Harness) -> None:
    """EveryNTurns(2) suspends after turns 2 and 4; its counters travel in the frame."""
    seen, ledger, _out = await _drive(h, _looping(EveryNTurns(2)))
    assert [c.root.suspended_by for c in seen] == ["policy:every_2_turns"] * 2
    assert [c.root.policy_state["turns"] for c in seen] == [2, 4]
    assert [c.seq for c in seen] == [1, 2] and len({c.run_id for c in seen}) == 1
    assert ledger.count("lookup") == 5 and ledger.turns("looper") == 6


async def policy_wall_clock(h: Harness) -> None:
    """WallClockBudget counts only active time, carried across resumes in the frame."""
    seen, ledger, _out = await _drive(h, _looping(WallClockBudget(25), seconds=10))
    assert [c.root.suspended_by for c in seen] == ["policy:wall_clock_25s"]
    assert seen[0].root.policy_state["active_seconds"] == 30
    assert ledger.count("lookup") == 5 and ledger.turns("looper") == 6


async def policy_token_budget(h: Harness) -> None:
    """TokenBudget suspends once per budget; the token count keeps growing across resumes."""
    seen, ledger, _out = await _drive(h, _looping(TokenBudget(1)))
    assert len(seen) == 5
    tokens = [c.root.policy_state["tokens"] for c in seen]
    assert tokens == sorted(tokens) and len(set(tokens)) == len(tokens) and tokens[0] > 0
    assert ledger.count("lookup") == 5 and ledger.turns("looper") == 6


async def expired_request(h: Harness) -> None:
    """A request past its deadline raises, or is denied as expired; it never runs silently."""
    expiring = ToolSpec("transfer", "gated", "payment", reason="r", expires=timedelta(0))
    agent, ledger, cont = await start(h, payer(Call("transfer", BIG), transfer=expiring))
    assert cont.requests[0].expires_at is not None
    approved = cont.approve(cont.requests[0].path)
    try:
        await h.resume(agent, approved, keys=KEYS)
    except ContinuationExpired:
        pass
    else:
        raise AssertionError("an expired request was resumed")
    assert ledger.count("transfer") == 0
    completed(await h.resume(agent, approved, keys=KEYS, on_expired="deny"))
    assert ledger.count("transfer") == 0
    assert EXPIRED_MESSAGE in ledger.received("payer")


async def second_resume_rejected(h: Harness) -> None:
    """Through a store, a continuation resumes once; a second resume is a typed error."""
    from ..stores import MemoryStore

    store = MemoryStore()
    agent, ledger, cont = await start(h, payer(Call("transfer", BIG)))
    await store.save(cont)
    decided = cont.approve(cont.requests[0].path, by="alice")
    await store.decide(cont.id, decided.decisions[0])
    claim = await store.claim(cont.id, owner="w1")
    completed(await h.resume(agent, await store.load(cont.id), keys=KEYS))
    await store.complete(claim)
    try:
        await store.claim(cont.id, owner="w2")
    except AlreadyClaimed:
        pass
    else:
        raise AssertionError("a consumed continuation was claimed again")
    assert ledger.count("transfer") == 1


async def drift_detected(h: Harness) -> None:
    """An agent whose gated tool changed its parameters is refused before any tool runs."""
    spec = payer(Call("lookup", {"who": "bob"}), Call("transfer", BIG))
    _agent, ledger, cont = await start(h, spec)
    drifted = h.build(payer(transfer=ToolSpec("transfer", "gated", "who")), ledger)
    try:
        await h.resume(drifted, cont.approve(cont.requests[0].path), keys=KEYS)
    except AgentDrift as exc:
        assert "transfer" in str(exc)
    else:
        raise AssertionError("drift was not detected")
    assert ledger.count("transfer") == 0 and ledger.count("lookup") == 1


async def unknown_path(h: Harness) -> None:
    """A decision for a path that is not pending is refused and changes nothing."""
    _agent, ledger, cont = await start(h, chain(2))
    for bad in (("nope:1",), (*cont.requests[0].path[:-1], "transfer:other")):
        try:
            cont.approve(bad)
        except UnknownPath:
            pass
        else:
            raise AssertionError(f"decision for unknown path {bad} accepted")
    assert cont.decisions == () and ledger.count("transfer") == 0


async def missing_decision(h: Harness) -> None:
    """Resuming with an undecided call names its path and runs nothing."""
    spec = payer(Call("lookup", {"who": "x"}), Call("transfer", BIG), Call("ask", {"who": "y"}))
    agent, ledger, cont = await start(h, spec)
    by_tool = {r.tool: r for r in cont.requests}
    partial = cont.approve(by_tool["transfer"].path)
    try:
        await h.resume(agent, partial, keys=KEYS)
    except MissingDecisions as exc:
        assert exc.paths == [by_tool["ask"].path]
    else:
        raise AssertionError("resumed with an undecided call")
    assert ledger.count("transfer") == 0 and ledger.count("lookup") == 1


async def tampered_rejected(h: Harness) -> None:
    """Edited state, a foreign key or a missing signature is refused before any tool runs."""
    agent, ledger, cont = await start(h, payer(Call("transfer", BIG)))
    decided = cont.approve(cont.requests[0].path)
    doc = decided.to_dict()
    doc["root"]["pending"][0]["args"]["amount"] = 1
    forged = Continuation.from_dict(doc)
    attempts: list[tuple[Continuation, type[Exception], Keyring | None]] = [
        (forged, ContinuationTampered, KEYS),
        (decided, ContinuationTampered, Keyring({"conformance": b"another-key-0123456789abcdef"})),
        (decided.model_copy(update={"signature": None}), UnsignedContinuation, KEYS),
    ]
    for attempt, error, keys in attempts:
        try:
            await h.resume(agent, attempt, keys=keys)
        except error:
            pass
        else:
            raise AssertionError(f"expected {error.__name__}")
    assert ledger.count("transfer") == 0


async def usage_matches_uninterrupted(h: Harness) -> None:
    """Usage after suspend and resume equals an uninterrupted run: nothing doubled or lost."""
    spec = chain(3)
    base = completed(await h.run(h.build(ungated(spec), Ledger()), "go", keys=KEYS))
    agent, _ledger, cont = await start(h, spec)
    out = completed(await h.resume(agent, cont.approve(cont.requests[0].path), keys=KEYS))
    assert h.usage(out) == h.usage(base), (h.usage(out), h.usage(base))
    assert h.usage(out)["requests"] > 0


async def decisions_order_independent(h: Harness) -> None:
    """Attaching the same decisions in either order gives the same document and outcome."""
    spec = payer(Call("transfer", BIG), Call("transfer", {"to": "eve", "amount": 7000}))
    seen: list[tuple[list[tuple[str, ...]], list[dict[str, Any]]]] = []
    for reverse in (False, True):
        agent, ledger, cont = await start(h, spec)
        first, second = cont.requests
        if reverse:
            cont = cont.deny(second.path, "no", by="x").approve(first.path, by="x")
        else:
            cont = cont.approve(first.path, by="x").deny(second.path, "no", by="x")
        completed(await h.resume(agent, cont, keys=KEYS))
        seen.append(([d.path for d in cont.decisions], ledger.runs("transfer")))
    assert seen[0] == seen[1]
    assert seen[0][1] == [BIG]


async def release_leaves_nothing(h: Harness) -> None:
    """After suspending, the JSON alone and fresh agents resume the run (G1)."""
    ledger = Ledger()
    spec = chain(2)
    agent = h.build(spec, ledger)
    outcome = await h.run(agent, "go", keys=KEYS)
    assert isinstance(outcome, Suspended)
    text = outcome.continuation.to_json()
    del agent, outcome
    gc.collect()
    cont = Continuation.from_json(text)
    completed(await h.resume(h.build(spec, ledger), cont.approve(cont.requests[0].path), keys=KEYS))
    assert ledger.count("transfer") == 1


SCENARIOS: list[Scenario] = [
    approve_runs_once,
    when_predicate_gates_only_matching_calls,
    deny_never_runs,
    edited_args_run,
    bad_edited_args_rejected,
    respond_answers_input,
    nested_depth3_approve,
    nested_depth3_deny,
    two_children_one_step,
    mixed_parallel_batch,
    replays_completed_children,
    gated_delegate_asks_once,
    policy_every_n_turns,
    policy_wall_clock,
    policy_token_budget,
    expired_request,
    second_resume_rejected,
    drift_detected,
    unknown_path,
    missing_decision,
    tampered_rejected,
    usage_matches_uninterrupted,
    decisions_order_independent,
    release_leaves_nothing,
]
