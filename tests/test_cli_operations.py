"""Operator commands: ``list --status failed``, ``show`` of a failure, ``retry`` and ``status``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from continuations_core import Continuation, SQLiteStore, UnsignedContinuation
from continuations_core.cli import main
from continuations_core.stores import SyncStore
from continuations_core.testing.store_scenarios import make_continuation


@pytest.fixture
def url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A SQLite store URL; the signing-key and store variables are unset."""
    monkeypatch.delenv("CONTINUATIONS_SIGNING_KEYS", raising=False)
    monkeypatch.delenv("CONTINUATIONS_STORE", raising=False)
    return f"sqlite:///{tmp_path / 'ops.db'}"


def _ready(store: SyncStore) -> Continuation:
    cont = make_continuation(leaves=0)
    store.save(cont)
    store.decide(cont.id, cont.respond(cont.requests[0], "CC-1").decisions[0])
    return cont


@pytest.fixture
def failed(url: str) -> Continuation:
    """A continuation whose only attempt failed for good (it was not signed)."""
    with SyncStore(SQLiteStore(url)) as store:
        cont = _ready(store)
        claim = store.claim(cont.id, owner="w1")
        error = UnsignedContinuation("This continuation is not signed.")
        store.fail(claim, error, permanent=True)
    return cont


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_list_failed_shows_the_failed_continuations_and_their_error(
    url: str, failed: Continuation, capsys: pytest.CaptureFixture[str]
) -> None:
    """``list --status failed`` lists exactly the failed ones, with their last error."""
    with SyncStore(SQLiteStore(url)) as store:
        _ready(store)  # a ready one is not listed
    code, out, _ = run(capsys, "list", "--store", url, "--status", "failed")
    assert code == 0
    assert failed.id in out and "UnsignedContinuation" in out and "LAST ERROR" in out
    assert len(out.strip().splitlines()) == 2
    code, out, _ = run(capsys, "--json", "list", "--store", url, "--status", "failed")
    [row] = json.loads(out)
    assert row["id"] == failed.id and row["status"] == "failed" and row["attempts"] == 1
    assert row["last_error"]["type"] == "UnsignedContinuation"


def test_show_says_why_a_continuation_failed_and_how_to_retry_it(
    url: str, failed: Continuation, capsys: pytest.CaptureFixture[str]
) -> None:
    """``show`` of a failed continuation names the error, the attempt and the retry command."""
    code, out, _ = run(capsys, "show", "--store", url, failed.id)
    assert code == 0
    assert "FAILED after 1 attempt(s)" in out
    assert "UnsignedContinuation: This continuation is not signed." in out
    assert f"continuations retry {failed.id}" in out
    code, out, _ = run(capsys, "--json", "show", "--store", url, failed.id)
    view = json.loads(out)
    assert view["status"] == "failed" and view["last_error"]["attempt"] == 1


def test_retry_makes_it_ready_again_and_is_audited_with_who(
    url: str, failed: Continuation, capsys: pytest.CaptureFixture[str]
) -> None:
    """``retry ID --by`` puts a failed continuation back to ready, audited with who retried."""
    code, out, _ = run(capsys, "retry", "--store", url, failed.id, "--by", "alice")
    assert code == 0 and "ready again" in out and "UnsignedContinuation" in out
    with SyncStore(SQLiteStore(url)) as store:
        record = store.get(failed.id)
        events = store.audit(failed.run_id)
    assert record.status == "ready" and record.attempts == 0
    assert events[-1].kind == "retried" and events[-1].actor == "alice"
    code, _, err = run(capsys, "retry", "--store", url, failed.id, "--by", "alice")
    assert code == 2 and "Only a failed or backing-off continuation" in err


def test_status_shows_a_runs_state_and_its_output_once_completed(
    url: str, failed: Continuation, capsys: pytest.CaptureFixture[str]
) -> None:
    """``status RUN_ID`` tells failed from completed runs, and shows the completed output."""
    code, out, _ = run(capsys, "status", "--store", url, failed.run_id)
    assert code == 0 and f"Run {failed.run_id}: failed" in out
    assert "last error: UnsignedContinuation" in out and "continuations retry" in out
    with SyncStore(SQLiteStore(url)) as store:
        done = _ready(store)
        store.complete(store.claim(done.id, owner="w1"), output={"paid": 300})
    code, out, _ = run(capsys, "status", "--store", url, done.run_id)
    assert code == 0 and "completed" in out and '{"paid": 300}' in out
    code, out, _ = run(capsys, "--json", "status", "--store", url, done.run_id)
    view = json.loads(out)
    assert view["state"] == "completed" and view["output"] == {"paid": 300}
    code, out, _ = run(capsys, "status", "--store", url, "no-such-run")
    assert code == 0 and "unknown" in out
