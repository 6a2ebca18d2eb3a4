"""The ``continuations`` command line, run in-process against a SQLite store."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from continuations_core import (
    SCHEMA_VERSION,
    Approve,
    Continuation,
    Frame,
    Keyring,
    PendingCall,
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


# -- signatures on decide ----------------------------------------------------------------------

DECIDE_ARGS = [
    pytest.param(("approve", "1"), id="approve"),
    pytest.param(("deny", "2", "--message", "no"), id="deny"),
    pytest.param(("respond", "3", "--value", '"CC-1"'), id="respond"),
]


def _untouched(url: str, cont: Continuation) -> None:
    """The stored continuation still has version 1, no decision, and only its save audited."""
    after = stored(url, cont.id)
    assert after.version == 1 and after.continuation.decisions == () and after.status == "waiting"
    with SyncStore(SQLiteStore(url)) as store:
        assert [e.kind for e in store.audit(cont.run_id)] == ["suspended"]


def _tamper(url: str, old: str = "100", new: str = "900") -> None:
    """Edit the (only) stored document behind the store's back."""
    with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
        (text,) = conn.execute("SELECT document FROM continuations").fetchone()
        assert old in text
        conn.execute("UPDATE continuations SET document = ?", (text.replace(old, new),))
    conn.close()


@pytest.mark.parametrize("decide", DECIDE_ARGS)
@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("tampered", "does not match its signature"),
        ("unknown key", "which this keyring does not hold"),
        ("unsigned", "not signed, but $CONTINUATIONS_SIGNING_KEYS is set"),
    ],
)
def test_deciding_refuses_a_document_that_does_not_verify_with_the_configured_keys(
    url: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    decide: tuple[str, ...],
    case: str,
    message: str,
) -> None:
    """With keys configured, approve/deny/respond refuse a bad signature: exit 2, nothing stored."""
    keys = Keyring.generate("k1")
    cont = make_continuation(None if case == "unsigned" else keys)
    with SyncStore(SQLiteStore(url)) as store:
        store.save(cont)
    if case == "tampered":
        _tamper(url)
    configured = Keyring.generate("k2") if case == "unknown key" else keys
    monkeypatch.setenv("CONTINUATIONS_SIGNING_KEYS", configured.export())
    command, request, *rest = decide
    code, out, err = run(capsys, command, "--store", url, cont.id, request, *rest)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    _untouched(url, cont)


