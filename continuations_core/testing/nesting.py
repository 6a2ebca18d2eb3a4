"""The nesting group of the conformance suite (G3): sub-agents run concurrently in one tool body.

A delegating tool whose body runs several sub-agents at once (``asyncio.gather``, a
``TaskGroup``, threads carrying the tool call's context; the harness picks) must suspend into
one continuation showing every pending request, resume once with every decision, run each
approved call exactly once, replay sub-agents that completed and resume those that suspended,
whatever order they finish in and at any depth. Like :mod:`.conformance`, the scenarios are
plain async functions over a :class:`~continuations_core.testing.spec.Harness`.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable, Sequence

from .conformance import KEYS, LOOKUP, TRANSFER, completed, start
from .spec import AgentSpec, Call, Harness, Ledger, ToolSpec

__all__ = ["NESTING_SCENARIOS", "Scenario"]

Scenario = Callable[[Harness], Awaitable[None]]

#: Seconds between the answers of concurrent sub-agents' models, to make them finish in a
#: chosen order (a real delay, large enough to survive a loaded machine).
STEP = 0.06

NAMES = ("alpha", "beta", "gamma")
ASK = ToolSpec("ask", "input")


def payee(name: str, amount: int, *, latency: float = 0.0) -> AgentSpec:
    """A sub-agent whose one turn makes a gated transfer to itself."""
    transfer = Call("transfer", {"to": name, "amount": amount})
    return AgentSpec(name, turns=((transfer,),), tools=(TRANSFER,), latency=latency)


def fan_out(*children: AgentSpec, name: str = "parent") -> AgentSpec:
    """An agent whose one tool call runs ``children`` concurrently."""
    tool = ToolSpec("fan_out", "delegate", "task", children=children, concurrent=True)
    return AgentSpec(name, turns=((Call("fan_out", {"task": "pay"}),),), tools=(tool,))


def finish_order(ledger: Ledger, names: Sequence[str], turn: int) -> list[str]:
    """The order in which ``names``' models answered turn ``turn``."""
    return [
        e["agent"]
        for e in ledger.all()
        if e["type"] == "model" and e["agent"] in names and e["turn"] == turn
    ]


def _amount(i: int) -> int:
    return 2000 + 100 * i


async def gathered_children_approve_all(h: Harness) -> None:
    """Two and three concurrent sub-agents that all suspend, in every order: one continuation
    shows every request, one resume approving them all runs each transfer exactly once."""
    for n in (2, 3):
        names = NAMES[:n]
        for order in itertools.permutations(range(n)):
            kids = tuple(
                payee(nm, _amount(i), latency=STEP * order[i]) for i, nm in enumerate(names)
            )
            agent, ledger, cont = await start(h, fan_out(*kids))
            by_rank = sorted(names, key=lambda nm: order[names.index(nm)])
            assert finish_order(ledger, names, 0) == by_rank, (order, ledger.all())
            assert sorted(r.agents for r in cont.requests) == [("parent", nm) for nm in names]
            assert {r.tool for r in cont.requests} == {"transfer"}
            assert len({r.path for r in cont.requests}) == n
            assert ledger.count("transfer") == 0
            for request in cont.requests:
                cont = cont.approve(request.path, by="alice")
            out = completed(await h.resume(agent, cont, keys=KEYS))
            assert finish_order(ledger, names, 1) == by_rank, (order, ledger.all())
            ran = sorted((a["to"], a["amount"]) for a in ledger.runs("transfer"))
            assert ran == [(nm, _amount(i)) for i, nm in enumerate(names)], (order, ran)
            for nm in names:
                assert f"{nm} done" in str(out.output)
                assert f"transfer(amount={_amount(names.index(nm))}, to={nm}) ok" in (
                    ledger.received(nm)
                )


async def gathered_children_mixed_decisions(h: Harness) -> None:
    """Three concurrent sub-agents: one approved, one denied, one answered; one resume does all."""
    asker = AgentSpec("gamma", turns=((Call("ask", {"who": "gamma"}),),), tools=(ASK,))
    spec = fan_out(payee("alpha", 2000), payee("beta", 3000, latency=STEP), asker)
    agent, ledger, cont = await start(h, spec)
    reqs = {r.agents[-1]: r for r in cont.requests}
    assert set(reqs) == {"alpha", "beta", "gamma"} and len(cont.requests) == 3
    assert (reqs["alpha"].kind, reqs["beta"].kind, reqs["gamma"].kind) == (
        "approval",
        "approval",
        "input",
    )
    cont = (
        cont.approve(reqs["alpha"].path, by="alice")
        .deny(reqs["beta"].path, "Beta is over budget", by="alice")
        .respond(reqs["gamma"].path, "gamma's IBAN is G", by="alice")
    )
    out = completed(await h.resume(agent, cont, keys=KEYS))
    assert ledger.runs("transfer") == [{"to": "alpha", "amount": 2000}]
    assert "Beta is over budget" in ledger.received("beta")
    assert "gamma's IBAN is G" in ledger.received("gamma")
    assert "Beta is over budget" in str(out.output) and "gamma's IBAN is G" in str(out.output)


