"""The inbox in a real browser: Debian's headless Chromium, driven by Playwright, on 127.0.0.1.

A person lists the requests, opens a nested one, edits an arg, reviews the diff and approves;
denies a second run with a message; a worker process resumes both; the page then shows the
completed output and the audit. Screenshots go to ``.artifacts/inbox-browser/`` (or
``$CONTINUATIONS_ARTIFACTS``). Without Chromium or Playwright the test skips, except in CI
(``CI=true``), where it fails: ``.ci/run`` installs Chromium.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from _hr import EXAMPLES, PROMPT, hr
from _inbox import KEYS, nested

from continuations_core import SQLiteStore, Suspended
from continuations_pydantic_ai import run

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path(os.environ.get("CONTINUATIONS_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = Path(os.environ.get("CONTINUATIONS_ARTIFACTS", ROOT / ".artifacts")) / "inbox-browser"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PERSON = "manager@example.com"
XSS_SCRIPT = "<script>window.__xss = 1</script>"
XSS_IMG = '<img src=x onerror="window.__xss = 2">'


def _missing(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; in CI the browser test must run (.ci/run installs chromium)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def playwright() -> Iterator[Any]:
    """Playwright's sync API, or a skip (a failure in CI) when it or Chromium is missing."""
    if not CHROMIUM.exists():
        _missing(f"{CHROMIUM} is not installed (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed")
    with sync_playwright() as started:
        yield started


@contextmanager
def browser(playwright: Any, **options: Any) -> Iterator[Any]:
    """A fresh Chromium profile, sending the proxy's identity header for ``PERSON``."""
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            extra_http_headers={"X-Forwarded-Email": PERSON},
            viewport=options.pop("viewport", {"width": 1280, "height": 900}),
            **options,
        )
        try:
            yield context
        finally:
            context.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    env["CONTINUATIONS_SIGNING_KEYS"] = KEYS.export()
    env["HR_DEMO_LOG"] = str(tmp / "tool-calls.log")
    env["PYTHONPATH"] = os.pathsep.join([str(EXAMPLES), env.get("PYTHONPATH", "")])
    return env


@contextmanager
def inbox_server(url: str, tmp: Path) -> Iterator[str]:
    """``python -m continuations_core inbox`` behind a (simulated) proxy on 127.0.0.1."""
    port = _free_port()
    cmd = [
        sys.executable, "-m", "continuations_core", "inbox", "--store", url, "--port", str(port),
        "--trusted-proxy-header", "X-Forwarded-Email", "--trusted-proxies", "127.0.0.1",
    ]  # fmt: skip
    log = (tmp / "inbox.log").open("w")
    proc = subprocess.Popen(cmd, env=_env(tmp), stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp / "inbox.log").read_text()
            try:
                with urllib.request.urlopen(f"{base}/inbox/static/inbox.css", timeout=2):
                    break
            except OSError:
                assert time.monotonic() < deadline, "the inbox did not start"
                time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


def _shot(page: Any, name: str, *, full: bool = True) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=full)
    return path


