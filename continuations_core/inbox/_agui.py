"""The AG-UI interrupt vocabulary for continuations, so AG-UI frontends can drive the inbox.

A suspended continuation is an AG-UI run that ended with an interrupt outcome:

=====================  ==========================================================
AG-UI                  agent-continuations
=====================  ==========================================================
``threadId``           ``run_id`` (the logical run, across suspensions)
``runId``              the continuation id (one suspension of the run)
``Interrupt.id``       ``int-`` + a digest of (continuation id, path): stable, opaque
``reason``             ``tool_call`` for approvals, ``input_required`` for input
``message``            the request's reason, else "Approve <tool>?"
``toolCallId``         the innermost call's framework tool-call id
``responseSchema``     ``{approved, editedArgs: <tool schema>, message, comment}``;
                       for input requests, any JSON value
``expiresAt``          ``expires_at`` (ISO-8601)
``subagentRunId``      ``<run_id>/<path of the sub-agent's frame>`` for nested requests
``metadata``           ``{"agentContinuations": {path, agents, tool, args, argsDigest, ...}}``
=====================  ==========================================================

A ``resume`` entry is a decision: ``resolved`` with ``{"approved": true, "editedArgs"?}`` approves
(edited args are a full replacement, validated against the tool's schema), ``{"approved":
false, "message"?}`` denies, and for an input request the payload is the answer; ``cancelled``
denies. ``by`` is always the authenticated principal.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from ._service import DecisionInput, InboxError
from ._views import ContinuationView, PendingItem

__all__ = ["CANCELLED_MESSAGE", "decision_of", "interrupt", "interrupt_id", "run_finished"]

CANCELLED_MESSAGE = "The person deciding cancelled this request."


def interrupt_id(continuation_id: str, path: tuple[str, ...]) -> str:
    """The AG-UI interrupt id of the request at ``path``."""
    raw = json.dumps([continuation_id, list(path)], separators=(",", ":"))
    return "int-" + hashlib.sha256(raw.encode()).hexdigest()[:32]


def _response_schema(item: PendingItem) -> dict[str, Any]:
    if item.kind == "input":
        return {}
    edited: dict[str, Any] = dict(item.args_schema or {"type": "object"})
    edited["description"] = "Full replacement of the tool args. Not merged."
    return {
        "type": "object",
        "properties": {
            "approved": {"type": "boolean"},
            "editedArgs": edited,
            "message": {"type": "string", "description": "Told to the model on a denial."},
            "comment": {"type": "string", "description": "Kept with the decision."},
        },
        "required": ["approved"],
    }


def interrupt(item: PendingItem) -> dict[str, Any]:
    """The AG-UI ``Interrupt`` object for one request."""
    out: dict[str, Any] = {
        "id": interrupt_id(item.continuation_id, item.path),
        "reason": "tool_call" if item.kind == "approval" else "input_required",
        "message": item.reason or f"Approve {item.tool}?",
        "toolCallId": item.call_id,
        "responseSchema": _response_schema(item),
        "metadata": {
            "agentContinuations": {
                "continuationId": item.continuation_id,
                "seq": item.seq,
                "path": list(item.path),
                "agents": list(item.agents),
                "tool": item.tool,
                "args": item.args,
                "argsDigest": item.args_digest,
                "approvers": list(item.approvers),
            }
        },
    }
    if item.expires_at is not None:
        out["expiresAt"] = item.expires_at.isoformat()
    if len(item.agents) > 1:
        out["subagentRunId"] = "/".join([item.run_id, *item.path[:-1]])
    return out


def run_finished(view: ContinuationView) -> dict[str, Any]:
    """The ``RUN_FINISHED`` event of this suspension: its open interrupts, or success."""
    event: dict[str, Any] = {"type": "RUN_FINISHED", "threadId": view.run_id, "runId": view.id}
    open_items = [i for i in view.requests if i.open]
    if open_items:
        event["outcome"] = {"type": "interrupt", "interrupts": [interrupt(i) for i in open_items]}
    else:
        event["outcome"] = {"type": "success"}
        if view.completed:
            event["result"] = view.output
    return event


def _bad(detail: str) -> InboxError:
    return InboxError(422, "invalid_resume", detail)


def decision_of(item: PendingItem, entry: dict[str, Any]) -> DecisionInput:
    """The decision an AG-UI ``resume`` entry asks for on ``item``.

    Raises:
        InboxError: 422 if the entry does not fit the interrupt; 409 if its ``argsDigest``
            metadata names other args than the pending call's.
    """
    status = entry.get("status")
    payload = entry.get("payload")
    metadata = entry.get("metadata") or {}
    echoed = metadata.get("argsDigest") if isinstance(metadata, dict) else None
    digest = echoed if isinstance(echoed, str) else item.args_digest

    def base(**kw: Any) -> DecisionInput:
        return DecisionInput(path=item.path, seq=item.seq, args_digest=digest, **kw)

    if status == "cancelled":
        return base(action="deny", message=CANCELLED_MESSAGE)
    if status != "resolved":
        raise _bad(f"A resume entry's status must be 'resolved' or 'cancelled', not {status!r}.")
    if item.kind == "input":
        return base(action="respond", value=payload, has_value=True)
    if not isinstance(payload, dict) or not isinstance(payload.get("approved"), bool):
        raise _bad("An approval's payload must be an object with a boolean 'approved'.")
    comment = payload.get("comment")
    comment = comment if isinstance(comment, str) else None
    if payload["approved"]:
        edited = payload.get("editedArgs")
        if edited is not None and not isinstance(edited, dict):
            raise _bad("'editedArgs' must be an object (a full replacement of the args).")
        return base(action="approve", args=edited, comment=comment)
    message = payload.get("message")
    return base(
        action="deny", message=message if isinstance(message, str) else None, comment=comment
    )
