"""Inbox authentication: trusted-proxy headers, the command's refusals, and the AG-UI mapping."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from _inbox import KEYS, app_for, csrf, nested, past, person

from continuations_core import ConfigurationError, SQLiteStore, Store
from continuations_core.cli import main
from continuations_core.inbox import TrustedProxyAuth, create_inbox_app


@pytest_asyncio.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    """A fresh SQLite store."""
    async with SQLiteStore(tmp_path / "auth.db") as opened:
        yield opened


def proxy_app(store: Store) -> object:
    auth = TrustedProxyAuth(
        header="X-Forwarded-Email",
        proxies=("10.0.0.0/24", "127.0.0.1"),
        groups_header="X-Forwarded-Groups",
    )
    return create_inbox_app(store, authenticate=auth, keys=KEYS)


def client(app: object, peer: str, headers: dict[str, str]) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(peer, 40_000))  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=transport, base_url="http://inbox.test", headers=headers)


async def test_the_identity_header_is_believed_only_from_an_allowlisted_proxy(store) -> None:
    """From the proxy the header names the principal and groups; from anyone else: 401."""
    app = proxy_app(store)
    sent = {"X-Forwarded-Email": "ann@example.com", "X-Forwarded-Groups": "finance, ops"}
    async with client(app, "10.0.0.7", sent) as via_proxy:
        me = (await via_proxy.get("/api/session")).json()
        assert me["principal"] == "ann@example.com" and me["roles"] == ["finance", "ops"]
        assert me["auth_method"] == "trusted-proxy"
    async with client(app, "192.168.1.50", sent) as direct:
        response = await direct.get("/api/session")
        assert response.status_code == 401 and "proxy" in response.json()["detail"]
    async with client(app, "10.0.0.7", {}) as no_header:
        assert (await no_header.get("/api/pending")).status_code == 401
    bad = {"X-Forwarded-Email": "ann\x01@example.com"}
    async with client(app, "10.0.0.7", bad) as control:
        assert (await control.get("/api/pending")).status_code == 401


async def test_the_audit_keeps_the_forwarded_client_only_from_a_trusted_proxy(store) -> None:
    """X-Forwarded-For is recorded when the trusted proxy sent it, beside the proxy's address."""
    cont = nested(ask=False)
    await store.save(cont)
    app = proxy_app(store)
    headers = {"X-Forwarded-Email": "ann@example.com", "X-Forwarded-For": "203.0.113.9"}
    async with client(app, "127.0.0.1", headers) as ann:
        item = (await ann.get("/api/pending")).json()[0]
        body = {k: item[k] for k in ("path", "seq", "args_digest")} | {"action": "approve"}
        token = await csrf(ann)
        response = await ann.post(
            f"/api/continuations/{cont.id}/decisions", json=body, headers={"X-CSRF-Token": token}
        )
        assert response.status_code == 200, response.text
    [context] = [e for e in await store.audit(cont.run_id) if e.detail.get("source") == "inbox"]
    assert context.detail["client"] == {"peer": "127.0.0.1", "forwarded_for": "203.0.113.9"}
    assert context.detail["auth_method"] == "trusted-proxy"


def test_a_trusted_proxy_needs_a_header_name_and_an_allowlist() -> None:
    """TrustedProxyAuth refuses an empty header name, no proxies, a bare string or bad IPs."""
    for kwargs in (
        {"header": "", "proxies": ("127.0.0.1",)},
        {"header": "X-User", "proxies": ()},
        {"header": "X-User", "proxies": "127.0.0.1"},
        {"header": "X-User", "proxies": ("not-an-ip",)},
    ):
        with pytest.raises(ConfigurationError):
            TrustedProxyAuth(**kwargs)  # type: ignore[arg-type]


