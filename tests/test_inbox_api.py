"""The inbox's JSON API through the ASGI test client, over a real SQLite store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from _backends import enter_namespace
from _inbox import (
    KEYS,
    TRANSFER_SCHEMA,
    app_for,
    csrf,
    decision_body,
    nested,
    past,
    person,
    post_decision,
)

from continuations_core import ConfigurationError, MemoryStore, SQLiteStore, Store, open_store
from continuations_core.inbox import PendingItem, Principal, create_inbox_app


@pytest_asyncio.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    """A fresh SQLite store."""
    async with SQLiteStore(tmp_path / "inbox.db") as opened:
        yield opened


async def saved(store: Store, **kwargs: Any) -> str:
    cont = nested(**kwargs)
    await store.save(cont, actor="agent")
    return cont.id


async def test_pending_lists_flat_requests_newest_first_with_schema_and_filters(store) -> None:
    """GET /api/pending returns the flat request view with run, seq and schema, and filters."""
    older = await saved(store, agents=("hr", "accounts"), tool="grant", approvers=("it",))
    newer = await saved(store, transfers=[{"amount": 1, "to": "a"}, {"amount": 2, "to": "b"}])
    app = app_for(store)
    async with person(app, "alice") as alice:
        items = (await alice.get("/api/pending")).json()
        assert [i["continuation_id"] for i in items] == [newer] * 3 + [older] * 2
        first = items[0]
        assert first["agents"] == ["finance", "payments"] and first["tool"] == "transfer"
        run = "payments#" + "0" * 12 + ".0"  # the sub-agent run's segment (schema 3)
        assert first["path"] == ["delegate_payments:call_1@0", run, "transfer:call_1@0"]
        assert first["args"] == {"amount": 1, "to": "a"} and first["kind"] == "approval"
        assert first["args_schema"] == TRANSFER_SCHEMA and first["seq"] == 0
        assert first["reason"].startswith("Transfers") and first["may_decide"] is True
        assert {i["kind"] for i in items} == {"approval", "input"}

        def ids(query: str) -> list[str]:
            return [i["tool"] for i in (alice_items[query])]

        alice_items = {
            q: (await alice.get(f"/api/pending?{q}")).json()
            for q in ("tool=grant", "agent=accounts", f"run={items[0]['run_id']}", "assignee=it")
        }
        assert ids("tool=grant") == ["grant"]
        assert ids("agent=accounts") == ["grant"]
        assert ids(f"run={items[0]['run_id']}") == ["transfer", "transfer", "ask_user"]
        assert ids("assignee=it") == ["grant"]
        mine = (await alice.get("/api/pending?assignee=me")).json()
        assert "grant" not in {i["tool"] for i in mine}  # alice is not in "it"


async def test_every_api_route_refuses_an_unauthenticated_caller(store) -> None:
    """Without a principal the API answers 401 and the store is unchanged."""
    cid = await saved(store)
    app = app_for(store)
    async with person(app, None) as nobody:
        for url in ("/api/session", "/api/pending", f"/api/continuations/{cid}"):
            response = await nobody.get(url)
            assert response.status_code == 401
            assert response.json()["error"] == "unauthenticated"
        response = await nobody.post(f"/api/continuations/{cid}/decisions", json={})
        assert response.status_code == 401
        assert (await nobody.get("/inbox")).status_code == 401
    assert (await store.get(cid)).version == 1


async def test_by_is_the_principal_and_a_body_naming_someone_is_refused(store) -> None:
    """The decision records the authenticated principal; a body with ``by`` is a 422."""
    cid = await saved(store)
    app = app_for(store)
    async with person(app, "alice") as alice:
        forged = await decision_body(alice, cid, by="mallory")
        response = await post_decision(alice, cid, forged)
        assert response.status_code == 422 and response.json()["error"] == "invalid_request"
        assert (await store.get(cid)).version == 1
        response = await post_decision(alice, cid, await decision_body(alice, cid))
        assert response.status_code == 200, response.text
        assert response.json()["decision"]["by"] == "alice"
    stored = await store.get(cid)
    [record] = stored.continuation.decisions
    assert record.by == "alice"
    events = [e for e in await store.audit(stored.run_id) if e.kind == "decided"]
    assert {e.actor for e in events} == {"alice"}


async def test_edited_args_are_validated_by_the_core_and_recorded(store) -> None:
    """Edited args that fail the tool's schema are a 422 (nothing stored); valid ones are kept."""
    cid = await saved(store)
    app = app_for(store)
    async with person(app, "alice") as alice:
        token = await csrf(alice)
        bad = await decision_body(alice, cid, args={"amount": 0, "to": "acct-001"})
        response = await post_decision(alice, cid, bad, token)
        assert response.status_code == 422, response.text
        assert response.json()["error"] == "invalid_decision"
        assert "amount" in response.json()["detail"]
        extra = await decision_body(alice, cid, args={"amount": 5, "to": "x", "memo": "<b>"})
        assert (await post_decision(alice, cid, extra, token)).status_code == 422
        assert (await store.get(cid)).version == 1
        good = await decision_body(alice, cid, args={"amount": 400, "to": "acct-001"})
        response = await post_decision(alice, cid, good | {"comment": "cap at 400"}, token)
        assert response.status_code == 200, response.text
    [record] = (await store.get(cid)).continuation.decisions
    assert record.decision.args == {"amount": 400, "to": "acct-001"}  # type: ignore[union-attr]
    assert record.comment == "cap at 400"


