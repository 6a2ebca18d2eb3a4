"""The shared conformance suite (continuations_core.testing), run on every adapter."""

from __future__ import annotations

import pytest

from continuations_core.testing.conformance import SCENARIOS, Scenario
from continuations_core.testing.spec import Harness


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.__name__ for s in SCENARIOS])
async def test_conformance(scenario: Scenario, harness: Harness) -> None:
    """Each scenario's docstring states the behaviour it checks."""
    await scenario(harness)