def test_the_inbox_command_refuses_to_start_without_authentication(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`inbox` without an authenticator, or --dev on a public address, exits 2 and says why."""
    url = f"sqlite:///{tmp_path / 'x.db'}"
    assert main(["inbox", "--store", url]) == 2
    assert "will not start without authentication" in capsys.readouterr().err
    assert main(["inbox", "--store", url, "--dev", "--host", "0.0.0.0"]) == 2
    assert "127.0.0.1 only" in capsys.readouterr().err
    assert main(["inbox", "--store", url, "--trusted-proxy-header", "X-User"]) == 2
    assert "--trusted-proxies" in capsys.readouterr().err
    assert main(["inbox", "--store", url, "--dev", "--authenticate", "x:y"]) == 2
    assert "Choose one way" in capsys.readouterr().err


def test_the_inbox_extra_is_named_when_fastapi_is_missing() -> None:
    """Without FastAPI, create_inbox_app raises MissingExtra naming the inbox extra."""
    probe = (
        "import sys; sys.modules['fastapi'] = None\n"
        "import continuations_core.inbox as inbox\n"
        "try:\n    inbox.create_inbox_app\n"
        "except Exception as exc:\n    print(type(exc).__name__, exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert out.startswith("MissingExtra") and "agent-continuations[inbox]" in out


def test_importing_the_core_or_the_notifier_loads_no_web_framework() -> None:
    """The core and continuations_core.inbox's notifier import neither FastAPI nor Jinja2."""
    probe = (
        "import sys, continuations_core, continuations_core.inbox; "
        "from continuations_core.inbox import WebhookNotifier, TrustedProxyAuth; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'fastapi','starlette','jinja2','uvicorn','httpx'}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert out.strip() == "[]"


async def test_ag_ui_interrupts_carry_ids_tool_call_schema_expiry_and_attribution(store) -> None:
    """The AG-UI view lists open interrupts with the documented fields, nested ones attributed."""
    deadline = past(-60)
    cont = nested(expires_at=deadline)
    await store.save(cont)
    async with person(app_for(store), "alice") as alice:
        event = (await alice.get(f"/api/continuations/{cont.id}/ag-ui")).json()
    assert event["type"] == "RUN_FINISHED" and event["threadId"] == cont.run_id
    assert event["runId"] == cont.id and event["outcome"]["type"] == "interrupt"
    transfer, ask = event["outcome"]["interrupts"]
    assert transfer["reason"] == "tool_call" and transfer["toolCallId"] == "call_1"
    assert transfer["responseSchema"]["properties"]["editedArgs"]["properties"]["amount"]
    assert transfer["expiresAt"] == deadline.isoformat()
    run = "payments#" + "0" * 12 + ".0"  # the sub-agent run's segment (schema 3)
    assert transfer["subagentRunId"] == f"{cont.run_id}/delegate_payments:call_1@0/{run}"
    meta = transfer["metadata"]["agentContinuations"]
    assert meta["agents"] == ["finance", "payments"] and meta["tool"] == "transfer"
    assert ask["reason"] == "input_required" and "subagentRunId" not in ask
    assert len({transfer["id"], ask["id"]}) == 2


async def test_an_ag_ui_resume_applies_each_entry_as_a_checked_decision(store) -> None:
    """Resolved approvals with edits, answers and refusals map to decisions by the principal."""
    cont = nested(transfers=[{"amount": 5, "to": "a"}, {"amount": 6, "to": "b"}])
    await store.save(cont)
    async with person(app_for(store), "alice") as alice:
        token = await csrf(alice)
        url = f"/api/continuations/{cont.id}/ag-ui/resume"
        event = (await alice.get(f"/api/continuations/{cont.id}/ag-ui")).json()
        first, second, ask = (i["id"] for i in event["outcome"]["interrupts"])

        async def resume(body: dict[str, object]) -> httpx.Response:
            return await alice.post(url, json=body, headers={"X-CSRF-Token": token})

        wrong = await resume(
            {"threadId": "other", "resume": [{"interruptId": first, "status": "cancelled"}]}
        )
        assert wrong.status_code == 422
        unknown = await resume(
            {"threadId": cont.run_id, "resume": [{"interruptId": "int-x", "status": "cancelled"}]}
        )
        assert unknown.status_code == 404
        bad = {"approved": True, "editedArgs": {"amount": -1, "to": "a"}}
        refused = await resume(
            {
                "threadId": cont.run_id,
                "resume": [{"interruptId": first, "status": "resolved", "payload": bad}],
            }
        )
        assert refused.status_code == 422 and refused.json()["interruptId"] == first
        assert (await store.get(cont.id)).version == 1
        entries = [
            {"interruptId": first, "status": "resolved",
             "payload": {"approved": True, "editedArgs": {"amount": 4, "to": "a"}, "comment": "ok"}},
            {"interruptId": second, "status": "resolved",
             "payload": {"approved": False, "message": "not b"}},
            {"interruptId": ask, "status": "resolved", "payload": "CC-9"},
        ]  # fmt: skip
        done = await resume({"threadId": cont.run_id, "resume": entries})
        assert done.status_code == 200, done.text
        assert done.json()["applied"] == [first, second, ask]
        after = (await alice.get(f"/api/continuations/{cont.id}/ag-ui")).json()
        assert after["outcome"] == {"type": "success"}
    stored = await store.get(cont.id)
    decisions = [r.decision for r in stored.continuation.decisions]
    assert {type(d).__name__ for d in decisions} == {"Approve", "Deny", "Respond"}
    assert all(r.by == "alice" for r in stored.continuation.decisions)
    assert stored.status == "ready"
