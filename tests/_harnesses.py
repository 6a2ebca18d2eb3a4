"""The adapters under test, by framework name (shared by conftest and subprocess workers)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from continuations_core.testing.spec import Harness


def _pydantic_ai() -> Harness:
    from continuations_pydantic_ai.testing import PydanticAIHarness

    return PydanticAIHarness()


def _strands() -> Harness:
    from continuations_strands.testing import StrandsHarness

    return StrandsHarness()


def _strands_variant(**kwargs: Any) -> Callable[[], Harness]:
    def build() -> Harness:
        from continuations_strands.testing import StrandsHarness

        return StrandsHarness(**kwargs)

    return build


#: Other ways people write Strands agents: a sync tool body calling ``child(prompt)``, the
#: built-in ``child.as_tool()``, and the sequential tool executor.
VARIANTS: dict[str, Callable[[], Harness]] = {
    "strands-call": _strands_variant(delegate="call"),
    "strands-as-tool": _strands_variant(delegate="as_tool"),
    "strands-sequential": _strands_variant(sequential=True),
}


def _pydantic_ai_variant(**kwargs: Any) -> Callable[[], Harness]:
    def build() -> Harness:
        from continuations_pydantic_ai.testing import PydanticAIHarness

        return PydanticAIHarness(**kwargs)

    return build


#: Other ways people run sub-agents concurrently in one tool body (the default harnesses use
#: ``asyncio.gather``): a ``TaskGroup``, ``asyncio.to_thread`` with ``run_sync``, and a Strands
#: sync body submitting ``child(prompt)`` to a thread pool with the context copied.
CONCURRENCY: dict[str, Callable[[], Harness]] = {
    "pydantic-ai-taskgroup": _pydantic_ai_variant(concurrency="taskgroup"),
    "pydantic-ai-threads": _pydantic_ai_variant(concurrency="threads"),
    "strands-threads": _strands_variant(concurrency="threads"),
}


def _mixed(root: str) -> Callable[[], Harness]:
    """A tree whose levels alternate between the two frameworks, starting with ``root``."""

    def build() -> Harness:
        from continuations_pydantic_ai.testing import PydanticAIHarness
        from continuations_strands.testing import StrandsHarness

        pai, strands = PydanticAIHarness(), StrandsHarness()
        pai.child_harness, strands.child_harness = strands, pai
        return pai if root == "pydantic-ai" else strands

    return build


HARNESSES: dict[str, Callable[[], Harness]] = {
    "mixed-pydantic-ai-root": _mixed("pydantic-ai"),
    "mixed-strands-root": _mixed("strands"),
    "pydantic-ai": _pydantic_ai,
    "strands": _strands,
}

ALL: dict[str, Callable[[], Harness]] = {**HARNESSES, **VARIANTS, **CONCURRENCY}
