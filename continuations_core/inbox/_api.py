"""The inbox's JSON API (documented by the app's OpenAPI schema at ``/api/openapi.json``).

Every route authenticates the caller; every state-changing route also needs the CSRF token
from ``GET /api/session`` in the ``X-CSRF-Token`` header. Errors are ``{"error": code,
"detail": message, ...}`` with the status the route documents.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from ._agui import decision_of, interrupt_id, run_finished
from ._context import Filters, InboxContext
from ._service import MAX_COMMENT_CHARS, MAX_MESSAGE_CHARS, DecisionInput, InboxError, decide
from ._views import MAX_PENDING, ContinuationView, DecisionView, PendingItem

__all__ = ["api_router"]

#: Longest path accepted in a decision (segments).
MAX_PATH_SEGMENTS = 64
#: Most entries in one AG-UI resume.
MAX_RESUME_ENTRIES = 100


class ErrorBody(BaseModel):
    """A refusal: a stable code for programs, a message for people."""

    error: str
    detail: str
    decided_by: str | None = None
    decided_at: str | None = None
    decided_kind: str | None = None


class Session(BaseModel):
    """Who the caller is, and the CSRF token to send with state-changing requests."""

    principal: str
    roles: list[str]
    auth_method: str
    csrf_token: str
    csrf_header: str = "X-CSRF-Token"
    dev: bool


class DecisionBody(BaseModel):
    """One decision. ``by`` is never accepted: it is the authenticated principal."""

    model_config = ConfigDict(extra="forbid")

    path: list[str] = Field(max_length=MAX_PATH_SEGMENTS)
    action: Literal["approve", "deny", "respond"]
    seq: int = Field(description="The continuation's seq, as listed.")
    args_digest: str = Field(max_length=128, description="The listed args_digest.")
    args: dict[str, Any] | None = Field(default=None, description="Edited args (approve only).")
    message: str | None = Field(default=None, max_length=MAX_MESSAGE_CHARS)
    value: Any = Field(default=None, description="The answer (respond only).")
    comment: str | None = Field(default=None, max_length=MAX_COMMENT_CHARS)
    version: int | None = Field(
        default=None, description="Optional compare-and-set on the whole continuation."
    )


class DecisionResult(BaseModel):
    """The decision as recorded, and the continuation's state after it."""

    continuation_id: str
    status: str
    version: int
    undecided: int
    decision: DecisionView


class ResumeEntry(BaseModel):
    """An AG-UI resume entry."""

    interruptId: str = Field(max_length=128)
    status: Literal["resolved", "cancelled"]
    payload: Any = None
    metadata: dict[str, Any] | None = None


class ResumeBody(BaseModel):
    """The resume part of an AG-UI ``RunAgentInput``."""

    threadId: str
    resume: list[ResumeEntry] = Field(min_length=1, max_length=MAX_RESUME_ENTRIES)


_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "Not authenticated."},
    404: {"model": ErrorBody, "description": "No such continuation or pending path."},
}
_DECIDE_ERRORS: dict[int | str, dict[str, Any]] = {
    **_ERRORS,
    403: {"model": ErrorBody, "description": "CSRF refused, or the principal may not decide."},
    409: {
        "model": ErrorBody,
        "description": "Stale seq or args digest, already decided (with who and when), or "
        "no longer waiting.",
    },
    410: {"model": ErrorBody, "description": "The request expired."},
    422: {"model": ErrorBody, "description": "Edited args fail the tool's schema, or bad body."},
}


