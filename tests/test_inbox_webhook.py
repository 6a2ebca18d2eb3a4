"""The webhook notifier: a local receiver gets the signed POST for a real suspended run."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest
from _hr import PROMPT, hr
from _inbox import KEYS

from continuations_core import NotificationFailed, Suspended
from continuations_core.inbox import SIGNATURE_HEADER, WebhookNotifier, verify_webhook
from continuations_pydantic_ai import run

SECRET = b"receiver-shared-secret-0123456789"


class Receiver:
    """An HTTP server on 127.0.0.1 that records what it is sent and answers ``status``."""

    def __init__(self, status: int = 204, location: str | None = None) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.location = location
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.received.append((dict(self.headers.items()), body))
                self.send_response(status)
                if outer.location:
                    self.send_header("Location", outer.location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST  # a followed redirect would arrive as a GET

            def log_message(self, *args: Any) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/approvals"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A receiver that accepts every POST."""
    with Receiver() as started:
        yield started


async def suspended_run() -> Any:
    outcome = await run(hr, PROMPT, keys=KEYS)
    assert isinstance(outcome, Suspended)
    return outcome.continuation


async def test_the_receiver_gets_a_signed_post_with_the_requests_and_links(receiver) -> None:
    """The POST lists the nested request with a link to it, and its signature verifies."""
    cont = await suspended_run()
    notifier = WebhookNotifier(receiver.url, SECRET, "https://approvals.example.com/")
    delivery = await notifier.send(cont)
    [(headers, body)] = receiver.received
    assert verify_webhook(SECRET, body, headers[SIGNATURE_HEADER])
    assert headers["X-Continuations-Delivery"] == delivery
    assert headers["X-Continuations-Event"] == "continuation.suspended"
    payload = json.loads(body)
    assert payload["continuation_id"] == cont.id and payload["run_id"] == cont.run_id
    [request] = payload["requests"]
    assert request["agents"] == ["hr", "accounts"] and request["tool"] == "authorize_account"
    assert request["args"] == {"user": "alice", "system": "payroll", "role": "admin"}
    assert request["url"] == f"https://approvals.example.com/inbox/c/{cont.id}#req-1"
    assert not verify_webhook(b"another-secret-of-some-length!!", body, headers[SIGNATURE_HEADER])
    assert not verify_webhook(SECRET, body.replace(b"admin", b"owner"), headers[SIGNATURE_HEADER])
    assert not verify_webhook(SECRET, body, headers[SIGNATURE_HEADER], now=time.time() + 3600)
    assert not verify_webhook(SECRET, body, None)


async def test_a_refusing_receiver_is_retried_then_reported_never_raised_as_a_hook(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A 500 is retried up to ``attempts``; send raises NotificationFailed, the hook only logs."""
    cont = await suspended_run()
    with Receiver(status=500) as failing:
        notifier = WebhookNotifier(failing.url, SECRET, "http://inbox", attempts=2, timeout=5)
        with pytest.raises(NotificationFailed, match="after 2 attempt"):
            await notifier.send(cont)
        assert len(failing.received) == 2
        with caplog.at_level(logging.ERROR):
            await notifier(cont)
        assert "did not accept" in caplog.text


async def test_a_redirect_is_a_failure_and_the_body_goes_nowhere_else() -> None:
    """A receiver answering with a redirect does not make the notifier POST elsewhere."""
    cont = await suspended_run()
    with Receiver() as elsewhere, Receiver(status=302, location="") as redirecting:
        redirecting.location = elsewhere.url
        notifier = WebhookNotifier(redirecting.url, SECRET, "http://inbox", attempts=1)
        with pytest.raises(NotificationFailed):
            await notifier.send(cont)
        assert elsewhere.received == []


def test_the_notifier_refuses_weak_secrets_and_other_schemes() -> None:
    """A short secret or a non-http URL is a configuration error."""
    from continuations_core import ConfigurationError

    with pytest.raises(ConfigurationError):
        WebhookNotifier("http://127.0.0.1:9/x", b"short", "http://inbox")
    with pytest.raises(ConfigurationError):
        WebhookNotifier("file:///etc/passwd", SECRET, "http://inbox")


async def test_run_on_suspend_posts_the_suspension_to_the_webhook(receiver, tmp_path) -> None:
    """``run(..., on_suspend=WebhookNotifier(...))`` posts the stored suspension, signed."""
    from continuations_core import SQLiteStore

    notifier = WebhookNotifier(receiver.url, SECRET, "https://approvals.example.com/")
    async with SQLiteStore(tmp_path / "hr.db") as store:
        outcome = await run(hr, PROMPT, keys=KEYS, store=store, on_suspend=notifier)
        assert isinstance(outcome, Suspended)
        stored = await store.get(outcome.continuation.id)
    assert stored.status == "waiting"
    [(headers, body)] = receiver.received
    assert verify_webhook(SECRET, body, headers[SIGNATURE_HEADER])
    assert json.loads(body)["continuation_id"] == outcome.continuation.id
