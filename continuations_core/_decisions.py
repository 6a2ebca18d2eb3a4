"""Applying decisions to the tree by path (G4, G8).

Decisions are independent of order: they are kept sorted by path, and each one targets one
leaf pending call, bound to it by ``(path, tool, digest of the original args)``. Resuming
turns a decided continuation into a :class:`FramePlan` tree that adapters walk frame by frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import ValidationError

from ._limits import MAX_DEPTH, MAX_DOCUMENT_BYTES, check_value, loads
from ._schema import (
    Approve,
    Continuation,
    Decision,
    DecisionRecord,
    Deny,
    Frame,
    PendingCall,
    Request,
    Respond,
    RunKey,
)
from .errors import (
    AlreadyDecided,
    ContinuationExpired,
    InvalidDecision,
    MalformedContinuation,
    MissingDecisions,
    UnknownPath,
)

__all__ = [
    "CallPlan",
    "FramePlan",
    "already_decided",
    "attach",
    "attach_records",
    "build_plan",
    "check_args",
    "check_record",
    "load_records",
]

ExpiryMode = Literal["raise", "deny"]
EXPIRED_MESSAGE = "The request expired before a decision was made."


def check_args(call: PendingCall, args: dict[str, Any], *, continuation_id: str | None) -> None:
    """Validate edited ``args`` against the tool's JSON Schema recorded in the frame.

    Raises:
        InvalidDecision: If the args do not match the schema.
        MalformedContinuation: If they break the value limits (``MAX_VALUE_DEPTH``,
            ``MAX_VALUE_BYTES``) or hold NaN or infinity.
    """
    check_value(args, what=f"edited args for {call.tool!r}", continuation_id=continuation_id)
    if not isinstance(args, dict):
        raise InvalidDecision(
            f"Edited args for {call.tool!r} must be an object, got {type(args).__name__}.",
            continuation_id=continuation_id,
        )
    if call.args_schema is None:
        return
    import jsonschema  # lazy: costs more to import than the rest of the package

    validator = jsonschema.Draft202012Validator(call.args_schema)
    errors = sorted(validator.iter_errors(args), key=lambda e: list(e.absolute_path))
    if errors:
        where = "/".join(str(p) for p in errors[0].absolute_path) or "(top level)"
        raise InvalidDecision(
            f"Edited args for {call.tool!r} do not match its schema at {where}: "
            f"{errors[0].message}. Fix the args and decide again.",
            continuation_id=continuation_id,
        )


def check_record(record: DecisionRecord, *, continuation_id: str | None) -> None:
    """Refuse a decision whose value, message, comment or ``by`` is over the value limits.

    Raises:
        MalformedContinuation: If a respond value or edited args nest deeper than
            ``MAX_VALUE_DEPTH``, or any of them is larger than ``MAX_VALUE_BYTES`` as JSON, or
            holds NaN or infinity (G15).
    """
    decision = record.decision
    where = " > ".join(record.path)
    if isinstance(decision, Respond):
        value, what = decision.value, f"respond value for {where}"
    elif isinstance(decision, Approve):
        value, what = decision.args, f"edited args for {where}"
    else:
        value, what = decision.message, f"deny message for {where}"
    check_value(value, what=what, continuation_id=continuation_id)
    for text, name in ((record.comment, "comment"), (record.by, "'by'")):
        if text is not None:
            check_value(
                text, what=f"{name} of the decision for {where}", continuation_id=continuation_id
            )


def load_records(text: str | bytes, *, continuation_id: str | None) -> tuple[DecisionRecord, ...]:
    """Parse a stored list of decision records strictly (a store's ``decisions`` column).

    Raises:
        MalformedContinuation: If the text breaks the JSON limits, is not a list of decision
            records, or a record breaks the value limits.
    """
    data = loads(
        text,
        what="stored decision list",
        max_bytes=MAX_DOCUMENT_BYTES,
        max_depth=MAX_DEPTH,
        continuation_id=continuation_id,
    )
    if not isinstance(data, list):
        raise MalformedContinuation(
            "The stored decisions are not a JSON list. Nothing was changed.",
            continuation_id=continuation_id,
        )
    try:
        records = tuple(DecisionRecord.model_validate(item) for item in data)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise MalformedContinuation(
            f"A stored decision does not match the decision schema: {first['loc']} "
            f"{first['msg']}. Nothing was changed.",
            continuation_id=continuation_id,
        ) from exc
    for record in records:
        check_record(record, continuation_id=continuation_id)
    return records


def _check_fits(cont: Continuation, call: PendingCall, decision: Decision) -> None:
    if isinstance(decision, Respond) and call.kind != "input":
        raise InvalidDecision(
            f"{call.tool!r} waits for an approval; approve or deny it instead of responding.",
            continuation_id=cont.id,
        )
    if isinstance(decision, Approve):
        if call.kind == "input":
            raise InvalidDecision(
                f"{call.tool!r} waits for an input value; use respond(path, value).",
                continuation_id=cont.id,
            )
        if decision.args is not None:
            check_args(call, decision.args, continuation_id=cont.id)


def attach(
    cont: Continuation,
    path: Sequence[str] | Request,
    decision: Decision,
    *,
    by: str | None,
    comment: str | None,
    replace: bool = False,
) -> Continuation:
    """Return a copy of ``cont`` with ``decision`` attached at ``path``.

    Raises:
        AlreadyDecided: If ``path`` already has a decision and ``replace`` is false.
    """
    target = tuple(path.path if isinstance(path, Request) else path)
    call = cont.pending_call(target)
    record = DecisionRecord(
        path=target,
        tool=call.tool,
        args_digest=call.args_digest,
        decision=decision,
        by=by,
        comment=comment,
    )
    check_record(record, continuation_id=cont.id)  # limits first: schema checks recurse
    _check_fits(cont, call, decision)
    existing = cont.decision_for(target)
    if existing is not None and not replace:
        raise already_decided(existing, continuation_id=cont.id)
    kept = [r for r in cont.decisions if r.path != target]
    return cont.model_copy(update={"decisions": _sorted([*kept, record])})


def already_decided(existing: DecisionRecord, *, continuation_id: str | None) -> AlreadyDecided:
    """The error for a second decision on ``existing``'s path."""
    return AlreadyDecided(
        existing.path,
        by=existing.by,
        at=existing.at,
        kind=existing.decision.kind,
        continuation_id=continuation_id,
    )


def attach_records(cont: Continuation, records: list[DecisionRecord]) -> Continuation:
    """Return a copy of ``cont`` carrying ``records``, each validated against its call.

    Raises:
        AlreadyDecided: If two records decide the same path.
    """
    by_path: dict[tuple[str, ...], DecisionRecord] = {}
    moved = cont._legacy_paths
    for record in records:
        if record.path in moved:  # recorded against an older schema's path of the same call
            record = record.model_copy(update={"path": moved[record.path]})
        _check_binding(cont, record)
        if record.path in by_path:
            raise already_decided(by_path[record.path], continuation_id=cont.id)
        by_path[record.path] = record
    return cont.model_copy(update={"decisions": _sorted(list(by_path.values()))})


def _sorted(records: list[DecisionRecord]) -> tuple[DecisionRecord, ...]:
    return tuple(sorted(records, key=lambda r: r.path))


def _check_binding(cont: Continuation, record: DecisionRecord) -> PendingCall:
    check_record(record, continuation_id=cont.id)
    try:
        call = cont.pending_call(record.path)
    except UnknownPath as exc:
        raise UnknownPath(
            f"A decision targets {' > '.join(record.path)}, which is not pending. "
            "Remove it and decide again from the current requests.",
            continuation_id=cont.id,
        ) from exc
    if record.tool != call.tool or record.args_digest != call.args_digest:
        raise InvalidDecision(
            f"The decision for {' > '.join(record.path)} was made for another call "
            f"({record.tool!r}, args digest {record.args_digest[:12]}); the pending call is "
            f"{call.tool!r} with digest {call.args_digest[:12]}. Decide again.",
            continuation_id=cont.id,
        )
    _check_fits(cont, call, record.decision)
    return call


@dataclass(frozen=True)
class CallPlan:
    """What to do with one pending call on resume.

    A leaf has its ``decision``; a delegating call (kind ``child``) is re-entered, and each of
    its suspended sub-agent runs resumes from the plan in ``children``.
    """

    call: PendingCall
    decision: Approve | Deny | Respond | None = None
    children: dict[RunKey, FramePlan] = field(default_factory=dict)

    @property
    def reentered(self) -> bool:
        """Whether this is a delegating call that is re-entered on resume."""
        return self.call.kind == "child"


@dataclass(frozen=True)
class FramePlan:
    """One frame of a resume, with the plan for each of its pending calls by call id."""

    frame: Frame
    path: tuple[str, ...]
    calls: dict[str, CallPlan] = field(default_factory=dict)

    def call_path(self, call_id: str, tool: str) -> tuple[str, ...]:
        """The path of a call made in this frame."""
        return (*self.path, f"{tool}:{call_id}")


def build_plan(
    cont: Continuation,
    *,
    now: datetime | None = None,
    on_expired: ExpiryMode = "raise",
) -> FramePlan:
    """Check every decision and build the resume plan; change nothing on failure.

    Raises:
        InvalidDecision: If a decision does not match its pending call.
        MissingDecisions: If a leaf pending call has no decision.
        ContinuationExpired: If a call passed its deadline and ``on_expired`` is ``"raise"``.
    """
    moment = now or datetime.now(UTC)
    decided: dict[tuple[str, ...], DecisionRecord] = {}
    for record in cont.decisions:
        _check_binding(cont, record)
        if record.path in decided:  # from_json refuses this too; never pick one silently
            raise already_decided(decided[record.path], continuation_id=cont.id)
        decided[record.path] = record
    missing: list[tuple[str, ...]] = []
    expired: list[tuple[str, ...]] = []
    for path, _agents, call in cont.leaves():
        if call.expires_at is not None and call.expires_at <= moment:
            expired.append(path)
        elif path not in decided:
            missing.append(path)
    if expired and on_expired == "raise":
        shown = ", ".join(" > ".join(p) for p in expired)
        raise ContinuationExpired(
            f"Pending call(s) expired before resume: {shown}. Resume with on_expired='deny' "
            "to deny them, or start a new run.",
            continuation_id=cont.id,
        )
    if missing:
        raise MissingDecisions(missing, continuation_id=cont.id)
    expired_set = set(expired)

    def plan(frame: Frame, path: tuple[str, ...]) -> FramePlan:
        calls: dict[str, CallPlan] = {}
        for call in frame.pending:
            here = (*path, call.segment)
            if call.kind == "child":
                children = {run.key: plan(run.frame, (*here, run.segment)) for run in call.children}
                calls[call.call_id] = CallPlan(call=call, children=children)
            elif here in expired_set:
                calls[call.call_id] = CallPlan(call=call, decision=Deny(message=EXPIRED_MESSAGE))
            else:
                calls[call.call_id] = CallPlan(call=call, decision=decided[here].decision)
        return FramePlan(frame=frame, path=path, calls=calls)

    return plan(cont.root, ())