def api_router(ctx: InboxContext) -> APIRouter:
    """The ``/api`` routes of one inbox."""

    async def authenticated(request: Request) -> None:
        # A router dependency runs before the body is read: an anonymous caller learns nothing.
        await ctx.principal(request)

    router = APIRouter(prefix="/api", tags=["inbox"], dependencies=[Depends(authenticated)])

    @router.get("/session", response_model=Session, responses=_ERRORS)
    async def session(request: Request) -> Session:
        """Who you are, and the CSRF token for POSTs (the cookie it is bound to is set too)."""
        me = await ctx.principal(request)
        return Session(
            principal=me.id,
            roles=sorted(me.roles),
            auth_method=me.method,
            csrf_token=ctx.csrf_token(request, me),
            dev=ctx.dev,
        )

    @router.get("/pending", response_model=list[PendingItem], responses=_ERRORS)
    async def pending(
        request: Request,
        tool: Annotated[str | None, Query(max_length=200)] = None,
        agent: Annotated[str | None, Query(max_length=200)] = None,
        run: Annotated[str | None, Query(max_length=200)] = None,
        assignee: Annotated[
            str | None, Query(max_length=200, description="'me', or an approver name.")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PENDING)] = 100,
    ) -> list[PendingItem]:
        """Undecided requests of waiting continuations, newest first."""
        me = await ctx.principal(request)
        return await ctx.pending(me, Filters(tool, agent, run, assignee), limit=limit)

    @router.get("/continuations/{cid}", response_model=ContinuationView, responses=_ERRORS)
    async def continuation(request: Request, cid: str) -> ContinuationView:
        """A continuation's requests with their decisions, and the run's audit timeline."""
        me = await ctx.principal(request)
        return await ctx.view(me, cid)

    @router.post(
        "/continuations/{cid}/decisions", response_model=DecisionResult, responses=_DECIDE_ERRORS
    )
    async def decisions(request: Request, cid: str, body: DecisionBody) -> DecisionResult:
        """Approve (optionally with edited args), deny or respond to one request."""
        me = await ctx.principal(request)
        ctx.check_csrf(request, me, None)
        wanted = DecisionInput(
            path=tuple(body.path),
            action=body.action,
            seq=body.seq,
            args_digest=body.args_digest,
            args=body.args,
            message=body.message,
            value=body.value,
            has_value="value" in body.model_fields_set,
            comment=body.comment,
            version=body.version,
        )
        updated, decision = await decide(
            ctx.store, me, cid, wanted, keys=ctx.keys, authorize=ctx.authorize,
            separation_of_duties=ctx.separation_of_duties, client=ctx.client(request),
        )  # fmt: skip
        return DecisionResult(
            continuation_id=updated.id,
            status=updated.status,
            version=updated.version,
            undecided=len(updated.continuation.undecided),
            decision=decision,
        )

    @router.get("/continuations/{cid}/ag-ui", responses=_ERRORS)
    async def ag_ui(request: Request, cid: str) -> dict[str, Any]:
        """This suspension as an AG-UI ``RUN_FINISHED`` event with its open interrupts."""
        me = await ctx.principal(request)
        return run_finished(await ctx.view(me, cid))

    @router.post("/continuations/{cid}/ag-ui/resume", responses=_DECIDE_ERRORS)
    async def ag_ui_resume(request: Request, cid: str, body: ResumeBody) -> dict[str, Any]:
        """Apply an AG-UI ``resume`` array: each entry is one decision, checked like the others.

        Every entry must name an interrupt of this continuation and fit it before any is
        applied. They are then applied in order; if one is refused (say, someone decided it
        meanwhile), the error names it and lists the interrupts already applied.
        """
        me = await ctx.principal(request)
        ctx.check_csrf(request, me, None)
        view = await ctx.view(me, cid)
        if body.threadId != view.run_id:
            raise InboxError(422, "invalid_resume", "threadId is not this continuation's run.")
        by_id = {interrupt_id(i.continuation_id, i.path): i for i in view.requests}
        planned = []
        for entry in body.resume:
            item = by_id.get(entry.interruptId)
            if item is None:
                raise InboxError(404, "unknown_interrupt", f"No interrupt {entry.interruptId!r}.")
            planned.append((entry.interruptId, decision_of(item, entry.model_dump())))
        applied: list[str] = []
        for iid, wanted in planned:
            try:
                await decide(
                    ctx.store, me, cid, wanted, keys=ctx.keys, authorize=ctx.authorize,
                    separation_of_duties=ctx.separation_of_duties, client=ctx.client(request),
                )  # fmt: skip
            except InboxError as exc:
                exc.extra.update(interruptId=iid, applied=applied)
                raise
            applied.append(iid)
        return {"threadId": view.run_id, "runId": cid, "applied": applied}

    return router