def _in_thread(coro: Any) -> Any:
    """Run a coroutine to completion off the main thread, where Playwright runs its own loop."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result(timeout=120)


def _start_runs(db: Path, n: int) -> list[str]:
    async def start() -> list[str]:
        async with SQLiteStore(db) as store:
            ids = []
            for _ in range(n):
                outcome = await run(hr, PROMPT, keys=KEYS, store=store)
                assert isinstance(outcome, Suspended)
                ids.append(outcome.continuation.id)
            return ids

    ids: list[str] = _in_thread(start())
    return ids


def _watch_console(page: Any, errors: list[str]) -> None:
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))


def test_approve_with_an_edit_deny_another_then_see_them_completed(
    playwright: Any, tmp_path: Path
) -> None:
    """List, open a nested request, edit, review the diff, approve; deny another; see both done."""
    db = tmp_path / "hr.db"
    first, second = _start_runs(db, 2)
    url = f"sqlite:///{db}"
    errors: list[str] = []
    with inbox_server(url, tmp_path) as base, browser(playwright) as context:
        page = context.new_page()
        _watch_console(page, errors)
        page.goto(f"{base}/inbox")
        assert page.locator("li.item").count() == 2
        assert page.locator(".who").inner_text() == PERSON
        _shot(page, "01-list.png")

        page.locator(f'a.title[href*="{first}"]').click()
        page.wait_for_url(f"**/inbox/c/{first}*")
        request = page.locator("#req-1")
        assert request.locator("h2").inner_text() == "hr › accounts › authorize_account"  # noqa: RUF001 - the breadcrumb separator
        assert "Grants access to a production system" in request.inner_text()
        assert '"admin"' in request.locator("table.args").inner_text()
        request.locator("details.edit summary").click()
        request.locator('input[name="arg.role"]').fill("viewer")
        request.get_by_role("button", name="Review changes").click()
        diff = request.locator(".preview table.diff")
        diff.wait_for()
        assert diff.locator("del").inner_text() == '"admin"'
        assert diff.locator("ins").inner_text() == '"viewer"'
        assert page.url.endswith(f"/inbox/c/{first}#req-1")  # reviewed in place, nothing decided
        _shot(page, "02-review-diff.png")
        request.locator(".confirm-edit textarea[name=comment]").fill("Least privilege first.")
        request.get_by_role("button", name="Approve with these changes").click()
        page.wait_for_url("**decided=1*")
        assert "Your decision was recorded." in page.locator(".flash.ok").inner_text()
        decision = page.locator("#req-1 .decision")
        assert f"Approved by {PERSON}" in decision.inner_text()
        assert decision.locator("ins").inner_text() == '"viewer"'

        page.goto(f"{base}/inbox/c/{second}")
        deny = page.locator("#req-1 form.deny")
        deny.locator("textarea[name=message]").fill("Use the access-request form.")
        deny.get_by_role("button", name="Deny").click()
        page.wait_for_url("**decided=1*")
        assert "Use the access-request form." in page.locator("#req-1 .decision").inner_text()

        page.goto(f"{base}/inbox/c/{first}")
        worker = subprocess.run(
            [sys.executable, "-m", "continuations_core", "worker", "--store", url,
             "--agents", "hr_agents:hr", "--poll", "0.1", "--idle-exit", "1"],
            env=_env(tmp_path), capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert worker.returncode == 0, worker.stderr
        assert "resuming 2 continuation(s)" in worker.stdout
        # No reload: the run's status section refreshes itself.
        output = page.locator("#live .output pre")
        output.wait_for(timeout=20_000)
        assert "enabled as viewer" in output.inner_text()
        timeline = page.locator("#live .timeline").inner_text()
        assert "decided in the inbox" in timeline and "completed" in timeline
        assert "via trusted-proxy" in timeline and "role" in timeline
        _shot(page, "03-completed.png")

        page.goto(f"{base}/inbox/c/{second}")
        assert "Use the access-request form." in page.locator("#live .output pre").inner_text()
        page.goto(f"{base}/inbox")
        assert "Nothing is waiting" in page.locator("#items").inner_text()

    ran = (tmp_path / "tool-calls.log").read_text().splitlines()
    assert [line for line in ran if line.startswith("authorize_account")] == [
        "authorize_account user=alice system=payroll role=viewer"
    ]
    assert errors == [], errors


def test_the_pages_fit_a_phone_and_model_markup_stays_inert(
    playwright: Any, tmp_path: Path
) -> None:
    """At 390px nothing scrolls sideways; args with <script> and onerror render as text."""
    db = tmp_path / "xss.db"
    evil = nested(
        transfers=[{"amount": 5, "to": XSS_SCRIPT + XSS_IMG}],
        reason=f"Pay {XSS_IMG}",
        agents=("finance", f"pay{XSS_SCRIPT}"),
    )

    async def save() -> None:
        async with SQLiteStore(db) as store:
            await store.save(evil)

    _in_thread(save())
    errors: list[str] = []
    phone = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}
    with inbox_server(f"sqlite:///{db}", tmp_path) as base, browser(playwright, **phone) as context:
        page = context.new_page()
        _watch_console(page, errors)
        for path in ("/inbox", f"/inbox/c/{evil.id}"):
            page.goto(base + path)
            page.wait_for_timeout(300)
            assert page.evaluate("window.__xss") is None, path
            assert page.locator("img").count() == 0, path
            assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), (
                f"{path} scrolls sideways on a phone"
            )
        cell = page.locator("#req-1 table.args td").nth(1).inner_text()
        assert XSS_SCRIPT in cell and "<img src=x onerror=" in cell  # shown as JSON text
        assert XSS_IMG in page.locator("#req-1 .reason").inner_text()
        page.locator("#req-1 details.edit summary").click()
        page.locator('#req-1 input[name="arg.to"]').fill(XSS_IMG + "!")
        page.locator("#req-1").get_by_role("button", name="Review changes").click()
        page.locator("#req-1 .preview table.diff").wait_for()
        assert page.evaluate("window.__xss") is None and page.locator("img").count() == 0
        _shot(page, "04-phone-escaped.png")
        page.goto(f"{base}/inbox")
        _shot(page, "05-phone-list.png")
    assert errors == [], errors
