"""The bypass group of the conformance suite (G13): every way a gated call could run unasked.

Each scenario tries one way a careless user, a hostile model output or another framework could
make a ``@requires_approval`` tool run without a decision on that exact call, and asserts from
the tool ledger that no gated body ran, plus the typed error or the suspension it must get
instead. Like :mod:`.conformance`, the scenarios are plain async functions over a
:class:`~continuations_core.testing.spec.Harness`.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from .._protocol import Suspended
from .._schema import Continuation
from ..errors import ConfigurationError, DuplicateCallId, UngatedCall
from ..stores import MemoryStore
from .conformance import BIG, KEYS, LOOKUP, TRANSFER, completed, payer, suspended
from .spec import OUTPUT_ARGS, AgentSpec, Call, Harness, Ledger, ToolSpec

__all__ = ["BYPASS_SCENARIOS", "OUTPUT_SCENARIOS", "Scenario"]

Scenario = Callable[[Harness], Awaitable[None]]


async def _refused(
    attempt: Awaitable[Any], expected: tuple[type[BaseException], ...], what: str
) -> BaseException:
    try:
        result = await attempt
    except expected as exc:
        return exc
    raise AssertionError(f"{what}: expected {[e.__name__ for e in expected]}, got {result!r}")


def _no_gated_body_ran(ledger: Ledger, what: str) -> None:
    assert ledger.count("transfer") == 0, f"{what}: the gated body ran {ledger.runs('transfer')}"


def _delegating(name: str, child: AgentSpec) -> AgentSpec:
    return AgentSpec(
        name,
        turns=((Call("delegate", {"task": "pay"}),),),
        tools=(ToolSpec("delegate", "delegate", "task", children=(child,)),),
    )


async def subagent_without_gate_depth1(h: Harness) -> None:
    """A sub-agent built without the capability/plugin cannot run its gated tool: typed error."""
    child = AgentSpec("careless", turns=((Call("transfer", BIG),),), tools=(TRANSFER,), bare=True)
    ledger = Ledger()
    agent = h.build(_delegating("root", child), ledger)
    error = await _refused(h.run(agent, "go", keys=KEYS), (UngatedCall,), "bare sub-agent")
    assert "transfer" in str(error) and "Continuations" in str(error), str(error)
    _no_gated_body_ran(ledger, "bare sub-agent at depth 1")


async def subagent_without_gate_depth2(h: Harness) -> None:
    """Two levels down, a sub-agent without the capability/plugin is refused the same way."""
    leaf = AgentSpec("careless", turns=((Call("transfer", BIG),),), tools=(TRANSFER,), bare=True)
    ledger = Ledger()
    agent = h.build(_delegating("root", _delegating("middle", leaf)), ledger)
    error = await _refused(h.run(agent, "go", keys=KEYS), (UngatedCall,), "bare sub-sub-agent")
    assert "transfer" in str(error), str(error)
    _no_gated_body_ran(ledger, "bare sub-agent at depth 2")
    assert ledger.turns("careless") >= 1, "the sub-agent never ran: the test proved nothing"


async def streaming_cannot_pass_a_gate(h: Harness) -> None:
    """The framework's own streaming entry point gets a typed error, never a placeholder result."""
    ledger = Ledger()
    agent = h.build(payer(Call("lookup", {"who": "bob"}), Call("transfer", BIG)), ledger)
    await _refused(
        h.stream(agent, "go"), (UngatedCall, ConfigurationError), "streaming past a gated call"
    )
    _no_gated_body_ran(ledger, "streaming")
    received = " ".join(ledger.received("payer"))
    assert "suspended" not in received and "awaiting" not in received, received


async def direct_call_refused(h: Harness) -> None:
    """Calling a marked tool's function (or tool object) directly raises UngatedCall, runs nothing."""
    ledger = Ledger()
    agent = h.build(payer(Call("transfer", BIG)), ledger)
    target = h.direct(agent, "transfer")

    async def call() -> Any:
        result = target(to="bob", amount=5000)
        return await result if inspect.isawaitable(result) else result

    await _refused(call(), (UngatedCall,), "a direct call")
    _no_gated_body_ran(ledger, "a direct call")


