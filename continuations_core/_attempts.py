"""Attempts, backoff and failure (G14): what a failed resume does to its continuation.

Every claim is an attempt. When an attempt fails, :func:`settle` records the error on the
continuation and ends the claim: a permanent error (a bad signature, an unknown agent, agent
drift, an expired approval, a schema error, an approved call that raised) makes it ``failed``
at once; anything else makes it ``ready`` again after an exponential backoff with jitter,
until ``max_attempts`` is reached and it is ``failed`` too. Nothing resumes a failed
continuation until someone retries it.

Store calls made while a run is in flight go through :func:`with_retries`: a transient
``StoreUnavailable`` is retried with a short backoff, and, for writes that cannot simply be
repeated, the caller says how to recognise that an earlier try was committed after all.

Operators see one log line per event (:func:`log_event`), such as::

    event=claimed continuation=3f2a… run=9b1c… owner=svc-1 token=4 attempt=2
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, TypeVar

from ._events import log_event
from .errors import (
    ClaimSuperseded,
    ConfigurationError,
    ContinuationError,
    ContinuationExpired,
    ContinuationFailed,
    DecisionError,
    GateError,
    ResumeError,
    SchemaError,
    SignatureError,
    StoreUnavailable,
)
from .stores._base import DEFAULT_MAX_ATTEMPTS

if TYPE_CHECKING:
    from .stores import Claim, Store, StoredContinuation

__all__ = [
    "DEFAULT_BACKOFF_SECONDS",
    "MAX_BACKOFF_SECONDS",
    "NOT_COMMITTED",
    "RETRY_POLICY",
    "STORE_RETRIES",
    "RetryPolicy",
    "claim_with_retries",
    "is_permanent",
    "log_event",
    "retry_policy",
    "settle",
    "with_retries",
]

T = TypeVar("T")

log = logging.getLogger("continuations.attempts")

#: The first backoff after a failed attempt, in seconds; it doubles with every attempt.
DEFAULT_BACKOFF_SECONDS = 1.0
#: Backoff never exceeds this many seconds.
MAX_BACKOFF_SECONDS = 300.0
#: A store call in flight is retried this many times on ``StoreUnavailable``.
STORE_RETRIES = 6
#: The first wait before retrying a store call; it doubles up to ``STORE_RETRY_MAX_SECONDS``.
STORE_RETRY_SECONDS = 0.05
STORE_RETRY_MAX_SECONDS = 2.0

#: Errors that will fail again however often the resume is retried.
PERMANENT_ERRORS: Final = (
    SchemaError,
    SignatureError,
    DecisionError,
    GateError,
    ContinuationExpired,
    ResumeError,
    ConfigurationError,
    ContinuationFailed,
)


@dataclass(frozen=True)
class RetryPolicy:
    """How failed attempts are retried.

    Attributes:
        max_attempts: Attempts (claims without progress) before a continuation is ``failed``.
        backoff: Seconds before the second attempt; doubling with each further attempt.
        max_backoff: The longest backoff.
    """

    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    backoff: float = DEFAULT_BACKOFF_SECONDS
    max_backoff: float = MAX_BACKOFF_SECONDS

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.backoff < 0 or self.max_backoff < 0:
            raise ConfigurationError(
                "RetryPolicy needs max_attempts >= 1 and non-negative backoff times."
            )

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt ``attempt``: exponential, with jitter.

        The jitter (between half and all of the exponential delay) spreads out retries of
        continuations that failed together, say when a model provider was down.
        """
        exponential = min(self.max_backoff, self.backoff * 2.0 ** max(attempt - 1, 0))
        return exponential * random.uniform(0.5, 1.0)


#: The policy durable runs settle failures with; a worker sets its own while it resumes.
RETRY_POLICY: ContextVar[RetryPolicy | None] = ContextVar(
    "continuations_retry_policy", default=None
)


def retry_policy() -> RetryPolicy:
    """The policy in force: the one a worker set, or the defaults."""
    return RETRY_POLICY.get() or RetryPolicy()


def is_permanent(error: BaseException) -> bool:
    """Whether retrying a resume that raised ``error`` cannot help (see ``PERMANENT_ERRORS``)."""
    return isinstance(error, PERMANENT_ERRORS)


class _NotCommitted:
    """The marker a ``committed`` check returns when the earlier try left nothing behind."""


NOT_COMMITTED: Final = _NotCommitted()


