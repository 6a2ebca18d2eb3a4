"""The shared store rules: a backend reads a :class:`Row`, applies a transition, writes it.

Every transition is a pure function of the row, its arguments and the time, returning the new
row and the audit events to append. ``_rowstore.RowStore`` builds the protocol's changes from
them, so a backend only implements moving rows atomically (``_transact``) and cannot disagree
with the others about status, versions, fencing tokens, leases, attempts or the audit trail.

Fencing (G14): a claim's token is one more than the row's last one, and a checkpoint carries its
claim's token on to the run's next row. Every write under a claim first checks that the row is
still ``claimed`` under that very token (:meth:`Row.check_claim`), inside the backend's atomic
step, so a process whose lease was taken over writes nothing more.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, TypeAlias

from .._decisions import already_decided
from .._schema import Continuation, DecisionRecord
from ..errors import (
    AlreadyClaimed,
    BackingOff,
    ConflictError,
    ContinuationError,
    ContinuationFailed,
    MissingDecisions,
)
from ._records import (
    DEFAULT_MAX_ATTEMPTS,
    AuditEvent,
    AuditKind,
    Claim,
    LastError,
    Status,
    utcnow,
)
from ._row import (
    Row,
    already_saved,
    check_fence,
    check_segment,
    jsonable,
    not_found,
    readable,
)

__all__ = [
    "Events",
    "Row",
    "already_saved",
    "check_fence",
    "check_segment",
    "checkpoint_rows",
    "claim_row",
    "complete_row",
    "completion_events",
    "decide_row",
    "fail_row",
    "heartbeat_row",
    "journal_row",
    "jsonable",
    "new_row",
    "not_found",
    "readable",
    "recorded_event",
    "release_row",
    "renewed_claim",
    "retry_row",
    "unreadable_failure",
    "utcnow",
]

Takeover: TypeAlias = Callable[[str | None, str | None], str | None]


def unreadable_failure(
    id: str, run_id: str, error: BaseException, *, attempts: int, actor: str | None, at: datetime
) -> tuple[LastError, AuditEvent]:
    """The last error and the ``failed`` event of a row that cannot be read."""
    last = LastError.of(error, attempt=attempts, at=at)
    event = AuditEvent(
        run_id=run_id, continuation_id=id, kind="failed", at=at, actor=actor,
        detail={"error": _error(last), "attempt": attempts, "permanent": True},
    )  # fmt: skip
    return last, event


Events = builtins.list[AuditEvent]


def recorded_event(
    run_id: str,
    kind: AuditKind,
    *,
    at: datetime,
    continuation_id: str = "",
    actor: str | None = None,
    detail: dict[str, Any] | None = None,
) -> AuditEvent:
    """The event :meth:`Store.record` appends (values JSON cannot hold are kept as their repr)."""
    return AuditEvent(
        run_id=run_id,
        continuation_id=continuation_id,
        kind=kind,
        at=at,
        actor=actor,
        detail=jsonable(detail or {}),
    )


def _decided(record: DecisionRecord) -> dict[str, Any]:
    return {
        "path": list(record.path),
        "decision": record.decision.model_dump(mode="json"),
        "comment": record.comment,
    }


def new_row(
    document: Continuation,
    decisions: tuple[DecisionRecord, ...],
    *,
    actor: str | None,
    at: datetime,
) -> tuple[Row, Events]:
    """Save: version 1, status from the (validated) decisions; audit ``suspended``."""
    decided = document.with_decisions(decisions)
    status: Status = "waiting" if decided.undecided else "ready"
    row = Row(document, decided.decisions, 1, status, at, at)
    requests = [list(path) for path, _, _ in document.leaves()]
    events = [row.event("suspended", at, actor, seq=document.seq, requests=requests)]
    events += [row.event("decided", at, r.by, **_decided(r)) for r in decided.decisions]
    return row, events


def decide_row(
    row: Row,
    record: DecisionRecord,
    *,
    expected_version: int | None,
    at: datetime,
    replace: bool = False,
) -> tuple[Row, Events]:
    """Attach ``record``, validated before anything changes; audit ``decided``.

    A path takes one decision: a second one raises ``AlreadyDecided`` (who decided it, when)
    unless ``replace`` is true, and a replacement is audited with the decision it replaced.
    A failed continuation takes none (``ContinuationFailed``): it runs again only if retried.
    """
    if row.status in ("claimed", "done"):
        raise AlreadyClaimed(
            f"The continuation is {'being resumed' if row.status == 'claimed' else 'resumed'}; "
            "its decisions can no longer change. Decide on the run's next continuation.",
            continuation_id=row.id,
        )
    if row.status == "failed":
        # A decision must not bring a failed continuation back: only an audited retry does.
        raise ContinuationFailed(
            "The continuation failed; a decision cannot make it runnable again. Retry it "
            "first (`continuations retry ID`) if it should run, then decide.",
            continuation_id=row.id,
        )
    row._check_version(expected_version)
    existing = next((r for r in row.decisions if r.path == record.path), None)
    if existing is not None and not replace:
        raise already_decided(existing, continuation_id=row.id)
    kept = [r for r in row.decisions if r.path != record.path]
    decided = row.document.with_decisions([*kept, record])
    status: Status = "waiting" if decided.undecided else "ready"
    new = row._changed(at, decisions=decided.decisions, status=status)
    detail = _decided(record)
    if existing is not None:
        detail["replaced"] = {**_decided(existing), "by": existing.by, "at": existing.at}
    return new, [new.event("decided", at, record.by, **detail)]


def claim_row(
    row: Row,
    *,
    owner: str,
    lease_seconds: float,
    expected_version: int | None,
    at: datetime,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    holder: str | None = None,
    takeover: Takeover | None = None,
) -> tuple[Row, Claim | ContinuationFailed, Events]:
    """Take a ready row, an expired lease, or a live one whose holder is gone.

    Audit ``claimed`` (after ``expired`` or ``taken_over``). The result is the claim, or, when
    the claim being taken over was the last allowed attempt, the row turned ``failed`` and the
    error to raise once that is written.
    """
    if row.status == "done":
        raise AlreadyClaimed(
            "It was already resumed; a continuation can be resumed only once.",
            continuation_id=row.id,
        )
    if row.status == "failed":
        raise ContinuationFailed(
            f"It failed ({row.last_error or 'no error recorded'}). Fix the cause, then retry "
            "it (`continuations retry ID` or store.retry) to resume it again.",
            continuation_id=row.id,
        )
    lease = row.lease_until
    reason = None
    if row.status == "claimed" and (lease is None or lease > at):
        reason = takeover(row.claimed_by, row.holder) if takeover is not None else None
        if reason is None:
            raise AlreadyClaimed(
                f"Claimed by {row.claimed_by!r} until {lease.isoformat() if lease else '?'}. "
                "Another resumer holds it; it can be taken over once that lease expires.",
                continuation_id=row.id,
            )
    row._check_version(expected_version)
    if row.status == "waiting":
        raise MissingDecisions(
            row.document.with_decisions(row.decisions).undecided, continuation_id=row.id
        )
    if row.status == "ready" and row.not_before is not None and row.not_before > at:
        raise BackingOff(
            f"Attempt {row.attempts} failed ({row.last_error}); the next one may start at "
            f"{row.not_before.isoformat()}. Retry it to claim it sooner.",
            continuation_id=row.id,
        )
    events: Events = []
    if row.status == "claimed":
        if reason is not None:
            events.append(row.event("taken_over", at, owner, owner=row.claimed_by, reason=reason))
        else:
            events.append(row.event("expired", at, owner, owner=row.claimed_by, lease_until=lease))
        if row.attempts >= max_attempts:
            return _exhausted(row, at, owner, max_attempts, events)
    until = at + timedelta(seconds=lease_seconds)
    claim = Claim(
        id=row.id, version=row.version + 1, owner=owner, lease_until=until,
        token=row.fence + 1, attempt=row.attempts + 1,
    )  # fmt: skip
    new = row._changed(
        at, status="claimed", claimed_by=owner, lease_until=until, fence=claim.token,
        attempts=claim.attempt, not_before=None, holder=holder,
    )  # fmt: skip
    events.append(
        new.event("claimed", at, owner, lease_until=until, token=claim.token, attempt=claim.attempt)
    )
    return new, claim, events


def _exhausted(
    row: Row, at: datetime, owner: str, max_attempts: int, events: Events
) -> tuple[Row, ContinuationFailed, Events]:
    error = LastError(
        type="LeaseExpired",
        message=f"attempt {row.attempts} of {max_attempts} ended without a result: the process "
        f"holding it ({row.claimed_by}) stopped renewing its lease (crashed, hung or cut off)",
        attempt=row.attempts,
        at=at,
    )
    failed = row._changed(at, status="failed", lease_until=None, holder=None, last_error=error)
    events.append(failed.event("failed", at, owner, error=_error(error), attempt=row.attempts))
    refused = ContinuationFailed(
        f"It failed: {error}. Fix the cause, then retry it (`continuations retry ID` or "
        "store.retry) to resume it again.",
        continuation_id=row.id,
    )
    return failed, refused, events


def _error(error: LastError) -> dict[str, str]:
    return {"type": error.type, "message": error.message}


def heartbeat_row(
    row: Row, claim: Claim, *, lease_seconds: float, at: datetime
) -> tuple[Row, Claim]:
    """Extend the lease of a claim that still holds (the version does not change)."""
    row.check_claim(claim)
    renewed = renewed_claim(claim, lease_seconds=lease_seconds, at=at)
    return replace(row, lease_until=renewed.lease_until), renewed


def renewed_claim(claim: Claim, *, lease_seconds: float, at: datetime) -> Claim:
    """``claim`` with its lease extended to ``lease_seconds`` from ``at`` (once it was checked
    to hold: :func:`heartbeat_row`, or :func:`check_fence` on the row's claim columns)."""
    return claim.model_copy(update={"lease_until": at + timedelta(seconds=lease_seconds)})


def release_row(row: Row, claim: Claim, *, at: datetime) -> tuple[Row, Events]:
    """Give a claimed row back (``ready``); audit ``released``.

    A release (a worker shutting down) is not a failure: the attempt does not count.
    """
    row.check_claim(claim)
    new = row._changed(
        at, status="ready", lease_until=None, holder=None, attempts=max(row.attempts - 1, 0)
    )
    return new, [new.event("released", at, claim.owner)]


def journal_row(row: Row, claim: Claim, event: AuditEvent) -> tuple[Row, Events]:
    """Append ``event`` only while ``claim`` holds; the row itself does not change."""
    row.check_claim(claim)
    return row, [event]


def fail_row(
    row: Row,
    claim: Claim,
    error: BaseException,
    *,
    permanent: bool,
    max_attempts: int,
    retry_in: float,
    at: datetime,
) -> tuple[Row, Events]:
    """End a failed attempt: ``failed`` for good, or ``ready`` after ``retry_in`` seconds."""
    row.check_claim(claim)
    last = LastError.of(error, attempt=row.attempts, at=at)
    detail: dict[str, Any] = {"error": _error(last), "attempt": row.attempts}
    if permanent or row.attempts >= max_attempts:
        new = row._changed(
            at, status="failed", lease_until=None, holder=None, not_before=None, last_error=last
        )
        return new, [new.event("failed", at, claim.owner, **detail, permanent=permanent)]
    until = at + timedelta(seconds=retry_in) if retry_in > 0 else None
    new = row._changed(
        at, status="ready", lease_until=None, holder=None, not_before=until, last_error=last
    )
    return new, [new.event("attempt_failed", at, claim.owner, **detail, retry_at=until)]


def retry_row(row: Row, *, by: str | None, at: datetime) -> tuple[Row, Events]:
    """Put a failed or backing-off row back to ``ready`` now (``waiting`` if some request is
    undecided); audit ``retried`` with who."""
    backing_off = row.status == "ready" and row.not_before is not None and row.not_before > at
    if row.status != "failed" and not backing_off:
        raise ConflictError(
            f"Only a failed or backing-off continuation can be retried; this one is {row.status}.",
            continuation_id=row.id,
        )
    # One whose requests were never all decided (it expired undecided) waits for them again.
    try:
        undecided = row.document.with_decisions(row.decisions).undecided
    except ContinuationError:  # unreadable by this version: claims fail it again until upgraded
        undecided = []
    status: Status = "waiting" if undecided else "ready"
    new = row._changed(at, status=status, attempts=0, not_before=None)
    last = _error(row.last_error) if row.last_error is not None else None
    return new, [new.event("retried", at, by, attempts=row.attempts, last_error=last)]


def checkpoint_rows(
    document: Continuation,
    decisions: tuple[DecisionRecord, ...],
    previous: tuple[Row, Claim] | None,
    *,
    owner: str | None,
    lease_seconds: float,
    at: datetime,
    progress: bool = True,
    holder: str | None = None,
) -> tuple[Row, Row | None, Claim | None, Events]:
    """A run's next continuation (held by ``owner``, or waiting/ready) and ``previous`` retired.

    The new row keeps the fencing token of ``previous`` (1 for a run's first checkpoint). A
    held one counts as attempt 1 after ``progress``, else it keeps ``previous``'s attempts.
    """
    events: Events = []
    retired: Row | None = None
    fence, attempts = 0, 1
    if previous is not None:
        row, held = previous
        retired, done = complete_row(row, held, next_id=document.id, output=None, at=at)
        events.extend(done)
        fence, attempts = held.token, (1 if progress else max(row.attempts, 1))
    if owner is None:
        new, saved = new_row(document, decisions, actor=None, at=at)
        return replace(new, fence=fence), retired, None, [*events, *saved]
    until = at + timedelta(seconds=lease_seconds)
    claim = Claim(
        id=document.id, version=1, owner=owner, lease_until=until, token=max(fence, 1),
        attempt=attempts,
    )  # fmt: skip
    new = Row(
        document, (), 1, "claimed", at, at, claimed_by=owner, lease_until=until,
        fence=claim.token, attempts=attempts, holder=holder,
    )  # fmt: skip
    events.append(
        new.event("checkpoint", at, owner, seq=document.seq, step=document.root.suspended_by)
    )
    return new, retired, claim, events


def complete_row(
    row: Row, claim: Claim, *, next_id: str | None, output: Any, at: datetime
) -> tuple[Row, Events]:
    """Mark a claimed row ``done``; audit ``resumed`` and, if the run ended, ``completed``."""
    row.check_claim(claim)
    kept = jsonable(output) if next_id is None else None
    new = row._changed(at, status="done", lease_until=None, holder=None, output=kept)
    events = completion_events(new.document.run_id, claim, next_id=next_id, output=output, at=at)
    return new, events


def completion_events(
    run_id: str, claim: Claim, *, next_id: str | None, output: Any, at: datetime
) -> Events:
    """What completing ``claim`` audits: ``resumed`` and, if the run ended, ``completed``."""
    events = [
        recorded_event(run_id, "resumed", at=at, continuation_id=claim.id, actor=claim.owner,
                       detail={"next_id": next_id})
    ]  # fmt: skip
    if next_id is None:
        events.append(
            recorded_event(run_id, "completed", at=at, continuation_id=claim.id,
                           actor=claim.owner, detail={"output": output})
        )  # fmt: skip
    return events
