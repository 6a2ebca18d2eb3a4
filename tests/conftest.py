"""Shared fixtures: the adapters under test."""

from __future__ import annotations

from typing import Any

import pytest

from continuations_core.testing.spec import Harness


def _pydantic_ai() -> Harness:
    from continuations_pydantic_ai.testing import PydanticAIHarness

    return PydanticAIHarness()


ADAPTERS: dict[str, Any] = {"pydantic-ai": _pydantic_ai}


@pytest.fixture(params=sorted(ADAPTERS))
def harness(request: pytest.FixtureRequest) -> Harness:
    """Each adapter's conformance harness."""
    factory = ADAPTERS[request.param]
    built: Harness = factory()
    return built
