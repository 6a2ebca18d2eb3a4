"""The inbox's pages through the ASGI test client: forms, review diff, bulk approval, hygiene."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest_asyncio
from _inbox import app_for, form_token, nested, past, person

from continuations_core import SQLiteStore, Store


@pytest_asyncio.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    """A fresh SQLite store."""
    async with SQLiteStore(tmp_path / "pages.db") as opened:
        yield opened


async def saved(store: Store, **kwargs: Any) -> str:
    cont = nested(**kwargs)
    await store.save(cont, actor="agent")
    return cont.id


def hidden(html: str, index: int) -> dict[str, str]:
    """The hidden fields of request ``index``'s forms on a detail page."""
    section = html.split(f'id="req-{index}"', 1)[1]
    found = dict(re.findall(r'type="hidden" name="(\w+)" value="([^"]*)"', section)[:6])
    import html as markup

    return {k: markup.unescape(v) for k, v in found.items()}


async def test_edit_review_diff_then_approve_records_the_edited_args(store) -> None:
    """Editing an arg shows a server-rendered diff; confirming approves with the edited args."""
    cid = await saved(store, ask=False)
    app = app_for(store)
    async with person(app, "alice") as alice:
        page = (await alice.get(f"/inbox/c/{cid}")).text
        assert "finance" in page and "payments" in page and 'class="tool">transfer' in page
        fields = hidden(page, 1)
        form = {
            **fields,
            "arg.amount": "300",
            "arg.to": "acct-001",
            "arg.urgent": "true",
            "arg.currency": "",
        }
        review = await alice.post(
            f"/inbox/c/{cid}/preview", data=form, headers={"HX-Request": "true"}
        )
        assert review.status_code == 200, review.text
        assert "<del>500</del>" in review.text and "<ins>300</ins>" in review.text
        assert "<ins>true</ins>" in review.text and "2 changes" in review.text
        assert (await store.get(cid)).version == 1  # reviewing decides nothing
        args_json = re.search(r'name="args_json" value="([^"]+)"', review.text)
        assert args_json
        import html as markup

        edited = json.loads(markup.unescape(args_json.group(1)))
        assert edited == {"amount": 300, "to": "acct-001", "urgent": True}
        confirm = {**fields, "action": "approve", "args_json": json.dumps(edited), "comment": "ok"}
        done = await alice.post(f"/inbox/c/{cid}/decide", data=confirm)
        assert done.status_code == 303
        assert done.headers["location"].endswith("?decided=1#req-1")
        after = (await alice.get(done.headers["location"])).text
        assert "Approved" in after and "Your decision was recorded." in after
    [record] = (await store.get(cid)).continuation.decisions
    assert record.by == "alice" and record.comment == "ok"
    assert record.decision.args == edited  # type: ignore[union-attr]


async def test_a_review_with_args_failing_the_schema_shows_why_and_keeps_the_edits(store) -> None:
    """A bad edit is reviewed with the schema error (422) and the typed values stay in the form."""
    cid = await saved(store, ask=False)
    app = app_for(store)
    async with person(app, "alice") as alice:
        fields = hidden((await alice.get(f"/inbox/c/{cid}")).text, 1)
        bad = {**fields, "arg.amount": "0", "arg.to": "acct-001"}
        review = await alice.post(f"/inbox/c/{cid}/preview", data=bad)
        assert review.status_code == 422
        assert "do not match its schema" in review.text and 'value="0"' in review.text
        typed = {**fields, "arg.amount": "ten", "arg.to": "x"}
        review = await alice.post(f"/inbox/c/{cid}/preview", data=typed)
        assert review.status_code == 422 and "not a whole number" in review.text
    assert (await store.get(cid)).version == 1


async def test_deny_with_a_message_and_respond_from_the_page(store) -> None:
    """The deny form records the message for the model; the respond form answers input."""
    cid = await saved(store)
    app = app_for(store)
    async with person(app, "bob") as bob:
        page = (await bob.get(f"/inbox/c/{cid}")).text
        deny = {**hidden(page, 1), "action": "deny", "message": "Not this month.", "comment": ""}
        assert (await bob.post(f"/inbox/c/{cid}/decide", data=deny)).status_code == 303
        answer = {**hidden(page, 2), "action": "respond", "value": "42", "value_type": "json"}
        assert (await bob.post(f"/inbox/c/{cid}/decide", data=answer)).status_code == 303
        after = (await bob.get(f"/inbox/c/{cid}")).text
        assert "Not this month." in after and "Answered" in after
    stored = await store.get(cid)
    kinds = {r.decision.kind: r.decision for r in stored.continuation.decisions}
    assert kinds["deny"].message == "Not this month."  # type: ignore[union-attr]
    assert kinds["respond"].value == 42  # type: ignore[union-attr]
    assert stored.status == "ready"


