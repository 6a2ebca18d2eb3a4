"""The store contract: stored records, the abstract :class:`Store`, and :class:`SyncStore`.

A store keeps each continuation's signed document, the decisions attached to it, its status
and the audit trail of the run. Status moves one way::

    waiting --decide--> ready --claim--> claimed --complete--> done
                          ^                 |
                          +----release------+      (an expired lease may be claimed again)

Every change bumps the record's ``version``; writers may pass ``expected_version`` to make
the change a compare-and-set on ``(id, version)`` (G5). The rules shared by every backend
(status, lease checks, audit details) live here, so backends only move bytes.
"""

from __future__ import annotations

import asyncio
import builtins
import secrets
from abc import ABC, abstractmethod
from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field
from pydantic_core import to_jsonable_python

from .._schema import Continuation, DecisionRecord, Request
from ..errors import AlreadyClaimed, ConflictError, ContinuationNotFound, MissingDecisions

__all__ = ["STATUSES", "AuditEvent", "AuditKind", "Claim", "Status", "Store", "StoredContinuation"]

Status = Literal["waiting", "ready", "claimed", "done"]
AuditKind = Literal["suspended", "decided", "claimed", "released", "resumed", "completed", "expired"]
STATUSES: tuple[Status, ...] = ("waiting", "ready", "claimed", "done")
T = TypeVar("T")


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class StoredContinuation(_Record):
    """A continuation as the store holds it.

    Attributes:
        id: The continuation id.
        run_id: The run it belongs to.
        seq: How many times the run had suspended before this continuation.
        version: Bumped on every change; the compare-and-set token.
        status: ``waiting`` (some requests undecided), ``ready`` (all decided, or none at
            all), ``claimed`` (a resumer holds a lease) or ``done`` (resumed; single use).
        created_at: When it was saved.
        updated_at: When it last changed.
        claimed_by: The owner of the current or last claim.
        lease_until: When the current claim's lease ends.
        continuation: The signed document with the stored decisions attached.
    """

    id: str
    run_id: str
    seq: int
    version: int
    status: Status
    created_at: datetime
    updated_at: datetime
    claimed_by: str | None = None
    lease_until: datetime | None = None
    continuation: Continuation

    @property
    def requests(self) -> list[Request]:
        """The continuation's requests, flattened for a UI."""
        return self.continuation.requests

    @property
    def undecided(self) -> list[tuple[str, ...]]:
        """Paths of requests that have no decision yet."""
        return self.continuation.undecided


class Claim(_Record):
    """A resumer's exclusive, leased hold on a ready continuation.

    Attributes:
        id: The continuation id.
        version: The record's version after the claim.
        owner: Who holds the claim (a worker name).
        lease_until: When the lease ends unless extended with ``heartbeat``.
        token: Random hex identifying this claim; it stops holding once taken over.
    """

    id: str
    version: int
    owner: str
    lease_until: datetime
    token: str


class AuditEvent(_Record):
    """One entry of a run's audit trail (G12): who did what, and when."""

    run_id: str
    continuation_id: str
    kind: AuditKind
    at: datetime
    actor: str | None = None
    detail: dict[str, Any] = Field(default_factory=dict)


