"""RetryPolicy: exponential backoff with jitter, capped, and refused when misconfigured."""

from __future__ import annotations

import random

import pytest

from continuations_core._attempts import RetryPolicy
from continuations_core.errors import ConfigurationError


def test_the_delay_doubles_per_attempt_with_jitter_between_half_and_all_of_it() -> None:
    random.seed(7)
    policy = RetryPolicy(backoff=2.0, max_backoff=1000.0)
    for attempt in range(1, 9):
        exponential = 2.0 * 2 ** (attempt - 1)
        samples = [policy.delay(attempt) for _ in range(200)]
        assert all(exponential * 0.5 <= d <= exponential for d in samples), attempt
        # Jitter: the samples spread over the range rather than repeat one value.
        assert max(samples) - min(samples) > exponential * 0.3, attempt
        assert len(set(samples)) > 150, attempt


def test_the_delay_is_capped_by_max_backoff() -> None:
    policy = RetryPolicy(backoff=1.0, max_backoff=30.0)
    delays = [policy.delay(attempt) for attempt in (6, 10, 40, 1000) for _ in range(50)]
    assert all(15.0 <= d <= 30.0 for d in delays)
    assert RetryPolicy(backoff=0.0).delay(5) == 0.0


def test_attempt_zero_or_one_waits_about_the_base_backoff() -> None:
    policy = RetryPolicy(backoff=4.0)
    assert all(2.0 <= policy.delay(a) <= 4.0 for a in (0, 1) for _ in range(50))


@pytest.mark.parametrize("kwargs", [{"max_attempts": 0}, {"backoff": -1.0}, {"max_backoff": -0.5}])
def test_a_policy_that_cannot_work_is_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigurationError, match="max_attempts >= 1"):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]
