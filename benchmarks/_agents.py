"""The agents benchmarks run: scripted models, real tools, both frameworks.

Agents are built from the conformance suite's neutral :class:`AgentSpec` by each adapter's
harness, so a benchmark runs exactly what the tests run: real agents of the framework, a
scripted model, and tool bodies that write to a :class:`Ledger`. Every timed run is checked
against its ledger afterwards (the tools really ran, as often as the script says), so a
broken code path cannot show up as a fast one.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from continuations_core import Completed, Continuation, Keyring, Outcome, Suspended
from continuations_core.testing.spec import AgentSpec, Call, Harness, Ledger, ToolSpec, ungated

__all__ = [
    "FRAMEWORKS",
    "KEYS",
    "LOOKUP",
    "PAY",
    "TRANSFER",
    "approve_all",
    "bare",
    "build",
    "chain_spec",
    "check",
    "harness",
    "loop_spec",
    "native_run",
    "run_kwargs",
    "suspended",
]

FRAMEWORKS = ("pydantic-ai", "strands")
KEYS = Keyring.generate("bench")
PROMPT = "go"

LOOKUP = ToolSpec("lookup")
TRANSFER = ToolSpec("transfer", kind="gated", params="payment", reason="Moves money")
PAY = Call("transfer", {"to": "bob", "amount": 5000})


def harness(framework: str) -> Harness:
    """The adapter harness that builds agents of ``framework``."""
    if framework == "pydantic-ai":
        from continuations_pydantic_ai.testing import PydanticAIHarness

        return PydanticAIHarness()
    if framework == "strands":
        from continuations_strands.testing import StrandsHarness

        return StrandsHarness()
    raise ValueError(f"unknown framework {framework!r}")


def build(framework: str, spec: AgentSpec, ledger: Ledger, *, history: Any = None) -> Any:
    """Build the agent of a :func:`loop_spec` (or :func:`bare` of one).

    Strands agents get a ``NullConversationManager``: the default sliding window drops old
    messages once a run passes 40 of them, and a model that no longer sees its earlier turns
    is not running the same loop (the ledger check would catch it). ``history`` (Strands
    messages) starts the agent with an earlier conversation; on Pydantic AI pass it to the
    run as ``message_history`` instead.
    """
    if framework != "strands":
        return harness(framework).build(spec, ledger)
    from strands import Agent, tool
    from strands.agent.conversation_manager import NullConversationManager

    from continuations_core import requires_approval
    from continuations_strands import Continuations
    from continuations_strands.testing import ScriptedModel

    def lookup(who: str) -> str:
        """The lookup tool."""
        ledger.tool(spec.name, "lookup", {"who": who})
        return f"lookup(who={who}) ok"

    def transfer(to: str, amount: int) -> str:
        """The transfer tool."""
        ledger.tool(spec.name, "transfer", {"to": to, "amount": amount})
        return f"transfer(amount={amount}, to={to}) ok"

    functions: dict[str, Callable[..., str]] = {"lookup": lookup, "transfer": transfer}
    tools: list[Any] = []
    for t in spec.tools:
        fn = functions[t.name]
        tools.append(tool(requires_approval(reason=t.reason)(fn) if t.kind == "gated" else fn))
    turns = [
        [(c.tool, dict(c.args), spec.call_id(n, i)) for i, c in enumerate(turn)]
        for n, turn in enumerate(spec.turns)
    ]
    model = ScriptedModel(spec.name, turns, on_call=lambda n, got: ledger.model(spec.name, n, got))
    return Agent(
        model=model,
        name=spec.name,
        tools=tools,
        callback_handler=None,
        plugins=[] if spec.bare else [Continuations()],
        conversation_manager=NullConversationManager(),
        messages=copy.deepcopy(history) if history is not None else None,
    )


def loop_spec(steps: int, *, gated_last: bool = False) -> AgentSpec:
    """An agent whose model makes ``steps`` sequential ``lookup`` calls, one per turn.

    With ``gated_last`` it then calls the gated ``transfer`` (the run suspends there).
    """
    turns = tuple((Call("lookup", {"who": f"p{i}"}),) for i in range(steps))
    tools: tuple[ToolSpec, ...] = (LOOKUP,)
    if gated_last:
        turns += ((PAY,),)
        tools += (TRANSFER,)
    return AgentSpec(name="loop", turns=turns, tools=tools)


def chain_spec(depth: int) -> AgentSpec:
    """A chain of ``depth`` delegating agents above a leaf whose model calls ``transfer``.

    Depth 0 is the root calling the gated tool itself.
    """
    spec = AgentSpec(name=f"a{depth}", turns=((PAY,),), tools=(TRANSFER,))
    for level in range(depth - 1, -1, -1):
        delegate = ToolSpec("delegate", kind="delegate", params="task", children=(spec,))
        spec = AgentSpec(
            name=f"a{level}", turns=((Call("delegate", {"task": "pay bob"}),),), tools=(delegate,)
        )
    return spec


def bare(spec: AgentSpec) -> AgentSpec:
    """The same tree, ungated and without the capability or plugin: the plain framework."""
    plain = ungated(spec)

    def strip(s: AgentSpec) -> AgentSpec:
        tools = tuple(replace(t, children=tuple(strip(c) for c in t.children)) for t in s.tools)
        return replace(s, bare=True, tools=tools)

    return strip(plain)


def run_kwargs(framework: str) -> dict[str, Any]:
    """Extra run arguments: Pydantic AI stops at 50 model requests by default; runs here go past."""
    if framework == "pydantic-ai":
        from pydantic_ai.usage import UsageLimits

        return {"usage_limits": UsageLimits(request_limit=None)}
    return {}


async def native_run(framework: str, agent: Any, *, history: Any = None) -> Any:
    """Run ``agent`` with the framework's own entry point, to completion.

    Returns the conversation afterwards (Pydantic AI ``all_messages()``, Strands ``messages``).
    """
    if framework == "pydantic-ai":
        kwargs = run_kwargs(framework) | {"message_history": history}
        return (await agent.run(PROMPT, **kwargs)).all_messages()
    await agent.invoke_async(PROMPT)
    return agent.messages


def check(ledger: Ledger, tool: str, expected: int, outcome: object = None) -> None:
    """Refuse a measurement whose run did not do what the script says."""
    ran = ledger.count(tool)
    if ran != expected:
        raise RuntimeError(f"benchmark run executed {tool} {ran} times, expected {expected}")
    if outcome is not None and not isinstance(outcome, Completed):
        raise RuntimeError(f"benchmark run ended {type(outcome).__name__}, expected Completed")


def suspended(outcome: Outcome[Any]) -> Continuation:
    """The continuation ``outcome`` suspended into (an error if it did not suspend)."""
    if not isinstance(outcome, Suspended):
        raise RuntimeError(f"expected the run to suspend, it ended {type(outcome).__name__}")
    return outcome.continuation


def approve_all(cont: Continuation) -> Continuation:
    """``cont`` with every request approved."""
    for request in cont.requests:
        cont = cont.approve(request.path, by="bench")
    return cont
