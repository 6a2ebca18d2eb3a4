"""Applying a deadline to a stored suspension (G8), for whichever engine notices it passed.

An engine calls :func:`expire_due` for a continuation that waits for decisions: the DBOS engine
from its delayed ``continuations.expire`` workflow, the built-in worker from its periodic sweep
of waiting continuations. It does nothing unless a request is still undecided at its deadline,
and every write goes through the store's own rules, so a person deciding at the same moment
either wins (the expiry then does nothing) or finds the continuation expired:

- ``on_expired="deny"`` records a denial (by ``expiry``) for each expired request, with the
  decision compare-and-set; the last one makes the continuation ``ready`` (and dispatched), and
  the model is told the call expired;
- ``on_expired="raise"`` fails the continuation with a :class:`ContinuationExpired` error
  (audited ``failed``); a late decision is then refused, and only an operator's retry brings it
  back to ``waiting``.

Engines running concurrently may both try; one changes the store and the other finds nothing
left to do, so an expiry takes effect once.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

from ._decisions import EXPIRED_MESSAGE, ExpiryMode
from ._tracing import count_pending
from .errors import (
    AlreadyClaimed,
    AlreadyDecided,
    ConflictError,
    ContinuationError,
    ContinuationExpired,
    ContinuationFailed,
    ContinuationNotFound,
    DecisionError,
    DispatchFailed,
)

if TYPE_CHECKING:
    from ._schema import Path
    from .stores import Store

__all__ = ["EXPIRY_ACTOR", "Expiry", "expire_due"]

#: Who expiry decisions and failures are recorded as.
EXPIRY_ACTOR = "expiry"


@dataclass(frozen=True)
class Expiry:
    """What :func:`expire_due` did.

    Attributes:
        outcome: ``denied`` or ``failed`` (it took effect); ``not_due`` (no undecided request
            has passed its deadline yet; see ``next_at``); ``nothing`` (decided, resumed, gone
            or failed already, or another process expired it first).
        paths: The requests it expired.
        next_at: With ``not_due``, the earliest deadline of an undecided request.
    """

    outcome: Literal["denied", "failed", "not_due", "nothing"]
    paths: tuple[Path, ...] = ()
    next_at: datetime | None = None


async def expire_due(
    store: Store,
    continuation_id: str,
    *,
    on_expired: ExpiryMode,
    seq: int | None = None,
    now: datetime | None = None,
) -> Expiry:
    """Apply ``on_expired`` to the requests of ``continuation_id`` undecided past their deadline.

    Args:
        store: The store that holds it.
        continuation_id: The waiting continuation.
        on_expired: ``"deny"`` the expired calls, or ``"raise"``: fail the continuation.
        seq: Only if it is still the suspension at this step.
        now: The time to compare deadlines with (the current time by default).

    Raises:
        StoreUnavailable: If the store cannot be reached; nothing or part of it was applied,
            and calling again finishes it.
    """
    try:
        record = await store.get(continuation_id)
    except ContinuationNotFound:
        return Expiry("nothing")
    cont = record.continuation
    if record.status != "waiting" or (seq is not None and cont.seq != seq):
        return Expiry("nothing")
    moment = now or datetime.now(UTC)
    decided = {r.path for r in cont.decisions}
    pending = [
        (path, call.expires_at)
        for path, _, call in cont.leaves()
        if path not in decided and call.expires_at is not None
    ]
    due = tuple(path for path, when in pending if when <= moment)
    if not due:
        later = [when for _, when in pending]
        return Expiry("not_due", next_at=min(later)) if later else Expiry("nothing")
    if on_expired == "raise":
        shown = ", ".join(" > ".join(p) for p in due)
        error = ContinuationExpired(
            f"Pending call(s) expired undecided: {shown}. Start a new run, or retry it "
            "(`continuations retry ID`) and decide it.",
            continuation_id=continuation_id,
        )
        # Not a compare-and-set: a last decision landing between the read above and this
        # write is failed too. Its request is past its deadline, so its resume would fail
        # the same way (G8 expires a call at resume once its deadline passed).
        changed = await store.fail_unreadable(continuation_id, error, actor=EXPIRY_ACTOR)
        if not changed:
            return Expiry("nothing")
        with contextlib.suppress(ContinuationError):  # only a gauge: the failure is stored
            # As stored: a decision that landed since the read above left the gauge already.
            count_pending((await store.get(continuation_id)).continuation, -1)
        return Expiry("failed", due)
    version = record.version
    for path in due:
        denial = cont.deny(path, EXPIRED_MESSAGE, by=EXPIRY_ACTOR).decision_for(path)
        assert denial is not None
        try:
            version = (
                await store.decide(continuation_id, denial, expected_version=version)
            ).version
        except DispatchFailed:
            break  # the last denial is stored; engines re-dispatch what is ready
        except (AlreadyDecided, AlreadyClaimed, ConflictError, ContinuationFailed, DecisionError):
            return Expiry("nothing")  # a person or another engine got there first
    return Expiry("denied", due)