async def test_stale_seq_other_args_and_a_decided_path_are_409s(store) -> None:
    """A stale seq or args digest is a 409; deciding a decided path names who and when."""
    cid = await saved(store)
    app = app_for(store)
    async with person(app, "alice") as alice, person(app, "bob") as bob:
        body = await decision_body(alice, cid)
        stale = await post_decision(alice, cid, body | {"seq": 3})
        assert stale.status_code == 409 and stale.json()["error"] == "stale"
        other = await post_decision(alice, cid, body | {"args_digest": "0" * 64})
        assert other.status_code == 409 and other.json()["error"] == "stale"
        version = await post_decision(alice, cid, body | {"version": 99})
        assert version.status_code == 409 and version.json()["error"] == "conflict"
        assert (await store.get(cid)).version == 1
        assert (await post_decision(alice, cid, body)).status_code == 200
        again = await post_decision(bob, cid, body | {"action": "deny"})
        assert again.status_code == 409
        error = again.json()
        assert error["error"] == "already_decided" and error["decided_by"] == "alice"
        assert error["decided_kind"] == "approve"
        assert datetime.fromisoformat(error["decided_at"]) <= datetime.now(UTC)


async def test_deciding_a_resumed_continuation_is_a_409(store) -> None:
    """Once a worker claimed (or resumed) a continuation, no decision is accepted: 409."""
    cid = await saved(store, ask=False)
    app = app_for(store)
    async with person(app, "alice") as alice:
        body = await decision_body(alice, cid)
        assert (await post_decision(alice, cid, body)).status_code == 200
        claim = await store.claim(cid, owner="worker")
        await store.complete(claim, output="done")
        response = await post_decision(alice, cid, body | {"action": "deny"})
        assert response.status_code == 409
        assert response.json()["error"] in ("already_decided", "not_waiting")


async def test_an_expired_request_is_a_410(store) -> None:
    """A decision for a request past its deadline is refused with 410 and not stored."""
    cid = await saved(store, expires_at=past())
    app = app_for(store)
    async with person(app, "alice") as alice:
        response = await post_decision(alice, cid, await decision_body(alice, cid))
        assert response.status_code == 410 and response.json()["error"] == "expired"
    assert (await store.get(cid)).continuation.decisions == ()


async def test_unknown_continuations_and_paths_are_404s(store) -> None:
    """An unknown continuation id or a path that is not pending is a 404."""
    cid = await saved(store)
    app = app_for(store)
    async with person(app, "alice") as alice:
        assert (await alice.get("/api/continuations/nope")).status_code == 404
        body = await decision_body(alice, cid)
        response = await post_decision(alice, "nope", body)
        assert response.status_code == 404 and response.json()["error"] == "not_found"
        response = await post_decision(alice, cid, body | {"path": ["transfer:call_9@0"]})
        assert response.status_code == 404 and response.json()["error"] == "unknown_path"


