"""Web hygiene for the inbox: CSRF tokens, cookies and security headers.

CSRF: the first response sets a random nonce in an ``HttpOnly``, ``SameSite=Strict`` cookie;
every state-changing request must carry ``HMAC(secret, nonce | principal)`` in the
``X-CSRF-Token`` header or the ``csrf_token`` form field, and must not come from another site
(``Sec-Fetch-Site``). A cross-site page can neither read the token nor make the browser send the
cookie, and a token taken from one person is worthless for another.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import TYPE_CHECKING

from .._signing import Keyring

if TYPE_CHECKING:
    from starlette.requests import Request as HTTPRequest
    from starlette.responses import Response

__all__ = [
    "CSRF_COOKIE",
    "CSRF_FIELD",
    "CSRF_HEADER",
    "SECURITY_HEADERS",
    "Csrf",
]

CSRF_COOKIE = "continuations_inbox_csrf"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
# The nonce is 32 random bytes; a cookie of another length was not set by us.
_NONCE_BYTES = 32
_CSRF_LABEL = b"continuations-inbox-csrf-v1"

#: Sent with every response. The CSP allows no inline script or style and no other origin.
SECURITY_HEADERS: dict[str, str] = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
    "Cache-Control": "no-store",
}


class Csrf:
    """Issues and checks CSRF tokens bound to a cookie nonce and to the principal.

    Args:
        secret: The HMAC key. Several inbox processes behind one load balancer need the same
            one; by default it is derived from the signing keyring's active key, or random
            for this process when there is no keyring.
        secure: Mark the cookie ``Secure`` (default: when the request came over HTTPS).
    """

    def __init__(
        self,
        secret: bytes | None = None,
        *,
        keys: Keyring | None = None,
        secure: bool | None = None,
    ) -> None:
        if secret is None and keys is not None:
            # A derived key: the signing key itself never signs anything but continuations.
            secret = keys.sign(_CSRF_LABEL)[1].encode()
        self._secret = secret if secret is not None else secrets.token_bytes(32)
        self._secure = secure

    def nonce(self, request: HTTPRequest) -> tuple[str, bool]:
        """The request's nonce, and whether it is new (and must be set as a cookie)."""
        value = request.cookies.get(CSRF_COOKIE, "")
        if len(value) == 2 * _NONCE_BYTES and all(c in "0123456789abcdef" for c in value):
            return value, False
        return secrets.token_hex(_NONCE_BYTES), True

    def token(self, nonce: str, principal_id: str) -> str:
        """The token a form or header must carry for this nonce and principal."""
        message = f"{nonce}|{principal_id}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def set_cookie(self, response: Response, request: HTTPRequest, nonce: str) -> None:
        """Set the nonce cookie: HttpOnly, SameSite=Strict, Secure over HTTPS."""
        secure = self._secure if self._secure is not None else request.url.scheme == "https"
        response.set_cookie(
            CSRF_COOKIE,
            nonce,
            httponly=True,
            samesite="strict",
            secure=secure,
            path="/",
        )

    def check(self, request: HTTPRequest, principal_id: str, sent: str | None) -> str | None:
        """Return why a state-changing request is refused, or ``None`` when it may proceed."""
        site = request.headers.get("sec-fetch-site")
        if site is not None and site not in ("same-origin", "none"):
            return f"The request came from another site ({site}); it was refused."
        nonce = request.cookies.get(CSRF_COOKIE)
        if not nonce:
            return "The CSRF cookie is missing. Reload the page and try again."
        if not sent:
            return f"The CSRF token is missing (send it as {CSRF_HEADER} or {CSRF_FIELD})."
        if not hmac.compare_digest(sent.encode(), self.token(nonce, principal_id).encode()):
            return "The CSRF token does not match. Reload the page and try again."
        return None
