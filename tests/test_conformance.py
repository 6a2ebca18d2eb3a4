"""The shared conformance suite (continuations_core.testing), run on every adapter."""

from __future__ import annotations

import pytest
from _harnesses import CONCURRENCY

from continuations_core.testing.conformance import SCENARIOS, Scenario
from continuations_core.testing.nesting import NESTING_SCENARIOS
from continuations_core.testing.spec import Harness

ALL_SCENARIOS = [*SCENARIOS, *NESTING_SCENARIOS]


@pytest.mark.parametrize("scenario", ALL_SCENARIOS, ids=[s.__name__ for s in ALL_SCENARIOS])
async def test_conformance(scenario: Scenario, harness: Harness) -> None:
    """Each scenario's docstring states the behaviour it checks."""
    await scenario(harness)


@pytest.mark.parametrize("scenario", NESTING_SCENARIOS, ids=[s.__name__ for s in NESTING_SCENARIOS])
@pytest.mark.parametrize("variant", sorted(CONCURRENCY))
async def test_nesting_concurrency_variants(variant: str, scenario: Scenario) -> None:
    """The nesting group holds for a TaskGroup, for threads, and for Strands bodies in threads."""
    await scenario(CONCURRENCY[variant]())