async def test_a_refused_form_decision_shows_the_reason_with_its_status(store) -> None:
    """A decision someone else made first is shown as a 409 naming them; nothing changes."""
    cid = await saved(store, ask=False)
    app = app_for(store)
    async with person(app, "alice") as alice, person(app, "bob") as bob:
        alices = hidden((await alice.get(f"/inbox/c/{cid}")).text, 1)
        bobs = hidden((await bob.get(f"/inbox/c/{cid}")).text, 1)
        assert (
            await bob.post(f"/inbox/c/{cid}/decide", data={**bobs, "action": "approve"})
        ).status_code == 303
        late = await alice.post(f"/inbox/c/{cid}/decide", data={**alices, "action": "deny"})
        assert late.status_code == 409
        assert "already decided" in late.text and "bob" in late.text
    [record] = (await store.get(cid)).continuation.decisions
    assert record.by == "bob"


async def test_page_forms_without_the_csrf_token_are_refused(store) -> None:
    """A page POST without (or with a foreign) CSRF token is a 403 and decides nothing."""
    cid = await saved(store, ask=False)
    app = app_for(store)
    async with person(app, "alice") as alice, person(app, "mallory") as mallory:
        fields = hidden((await alice.get(f"/inbox/c/{cid}")).text, 1)
        no_token = {k: v for k, v in fields.items() if k != "csrf_token"}
        assert (
            await alice.post(f"/inbox/c/{cid}/decide", data={**no_token, "action": "approve"})
        ).status_code == 403
        await mallory.get("/inbox")
        stolen = {**fields, "action": "approve"}
        assert (await mallory.post(f"/inbox/c/{cid}/decide", data=stolen)).status_code == 403
    assert (await store.get(cid)).version == 1


async def test_bulk_approval_confirms_the_count_and_checks_each_decision(store) -> None:
    """Bulk approval of one tool shows the count, then approves each still-pending request."""
    ids = [await saved(store, ask=False, transfers=[{"amount": n, "to": "x"}]) for n in (1, 2, 3)]
    app = app_for(store)
    async with person(app, "alice") as alice, person(app, "bob") as bob:
        page = (await alice.get("/inbox")).text
        keys = [json.loads(_unescape(k)) for k in re.findall(r'name="item" value="([^"]+)"', page)]
        assert sorted(k[0] for k in keys) == sorted(ids)
        form = {"csrf_token": form_token(page), "item": [json.dumps(k) for k in keys]}
        review = await alice.post("/inbox/bulk/review", data=form)
        assert (
            review.status_code == 200
            and "Approve 3 requests of <code>transfer</code>" in review.text
        )
        assert [(await store.get(i)).version for i in ids] == [1, 1, 1]
        # Meanwhile bob denies one of them.
        bobs = hidden((await bob.get(f"/inbox/c/{ids[1]}")).text, 1)
        await bob.post(f"/inbox/c/{ids[1]}/decide", data={**bobs, "action": "deny"})
        confirm = {
            "csrf_token": form_token(review.text),
            "comment": "batch",
            "item": [json.dumps(k) for k in keys],
        }
        result = await alice.post("/inbox/bulk/approve", data=confirm)
        assert result.status_code == 409
        assert "Approved 2 of 3" in result.text and "already decided" in result.text
    kinds = {i: (await store.get(i)).continuation.decisions[0] for i in ids}
    assert [kinds[i].decision.kind for i in ids] == ["approve", "deny", "approve"]
    assert kinds[ids[0]].comment == "batch" and kinds[ids[0]].by == "alice"


