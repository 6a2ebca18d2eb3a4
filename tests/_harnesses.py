"""The adapters under test, by framework name (shared by conftest and subprocess workers)."""

from __future__ import annotations

from collections.abc import Callable

from continuations_core.testing.spec import Harness


def _pydantic_ai() -> Harness:
    from continuations_pydantic_ai.testing import PydanticAIHarness

    return PydanticAIHarness()


def _strands() -> Harness:
    from continuations_strands.testing import StrandsHarness

    return StrandsHarness()


HARNESSES: dict[str, Callable[[], Harness]] = {
    "pydantic-ai": _pydantic_ai,
    "strands": _strands,
}
