"""Shared fixtures: the adapters under test."""

from __future__ import annotations

import pytest
from _harnesses import HARNESSES

from continuations_core.testing.spec import Harness


@pytest.fixture(params=sorted(HARNESSES))
def harness(request: pytest.FixtureRequest) -> Harness:
    """Each adapter's conformance harness."""
    return HARNESSES[request.param]()