async def test_bulk_approval_refuses_mixed_tools(store) -> None:
    """Requests of different tools cannot be approved together (422)."""
    await saved(store, ask=False)
    await saved(store, ask=False, tool="refund")
    app = app_for(store)
    async with person(app, "alice") as alice:
        page = (await alice.get("/inbox")).text
        items = [_unescape(k) for k in re.findall(r'name="item" value="([^"]+)"', page)]
        form = {"csrf_token": form_token(page), "item": items}
        response = await alice.post("/inbox/bulk/review", data=form)
        assert response.status_code == 422 and "one tool" in response.text


def _unescape(text: str) -> str:
    import html as markup

    return markup.unescape(text)


async def test_model_produced_text_is_escaped_everywhere(store) -> None:
    """Args, reasons, tool and agent names with markup appear escaped, never as tags."""
    evil = '<script>alert(1)</script><img src=x onerror="alert(2)">'
    cid = await saved(
        store,
        transfers=[{"amount": 5, "to": evil}],
        reason=f"reason {evil}",
        agents=(f"root{evil}", "payments"),
        tool=f"pay{evil}",
    )
    app = app_for(store)
    async with person(app, "alice") as alice:
        for url in ("/inbox", f"/inbox/c/{cid}", "/inbox/items", f"/inbox/c/{cid}/live"):
            html = (await alice.get(url)).text
            assert "<script>alert" not in html and "<img src=x" not in html, url
            assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html or "/live" in url, url


async def test_every_response_carries_the_security_headers_and_pages_have_no_inline_script(
    store,
) -> None:
    """CSP without inline script, nosniff, no framing, SameSite=Strict HttpOnly CSRF cookie."""
    cid = await saved(store)
    app = app_for(store)
    async with person(app, "alice") as alice:
        first = await alice.get("/inbox")
        cookie = first.headers["set-cookie"].lower()
        assert "samesite=strict" in cookie and "httponly" in cookie
        for url in ("/inbox", f"/inbox/c/{cid}", "/api/pending", "/inbox/static/inbox.js", "/nope"):
            response = await alice.get(url)
            csp = response.headers["content-security-policy"]
            assert (
                "script-src 'self'" in csp
                and "unsafe-inline" not in csp
                and "unsafe-eval" not in csp
            )
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.headers["x-frame-options"] == "DENY"
        for url in ("/inbox", f"/inbox/c/{cid}"):
            html = (await alice.get(url)).text
            assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "inline script"
            assert " style=" not in html and " on" not in re.sub(r">[^<]*<", "><", html)


async def test_no_page_decides_on_get(store) -> None:
    """GETs of every page, whatever their query, leave the store unchanged; decide is POST-only."""
    cid = await saved(store)
    app = app_for(store)
    query = "?action=approve&path=x&seq=0&decided=1"
    async with person(app, "alice") as alice:
        for url in ("/inbox", f"/inbox/c/{cid}", f"/inbox/c/{cid}/live", "/inbox/items"):
            assert (await alice.get(url + query)).status_code == 200
        assert (await alice.get(f"/inbox/c/{cid}/decide{query}")).status_code == 405
        assert (await alice.get(f"/inbox/bulk/approve{query}")).status_code == 405
    assert (await store.get(cid)).version == 1


async def test_the_list_filters_counts_down_and_explains_who_may_not_decide(store) -> None:
    """The list filters by tool, shows a countdown for deadlines and the refusal reasons."""
    from datetime import UTC, datetime, timedelta

    await saved(store, expires_at=datetime.now(UTC) + timedelta(hours=3), ask=False)
    await saved(store, tool="refund", started_by="alice", ask=False)
    await saved(store, expires_at=past(), ask=False, tool="late")
    app = app_for(store)
    async with person(app, "alice") as alice:
        page = (await alice.get("/inbox")).text
        assert 'class="countdown"' in page and "expires in 2h" in page and ">expired<" in page
        assert "separation of duties" in page
        refunds = (await alice.get("/inbox?tool=refund")).text
        assert refunds.count('<li class="item') == 1 and "refund" in refunds


async def test_the_dev_banner_shows_in_dev_mode_only(store) -> None:
    """With dev=True every page says there is no login; otherwise it does not."""
    async with person(app_for(store, dev=True), "me") as dev:
        assert "Development mode: no login" in (await dev.get("/inbox")).text
    async with person(app_for(store), "me") as normal:
        assert "Development mode" not in (await normal.get("/inbox")).text
