"""The ``continuations`` command line, run in-process against a SQLite store."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from continuations_core import (
    SCHEMA_VERSION,
    Continuation,
    Keyring,
    SQLiteStore,
    StoredContinuation,
)
from continuations_core.cli import main
from continuations_core.stores import SyncStore
from continuations_core.testing.store_scenarios import make_continuation

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A SQLite store URL; the signing-key and store variables are unset."""
    monkeypatch.delenv("CONTINUATIONS_SIGNING_KEYS", raising=False)
    monkeypatch.delenv("CONTINUATIONS_STORE", raising=False)
    return f"sqlite:///{tmp_path / 'cli.db'}"


@pytest.fixture
def cont(url: str) -> Continuation:
    """A nested continuation (2 transfers under a sub-agent, 1 input) saved in the store."""
    saved = make_continuation(Keyring.generate())
    with SyncStore(SQLiteStore(url)) as store:
        store.save(saved, actor="agent")
    return saved


def stored(url: str, id: str) -> StoredContinuation:
    with SyncStore(SQLiteStore(url)) as store:
        return store.get(id)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_schema_prints_the_published_json_schema(capsys: pytest.CaptureFixture[str]) -> None:
    """`schema` prints JSON that validates a real continuation document."""
    code, out, _ = run(capsys, "schema")
    assert code == 0
    schema = json.loads(out)
    assert schema["schema_version"] == SCHEMA_VERSION
    document = make_continuation().to_dict()
    jsonschema.validate(document, {**schema["continuation"], "$schema": schema["$schema"]})


def test_keygen_prints_a_key_the_keyring_parses(capsys: pytest.CaptureFixture[str]) -> None:
    """`keygen --kid` prints `kid=base64` that Keyring.parse accepts."""
    code, out, _ = run(capsys, "keygen", "--kid", "prod-1")
    assert code == 0
    assert Keyring.parse(out.strip()).kids == ["prod-1"]


def test_show_lists_nested_paths_and_the_inner_tool_args(
    url: str, cont: Continuation, capsys: pytest.CaptureFixture[str]
) -> None:
    """`show` numbers each request and shows the innermost tool, its args and agent chain."""
    code, out, _ = run(capsys, "show", "--store", url, cont.id)
    assert code == 0
    assert "[1] approval" in out and "[3] input" in out
    assert "delegate_payments:call_1 > payments#000000000000.0 > transfer:call_1" in out
    assert "orchestrator > payments" in out
    assert '{"amount": 100, "to": "acct-001"}' in out
    assert "tool:     transfer" in out
    assert "tool:     delegate_payments" not in out
    assert "decision: undecided" in out


def test_approve_by_number_is_shown_and_listed_once_all_are_decided(
    url: str, cont: Continuation, capsys: pytest.CaptureFixture[str]
) -> None:
    """Approving by number records the decision; once all are decided the run lists as ready."""
    code, out, _ = run(
        capsys, "approve", "--store", url, cont.id, "1", "--by", "alice", "--comment", "ok"
    )
    assert code == 0 and "now waiting" in out
    code, out, _ = run(capsys, "show", "--store", url, cont.id)
    assert "approved by alice" in out and "comment: ok" in out
    assert run(capsys, "list", "--store", url, "--status", "ready")[1].strip() == (
        "No continuations."
    )

    path = json.dumps(list(cont.requests[1].path))
    assert run(capsys, "deny", "--store", url, cont.id, path, "--message", "not now")[0] == 0
    assert run(capsys, "respond", "--store", url, cont.id, "3", "--value", '"CC-42"')[0] == 0
    code, out, _ = run(capsys, "list", "--store", url, "--status", "ready")
    assert code == 0 and cont.id in out and "0/3" in out
    code, out, _ = run(capsys, "--json", "show", "--store", url, cont.id)
    decisions = [r["decision"]["decision"] for r in json.loads(out)["requests"]]
    assert decisions == [
        {"kind": "approve", "args": None},
        {"kind": "deny", "message": "not now"},
        {"kind": "respond", "value": "CC-42"},
    ]
    code, out, _ = run(capsys, "audit", "--store", url, cont.run_id, "--json")
    kinds = [e["kind"] for e in json.loads(out)]
    assert kinds == ["suspended", "decided", "decided", "decided"]
    first = stored(url, cont.id).continuation.decision_for(cont.requests[0].path)
    assert first is not None and first.by == "alice"


def test_approve_with_args_violating_the_schema_exits_2_and_changes_nothing(
    url: str, cont: Continuation, capsys: pytest.CaptureFixture[str]
) -> None:
    """Edited args that fail the tool schema are refused with a message; the store is unchanged."""
    before = stored(url, cont.id)
    code, out, err = run(
        capsys, "approve", "--store", url, cont.id, "1", "--args", '{"amount": "lots"}'
    )
    assert code == 2 and out == ""
    assert err.startswith("error: ") and "do not match its schema" in err
    assert "Traceback" not in err
    after = stored(url, cont.id)
    assert after.version == before.version and after.continuation.decisions == ()


@pytest.mark.parametrize(
    "request_arg", ["9", "0", "first", '["nope:call_1"]', '"not a list"'], ids=repr
)
def test_an_unknown_request_exits_2_and_names_the_problem(
    url: str, cont: Continuation, capsys: pytest.CaptureFixture[str], request_arg: str
) -> None:
    """A request number or path that does not exist exits 2 with a message."""
    code, _, err = run(capsys, "approve", "--store", url, cont.id, request_arg)
    assert code == 2 and err.startswith("error: ")
    assert stored(url, cont.id).version == 1


def test_respond_to_an_approval_and_bad_json_value_exit_2(
    url: str, cont: Continuation, capsys: pytest.CaptureFixture[str]
) -> None:
    """Responding to an approval, or giving a value that is not JSON, is refused."""
    assert run(capsys, "respond", "--store", url, cont.id, "1", "--value", "1")[0] == 2
    code, _, err = run(capsys, "respond", "--store", url, cont.id, "3", "--value", "CC-42")
    assert code == 2 and "not valid JSON" in err


def test_errors_without_a_store_or_for_an_unknown_id(
    url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A missing --store and an unknown id both exit 2; $CONTINUATIONS_STORE is the default."""
    code, _, err = run(capsys, "list")
    assert code == 2 and "--store" in err
    monkeypatch.setenv("CONTINUATIONS_STORE", url)
    code, _, err = run(capsys, "show", "missing-id")
    assert code == 2 and "missing-id" in err
    assert run(capsys, "list", "--json")[1].strip() == "[]"


def test_show_verifies_the_signature_when_keys_are_configured(
    url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With $CONTINUATIONS_SIGNING_KEYS set, `show` verifies; a wrong key is an error."""
    keys = Keyring.generate("k1")
    signed = make_continuation(keys)
    with SyncStore(SQLiteStore(url)) as store:
        store.save(signed)
    monkeypatch.setenv("CONTINUATIONS_SIGNING_KEYS", keys.export())
    assert "verified with key k1" in run(capsys, "show", "--store", url, signed.id)[1]
    monkeypatch.setenv("CONTINUATIONS_SIGNING_KEYS", Keyring.generate("k1").export())
    code, _, err = run(capsys, "show", "--store", url, signed.id)
    assert code == 2 and "does not match its signature" in err


def test_python_dash_m_prints_the_schema() -> None:
    """`python -m continuations_core schema` exits 0 and prints JSON."""
    result = subprocess.run(
        [sys.executable, "-m", "continuations_core", "schema"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "continuation" in json.loads(result.stdout)
