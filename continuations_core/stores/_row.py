"""The row a backend persists for one continuation, and reading it back safely.

A :class:`Row` is what every backend stores and every rule in ``_rules`` transforms; the
claim check that makes fencing work (:meth:`Row.check_claim`) lives on it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from pydantic_core import to_jsonable_python

from .._schema import Continuation, DecisionRecord
from .._segments import Segment, with_segments
from ..errors import (
    ClaimSuperseded,
    ConflictError,
    ContinuationNotFound,
    MalformedContinuation,
    SchemaError,
)
from ._records import AuditEvent, AuditKind, Claim, LastError, Status, StoredContinuation

__all__ = [
    "Row",
    "already_saved",
    "check_fence",
    "check_segment",
    "jsonable",
    "not_found",
    "readable",
]


def jsonable(value: Any) -> Any:
    """``value`` as JSON-compatible data; what JSON cannot hold is kept as its repr."""
    return to_jsonable_python(value, fallback=repr)


def readable(id: str, build: Callable[[], Row]) -> Row:
    """Build a row from stored values; a value this version cannot read is a schema error.

    Raises:
        SchemaError: Naming the continuation: its document or decisions cannot be read (a
            newer version of the package wrote them, or they were edited). Workers fail it
            with :meth:`Store.fail_unreadable`.
    """
    try:
        return build()
    except SchemaError as exc:
        if exc.continuation_id is not None:
            raise
        raise type(exc)(str(exc), continuation_id=id) from exc
    except (ValueError, TypeError, KeyError) as exc:
        raise MalformedContinuation(
            f"The stored continuation cannot be read ({exc}). A newer version of "
            "agent-continuations wrote it, or it was edited: upgrade, or leave it failed.",
            continuation_id=id,
        ) from exc


def not_found(id: str) -> ContinuationNotFound:
    """The error for an unknown id."""
    return ContinuationNotFound(
        f"No continuation with id {id!r} in this store. Check the id and the store URL.",
        continuation_id=id,
    )


def already_saved(id: str) -> ConflictError:
    """The error for saving an id twice."""
    return ConflictError(
        "A continuation with this id is already stored; save each suspension once and change "
        "it through decide, claim and complete.",
        continuation_id=id,
    )


@dataclass(frozen=True)
class Row:
    """What a backend persists for one continuation."""

    document: Continuation  # as signed, without decisions
    decisions: tuple[DecisionRecord, ...]
    version: int
    status: Status
    created_at: datetime
    updated_at: datetime
    claimed_by: str | None = None
    lease_until: datetime | None = None
    fence: int = 0  # the fencing token of the current or last claim
    attempts: int = 0
    not_before: datetime | None = None
    last_error: LastError | None = None
    holder: str | None = None  # the process holding the claim (see ``_owners``)
    output: Any = None

    @property
    def id(self) -> str:
        """The continuation id."""
        return self.document.id

    def record(self, segments: Sequence[str] = ()) -> StoredContinuation:
        """The public view of this row; a checkpoint's stored ``segments`` are applied.

        Raises:
            BrokenCheckpoint: If the segments do not chain onto the document.
        """
        doc = with_segments(self.document, segments)
        return StoredContinuation(
            id=doc.id,
            run_id=doc.run_id,
            seq=doc.seq,
            version=self.version,
            status=self.status,
            created_at=self.created_at,
            updated_at=self.updated_at,
            claimed_by=self.claimed_by,
            lease_until=self.lease_until,
            fence=self.fence,
            attempts=self.attempts,
            not_before=self.not_before,
            last_error=self.last_error,
            output=self.output,
            continuation=doc.with_decisions(self.decisions),
        )

    def event(self, kind: AuditKind, at: datetime, actor: str | None, **detail: Any) -> AuditEvent:
        """An audit event about this row."""
        # Values JSON cannot hold (a run's output, say) are kept as their repr.
        cid, run_id = self.id, self.document.run_id
        return AuditEvent(
            run_id=run_id, continuation_id=cid, kind=kind, at=at, actor=actor,
            detail=jsonable(detail),
        )  # fmt: skip

    def _changed(self, at: datetime, **changes: Any) -> Row:
        return replace(self, version=self.version + 1, updated_at=at, **changes)

    def _check_version(self, expected: int | None) -> None:
        if expected is not None and expected != self.version:
            raise ConflictError(
                f"Expected version {expected} but the stored version is {self.version}: "
                "someone else changed it. Reload it and try again.",
                continuation_id=self.id,
            )

    def check_claim(self, claim: Claim) -> None:
        """Refuse a write under ``claim`` unless it is the row's live claim (same token)."""
        check_fence(self.id, self.status, self.fence, self.claimed_by, claim)


def check_fence(id: str, status: str, fence: int, claimed_by: str | None, claim: Claim) -> None:
    """Refuse a write under ``claim`` unless row ``id`` (read as these columns) holds it.

    For writes that need no more of the row than its claim (the journal, segments), so a
    backend reads four columns rather than the whole document.

    Raises:
        ClaimSuperseded: If the row is not claimed under ``claim``'s fencing token.
    """
    if status == "claimed" and fence == claim.token:
        return
    if status == "claimed":
        why = f"{claimed_by!r} took the run over with token {fence}"
    elif status == "done":
        why = "the continuation was resumed already"
    else:
        why = f"the continuation was released or failed (it is {status})"
    raise ClaimSuperseded(
        f"The claim of {claim.owner!r} (fencing token {claim.token}) no longer holds: {why}. "
        "Nothing was written; stop this run and start no further tool.",
        continuation_id=id,
    )


def check_segment(segment: Segment, count: int, stored: str | None) -> bool:
    """Whether to write ``segment``, given its base's ``count`` of stored segments and the
    text ``stored`` at its index, if any; false when it is stored already (a retried append).

    Raises:
        ConflictError: If another segment holds its index, or it would leave a gap.
    """
    if stored is not None:
        if stored == segment.text:
            return False
        raise ConflictError(
            f"Segment {segment.index} of checkpoint {segment.base} is stored already with "
            "other content; write the next step as a full checkpoint.",
            continuation_id=segment.base,
        )
    if segment.index != count + 1:
        raise ConflictError(
            f"Segment {segment.index} of checkpoint {segment.base} does not follow the "
            f"{count} stored; write the next step as a full checkpoint.",
            continuation_id=segment.base,
        )
    return True