async def gathered_children_one_completes_one_suspends(h: Harness) -> None:
    """One concurrent sub-agent completes, its sibling suspends (either first): the completed
    one is replayed on resume, not run again; the suspended one resumes and runs once."""
    for scout_first in (True, False):
        scout = AgentSpec(
            "scout",
            turns=((Call("lookup", {"who": "scout"}),),),
            tools=(LOOKUP,),
            latency=0.0 if scout_first else 2 * STEP,
        )
        spec = fan_out(scout, payee("payee", 4000, latency=STEP if scout_first else 0.0))
        agent, ledger, cont = await start(h, spec)
        finished = [e["agent"] for e in ledger.all() if e["type"] == "model"]
        scout_done = max(i for i, a in enumerate(finished) if a == "scout")
        payee_asked = finished.index("payee")
        assert (scout_done < payee_asked) == scout_first, finished
        [req] = cont.requests
        assert req.agents == ("parent", "payee") and req.tool == "transfer"
        scout_turns = ledger.turns("scout")
        out = completed(await h.resume(agent, cont.approve(req.path), keys=KEYS))
        assert ledger.turns("scout") == scout_turns, "the completed sub-agent ran again"
        assert ledger.count("lookup") == 1
        assert ledger.runs("transfer") == [{"to": "payee", "amount": 4000}]
        assert "scout done" in str(out.output) and "payee done" in str(out.output)


async def nested_gather_depth3(h: Harness) -> None:
    """Concurrent sub-agents at two levels (root > 2 mids > 2 leaves each): one continuation
    shows all four requests with their chains; one resume runs each transfer once."""
    mids = []
    leaves: list[tuple[str, int]] = []
    for m, mid in enumerate(("mid_a", "mid_b")):
        kids = []
        for k in range(2):
            leaf = f"{mid}_{k}"
            leaves.append((leaf, _amount(2 * m + k)))
            kids.append(payee(leaf, _amount(2 * m + k), latency=STEP * ((m + k) % 2)))
        mids.append(fan_out(*kids, name=mid))
    agent, ledger, cont = await start(h, fan_out(*mids, name="root"))
    chains = sorted(r.agents for r in cont.requests)
    assert chains == sorted(("root", leaf.rsplit("_", 1)[0], leaf) for leaf, _ in leaves)
    assert len({r.path for r in cont.requests}) == 4 and all(
        len(r.path) == 5 for r in cont.requests
    )
    for request in cont.requests:
        cont = cont.approve(request.path)
    out = completed(await h.resume(agent, cont, keys=KEYS))
    ran = sorted((a["to"], a["amount"]) for a in ledger.runs("transfer"))
    assert ran == sorted(leaves)
    for leaf, _ in leaves:
        assert f"{leaf} done" in str(out.output)


async def gathered_same_agent_distinct_prompts(h: Harness) -> None:
    """The same agent run twice at once with different prompts makes identical call ids; each
    run gets its own path and decision, and each approved transfer runs once."""
    worker = payee("worker", 2500)
    agent, ledger, cont = await start(h, fan_out(worker, worker))
    first, second = cont.requests
    assert first.agents == second.agents == ("parent", "worker")
    assert first.path[0] == second.path[0] and first.path[-1] == second.path[-1]
    assert first.path[1] != second.path[1], "two runs share a path"
    cont = cont.approve(first.path).deny(second.path, "once is enough")
    completed(await h.resume(agent, cont, keys=KEYS))
    assert ledger.runs("transfer") == [{"to": "worker", "amount": 2500}]
    assert "once is enough" in ledger.received("worker")


NESTING_SCENARIOS: list[Scenario] = [
    gathered_children_approve_all,
    gathered_children_mixed_decisions,
    gathered_children_one_completes_one_suspends,
    nested_gather_depth3,
    gathered_same_agent_distinct_prompts,
]