async def test_the_person_who_started_the_run_may_not_approve_it(store) -> None:
    """Separation of duties: the run's initiator gets 403; another person may decide."""
    cid = await saved(store, started_by="alice")
    app = app_for(store)
    async with person(app, "alice") as alice, person(app, "bob") as bob:
        items = (await alice.get("/api/pending")).json()
        assert items[0]["may_decide"] is False and "separation of duties" in items[0]["refused"][0]
        response = await post_decision(alice, cid, await decision_body(alice, cid))
        assert response.status_code == 403 and response.json()["error"] == "forbidden"
        assert (await store.get(cid)).continuation.decisions == ()
        assert (await post_decision(bob, cid, await decision_body(bob, cid))).status_code == 200
    relaxed = app_for(store, separation_of_duties=False)
    async with person(relaxed, "alice") as alice:
        body = await decision_body(alice, cid, index=1, action="respond", value="CC-1")
        assert (await post_decision(alice, cid, body)).status_code == 200


async def test_only_the_named_approvers_may_decide(store) -> None:
    """A request's approvers (ids or roles) decide it; anyone else gets 403."""
    cid = await saved(store, approvers=("finance-leads", "dana"))
    app = app_for(store)
    async with (
        person(app, "bob", roles="engineering") as bob,
        person(app, "carol", roles="finance-leads") as carol,
        person(app, "dana") as dana,
    ):
        response = await post_decision(bob, cid, await decision_body(bob, cid))
        assert response.status_code == 403
        assert "finance-leads" in response.json()["detail"]
        mine = (await bob.get("/api/pending?assignee=me")).json()
        assert [i["tool"] for i in mine] == ["ask_user"]
        assert (await post_decision(carol, cid, await decision_body(carol, cid))).status_code == 200
        answer = await decision_body(dana, cid, index=1, action="respond", value="CC-7")
        assert (await post_decision(dana, cid, answer)).status_code == 200


async def test_the_authorize_callback_is_asked_and_may_be_async(store) -> None:
    """An ``authorize(principal, item)`` callback that says no makes the decision a 403."""
    cid = await saved(store)
    asked: list[tuple[str, str]] = []

    async def authorize(principal: Principal, item: PendingItem) -> bool:
        asked.append((principal.id, item.tool))
        return item.tool != "transfer" or "payments" in principal.roles

    app = app_for(store, authorize=authorize)
    async with person(app, "bob") as bob, person(app, "erin", roles="payments") as erin:
        assert (await post_decision(bob, cid, await decision_body(bob, cid))).status_code == 403
        assert (await post_decision(erin, cid, await decision_body(erin, cid))).status_code == 200
    assert ("bob", "transfer") in asked and ("erin", "transfer") in asked


async def test_state_changing_requests_without_a_valid_csrf_token_are_refused(store) -> None:
    """No token, another person's token, a fresh cookie or a cross-site request: 403."""
    cid = await saved(store)
    app = app_for(store)
    async with person(app, "alice") as alice, person(app, "bob") as bob:
        body = await decision_body(alice, cid)
        url = f"/api/continuations/{cid}/decisions"
        missing = await alice.post(url, json=body)
        assert missing.status_code == 403 and missing.json()["error"] == "csrf"
        bobs = await csrf(bob)
        assert (await post_decision(alice, cid, body, bobs)).status_code == 403
        token = await csrf(alice)
        site = await alice.post(
            url, json=body, headers={"X-CSRF-Token": token, "Sec-Fetch-Site": "cross-site"}
        )
        assert site.status_code == 403
        alice.cookies.clear()
        assert (await post_decision(alice, cid, body, token)).status_code == 403
    assert (await store.get(cid)).version == 1


