"""Helpers for the inbox tests: realistic continuations, an app, and per-person clients."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from continuations_core import ChildRun, Continuation, Frame, Keyring, PendingCall, Store
from continuations_core.inbox import Principal, create_inbox_app

KEYS = Keyring.generate("inbox-test")

TRANSFER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "amount": {"type": "integer", "minimum": 1, "description": "In cents."},
        "to": {"type": "string"},
        "urgent": {"type": "boolean"},
        "currency": {"type": "string", "enum": ["EUR", "USD"]},
    },
    "required": ["amount", "to"],
    "additionalProperties": False,
}
ASK_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"question": {"type": "string"}},
    "required": ["question"],
}


def nested(
    *,
    started_by: str | None = None,
    approvers: tuple[str, ...] = (),
    expires_at: datetime | None = None,
    transfers: Iterable[dict[str, Any]] = ({"amount": 500, "to": "acct-001"},),
    tool: str = "transfer",
    reason: str | None = "Transfers move money out of the company account.",
    agents: tuple[str, str] = ("finance", "payments"),
    ask: bool = True,
    keys: Keyring | None = KEYS,
) -> Continuation:
    """A signed continuation: ``finance`` delegates to ``payments``, which waits on transfers.

    The root also waits on an ``ask_user`` input request when ``ask`` is true.
    """
    calls = tuple(
        PendingCall(
            call_id=f"call_{i + 1}",
            tool=tool,
            step=0,
            args=args,
            kind="approval",
            reason=reason,
            approvers=approvers,
            expires_at=expires_at,
            args_schema=TRANSFER_SCHEMA,
        )
        for i, args in enumerate(transfers)
    )
    child = Frame(
        framework="test",
        agent=agents[1],
        pending=calls,
    )
    pending = [
        PendingCall(
            call_id="call_1",
            tool="delegate_payments",
            step=0,
            args={"task": "pay"},
            kind="child",
            children=(ChildRun(agent=agents[1], prompt="0" * 64, frame=child),),
        )
    ]
    if ask:
        pending.append(
            PendingCall(
                call_id="call_2",
                tool="ask_user",
                step=0,
                args={"question": "Which cost centre?"},
                kind="input",
                args_schema=ASK_SCHEMA,
            )
        )
    root = Frame(framework="test", agent=agents[0], pending=tuple(pending))
    cont = Continuation(run_id=uuid.uuid4().hex, root=root, started_by=started_by)
    return cont.sign(keys) if keys is not None else cont


def past(minutes: int = 5) -> datetime:
    """A moment ``minutes`` ago."""
    return datetime.now(UTC) - timedelta(minutes=minutes)


def header_auth(request: Any) -> Principal | None:
    """An application authenticator for tests: the person named by ``X-Test-User``."""
    user = request.headers.get("x-test-user")
    if not user:
        return None
    roles = frozenset(r for r in request.headers.get("x-test-roles", "").split(",") if r)
    return Principal(id=user, roles=roles, method="test-header")


def app_for(store: Store, **kwargs: Any) -> Any:
    """An inbox over ``store`` authenticating with :func:`header_auth`."""
    kwargs.setdefault("authenticate", header_auth)
    kwargs.setdefault("keys", KEYS)
    return create_inbox_app(store, **kwargs)


@asynccontextmanager
async def person(
    app: Any, user: str | None, roles: str = "", *, peer: str = "127.0.0.1"
) -> AsyncIterator[httpx.AsyncClient]:
    """A client acting as ``user`` (with its own cookie jar), connecting from ``peer``."""
    headers = {"x-test-user": user, "x-test-roles": roles} if user else {}
    transport = httpx.ASGITransport(app=app, client=(peer, 50_000))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://inbox.test", headers=headers
    ) as client:
        yield client


async def csrf(client: httpx.AsyncClient) -> str:
    """The caller's CSRF token (and its cookie, kept in the client's jar)."""
    response = await client.get("/api/session")
    assert response.status_code == 200, response.text
    token: str = response.json()["csrf_token"]
    return token


def form_token(html: str) -> str:
    """The CSRF token embedded in a page's forms."""
    found = re.search(r'name="csrf_token" value="([0-9a-f]+)"', html)
    assert found, "no CSRF token in the page"
    return found.group(1)


async def decision_body(
    client: httpx.AsyncClient, cid: str, index: int = 0, **extra: Any
) -> dict[str, Any]:
    """A decision body for request ``index`` of ``cid``, as the API lists it."""
    view = (await client.get(f"/api/continuations/{cid}")).json()
    item = view["requests"][index]
    body = {
        "path": item["path"],
        "action": "approve",
        "seq": item["seq"],
        "args_digest": item["args_digest"],
    }
    body.update(extra)
    return body


async def post_decision(
    client: httpx.AsyncClient, cid: str, body: dict[str, Any], token: str | None = None
) -> httpx.Response:
    """POST a decision with the caller's CSRF token."""
    token = token if token is not None else await csrf(client)
    return await client.post(
        f"/api/continuations/{cid}/decisions", json=body, headers={"X-CSRF-Token": token}
    )
