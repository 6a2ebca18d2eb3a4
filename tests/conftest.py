"""Shared fixtures: the adapters under test."""

from __future__ import annotations

import pytest
from _harnesses import HARNESSES

from continuations_core.testing.spec import Harness


@pytest.fixture(autouse=True)
def default_store(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test gets its own embedded default store (single use without store=)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('default-store') / 'continuations.db'}"
    monkeypatch.setenv("CONTINUATIONS_STORE", url)
    return url


@pytest.fixture(params=sorted(HARNESSES))
def harness(request: pytest.FixtureRequest) -> Harness:
    """Each adapter's conformance harness."""
    return HARNESSES[request.param]()