class _TogetherGet:
    """A store whose ``get`` lets two readers through together, so both decide on one version.

    Everything else is the real store: its atomic ``decide`` picks the winner.
    """

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.barrier = asyncio.Barrier(2)

    async def get(self, id: str) -> Any:
        record = await self.inner.get(id)
        await asyncio.wait_for(self.barrier.wait(), timeout=10)
        return record

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.mark.parametrize(
    "backend",
    [
        "memory",
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("redis", marks=pytest.mark.redis),
    ],
)
async def test_two_people_deciding_one_path_at_once_one_wins_and_one_gets_409(
    backend: str, tmp_path: Path
) -> None:
    """Two concurrent decisions of one path: exactly one 200, one 409, one decision stored."""
    async with AsyncExitStack() as stack:
        if backend == "memory":
            store: Store = MemoryStore()
        else:
            store = open_store(await enter_namespace(stack, backend, tmp_path))
        await stack.enter_async_context(store)
        cid = await saved(store)
        async with person(app_for(store), "alice") as alice, person(app_for(store), "bob") as bob:
            approve = await decision_body(alice, cid)
            deny = approve | {"action": "deny", "message": "no"}
            tokens = await csrf(alice), await csrf(bob)
            racing = create_inbox_app(_TogetherGet(store), authenticate=_header, keys=KEYS)  # type: ignore[arg-type]
            async with person(racing, "alice") as a2, person(racing, "bob") as b2:
                a2.cookies.update(alice.cookies)
                b2.cookies.update(bob.cookies)
                first, second = await asyncio.gather(
                    post_decision(a2, cid, approve, tokens[0]),
                    post_decision(b2, cid, deny, tokens[1]),
                )
        statuses = sorted([first.status_code, second.status_code])
        assert statuses == [200, 409], (first.text, second.text)
        loser = first if first.status_code == 409 else second
        assert loser.json()["error"] == "already_decided"
        stored = await store.get(cid)
        assert len(stored.continuation.decisions) == 1
        winner = "alice" if first.status_code == 200 else "bob"
        assert stored.continuation.decisions[0].by == winner
        decided = [
            e
            for e in await store.audit(stored.run_id)
            if e.kind == "decided" and e.detail.get("source") != "inbox"
        ]
        assert [e.actor for e in decided] == [winner]


def _header(request: Any) -> Principal | None:
    from _inbox import header_auth

    return header_auth(request)


async def test_the_audit_records_principal_method_client_comment_and_args_diff(store) -> None:
    """Each inbox decision adds who, how they logged in, from where, the comment and the diff."""
    cid = await saved(store)
    app = app_for(store)
    async with person(app, "alice", roles="finance", peer="10.1.2.3") as alice:
        body = await decision_body(
            alice, cid, args={"amount": 250, "to": "acct-001"}, comment="halved"
        )
        assert (await post_decision(alice, cid, body)).status_code == 200
    run_id = (await store.get(cid)).run_id
    events = [e for e in await store.audit(run_id) if e.kind == "decided"]
    stored_event, context = events
    assert stored_event.actor == "alice" and stored_event.detail["comment"] == "halved"
    assert context.detail["source"] == "inbox" and context.actor == "alice"
    assert context.detail["auth_method"] == "test-header"
    assert context.detail["roles"] == ["finance"]
    assert context.detail["client"] == {"peer": "10.1.2.3"}
    assert context.detail["comment"] == "halved"
    assert context.detail["args_diff"] == [
        {"key": "amount", "change": "changed", "before": "500", "after": "250"}
    ]


async def test_the_continuation_view_has_requests_decisions_and_the_audit(store) -> None:
    """GET /api/continuations/{id} returns requests with decisions and the run's audit."""
    cid = await saved(store)
    app = app_for(store)
    async with person(app, "alice") as alice:
        body = await decision_body(alice, cid, action="deny", message="over budget")
        assert (await post_decision(alice, cid, body)).status_code == 200
        view = (await alice.get(f"/api/continuations/{cid}")).json()
    assert view["signature"] == "verified" and view["status"] == "waiting"
    assert view["requests"][0]["decision"]["kind"] == "deny"
    assert view["requests"][0]["decision"]["message"] == "over budget"
    assert view["requests"][1]["decision"] is None
    assert [e["kind"] for e in view["audit"]] == ["suspended", "decided", "decided"]
    assert view["completed"] is False and view["output"] is None


