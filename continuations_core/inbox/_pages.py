"""The inbox's pages: the list, a continuation's detail, edit-and-review, and bulk approval.

Every page works without JavaScript (plain forms, redirect after POST); htmx adds polling and
an in-place review of edited args. No page decides anything on GET.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.datastructures import FormData
from starlette.templating import Jinja2Templates

from .._decisions import check_args
from .._schema import PendingCall
from ..errors import InvalidDecision
from ._context import Filters, InboxContext
from ._forms import args_diff, form_fields, parse_form
from ._render import parse_item_key
from ._service import DecisionInput, InboxError, decide, find_item, http_error
from ._views import PendingItem

__all__ = ["MAX_BULK", "REFRESH_SECONDS", "page_router"]

#: How often the list and a run's status refresh themselves.
REFRESH_SECONDS = 5
#: Most requests approved in one bulk approval.
MAX_BULK = 100
#: Most form fields and the largest field a page accepts.
MAX_FORM_FIELDS = 1_000
MAX_FORM_PART_BYTES = 512 * 1024


def page_router(ctx: InboxContext, templates: Jinja2Templates) -> APIRouter:
    """The HTML routes of one inbox."""
    router = APIRouter(include_in_schema=False)

    async def page(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        me = await ctx.principal(request)
        base = {
            "me": me,
            "dev": ctx.dev,
            "csrf": ctx.csrf_token(request, me),
            "refresh_seconds": REFRESH_SECONDS,
        }
        return templates.TemplateResponse(request, name, {**base, **context}, status_code=status)

    async def form(request: Request) -> FormData:
        me = await ctx.principal(request)
        data = await request.form(max_fields=MAX_FORM_FIELDS, max_part_size=MAX_FORM_PART_BYTES)
        token = data.get("csrf_token")
        ctx.check_csrf(request, me, token if isinstance(token, str) else None)
        return data

    def text(data: FormData, name: str) -> str | None:
        value = data.get(name)
        return value if isinstance(value, str) else None

    def filters_of(request: Request) -> Filters:
        q = request.query_params
        return Filters(*(q.get(k) or None for k in ("tool", "agent", "run", "assignee")))

    async def list_context(request: Request) -> dict[str, Any]:
        me = await ctx.principal(request)
        filters = filters_of(request)
        every = await ctx.pending(me, Filters())
        items = [i for i in every if filters.keep(i)]
        names = sorted({a for i in every for a in i.approvers})
        url = request.url_for("inbox_items").include_query_params(**filters.query())
        return {"items": items, "filters": filters, "approver_names": names, "items_url": url}

    @router.get("/")
    async def home(request: Request) -> Response:
        return RedirectResponse(request.url_for("inbox"), status_code=303)

    @router.get("/inbox", name="inbox")
    async def inbox(request: Request) -> HTMLResponse:
        return await page(request, "list.html", **await list_context(request))

    @router.get("/inbox/items", name="inbox_items")
    async def inbox_items(request: Request) -> HTMLResponse:
        return await page(request, "_items.html", **await list_context(request))

    async def detail_page(
        request: Request, cid: str, status: int = 200, **extra: Any
    ) -> HTMLResponse:
        me = await ctx.principal(request)
        view = await ctx.view(me, cid)
        return await page(request, "detail.html", status, view=view, **extra)

    @router.get("/inbox/c/{cid}", name="detail")
    async def detail(request: Request, cid: str) -> HTMLResponse:
        done = request.query_params.get("decided")
        notice = "Your decision was recorded." if done else None
        return await detail_page(request, cid, notice=notice)

    @router.get("/inbox/c/{cid}/live", name="detail_live")
    async def detail_live(request: Request, cid: str) -> HTMLResponse:
        me = await ctx.principal(request)
        return await page(request, "_live.html", view=await ctx.view(me, cid))

    def reviewed(data: FormData) -> tuple[tuple[str, ...], int, str]:
        try:
            path = json.loads(text(data, "path") or "")
            seq = int(text(data, "seq") or "")
        except ValueError:
            raise InboxError(
                422, "invalid_form", "The form is incomplete; reload the page."
            ) from None
        if not isinstance(path, list) or not all(isinstance(p, str) for p in path):
            raise InboxError(422, "invalid_form", "The form is incomplete; reload the page.")
        return tuple(path), seq, text(data, "args_digest") or ""

    @router.post("/inbox/c/{cid}/preview", name="preview")
    async def preview(request: Request, cid: str) -> HTMLResponse:
        data = await form(request)
        path, seq, digest = reviewed(data)
        item = find_item(await ctx.get(cid), path)
        posted = {k: v for k, v in data.items() if isinstance(v, str)}
        fields = [
            replace(f, value=posted.get(f.input_name, f.value))
            for f in form_fields(item.args_schema, item.args)
        ]
        shown: dict[str, Any] = {
            "index": item.index, "cid": cid, "path": json.dumps(list(path)), "seq": seq,
            "args_digest": digest, "fields": fields, "error": None, "rows": [], "changed": 0,
        }  # fmt: skip
        status = 200
        try:
            edited = parse_form(item.args_schema, item.args, posted)
            check_args(_call_of(item), edited, continuation_id=cid)
        except InvalidDecision as exc:
            shown["error"], status = str(exc), 422
        else:
            rows = args_diff(item.args, edited)
            shown.update(
                rows=rows,
                changed=sum(r.change != "same" for r in rows),
                args_json=json.dumps(edited, ensure_ascii=False),
            )
        if request.headers.get("hx-request") == "true":
            return await page(request, "_preview.html", status, preview=shown)
        return await detail_page(request, cid, status, preview=shown)

    @router.post("/inbox/c/{cid}/decide", name="decide")
    async def decide_form(request: Request, cid: str) -> Response:
        data = await form(request)
        me = await ctx.principal(request)
        index = text(data, "index") or ""
        try:
            wanted = _wanted(data, *reviewed(data))
            await decide(
                ctx.store, me, cid, wanted, keys=ctx.keys, authorize=ctx.authorize,
                separation_of_duties=ctx.separation_of_duties, client=ctx.client(request),
            )  # fmt: skip
        except InboxError as exc:
            if exc.status == 404 and exc.code == "not_found":
                raise
            return await detail_page(request, cid, exc.status, error=exc.detail)
        target = request.url_for("detail", cid=cid).include_query_params(decided=index)
        return RedirectResponse(f"{target}#req-{index}", status_code=303)

    async def selected(request: Request, data: FormData) -> tuple[str, list[PendingItem]]:
        keys = [k for k in data.getlist("item") if isinstance(k, str)]
        if not keys:
            raise InboxError(422, "nothing_selected", "Select at least one request.")
        if len(keys) > MAX_BULK:
            raise InboxError(422, "too_many", f"Approve at most {MAX_BULK} requests at once.")
        me = await ctx.principal(request)
        items: list[PendingItem] = []
        for key in dict.fromkeys(keys):
            parsed = parse_item_key(key)
            if parsed is None:
                raise InboxError(422, "invalid_form", "A selected request is malformed.")
            cid, path, digest, seq = parsed
            item = await ctx.annotate(me, find_item(await ctx.get(cid), path))
            items.append(item.model_copy(update={"args_digest": digest, "seq": seq}))
        tools = sorted({i.tool for i in items})
        if len(tools) != 1:
            raise InboxError(
                422, "mixed_tools", f"Bulk approval takes requests of one tool, not {tools}."
            )
        return tools[0], items

    @router.post("/inbox/bulk/review", name="bulk_review")
    async def bulk_review(request: Request) -> HTMLResponse:
        tool, items = await selected(request, await form(request))
        return await page(request, "bulk.html", tool=tool, items=items, results=None)

    @router.post("/inbox/bulk/approve", name="bulk_approve")
    async def bulk_approve(request: Request) -> HTMLResponse:
        data = await form(request)
        tool, items = await selected(request, data)
        me = await ctx.principal(request)
        results: list[tuple[PendingItem, str | None]] = []
        for item in items:
            # Each approval is its own compare-and-set on what was reviewed (seq, args digest,
            # still undecided); one that lost does not stop the others.
            wanted = DecisionInput(
                path=item.path, action="approve", seq=item.seq, args_digest=item.args_digest,
                comment=text(data, "comment"),
            )  # fmt: skip
            try:
                await decide(
                    ctx.store, me, item.continuation_id, wanted, keys=ctx.keys,
                    authorize=ctx.authorize, separation_of_duties=ctx.separation_of_duties,
                    client=ctx.client(request),
                )  # fmt: skip
            except InboxError as exc:
                results.append((item, exc.detail))
            else:
                results.append((item, None))
        approved = sum(error is None for _, error in results)
        status = 200 if approved == len(results) else 409
        return await page(
            request, "bulk.html", status, tool=tool, items=items, results=results,
            approved=approved,
        )  # fmt: skip

    return router


def _call_of(item: PendingItem) -> PendingCall:
    return PendingCall(
        call_id=item.call_id, tool=item.tool, args=item.args, kind="approval",
        args_schema=item.args_schema,
    )  # fmt: skip


def _wanted(data: FormData, path: tuple[str, ...], seq: int, digest: str) -> DecisionInput:
    def field(name: str) -> str | None:
        value = data.get(name)
        return value if isinstance(value, str) else None

    action = field("action")
    comment = field("comment")
    if action == "approve":
        raw = field("args_json")
        args = None
        if raw:
            try:
                args = json.loads(raw)
            except ValueError:
                raise InboxError(422, "invalid_form", "The edited args are not JSON.") from None
            if not isinstance(args, dict):
                raise InboxError(422, "invalid_form", "The edited args must be an object.")
        return DecisionInput(path, "approve", seq, digest, args=args, comment=comment)
    if action == "deny":
        return DecisionInput(path, "deny", seq, digest, message=field("message"), comment=comment)
    if action == "respond":
        raw = field("value") or ""
        value: Any = raw
        if field("value_type") == "json":
            try:
                value = json.loads(raw)
            except ValueError as exc:
                raise http_error(InvalidDecision(f"The answer is not valid JSON ({exc}).")) from exc
        return DecisionInput(
            path, "respond", seq, digest, value=value, has_value=True, comment=comment
        )
    raise InboxError(422, "invalid_form", f"Unknown action {action!r}; reload the page.")
