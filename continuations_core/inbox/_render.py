"""Template helpers: how values, times and audit events read on the page.

Everything a template prints goes through Jinja2's autoescaping; these helpers only turn values
into plain text (never markup), so model-produced args, reasons and names stay inert.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..stores import AuditEvent
from ._forms import args_diff, form_fields, pretty
from ._views import PendingItem

__all__ = ["TEMPLATES", "helpers", "item_key", "parse_item_key"]

TEMPLATES = Path(__file__).with_name("templates")
# Longest args summary on a list row.
_SUMMARY_CHARS = 160

SIGNATURE_TEXT = {
    "verified": "verified",
    "unverified": "signed, not verified (the inbox has no keys)",
    "unsigned": "unsigned",
    "invalid": "INVALID: the stored state does not match its signature",
}
STATUS_TEXT = {
    "waiting": "waiting for decisions",
    "ready": "decided, waiting for a worker",
    "claimed": "being resumed",
    "done": "resumed",
}


def item_key(item: PendingItem) -> str:
    """The bulk checkbox value of a request: what was reviewed, so a change is detected."""
    return json.dumps([item.continuation_id, list(item.path), item.args_digest, item.seq])


def parse_item_key(text: str) -> tuple[str, tuple[str, ...], str, int] | None:
    """Read :func:`item_key` back; ``None`` if it is not one."""
    try:
        cid, path, digest, seq = json.loads(text)
    except (ValueError, TypeError):
        return None
    ok = (
        isinstance(cid, str)
        and isinstance(path, list)
        and all(isinstance(p, str) for p in path)
        and isinstance(digest, str)
        and isinstance(seq, int)
    )
    return (cid, tuple(path), digest, seq) if ok else None


def when(moment: datetime) -> str:
    """A UTC timestamp for people."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def remaining(deadline: datetime) -> str:
    """Time left until ``deadline`` (the page's script keeps it counting down)."""
    seconds = int((deadline - datetime.now(UTC)).total_seconds())
    if seconds <= 0:
        return "expired"
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"expires in {days}d {hours}h"
    if hours:
        return f"expires in {hours}h {minutes}m"
    return f"expires in {minutes}m {secs}s"


def summary(args: dict[str, Any]) -> str:
    """A one-line summary of the args for a list row."""
    text = ", ".join(f"{k}={pretty(v)}" for k, v in args.items()) or "no arguments"
    return text if len(text) <= _SUMMARY_CHARS else text[: _SUMMARY_CHARS - 1] + "…"


def path_json(item: PendingItem) -> str:
    """The request's path, as the JSON a decision form posts back."""
    return json.dumps(list(item.path))


def output_text(value: Any) -> str:
    """The run's output: text as is, anything else as indented JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True)


_TITLES = {
    "suspended": "suspended",
    "decided": "decided",
    "claimed": "claimed by a worker",
    "released": "released",
    "resumed": "resumed",
    "completed": "completed",
    "expired": "lease expired",
    "checkpoint": "checkpoint",
    "tool_started": "tool started",
    "tool_completed": "tool finished",
    "tool_suspended": "tool suspended",
}


def event_title(event: AuditEvent) -> str:
    """A short title for an audit event."""
    if event.kind == "decided" and event.detail.get("source") == "inbox":
        return "decided in the inbox"
    return _TITLES.get(event.kind, event.kind)


def _last(path: Any) -> str:
    return str(path[-1]) if isinstance(path, list) and path else "?"


def event_text(event: AuditEvent) -> str:
    """The gist of an audit event's detail, as plain text."""
    d = event.detail
    if event.kind == "decided" and d.get("source") == "inbox":
        client = d.get("client") or {}
        where = client.get("forwarded_for") or client.get("peer") or "?"
        parts = [f"{d.get('decision')} of {_last(d.get('path'))}", f"via {d.get('auth_method')}"]
        parts.append(f"from {where}")
        for change in d.get("args_diff") or []:
            parts.append(f"{change.get('key')}: {change.get('before')} → {change.get('after')}")
        return "; ".join(parts)
    if event.kind == "decided":
        decision = d.get("decision") or {}
        text = f"{decision.get('kind')} {_last(d.get('path'))}"
        if decision.get("kind") == "deny":
            text += f" ({decision.get('message')})"
        if decision.get("args") is not None:
            text += f" with args {pretty(decision.get('args'))}"
        if d.get("comment"):
            text += f"; comment: {d['comment']}"
        return text
    if event.kind == "suspended":
        return f"{len(d.get('requests') or [])} request(s)"
    if event.kind in ("tool_started", "tool_completed", "tool_suspended"):
        return str(d.get("tool") or _last(d.get("path")))
    if event.kind == "completed":
        return "the run finished"
    if event.kind == "resumed" and d.get("next_id"):
        return f"continued as {str(d['next_id'])[:12]}"
    return ""


def helpers() -> dict[str, Any]:
    """The globals every template gets."""
    return {
        "pretty": pretty,
        "when": when,
        "remaining": remaining,
        "summary": summary,
        "item_key": item_key,
        "path_json": path_json,
        "fields": lambda item: form_fields(item.args_schema, item.args),
        "diff": args_diff,
        "output_text": output_text,
        "event_title": event_title,
        "event_text": event_text,
        "signature_text": SIGNATURE_TEXT,
        "status_text": STATUS_TEXT,
    }
