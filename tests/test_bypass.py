"""The bypass group (G13), run on every adapter and the mixed-framework trees."""

from __future__ import annotations

import pytest
from _harnesses import HARNESSES

from continuations_core.testing.bypass import BYPASS_SCENARIOS, OUTPUT_SCENARIOS, Scenario
from continuations_core.testing.spec import Harness


@pytest.mark.parametrize("scenario", BYPASS_SCENARIOS, ids=[s.__name__ for s in BYPASS_SCENARIOS])
async def test_bypass(scenario: Scenario, harness: Harness) -> None:
    """Each scenario's docstring states the way around the gate it closes."""
    await scenario(harness)


WITH_OUTPUT_FUNCTIONS = sorted(n for n, build in HARNESSES.items() if build().output_functions)


@pytest.mark.parametrize("scenario", OUTPUT_SCENARIOS, ids=[s.__name__ for s in OUTPUT_SCENARIOS])
@pytest.mark.parametrize("name", WITH_OUTPUT_FUNCTIONS)
async def test_bypass_output_functions(scenario: Scenario, name: str) -> None:
    """Output functions are gated like tool calls, where the framework has them."""
    await scenario(HARNESSES[name]())