async def test_a_tampered_continuation_cannot_be_decided(store, tmp_path: Path) -> None:
    """A continuation whose signed state was edited in the store is shown invalid and refused."""
    cont = nested()
    await store.save(cont)
    import sqlite3

    db = sqlite3.connect(tmp_path / "inbox.db")
    rows = db.execute("SELECT id, document FROM continuations").fetchall()
    [(cid, document)] = rows
    db.execute(
        "UPDATE continuations SET document = ? WHERE id = ?",
        (document.replace('"amount":500', '"amount":50000'), cid),
    )
    db.commit()
    db.close()
    app = app_for(store)
    async with person(app, "alice") as alice:
        view = (await alice.get(f"/api/continuations/{cid}")).json()
        assert view["signature"] == "invalid"
        response = await post_decision(alice, cid, await decision_body(alice, cid))
        assert response.status_code == 422 and response.json()["error"] == "tampered"


async def test_openapi_documents_the_routes_and_their_refusals(store) -> None:
    """The OpenAPI schema lists the API routes and the decision route's error statuses."""
    app = app_for(store)
    async with person(app, "alice") as alice:
        schema = (await alice.get("/api/openapi.json")).json()
    paths = schema["paths"]
    assert {"/api/pending", "/api/continuations/{cid}"} <= set(paths)
    responses = paths["/api/continuations/{cid}/decisions"]["post"]["responses"]
    assert {"200", "403", "404", "409", "410", "422"} <= set(responses)
    assert not any(p.startswith("/inbox") for p in paths)
    body = schema["components"]["schemas"]["DecisionBody"]
    assert "by" not in body["properties"] and body["additionalProperties"] is False


async def test_bodies_without_length_or_over_the_limit_are_refused(store) -> None:
    """A POST over the body limit is a 413; one without Content-Length a 411."""
    cid = await saved(store)
    app = app_for(store)
    async with person(app, "alice") as alice:
        token = await csrf(alice)
        url = f"/api/continuations/{cid}/decisions"
        huge = await alice.post(
            url, content=b"x" * (2 * 1024 * 1024), headers={"X-CSRF-Token": token}
        )
        assert huge.status_code == 413

        async def chunks() -> AsyncIterator[bytes]:
            yield b"{}"

        chunked = await alice.post(url, content=chunks(), headers={"X-CSRF-Token": token})
        assert chunked.status_code == 411
    assert (await store.get(cid)).version == 1


def test_the_app_refuses_to_exist_without_an_authenticator() -> None:
    """create_inbox_app without an authenticator raises ConfigurationError."""
    with pytest.raises(ConfigurationError, match="authenticator"):
        create_inbox_app(MemoryStore(), authenticate=None)  # type: ignore[arg-type]


async def test_expiry_is_shown_and_a_live_request_can_still_be_decided(store) -> None:
    """A request with a future deadline lists ``expires_at`` and takes a decision."""
    deadline = datetime.now(UTC) + timedelta(hours=2)
    cid = await saved(store, expires_at=deadline, ask=False)
    app = app_for(store)
    async with person(app, "alice") as alice:
        [item] = (await alice.get("/api/pending")).json()
        assert datetime.fromisoformat(item["expires_at"]) == deadline
        assert (await post_decision(alice, cid, await decision_body(alice, cid))).status_code == 200
    assert (await store.get(cid)).status == "ready"


async def test_a_run_that_suspends_again_links_to_its_next_requests(store) -> None:
    """After a resume that suspends again, the older continuation points to the newer one."""
    first = nested(ask=False)
    await store.save(first)
    app = app_for(store)
    async with person(app, "alice") as alice:
        assert (
            await post_decision(alice, first.id, await decision_body(alice, first.id))
        ).status_code == 200
        claim = await store.claim(first.id, owner="worker")
        second = nested(ask=False).model_copy(update={"run_id": first.run_id, "seq": 1})
        await store.checkpoint(second.sign(KEYS), previous=claim)
        view = (await alice.get(f"/api/continuations/{first.id}")).json()
        assert view["status"] == "done" and view["next_id"] == second.id
        assert not view["completed"]
        page = (await alice.get(f"/inbox/c/{first.id}")).text
        assert f"/inbox/c/{second.id}" in page and "suspended again" in page
