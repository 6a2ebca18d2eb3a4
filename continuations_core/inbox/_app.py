"""``create_inbox_app``: the approval inbox as one ASGI app (FastAPI), over any store."""

from __future__ import annotations

try:
    import fastapi as _fastapi  # noqa: F401 - import guard
    import jinja2 as _jinja2  # noqa: F401 - import guard
except ImportError as exc:  # pragma: no cover - exercised without the extra installed
    from ..errors import MissingExtra

    raise MissingExtra(exc.name or "fastapi", "inbox") from exc

from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.datastructures import MutableHeaders
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import __version__
from .._signing import Keyring
from ..errors import ConfigurationError
from ..stores import Store
from ._api import api_router
from ._auth import Authenticator, Authorizer
from ._context import InboxContext
from ._pages import page_router
from ._render import TEMPLATES, helpers
from ._security import SECURITY_HEADERS, Csrf
from ._service import InboxError

__all__ = ["MAX_BODY_BYTES", "create_inbox_app"]

#: Largest request body accepted (JSON or form).
MAX_BODY_BYTES = 1024 * 1024
_STATIC = Path(__file__).with_name("static")
_HEADINGS = {
    401: "Please log in",
    403: "Not allowed",
    404: "Not found",
    409: "Changed meanwhile",
    410: "Expired",
    413: "Too large",
    422: "Cannot be recorded",
}


class _Hygiene:
    """Pure ASGI middleware: security headers, the CSRF nonce cookie, and a body size cap."""

    def __init__(self, app: ASGIApp, csrf: Csrf) -> None:
        self.app, self.csrf = app, csrf

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            length = request.headers.get("content-length")
            if length is None or not length.isdigit():
                await _plain(send, 411, "Send a Content-Length header.")
                return
            if int(length) > MAX_BODY_BYTES:
                await _plain(send, 413, f"The body is larger than {MAX_BODY_BYTES} bytes.")
                return
        nonce, new = self.csrf.nonce(request)
        scope.setdefault("state", {})["csrf_nonce"] = nonce

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
                if new:
                    cookie = Response()
                    self.csrf.set_cookie(cookie, request, nonce)
                    headers.append("set-cookie", cookie.headers["set-cookie"])
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _plain(send: Send, status: int, text: str) -> None:
    body = text.encode()
    headers = [(b"content-type", b"text/plain; charset=utf-8")]
    headers += [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def create_inbox_app(
    store: Store,
    *,
    authenticate: Authenticator,
    authorize: Authorizer | None = None,
    keys: Keyring | None = None,
    separation_of_duties: bool = True,
    csrf_secret: bytes | None = None,
    secure_cookies: bool | None = None,
    dev: bool = False,
) -> FastAPI:
    """Build the approval inbox: the JSON API under ``/api`` and the pages under ``/inbox``.

    Mount it in an existing app (``app.mount("/approvals", inbox)``) or serve it alone
    (``python -m continuations_core inbox``). It reads and decides through ``store``, the same
    store the workers use; closing the store is the caller's business.

    Args:
        store: The store holding the continuations.
        authenticate: ``authenticate(request) -> Principal | None`` (sync or async): who made
            the request. ``None`` or :class:`~continuations_core.errors.AuthenticationFailed`
            refuses it (401). Required: there is no anonymous inbox.
        authorize: Optional ``authorize(principal, item) -> bool`` (sync or async), checked
            after the built-in rules (separation of duties, the request's ``approvers``).
        keys: Verifies continuations before anyone decides on them; a continuation whose
            state does not match its signature is shown as invalid and cannot be decided.
            Also derives the CSRF secret, so several inbox processes agree on tokens.
        separation_of_duties: Refuse the principal who started a run (``started_by``) the
            decisions on its requests. On by default.
        csrf_secret: The CSRF HMAC key (default: derived from ``keys``, else random per process).
        secure_cookies: Mark cookies ``Secure`` (default: when the request came over HTTPS).
        dev: Show the development-mode banner (set by ``--dev``).

    Raises:
        ConfigurationError: If ``authenticate`` is missing.
    """
    if not callable(authenticate):  # None included: typed callers cannot pass it, others can
        raise ConfigurationError(
            "The inbox needs an authenticator: pass authenticate=TrustedProxyAuth(...) or your "
            "own callable returning a Principal. There is no anonymous mode."
        )
    csrf = Csrf(csrf_secret, keys=keys, secure=secure_cookies)
    ctx = InboxContext(
        store=store,
        authenticate=authenticate,
        authorize=authorize,
        keys=keys,
        separation_of_duties=separation_of_duties,
        csrf=csrf,
        dev=dev,
    )
    app = FastAPI(
        title="agent-continuations approval inbox",
        version=__version__,
        description="Review and decide the pending requests of suspended agent runs.",
        openapi_url="/api/openapi.json",
        docs_url=None,  # the hosted docs pages load scripts from a CDN; the schema is enough
        redoc_url=None,
    )
    templates = Jinja2Templates(directory=str(TEMPLATES))
    templates.env.globals.update(helpers())
    app.state.inbox = ctx
    app.include_router(api_router(ctx))
    app.include_router(page_router(ctx, templates))
    app.mount("/inbox/static", StaticFiles(directory=_STATIC), name="static")
    app.add_middleware(_Hygiene, csrf=csrf)

    def wants_json(request: Request) -> bool:
        return request.url.path.startswith(f"{request.scope.get('root_path', '')}/api")

    @app.exception_handler(InboxError)
    async def refused(request: Request, exc: InboxError) -> Response:
        if wants_json(request):
            return JSONResponse(exc.body(), status_code=exc.status)
        context: dict[str, Any] = {
            "me": getattr(request.state, "principal", None),
            "dev": dev,
            "status": exc.status,
            "heading": _HEADINGS.get(exc.status, "Something went wrong"),
            "detail": exc.detail,
        }
        return templates.TemplateResponse(request, "error.html", context, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        errors = exc.errors()
        first = errors[0] if errors else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        detail = f"The request body is invalid at {where}: {first.get('msg', 'invalid')}."
        if wants_json(request):
            body = {"error": "invalid_request", "detail": detail, "errors": len(errors)}
            return JSONResponse(body, status_code=422)
        return PlainTextResponse(detail, status_code=422)

    return app