class Store(ABC):
    """Where continuations, decisions and the audit trail live. Async-first.

    Every method is abstract, so a backend that misses one fails when instantiated. Use
    ``async with store:`` to close it when done.
    """

    @abstractmethod
    async def save(self, cont: Continuation, *, actor: str | None = None) -> StoredContinuation:
        """Store a newly suspended continuation, with any decisions it already carries.

        Raises:
            ConflictError: If a continuation with this id is already stored.
        """

    @abstractmethod
    async def load(self, id: str) -> Continuation:
        """Return the continuation with its stored decisions attached.

        Raises:
            ContinuationNotFound: If no continuation has this id.
        """

    @abstractmethod
    async def get(self, id: str) -> StoredContinuation:
        """Return the stored record. Raises ``ContinuationNotFound`` like :meth:`load`."""

    @abstractmethod
    async def list(
        self, *, status: Status | None = None, run_id: str | None = None, limit: int = 100
    ) -> builtins.list[StoredContinuation]:
        """Return up to ``limit`` records, newest first, filtered by status and run."""

    @abstractmethod
    async def decide(
        self, id: str, record: DecisionRecord, *, expected_version: int | None = None
    ) -> StoredContinuation:
        """Attach one decision (replacing any earlier one for its path); return the record.

        The decision is validated against the document before anything is written.

        Raises:
            UnknownPath: If the decision targets no pending call.
            InvalidDecision: If it does not fit its call; the store is unchanged.
            AlreadyClaimed: If the continuation is claimed or done.
            ConflictError: If ``expected_version`` is given and is not the current version.
        """

    @abstractmethod
    async def claim(
        self,
        id: str,
        *,
        owner: str,
        lease_seconds: float = 300.0,
        expected_version: int | None = None,
    ) -> Claim:
        """Take a ready continuation (or one whose lease expired) for resuming.

        Raises:
            MissingDecisions: If some requests are undecided.
            AlreadyClaimed: If another owner holds a live lease, or it was resumed.
            ConflictError: If ``expected_version`` is given and is not the current version.
        """

    @abstractmethod
    async def heartbeat(self, claim: Claim, *, lease_seconds: float = 300.0) -> Claim:
        """Extend the claim's lease. Raises ``AlreadyClaimed`` if the claim was lost."""

    @abstractmethod
    async def release(self, claim: Claim) -> None:
        """Give the continuation back (status ``ready``) without resuming it.

        Raises:
            AlreadyClaimed: If the claim was lost.
        """

    @abstractmethod
    async def complete(self, claim: Claim, *, next_id: str | None = None, output: Any = None) -> None:
        """Mark the continuation resumed (``done``); it can never be claimed again.

        Args:
            claim: The claim that resumed it.
            next_id: The continuation the run suspended into next, if it suspended again.
            output: The run's final output when it completed (``next_id`` is None).

        Raises:
            AlreadyClaimed: If the claim was lost (the lease expired and was taken over).
        """

    @abstractmethod
    async def audit(self, run_id: str) -> builtins.list[AuditEvent]:
        """Return the run's audit events in the order they were recorded."""

    @abstractmethod
    async def close(self) -> None:
        """Release the store's resources. Connections passed in by the caller stay open."""

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class SyncStore:
    """A thin blocking wrapper around a :class:`Store`, for scripts and the CLI.

    Each call runs on one private event loop, so backends whose connections are bound to a
    loop keep working across calls. Do not use it from inside a running event loop.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._runner = asyncio.Runner()

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._runner.run(coro)

    def save(self, cont: Continuation, *, actor: str | None = None) -> StoredContinuation:
        """See :meth:`Store.save`."""
        return self._run(self.store.save(cont, actor=actor))

    def load(self, id: str) -> Continuation:
        """See :meth:`Store.load`."""
        return self._run(self.store.load(id))

    def get(self, id: str) -> StoredContinuation:
        """See :meth:`Store.get`."""
        return self._run(self.store.get(id))

    def list(
        self, *, status: Status | None = None, run_id: str | None = None, limit: int = 100
    ) -> builtins.list[StoredContinuation]:
        """See :meth:`Store.list`."""
        return self._run(self.store.list(status=status, run_id=run_id, limit=limit))

    def decide(
        self, id: str, record: DecisionRecord, *, expected_version: int | None = None
    ) -> StoredContinuation:
        """See :meth:`Store.decide`."""
        return self._run(self.store.decide(id, record, expected_version=expected_version))

    def claim(
        self,
        id: str,
        *,
        owner: str,
        lease_seconds: float = 300.0,
        expected_version: int | None = None,
    ) -> Claim:
        """See :meth:`Store.claim`."""
        return self._run(
            self.store.claim(
                id, owner=owner, lease_seconds=lease_seconds, expected_version=expected_version
            )
        )

    def heartbeat(self, claim: Claim, *, lease_seconds: float = 300.0) -> Claim:
        """See :meth:`Store.heartbeat`."""
        return self._run(self.store.heartbeat(claim, lease_seconds=lease_seconds))

    def release(self, claim: Claim) -> None:
        """See :meth:`Store.release`."""
        self._run(self.store.release(claim))

    def complete(self, claim: Claim, *, next_id: str | None = None, output: Any = None) -> None:
        """See :meth:`Store.complete`."""
        self._run(self.store.complete(claim, next_id=next_id, output=output))

    def audit(self, run_id: str) -> builtins.list[AuditEvent]:
        """See :meth:`Store.audit`."""
        return self._run(self.store.audit(run_id))

    def close(self) -> None:
        """Close the store and the private event loop."""
        try:
            self._run(self.store.close())
        finally:
            self._runner.close()

    def __enter__(self) -> SyncStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# -- rules shared by every backend ------------------------------------------------------------


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def lease_end(at: datetime, seconds: float) -> datetime:
    """When a lease of ``seconds`` taken at ``at`` ends."""
    return at + timedelta(seconds=seconds)


def new_token() -> str:
    """A random claim token."""
    return secrets.token_hex(16)


def status_of(cont: Continuation) -> Status:
    """``waiting`` while a request is undecided, else ``ready``."""
    return "waiting" if cont.undecided else "ready"


def undecided_copy(cont: Continuation) -> Continuation:
    """The document as signed: ``cont`` without its decisions."""
    return cont.model_copy(update={"decisions": ()})


def suspended_detail(cont: Continuation) -> dict[str, Any]:
    """Audit detail of a ``suspended`` event."""
    return {"seq": cont.seq, "requests": [list(path) for path, _, _ in cont.leaves()]}


def decided_detail(record: DecisionRecord) -> dict[str, Any]:
    """Audit detail of a ``decided`` event."""
    return {
        "path": list(record.path),
        "decision": record.decision.model_dump(mode="json"),
        "comment": record.comment,
    }


def completed_detail(output: Any) -> dict[str, Any]:
    """Audit detail of a ``completed`` event; values JSON cannot hold are kept as ``repr``."""
    return {"output": to_jsonable_python(output, fallback=repr)}


def not_found(id: str) -> ContinuationNotFound:
    """The error for an unknown id."""
    return ContinuationNotFound(
        f"No continuation with id {id!r} in this store. Check the id and the store URL.",
        continuation_id=id,
    )


def already_saved(id: str) -> ConflictError:
    """The error for saving an id twice."""
    return ConflictError(
        "A continuation with this id is already stored; continuations are saved once, "
        "then changed through decide/claim/complete.",
        continuation_id=id,
    )


def check_version(id: str, version: int, expected: int | None) -> None:
    """Refuse a compare-and-set whose ``expected`` version is stale."""
    if expected is not None and expected != version:
        raise ConflictError(
            f"Expected version {expected} but the stored version is {version}: someone else "
            "changed it. Reload it and try again.",
            continuation_id=id,
        )


def check_decidable(id: str, status: Status, version: int, expected: int | None) -> None:
    """Refuse a decision on a claimed or resumed continuation, or on a stale version."""
    if status in ("claimed", "done"):
        raise AlreadyClaimed(
            f"The continuation is {'being resumed' if status == 'claimed' else 'resumed'}; "
            "decisions can no longer change. Decide on the run's next continuation instead.",
            continuation_id=id,
        )
    check_version(id, version, expected)


def check_claimable(
    id: str,
    *,
    status: Status,
    version: int,
    expected: int | None,
    claimed_by: str | None,
    lease_until: datetime | None,
    undecided: builtins.list[tuple[str, ...]],
    at: datetime,
) -> bool:
    """Refuse a claim that must not win; return True when it takes over an expired lease."""
    if status == "done":
        raise AlreadyClaimed(
            "It was already resumed; a continuation can be resumed only once.",
            continuation_id=id,
        )
    if status == "claimed" and (lease_until is None or lease_until > at):
        until = lease_until.isoformat() if lease_until else "?"
        raise AlreadyClaimed(
            f"Claimed by {claimed_by!r} until {until}. Another resumer holds it; try again "
            "after its lease expires if that resumer died.",
            continuation_id=id,
        )
    check_version(id, version, expected)
    if status == "waiting":
        raise MissingDecisions(undecided, continuation_id=id)
    return status == "claimed"


def check_token(id: str, *, status: Status, token: str | None, claim: Claim) -> None:
    """Refuse to act on a claim whose token no longer holds."""
    if status != "claimed" or token != claim.token:
        raise AlreadyClaimed(
            f"The claim of {claim.owner!r} no longer holds: its lease expired and another "
            "resumer took over, or the continuation was released or resumed. Stop this resume.",
            continuation_id=id,
        )
