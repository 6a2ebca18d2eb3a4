"""Deciding from the inbox: every check between a person's click and ``Store.decide``.

Both the JSON API and the pages call :func:`decide`. It refuses, in this order: an unknown
continuation or path (404), a principal who may not decide (403), a stale view of the request
(409: another ``seq``, other args than the ones reviewed, already decided, or no longer
waiting), an expired request (410), and edited args that fail the tool's schema (422, checked by
the core). The store then attaches the decision with a compare-and-set, so of two people deciding
one path at once exactly one wins; the other gets a 409 naming who decided and when.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from .._schema import Continuation
from .._signing import Keyring
from ..errors import (
    AlreadyClaimed,
    AlreadyDecided,
    ConflictError,
    ContinuationError,
    ContinuationNotFound,
    InvalidDecision,
    NotAuthorized,
    StoreUnavailable,
    UnknownPath,
)
from ..stores import Store, StoredContinuation
from ._auth import Authorizer, Principal, check_may_decide
from ._forms import args_diff
from ._views import DecisionView, PendingItem, pending_items, signature_state

__all__ = [
    "MAX_COMMENT_CHARS",
    "MAX_MESSAGE_CHARS",
    "Action",
    "DecisionInput",
    "InboxError",
    "decide",
    "find_item",
    "http_error",
]

log = logging.getLogger("continuations.inbox")

#: Longest comment kept with a decision.
MAX_COMMENT_CHARS = 4_000
#: Longest denial message told to the model.
MAX_MESSAGE_CHARS = 4_000

Action = Literal["approve", "deny", "respond"]


class InboxError(Exception):
    """A refusal with its HTTP status, a stable error code and the message for the person."""

    def __init__(self, status: int, code: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.extra = status, code, detail, extra

    def body(self) -> dict[str, Any]:
        """The JSON error body: ``{"error": code, "detail": message, ...}``."""
        return {"error": self.code, "detail": self.detail, **self.extra}


@dataclass(frozen=True)
class DecisionInput:
    """What a person asked for, as received (the API body or a form)."""

    path: tuple[str, ...]
    action: Action
    seq: int
    args_digest: str
    args: dict[str, Any] | None = None
    message: str | None = None
    value: Any = None
    comment: str | None = None
    version: int | None = None
    has_value: bool = field(default=False)


def http_error(exc: ContinuationError) -> InboxError:
    """Map a core error to its HTTP refusal."""
    if isinstance(exc, AlreadyDecided):
        return InboxError(
            409,
            "already_decided",
            str(exc),
            decided_by=exc.by,
            decided_at=exc.at.isoformat(),
            decided_kind=exc.kind,
        )
    if isinstance(exc, AlreadyClaimed):
        return InboxError(409, "not_waiting", str(exc))
    if isinstance(exc, ConflictError):
        return InboxError(409, "conflict", str(exc))
    if isinstance(exc, ContinuationNotFound):
        return InboxError(404, "not_found", str(exc))
    if isinstance(exc, UnknownPath):
        return InboxError(404, "unknown_path", str(exc))
    if isinstance(exc, InvalidDecision):
        return InboxError(422, "invalid_decision", str(exc))
    if isinstance(exc, NotAuthorized):
        return InboxError(403, "forbidden", str(exc))
    if isinstance(exc, StoreUnavailable):
        return InboxError(503, "store_unavailable", str(exc))
    return InboxError(400, type(exc).__name__, str(exc))


def find_item(stored: StoredContinuation, path: tuple[str, ...]) -> PendingItem:
    """The request of ``stored`` at ``path``.

    Raises:
        InboxError: 404 if no leaf pending call has that path.
    """
    for item in pending_items(stored):
        if item.path == path:
            return item
    try:
        stored.continuation.pending_call(path)  # raises UnknownPath naming the pending paths
    except UnknownPath as exc:
        raise http_error(exc) from exc
    raise InboxError(404, "unknown_path", "No such request.")  # pragma: no cover


def _check_fresh(stored: StoredContinuation, item: PendingItem, wanted: DecisionInput) -> None:
    if wanted.seq != stored.seq:
        raise InboxError(
            409,
            "stale",
            f"You reviewed suspension {wanted.seq} of this run, but this continuation is "
            f"suspension {stored.seq}. Reload the request and decide again.",
        )
    if wanted.args_digest != item.args_digest:
        raise InboxError(
            409,
            "stale",
            "The args you reviewed are not the args of the pending call. Reload the request "
            "and review it again.",
        )
    if item.decision is not None:
        d = item.decision
        raise InboxError(
            409,
            "already_decided",
            f"{' > '.join(item.path)} was already decided ({d.kind}) by "
            f"{d.by or 'someone (not recorded)'} at {d.at.isoformat(timespec='seconds')}.",
            decided_by=d.by,
            decided_at=d.at.isoformat(),
            decided_kind=d.kind,
        )
    if stored.status != "waiting":
        raise InboxError(
            409,
            "not_waiting",
            f"This continuation is {stored.status}: it is no longer waiting for decisions.",
        )


def _build(cont: Continuation, item: PendingItem, wanted: DecisionInput, by: str) -> Any:
    """The decision record, built (and validated) by the core."""
    comment = wanted.comment.strip() if wanted.comment else None
    if comment and len(comment) > MAX_COMMENT_CHARS:
        raise InvalidDecision(f"A comment may have at most {MAX_COMMENT_CHARS} characters.")
    if wanted.action == "approve":
        if item.kind != "approval":
            raise InvalidDecision(f"{item.tool!r} waits for an answer; respond instead.")
        decided = cont.approve(item.path, args=wanted.args, by=by, comment=comment or None)
    elif wanted.action == "deny":
        if item.kind != "approval":
            raise InvalidDecision(f"{item.tool!r} waits for an answer; respond instead.")
        message = (wanted.message or "").strip() or "The tool call was denied."
        if len(message) > MAX_MESSAGE_CHARS:
            raise InvalidDecision(f"A denial message may have at most {MAX_MESSAGE_CHARS} chars.")
        decided = cont.deny(item.path, message, by=by, comment=comment or None)
    else:
        if not wanted.has_value:
            raise InvalidDecision("A response needs a value.")
        decided = cont.respond(item.path, wanted.value, by=by, comment=comment or None)
    return decided.decision_for(item.path)


async def decide(
    store: Store,
    principal: Principal,
    continuation_id: str,
    wanted: DecisionInput,
    *,
    keys: Keyring | None,
    authorize: Authorizer | None,
    separation_of_duties: bool,
    client: dict[str, str],
) -> tuple[StoredContinuation, DecisionView]:
    """Check and attach one decision by ``principal``; return the updated record and decision.

    Raises:
        InboxError: With the HTTP status and the reason (see the module docstring).
    """
    try:
        stored = await store.get(continuation_id)
        item = find_item(stored, wanted.path)
        await check_may_decide(
            principal, item, authorize=authorize, separation_of_duties=separation_of_duties
        )
        _check_fresh(stored, item, wanted)
        if item.expired:
            raise InboxError(
                410,
                "expired",
                f"This request expired at {item.expires_at:%Y-%m-%d %H:%M:%S %Z}; it can no "
                "longer be decided.",
            )
        if signature_state(stored.continuation, keys) == "invalid":
            raise InboxError(
                422,
                "tampered",
                "The stored continuation does not match its signature; it will not be decided. "
                "Tell the people who run the agents.",
            )
        record = _build(stored.continuation, item, wanted, principal.id)
        updated = await store.decide(continuation_id, record, expected_version=wanted.version)
    except ContinuationError as exc:
        raise http_error(exc) from exc
    await _audit_context(store, stored, item, record, principal, client)
    return updated, DecisionView.of(record)


async def _audit_context(
    store: Store,
    stored: StoredContinuation,
    item: PendingItem,
    record: Any,
    principal: Principal,
    client: dict[str, str],
) -> None:
    """Record how the decision was made: the principal, auth method, client and args diff.

    The store's own ``decided`` event (written atomically with the decision) holds who, when,
    what and the comment; this second ``decided`` event, marked ``"source": "inbox"``, adds the
    request's context. A failure to write it is logged, never hidden as a failed decision.
    """
    edited = getattr(record.decision, "args", None)
    diff = [
        {"key": r.key, "change": r.change, "before": r.before, "after": r.after}
        for r in args_diff(item.args, edited)
        if r.change != "same"
    ] if edited is not None else []  # fmt: skip
    detail = {
        "source": "inbox",
        "path": list(item.path),
        "decision": record.decision.kind,
        "principal": principal.id,
        "roles": sorted(principal.roles),
        "auth_method": principal.method,
        "client": client,
        "comment": record.comment,
        "args_diff": diff,
        "at": datetime.now(UTC).isoformat(),
    }
    try:
        await store.record(
            stored.run_id,
            "decided",
            continuation_id=stored.id,
            actor=principal.id,
            detail=detail,
        )
    except ContinuationError:
        log.exception("the decision on %s was stored but its inbox context was not", stored.id)
