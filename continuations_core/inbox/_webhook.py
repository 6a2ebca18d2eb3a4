"""Tell people a run waits for them: a signed webhook POST with the requests and a link.

:class:`WebhookNotifier` is an ``on_suspend`` hook: call it with the suspended
:class:`~continuations_core.Continuation`. It POSTs JSON to your endpoint (a chat bridge, a
ticketing system, a pager) with a signature header::

    X-Continuations-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">

The receiver recomputes the HMAC over the raw body with the shared secret, compares it in
constant time, and refuses a timestamp older than a few minutes (a replay):
:func:`verify_webhook` does exactly that. It uses the standard library only.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from .._schema import Continuation
from ..errors import ConfigurationError, NotificationFailed

__all__ = [
    "SIGNATURE_HEADER",
    "SIGNATURE_TOLERANCE_SECONDS",
    "WebhookNotifier",
    "sign_webhook",
    "verify_webhook",
    "webhook_payload",
]

log = logging.getLogger("continuations.inbox.webhook")

SIGNATURE_HEADER = "X-Continuations-Signature"
EVENT_HEADER = "X-Continuations-Event"
DELIVERY_HEADER = "X-Continuations-Delivery"
#: How old a signed timestamp :func:`verify_webhook` accepts by default.
SIGNATURE_TOLERANCE_SECONDS = 300
#: Attempts per notification, with exponential backoff between them.
MAX_ATTEMPTS = 3
#: Seconds to wait for the receiver on each attempt.
TIMEOUT_SECONDS = 10.0
_MIN_SECRET_BYTES = 16


def sign_webhook(secret: bytes, body: bytes, timestamp: int) -> str:
    """The signature header value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify_webhook(
    secret: bytes,
    body: bytes,
    header: str | None,
    *,
    tolerance: float = SIGNATURE_TOLERANCE_SECONDS,
    now: float | None = None,
) -> bool:
    """Whether ``header`` is a valid, recent signature of the raw ``body``.

    Pass the body exactly as received (before any JSON parsing).
    """
    if not header:
        return False
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    stamp, mac = parts.get("t", ""), parts.get("v1", "")
    if not stamp.isdigit() or not mac:
        return False
    if abs((now if now is not None else time.time()) - int(stamp)) > tolerance:
        return False
    expected = sign_webhook(secret, body, int(stamp)).split("v1=", 1)[1]
    return hmac.compare_digest(mac.encode(), expected.encode())


def webhook_payload(cont: Continuation, inbox_url: str) -> dict[str, Any]:
    """What the webhook sends: the run, its requests and links to the inbox."""
    base = inbox_url.rstrip("/")
    page = f"{base}/inbox/c/{quote(cont.id, safe='')}"
    return {
        "event": "continuation.suspended",
        "continuation_id": cont.id,
        "run_id": cont.run_id,
        "seq": cont.seq,
        "started_by": cont.started_by,
        "url": page,
        "requests": [
            {
                "index": n,
                "url": f"{page}#req-{n}",
                **r.model_dump(mode="json"),
            }
            for n, r in enumerate(cont.requests, 1)
        ],
        "sent_at": datetime.now(UTC).isoformat(),
    }


@dataclass(frozen=True)
class WebhookNotifier:
    """POST each suspension to ``url``, signed with ``secret``, linking to ``inbox_url``.

    Use it as the ``on_suspend`` hook of a run, or call :meth:`send` yourself. Calling the
    notifier never raises: a suspended run is already safe in the store, so a failed
    notification is logged (after ``attempts`` tries) instead of failing the run. Call
    :meth:`send` to get :class:`~continuations_core.errors.NotificationFailed` instead.

    Attributes:
        url: The receiver (http or https).
        secret: The shared HMAC secret (at least 16 bytes).
        inbox_url: Where people open the inbox, e.g. ``https://approvals.example.com``.
        attempts: Tries per notification.
        timeout: Seconds per try.
    """

    url: str
    secret: bytes
    inbox_url: str
    attempts: int = MAX_ATTEMPTS
    timeout: float = TIMEOUT_SECONDS

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ConfigurationError(f"A webhook URL must be http(s), not {self.url!r}.")
        if len(self.secret) < _MIN_SECRET_BYTES:
            raise ConfigurationError(
                f"A webhook secret needs at least {_MIN_SECRET_BYTES} bytes; generate one with "
                "python -c 'import secrets; print(secrets.token_hex(32))'."
            )
        if self.attempts < 1:
            raise ConfigurationError("attempts must be at least 1.")

    async def __call__(self, continuation: Continuation) -> None:
        """Notify about ``continuation``; log (never raise) when the receiver refuses."""
        try:
            await self.send(continuation)
        except NotificationFailed as exc:
            log.error("%s", exc)

    async def send(self, continuation: Continuation) -> str:
        """POST the notification; return its delivery id.

        Raises:
            NotificationFailed: If every attempt failed.
        """
        body = json.dumps(
            webhook_payload(continuation, self.inbox_url), separators=(",", ":")
        ).encode()
        delivery = uuid.uuid4().hex
        last = "no attempt made"
        for attempt in range(self.attempts):
            if attempt:
                await asyncio.sleep(0.5 * 2 ** (attempt - 1))
            try:
                await asyncio.to_thread(self._post, body, delivery)
                return delivery
            except (OSError, urllib.error.URLError) as exc:
                last = str(exc)
        raise NotificationFailed(
            f"The webhook {self.url} did not accept the notification after {self.attempts} "
            f"attempt(s): {last}. The run is safe in the store; people can still find it in "
            "the inbox.",
            continuation_id=continuation.id,
        )

    def _post(self, body: bytes, delivery: str) -> None:
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "agent-continuations-webhook",
            SIGNATURE_HEADER: sign_webhook(self.secret, body, int(time.time())),
            EVENT_HEADER: "continuation.suspended",
            DELIVERY_HEADER: delivery,
        }
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        opener = urllib.request.build_opener(_NoRedirects)
        with opener.open(request, timeout=self.timeout) as response:
            if not 200 <= response.status < 300:
                raise OSError(f"HTTP {response.status}")


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is a failure: the signed body goes to the configured URL or nowhere."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None