async def toolset_wrappers(h: Harness) -> None:
    """A marked tool behind every wrapper the framework offers is gated per call, or refused."""
    assert h.wrappers, "a harness must name the ways tools reach its agents"
    for wrapper, expect in sorted(h.wrappers.items()):
        ledger = Ledger()
        spec = payer(Call("lookup", {"who": "bob"}), Call("transfer", BIG))
        agent = h.build(spec, ledger, wrapper=wrapper)
        if expect == "refuse":
            await _refused(h.run(agent, "go", keys=KEYS), (UngatedCall,), wrapper)
            _no_gated_body_ran(ledger, wrapper)
            continue
        cont = suspended(await h.run(agent, "go", keys=KEYS))
        _no_gated_body_ran(ledger, wrapper)
        [request] = cont.requests
        assert request.args == BIG and request.kind == "approval", (wrapper, request)
        approved = cont.approve(request.path, by="alice")
        completed(await h.resume(h.build(spec, ledger, wrapper=wrapper), approved, keys=KEYS))
        assert ledger.runs("transfer") == [BIG], (wrapper, ledger.runs("transfer"))


async def duplicate_call_ids_refused(h: Harness) -> None:
    """A response that reuses one call id for two calls is refused before any of them runs."""
    ledger = Ledger()
    spec = payer(
        Call("transfer", BIG, call_id="same"),
        Call("lookup", {"who": "bob"}, call_id="same"),
    )
    agent = h.build(spec, ledger)
    await _refused(h.run(agent, "go", keys=KEYS), (DuplicateCallId,), "duplicate call ids")
    _no_gated_body_ran(ledger, "duplicate call ids")
    assert ledger.count("lookup") == 0, "a call of the refused response ran"


async def reused_call_id_is_a_new_call(h: Harness) -> None:
    """An id reused in a later turn is a different call: its own request, its own decision."""
    second = {"to": "eve", "amount": 9000}
    spec = AgentSpec(
        "payer",
        turns=((Call("transfer", BIG, call_id="dup"),), (Call("transfer", second, call_id="dup"),)),
        tools=(LOOKUP, TRANSFER),
    )
    for store in (None, MemoryStore()):
        ledger = Ledger()
        kwargs: dict[str, Any] = {} if store is None else {"store": store}
        agent = h.build(spec, ledger)
        first = suspended(await h.run(agent, "go", keys=KEYS, **kwargs))
        [one] = first.requests
        outcome = await h.resume(agent, first.approve(one.path), keys=KEYS, **kwargs)
        again = suspended(outcome)
        [two] = again.requests
        assert two.path != one.path and two.args == second, (one.path, two.path, two.args)
        assert ledger.runs("transfer") == [BIG], "the second call did not wait for its decision"
        completed(await h.resume(agent, again.approve(two.path), keys=KEYS, **kwargs))
        assert ledger.runs("transfer") == [BIG, second], ledger.runs("transfer")


async def output_function_gated(h: Harness) -> None:
    """A marked output function suspends like a tool call; approved it runs once, denied never."""
    if not h.output_functions:
        raise ConfigurationError(f"{h.framework} has no output functions; do not run this here")
    gated = ToolSpec("transfer", "gated", "payment", reason="Moves money")
    spec = AgentSpec("payer", turns=(), tools=(LOOKUP,), output=gated)
    ledger = Ledger()
    agent = h.build(spec, ledger)
    cont = suspended(await h.run(agent, "go", keys=KEYS))
    [request] = cont.requests
    assert request.args == OUTPUT_ARGS and request.reason == "Moves money", request
    _no_gated_body_ran(ledger, "output function")
    denied = await h.resume(agent, cont.deny(request.path, "not today"), keys=KEYS)
    assert isinstance(denied, Suspended), f"the model should retry after a denial: {denied!r}"
    _no_gated_body_ran(ledger, "denied output function")
    assert any("not today" in text for text in _retry_prompts(denied.continuation)), "not told"
    again = Continuation.from_json(denied.continuation.to_json())
    [retry] = again.requests
    out = completed(await h.resume(agent, again.approve(retry.path), keys=KEYS))
    assert ledger.runs("transfer") == [OUTPUT_ARGS], ledger.runs("transfer")
    assert "transfer(amount=5000, to=bob) ok" in str(out.output), out.output


def _retry_prompts(cont: Continuation) -> list[str]:
    """Every text of the root frame's history (where a denial reaches the model)."""
    return [str(part) for part in _texts(cont.root.state)]


def _texts(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [item for v in value.values() for item in _texts(v)]
    if isinstance(value, list):
        return [item for v in value for item in _texts(v)]
    return [value] if isinstance(value, str) else []


BYPASS_SCENARIOS: list[Scenario] = [
    subagent_without_gate_depth1,
    subagent_without_gate_depth2,
    streaming_cannot_pass_a_gate,
    direct_call_refused,
    toolset_wrappers,
    duplicate_call_ids_refused,
    reused_call_id_is_a_new_call,
]

#: Scenarios for harnesses whose framework has output functions (``Harness.output_functions``).
OUTPUT_SCENARIOS: list[Scenario] = [output_function_gated]