def test_deciding_without_keys_works_and_says_not_verified_like_show(
    url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without keys a decision is recorded, and approve, respond and show all say "not verified"."""
    keys = Keyring.generate("k1")
    signed, unsigned = make_continuation(keys), make_continuation()
    with SyncStore(SQLiteStore(url)) as store:
        store.save(signed)
        store.save(unsigned)
    phrase = "not verified (signed with key k1; set $CONTINUATIONS_SIGNING_KEYS to verify)"
    code, out, err = run(capsys, "approve", "--store", url, signed.id, "1")
    assert code == 0 and f"signature: {phrase}" in out
    assert err == f"warning: signature {phrase}\n"
    code, out, err = run(capsys, "show", "--store", url, signed.id)
    assert f"signature: {phrase}" in out and err == f"warning: signature {phrase}\n"
    code, out, err = run(
        capsys, "--json", "respond", "--store", url, unsigned.id, "3", "--value", "1"
    )
    assert code == 0 and json.loads(out)["signature"] == "not verified (the document is not signed)"
    assert err == "warning: signature not verified (the document is not signed)\n"

    monkeypatch.setenv("CONTINUATIONS_SIGNING_KEYS", keys.export())
    code, out, err = run(capsys, "deny", "--store", url, signed.id, "2")
    assert code == 0 and "signature: verified with key k1" in out and err == ""


# -- escaping ----------------------------------------------------------------------------------

# ANSI erase/colour, a hyperlink, CR, NUL, C1 CSI, bidi override, line separator, DEL, a tag char.
EVIL = "\x1b[2J\x1b[31m\x1b]8;;http://x\x07\r\x00\x9b\u202e\u2028\x7f\U000e0041"


def _raw_controls(text: str) -> list[str]:
    """Characters in ``text`` that a terminal would act on (everything non-printable but \\n)."""
    return sorted({c for c in text if not c.isprintable() and c != "\n"})


def _hostile(evil: str) -> Continuation:
    """A continuation whose every model- or caller-made field carries ``evil``."""
    calls = (
        PendingCall(
            call_id="c1" + evil,
            tool="transfer" + evil,
            args={"to": "acct" + evil, evil: [evil]},
            kind="approval",
            reason="why" + evil,
        ),
        PendingCall(call_id="c2" + evil, tool="ask" + evil, kind="input"),
        PendingCall(call_id="c3", tool="lookup", kind="approval"),
    )
    root = Frame(framework="test", agent="orchestrator" + evil, pending=calls)
    cont = Continuation(id="id-" + evil.replace("\x00", ""), run_id="run" + evil, root=root)
    first, second, third = (r.path for r in cont.requests)
    cont = cont.deny(first, "no" + evil, by="mallory" + evil, comment="note" + evil)
    cont = cont.respond(second, {"v": evil}, by="eve" + evil)
    return cont.approve(third, by=evil, comment=evil)


def test_show_list_audit_and_errors_render_hostile_fields_inert(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Control characters in every field are escaped in text output; --json stays exact JSON."""
    evil, twin = _hostile(EVIL), _hostile("")
    with SyncStore(SQLiteStore(url)) as store:
        store.save(evil, actor="agent" + EVIL)
        store.save(twin)
    for argv, twin_argv in [
        (("show", evil.id), ("show", twin.id)),
        (("list",), ("list",)),
        (("audit", evil.run_id), ("audit", twin.run_id)),
    ]:
        code, out, _ = run(capsys, argv[0], "--store", url, *argv[1:])
        assert code == 0 and _raw_controls(out) == []
        assert "\\x1b[2J" in out and "\\u202e" in out
        # Escaped, no field can add a line: the hostile output has as many as the benign one.
        twin_out = run(capsys, twin_argv[0], "--store", url, *twin_argv[1:])[1]
        assert len(out.splitlines()) == len(twin_out.splitlines())
    code, out, _ = run(capsys, "--json", "show", "--store", url, evil.id)
    assert code == 0 and _raw_controls(out) == []
    view = json.loads(out)
    assert view["id"] == evil.id and view["run_id"] == evil.run_id
    assert [r["tool"] for r in view["requests"]] == [r.tool for r in evil.requests]
    assert view["requests"][0]["args"] == evil.requests[0].args
    assert view["requests"][0]["decision"]["by"] == "mallory" + EVIL
    assert view["requests"][1]["decision"]["decision"]["value"] == {"v": EVIL}
    listed = json.loads(run(capsys, "list", "--json", "--store", url)[1])
    assert {r["id"] for r in listed} == {evil.id, twin.id}
    path = json.dumps([evil.requests[0].path[0] + "x"], ensure_ascii=False)
    code, _, err = run(capsys, "approve", "--store", url, evil.id, path)
    assert code == 2 and err.startswith("error: ") and _raw_controls(err) == []


# -- request numbers and JSON arguments --------------------------------------------------------


@pytest.mark.parametrize(
    "request_arg",
    ["²", "٣", "0", "-1", "99", "1.5", "", " ", "1e0", "+1", "9" * 5000, "0x1", "1\x1b[2J",
     "[", '["a"', "[1, 2]", "[" * 100_000, '[{"a": 1, "a": 2}]', "[NaN]", '{"a": 1}'],
    ids=repr,
)  # fmt: skip
def test_a_bad_request_number_or_path_is_an_error_message_not_a_traceback(
    url: str, cont: Continuation, capsys: pytest.CaptureFixture[str], request_arg: str
) -> None:
    """Any request argument that names no request exits 2 with one error line; nothing changes."""
    code, out, err = run(capsys, "approve", "--store", url, cont.id, request_arg)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and _raw_controls(err) == []
    assert len(err) < 1000
    assert stored(url, cont.id).version == 1


@pytest.mark.parametrize(
    ("flag", "text", "message"),
    [
        ("--value", '{"a": 1, "a": 2}', "appears twice"),
        ("--value", "NaN", "not strict JSON"),
        ("--value", "[1e999]", "not strict JSON"),
        ("--value", "[" * 33 + "]" * 33, "limit of 32 levels"),
        ("--value", "[" * 50_000 + "]" * 50_000, "limit of 32 levels"),
        ("--value", json.dumps("x" * 300_000), "over the limit"),
    ],
    ids=["repeated-key", "nan", "overflow", "deep", "very-deep", "large"],
)
def test_json_arguments_are_parsed_strictly(
    url: str,
    cont: Continuation,
    capsys: pytest.CaptureFixture[str],
    flag: str,
    text: str,
    message: str,
) -> None:
    """--value and --args refuse repeated keys, NaN, deep nesting and oversize; nothing changes."""
    code, _, err = run(capsys, "respond", "--store", url, cont.id, "3", flag, text)
    assert code == 2 and message in err and "Traceback" not in err
    code, _, err = run(
        capsys, "approve", "--store", url, cont.id, "1", "--args", '{"x": ' + text + "}"
    )
    assert code == 2 and "Traceback" not in err
    assert stored(url, cont.id).version == 1


# -- partial args --------------------------------------------------------------------------------


def test_approve_args_are_merged_onto_the_original_and_validated(
    url: str, cont: Continuation, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--args '{"amount": 4000}'` keeps the other args; the merged args must fit the schema."""
    for bad in ('{"amount": 0}', '{"memo": "x"}', '{"to": null}', "[1]", '"x"'):
        code, _, err = run(capsys, "approve", "--store", url, cont.id, "1", "--args", bad)
        assert code == 2 and err.startswith("error: "), bad
    assert stored(url, cont.id).version == 1
    code, out, _ = run(
        capsys, "approve", "--store", url, cont.id, "1", "--args", '{"amount": 4000}'
    )
    assert code == 0 and 'with edited args {"amount": 4000, "to": "acct-001"}' in out
    record = stored(url, cont.id).continuation.decision_for(cont.requests[0].path)
    assert record is not None and record.decision == Approve(
        args={"amount": 4000, "to": "acct-001"}
    )
    code, out, _ = run(capsys, "approve", "--help")
    assert code == 0 and "merged onto the" in out and "original args" in out


def test_the_cli_in_a_subprocess_escapes_output_and_refuses_tampered_documents(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Run as a program: `show` bytes carry no ESC; a tampered document makes `approve` exit 2."""
    keys = Keyring.generate("k1")
    evil = _hostile(EVIL.replace("\x00", "")).sign(keys)
    with SyncStore(SQLiteStore(url)) as store:
        store.save(evil)
    env = {**os.environ, "CONTINUATIONS_SIGNING_KEYS": keys.export()}
    env.pop("CONTINUATIONS_STORE", None)

    def cli(*argv: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [sys.executable, "-m", "continuations_core", *argv, "--store", url],
            capture_output=True, cwd=ROOT, env=env, timeout=120, check=False,
        )  # fmt: skip

    shown = cli("show", evil.id)
    assert shown.returncode == 0, shown.stderr
    assert (
        b"\x1b" not in shown.stdout
        and b"\r" not in shown.stdout
        and b"\xc2\x9b" not in shown.stdout
    )
    assert b"verified with key k1" in shown.stdout
    _tamper(url, "why", "WHY")
    refused = cli("approve", evil.id, "1", "--replace")
    assert refused.returncode == 2 and refused.stdout == b""
    assert (
        refused.stderr.startswith(b"error: ") and b"does not match its signature" in refused.stderr
    )