async def with_retries(
    call: Callable[[], Awaitable[T]],
    *,
    what: str,
    committed: Callable[[], Awaitable[T | _NotCommitted]] | None = None,
    retries: int = STORE_RETRIES,
) -> T:
    """Run the store call ``call``, retrying transient ``StoreUnavailable`` errors.

    Args:
        call: The store call.
        what: What the call does, for the log.
        committed: For a write that cannot be repeated blindly: before each retry, returns
            the earlier try's result if that try was committed after all (the error came on
            the way back), or ``NOT_COMMITTED``.
        retries: How many times to retry before giving up.

    Raises:
        StoreUnavailable: If the store still fails after ``retries`` retries.
    """
    delay = STORE_RETRY_SECONDS
    for attempt in range(retries + 1):
        try:
            if attempt and committed is not None:
                found = await committed()
                if not isinstance(found, _NotCommitted):
                    return found
            return await call()
        except StoreUnavailable as exc:
            if attempt == retries:
                raise
            log_event(log, "store_error", logging.WARNING, during=what, retry_in=delay, error=exc)
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, STORE_RETRY_MAX_SECONDS)
    raise AssertionError("unreachable")  # pragma: no cover


async def claim_with_retries(
    store: Store, id: str, *, owner: str, lease_seconds: float, max_attempts: int
) -> Claim:
    """Claim ``id`` (logged), retrying transient store errors; a claim committed unseen counts.

    The claim is a compare-and-set on the version read just before, so after a lost answer
    the record shows whether this claim went through (the next version and token, under
    ``owner``) or not.

    Raises:
        See :meth:`Store.claim`.
    """
    from .stores import Claim

    before = await with_retries(lambda: store.get(id), what="reading before a claim")

    async def claim() -> Claim:
        return await store.claim(
            id, owner=owner, lease_seconds=lease_seconds, expected_version=before.version,
            max_attempts=max_attempts,
        )  # fmt: skip

    async def committed() -> Claim | _NotCommitted:
        now = await store.get(id)
        mine = now.status == "claimed" and now.claimed_by == owner
        if mine and now.version == before.version + 1 and now.lease_until is not None:
            return Claim(
                id=id, version=now.version, owner=owner, lease_until=now.lease_until,
                token=now.fence, attempt=now.attempts,
            )  # fmt: skip
        return NOT_COMMITTED

    claimed = await with_retries(claim, what="claim", committed=committed)
    log_event(
        log, "claimed", continuation=id, run=before.run_id, owner=owner, token=claimed.token,
        attempt=claimed.attempt,
    )  # fmt: skip
    return claimed


async def settle(
    store: Store,
    claim: Claim,
    error: BaseException,
    *,
    policy: RetryPolicy,
    permanent: bool | None = None,
    run_id: str | None = None,
) -> StoredContinuation | None:
    """End ``claim``'s failed attempt: ``failed``, or ``ready`` again after a backoff.

    Args:
        store: The store holding the claim.
        claim: The attempt's claim.
        error: What failed; its type and message are stored and audited.
        policy: Attempts and backoff.
        permanent: Fail at once (default: :func:`is_permanent`).
        run_id: For the log line.

    Returns:
        The continuation as stored now, or None if the claim no longer held (the failure
        was settled already, or the run was taken over) or the store could not be reached
        (the lease then expires, and the next claim counts another attempt).
    """
    permanent = is_permanent(error) if permanent is None else permanent
    retry_in = policy.delay(claim.attempt)

    async def fail() -> StoredContinuation:
        return await store.fail(
            claim, error, permanent=permanent, max_attempts=policy.max_attempts,
            retry_in=retry_in,
        )  # fmt: skip

    async def committed() -> StoredContinuation | _NotCommitted:
        record = await store.get(claim.id)
        last = record.last_error
        if record.fence == claim.token and last is not None and last.attempt == claim.attempt:
            return record
        return NOT_COMMITTED

    try:
        record = await with_retries(fail, what="recording a failed attempt", committed=committed)
    except ClaimSuperseded:
        return None
    except ContinuationError as exc:
        log_event(
            log, "store_error", logging.ERROR, continuation=claim.id, run=run_id,
            during="recording a failed attempt", error=exc,
        )  # fmt: skip
        return None
    if record.status == "failed":
        log_event(
            log, "failed", logging.ERROR, continuation=claim.id, run=record.run_id,
            owner=claim.owner, attempt=claim.attempt, permanent=permanent, error=error,
        )  # fmt: skip
    else:
        log_event(
            log, "attempt_failed", logging.WARNING, continuation=claim.id, run=record.run_id,
            owner=claim.owner, attempt=claim.attempt, retry_at=record.not_before, error=error,
        )  # fmt: skip
    return record
