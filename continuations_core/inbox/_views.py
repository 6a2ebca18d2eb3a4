"""The inbox's read models: pending items, a continuation with its audit, filters.

These are what the JSON API returns and the pages render. They are built from the store's
records only; the store stays the source of truth for what is pending and decided (G13).
"""

from __future__ import annotations

import builtins
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .._schema import Approve, Continuation, DecisionRecord, Deny, Respond
from .._signing import Keyring
from ..errors import SignatureError
from ..stores import AuditEvent, Status, StoredContinuation

__all__ = [
    "MAX_PENDING",
    "ContinuationView",
    "DecisionView",
    "PendingItem",
    "SignatureState",
    "continuation_view",
    "matches",
    "pending_items",
    "signature_state",
]

#: Most waiting continuations one listing reads from the store.
MAX_PENDING = 500

SignatureState = Literal["verified", "unverified", "unsigned", "invalid"]


class _View(BaseModel):
    model_config = ConfigDict(frozen=True)


class DecisionView(_View):
    """A decision as recorded in the store: what, by whom, when, and the note kept with it."""

    kind: Literal["approve", "deny", "respond"]
    by: str | None
    at: datetime
    comment: str | None = None
    args: dict[str, Any] | None = Field(
        default=None, description="Edited args of an approval, when they were edited."
    )
    message: str | None = Field(default=None, description="What the model is told on a denial.")
    value: Any = Field(default=None, description="The answer to an input request.")

    @classmethod
    def of(cls, record: DecisionRecord) -> DecisionView:
        """The view of a stored decision record."""
        d = record.decision
        view = cls(kind=d.kind, by=record.by, at=record.at, comment=record.comment)
        if isinstance(d, Approve):
            return view.model_copy(update={"args": d.args})
        if isinstance(d, Deny):
            return view.model_copy(update={"message": d.message})
        assert isinstance(d, Respond)
        return view.model_copy(update={"value": d.value})


class PendingItem(_View):
    """One leaf request of a stored continuation: the flat ``Request`` view plus where it lives.

    This is what ``GET /api/pending`` lists and what an ``authorize(principal, item)`` callback
    receives.
    """

    continuation_id: str
    run_id: str
    seq: int = Field(description="The suspension number within the run; send it back to decide.")
    version: int = Field(description="The store's compare-and-set version of the continuation.")
    status: Status
    started_by: str | None = Field(description="Who started the run (separation of duties).")
    created_at: datetime
    index: int = Field(description="1-based position among the continuation's requests.")
    path: tuple[str, ...]
    agents: tuple[str, ...] = Field(description="The agent chain, root first.")
    tool: str = Field(description="The innermost tool that will actually run.")
    call_id: str = Field(description="The framework's tool-call id (the AG-UI toolCallId).")
    args: dict[str, Any]
    args_digest: str = Field(description="Digest of the original args; send it back to decide.")
    args_schema: dict[str, Any] | None = Field(description="The tool's JSON Schema, for edits.")
    kind: Literal["approval", "input"]
    reason: str | None
    expires_at: datetime | None
    approvers: tuple[str, ...]
    decision: DecisionView | None = None
    may_decide: bool | None = Field(
        default=None, description="Whether the requesting principal may decide it."
    )
    refused: tuple[str, ...] = Field(default=(), description="Why the principal may not decide.")

    @property
    def expired(self) -> bool:
        """Whether the deadline has passed."""
        return self.expires_at is not None and self.expires_at <= datetime.now(UTC)

    @property
    def open(self) -> bool:
        """Whether a decision may still be attached: undecided, in a waiting continuation."""
        return self.decision is None and self.status == "waiting"


class ContinuationView(_View):
    """A stored continuation with its requests, decisions and the run's audit timeline."""

    id: str
    run_id: str
    seq: int
    version: int
    status: Status
    started_by: str | None
    created_at: datetime
    updated_at: datetime
    signature: SignatureState
    suspended_by: str
    requests: builtins.list[PendingItem]
    audit: builtins.list[AuditEvent]
    completed: bool = Field(description="Whether the run has finished (its output is known).")
    output: Any = Field(default=None, description="The run's final output once completed.")
    next_id: str | None = Field(
        default=None, description="The run's latest suspension after this one, if any."
    )


def signature_state(cont: Continuation, keys: Keyring | None) -> SignatureState:
    """``verified`` with ``keys``, ``unverified`` without them, ``unsigned`` or ``invalid``."""
    if cont.signature is None:
        return "unsigned"
    if keys is None:
        return "unverified"
    try:
        cont.verify(keys)
    except SignatureError:
        return "invalid"
    return "verified"


def pending_items(stored: StoredContinuation) -> builtins.list[PendingItem]:
    """Every leaf request of ``stored``, in tree order, with its decision if any."""
    cont = stored.continuation
    out = []
    for index, (path, agents, call) in enumerate(cont.leaves(), 1):
        record = cont.decision_for(path)
        out.append(
            PendingItem(
                continuation_id=stored.id,
                run_id=stored.run_id,
                seq=stored.seq,
                version=stored.version,
                status=stored.status,
                started_by=cont.started_by,
                created_at=stored.created_at,
                index=index,
                path=path,
                agents=agents,
                tool=call.tool,
                call_id=call.call_id,
                args=call.args,
                args_digest=call.args_digest,
                args_schema=call.args_schema,
                kind="input" if call.kind == "input" else "approval",
                reason=call.reason,
                expires_at=call.expires_at,
                approvers=call.approvers,
                decision=DecisionView.of(record) if record is not None else None,
            )
        )
    return out


def matches(
    item: PendingItem,
    *,
    tool: str | None = None,
    agent: str | None = None,
    run: str | None = None,
    assignee: str | None = None,
) -> bool:
    """Whether ``item`` passes the list filters (``assignee`` names an approver entry)."""
    if tool and item.tool != tool:
        return False
    if agent and agent not in item.agents:
        return False
    if run and item.run_id != run:
        return False
    return not (assignee and assignee not in item.approvers)


def continuation_view(
    stored: StoredContinuation,
    audit: builtins.list[AuditEvent],
    *,
    keys: Keyring | None,
    items: builtins.list[PendingItem],
) -> ContinuationView:
    """The detail view: requests (with decisions), the run's audit, and its outcome if known."""
    completed = [e for e in audit if e.kind == "completed"]
    # The run's latest suspension, when it is a later one than this (checkpoints in between
    # are not suspensions: they are written, and retired, by the running process).
    suspensions = [e.continuation_id for e in audit if e.kind == "suspended"]
    later = suspensions[suspensions.index(stored.id) + 1 :] if stored.id in suspensions else []
    next_id = later[-1] if later and not completed else None
    return ContinuationView(
        id=stored.id,
        run_id=stored.run_id,
        seq=stored.seq,
        version=stored.version,
        status=stored.status,
        started_by=stored.continuation.started_by,
        created_at=stored.created_at,
        updated_at=stored.updated_at,
        signature=signature_state(stored.continuation, keys),
        suspended_by=stored.continuation.root.suspended_by,
        requests=items,
        audit=audit,
        completed=bool(completed),
        output=completed[-1].detail.get("output") if completed else None,
        next_id=next_id,
    )
