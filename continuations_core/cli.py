"""The ``continuations`` command: list, review and decide suspended runs from a terminal.

Run it as ``continuations ...`` or ``python -m continuations_core ...``. Every command that
reads a store takes ``--store URL`` (default: ``$CONTINUATIONS_STORE``); see
:func:`continuations_core.stores.open_store` for URLs. Output is for people by default and
JSON with ``--json``. Errors print ``error: <message>`` and exit with status 2.

Example::

    continuations list --store sqlite:///runs.db --status waiting
    continuations show --store sqlite:///runs.db 3f2a...
    continuations approve --store sqlite:///runs.db 3f2a... 1 --by alice
    continuations list --store sqlite:///runs.db --status failed
    continuations status --store sqlite:///runs.db 9b1c...
    continuations retry --store sqlite:///runs.db 3f2a...
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import os
import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from . import __version__
from ._limits import MAX_VALUE_BYTES, MAX_VALUE_DEPTH, loads
from ._schema import Approve, Continuation, DecisionRecord, Deny, Request, json_schema
from ._signing import Keyring
from ._terminal import inert, inert_json
from .errors import (
    ConfigurationError,
    ContinuationError,
    DispatchFailed,
    InvalidDecision,
    MalformedContinuation,
    UnknownPath,
    UnsignedContinuation,
)
from .stores import STATUSES, Store, SyncStore, open_store

__all__ = ["main"]

STORE_ENV = "CONTINUATIONS_STORE"
KEYS_ENV = "CONTINUATIONS_SIGNING_KEYS"
#: The engine decisions are dispatched to and ``worker`` runs (``builtin`` or ``dbos``).
ENGINE_ENV = "CONTINUATIONS_ENGINE"
#: DBOS's system database, when it is not the store's Postgres database.
DBOS_URL_ENV = "CONTINUATIONS_DBOS_URL"
Handler = Callable[[argparse.Namespace], None]
# A request number is 1 to 6 ASCII digits: "²" and "٣" are digits to str.isdigit, not to us.
_REQUEST_NUMBER = re.compile(r"[0-9]{1,6}")
_SHOWN_CHARS = 60  # how much of a bad argument an error message repeats


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status (0 ok, 2 error)."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help and on usage errors
        return exc.code if isinstance(exc.code, int) else 2
    handler: Handler = args.handler
    try:
        handler(args)
    except ContinuationError as exc:
        print(f"error: {inert(str(exc))}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (`| head`); not worth a traceback
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return 0


# -- commands ----------------------------------------------------------------------------------


def _cmd_schema(args: argparse.Namespace) -> None:
    print(json.dumps(json_schema(), indent=2))


def _cmd_keygen(args: argparse.Namespace) -> None:
    spec = Keyring.generate(args.kid).export()
    _emit(args, {"kid": args.kid, "keys": spec, "env": KEYS_ENV}, [spec])


def _cmd_list(args: argparse.Namespace) -> None:
    from ._cli_ops import failure_view  # it imports this module's helpers

    status = None if args.status == "all" else args.status
    with _open(args) as store:
        records = store.list(status=status, run_id=args.run, limit=args.limit)
    rows = [
        {
            "id": r.id,
            "run_id": r.run_id,
            "seq": r.seq,
            "status": r.status,
            "version": r.version,
            "requests": len(r.requests),
            "undecided": len(r.continuation.undecided),
            "created_at": r.created_at.isoformat(),
            "claimed_by": r.claimed_by,
            **failure_view(r),
        }
        for r in records
    ]
    lines = [f"{'ID':<32}  {'RUN':<32}  {'SEQ':>3}  {'STATUS':<7}  UNDECIDED  LAST ERROR"]
    lines += [
        f"{r['id']:<32}  {r['run_id']:<32}  {r['seq']:>3}  {r['status']:<7}  "
        f"{str(r['undecided']) + '/' + str(r['requests']):<9}  "
        f"{r['last_error']['type'] if r['last_error'] else '-'}"
        for r in rows
    ]
    _emit(args, rows, lines if rows else ["No continuations."])


def _cmd_show(args: argparse.Namespace) -> None:
    from ._cli_ops import failure_lines, failure_view  # it imports this module's helpers

    with _open(args) as store:
        stored = store.get(args.id)
    cont = stored.continuation
    signature = _verification(cont)
    requests = [_request_view(cont, i, r) for i, r in enumerate(cont.requests, 1)]
    view = {
        "id": stored.id,
        "run_id": stored.run_id,
        "seq": stored.seq,
        "status": stored.status,
        "version": stored.version,
        "created_at": stored.created_at.isoformat(),
        "claimed_by": stored.claimed_by,
        **failure_view(stored),
        "output": stored.output if stored.status == "done" else None,
        "signature": signature,
        "requests": requests,
    }
    undecided = len(cont.undecided)
    lines = [
        f"Continuation {stored.id}",
        f"  run {stored.run_id}, seq {stored.seq}, status {stored.status}, "
        f"version {stored.version}",
        f"  saved {stored.created_at:%Y-%m-%d %H:%M:%S %Z}; signature: {signature}",
        f"  {len(requests)} request(s), {undecided} undecided",
        *failure_lines(stored),
    ]
    if not requests:
        lines.append(f"  No pending calls: suspended by {cont.root.suspended_by!r}.")
    for item in requests:
        lines += ["", f"[{item['number']}] {item['kind']}"]
        lines += [
            f"    path:     {' > '.join(item['path'])}",
            f"    agents:   {' > '.join(item['agents'])}",
            f"    tool:     {item['tool']}",
            f"    args:     {json.dumps(item['args'], ensure_ascii=False)}",
            f"    reason:   {item['reason'] or '-'}",
            f"    expires:  {_expiry(item['expires_at'])}",
            f"    decision: {_describe(item['decision'])}",
        ]
    _emit(args, view, lines)
    _warn_if_unverified(signature)


def _cmd_decide(args: argparse.Namespace) -> None:
    with _open(args) as store:
        stored = store.get(args.id)
        cont = stored.continuation
        signature = _verification(cont)  # before anything is decided: a bad one refuses
        number, path = _resolve(cont, args.request)
        by = args.by if args.by is not None else _whoami()
        # The core builds the record, so kind, schema and binding are checked before writing.
        if args.command == "approve":
            edited = None
            if args.args is not None:
                changes = _json_arg("--args", args.args)
                if not isinstance(changes, dict):
                    raise InvalidDecision(
                        "--args must be a JSON object of the args to change, e.g. "
                        "--args '{\"amount\": 4000}'.",
                        continuation_id=cont.id,
                    )
                # Partial edits: the keys given replace the original's, the rest stay. The
                # merged args are what is validated against the tool schema and recorded.
                edited = {**cont.pending_call(path).args, **changes}
            decided = cont.approve(
                path, args=edited, by=by, comment=args.comment, replace=args.replace
            )
        elif args.command == "deny":
            decided = cont.deny(
                path, args.message, by=by, comment=args.comment, replace=args.replace
            )
        else:
            value = _json_arg("--value", args.value)
            decided = cont.respond(path, value, by=by, comment=args.comment, replace=args.replace)
        record = decided.decision_for(path)
        assert record is not None
        try:
            result = store.decide(
                stored.id, record, expected_version=stored.version, replace=args.replace
            )
        except DispatchFailed as exc:
            # The decision is stored and the continuation is ready; only the engine was not
            # told. Its workers re-dispatch what is ready when they start.
            print(f"warning: {inert(str(exc))}", file=sys.stderr)
            result = store.get(stored.id)
    decision = record.model_dump(mode="json")
    view = {
        "id": result.id,
        "status": result.status,
        "version": result.version,
        "undecided": len(result.continuation.undecided),
        "signature": signature,
        "decision": decision,
    }
    lines = [
        f"Recorded for [{number}] {' > '.join(path)}: {_describe(decision)}",
        f"Continuation {result.id} is now {result.status} "
        f"({view['undecided']} undecided, version {result.version}); signature: {signature}.",
    ]
    _emit(args, view, lines)
    _warn_if_unverified(signature)


def _cmd_audit(args: argparse.Namespace) -> None:
    with _open(args) as store:
        events = store.audit(args.run_id)
    rows = [e.model_dump(mode="json") for e in events]
    lines = [
        f"{e.at:%Y-%m-%d %H:%M:%S}  {e.kind:<9}  {e.actor or '-':<12}  {e.continuation_id}  "
        f"{json.dumps(e.detail, ensure_ascii=False, separators=(',', ':'))}"
        for e in events
    ]
    _emit(args, rows, lines or [f"No audit events for run {args.run_id}."])


# -- helpers -----------------------------------------------------------------------------------


def _cmd_inbox(args: argparse.Namespace) -> None:
    from .inbox._serve import serve

    url = args.store or os.environ.get(STORE_ENV)
    if not url:
        raise ConfigurationError(f"No store given: pass --store URL or set ${STORE_ENV}.")
    serve(args, url)


def _emit(args: argparse.Namespace, data: Any, lines: list[str]) -> None:
    """Print ``data`` as JSON with ``--json``, else ``lines``; either way inert in a terminal."""
    if args.json:
        print(inert_json(json.dumps(data, indent=2, ensure_ascii=False)))
    else:
        print("\n".join(inert(line) for line in lines))


def _open(args: argparse.Namespace) -> SyncStore:
    url = args.store or os.environ.get(STORE_ENV)
    if not url:
        raise ConfigurationError(f"No store given: pass --store URL or set ${STORE_ENV}.")
    store = open_store(url)
    bind_engine(store, url, args)
    return SyncStore(store)


def bind_engine(store: Store, url: str, args: argparse.Namespace) -> Store:
    """Make ``store`` tell the engine of ``--engine`` (``$CONTINUATIONS_ENGINE``) what it makes
    ready: a decision's or a retry's continuation is enqueued for DBOS workers, say. The
    built-in engine needs nothing: its workers find ready work in the store."""
    engine = getattr(args, "engine", None) or "builtin"
    if engine != "builtin":
        from .worker import load_engine

        load_engine(engine).client_dispatcher(
            store, url, system_database_url=args.dbos_url or os.environ.get(DBOS_URL_ENV),
            schema=args.dbos_schema,
        )  # fmt: skip
    return store


def _whoami() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name in some containers
        return None


def _json_arg(flag: str, text: str) -> Any:
    """Parse a JSON argument strictly, within the limits of a decision value."""
    try:
        return loads(
            text, what=f"{flag} argument", max_bytes=MAX_VALUE_BYTES, max_depth=MAX_VALUE_DEPTH
        )
    except MalformedContinuation as exc:
        raise MalformedContinuation(
            f"{exc} Quote strings as JSON, e.g. {flag} '\"text\"'."
        ) from exc


def _resolve(cont: Continuation, text: str) -> tuple[int, tuple[str, ...]]:
    """Turn a request number (1-based, as ``show`` numbers them) or a JSON path into a path."""
    requests = cont.requests
    given = text.strip()
    if given.startswith("["):
        path = _json_arg("REQUEST", given)
        if not isinstance(path, list) or not all(isinstance(p, str) for p in path):
            raise UnknownPath(
                "A REQUEST path must be a JSON array of strings.", continuation_id=cont.id
            )
        for number, request in enumerate(requests, 1):
            if request.path == tuple(path):
                return number, request.path
        cont.pending_call(tuple(path))  # raises UnknownPath listing the pending paths
    if _REQUEST_NUMBER.fullmatch(given) and 1 <= int(given) <= len(requests):
        return int(given), requests[int(given) - 1].path
    shown = given if len(given) <= _SHOWN_CHARS else f"{given[:_SHOWN_CHARS]}..."
    raise UnknownPath(
        f"There is no request {shown!r}: this continuation has {len(requests)} request(s), "
        "numbered from 1 by `show`. Pass one of those numbers or a JSON array path.",
        continuation_id=cont.id,
    )


def _request_view(cont: Continuation, number: int, request: Request) -> dict[str, Any]:
    record = cont.decision_for(request.path)
    return {
        "number": number,
        **request.model_dump(mode="json"),
        "decision": record.model_dump(mode="json") if record is not None else None,
    }


def _verification(cont: Continuation) -> str:
    """Verify the stored document with ``$CONTINUATIONS_SIGNING_KEYS``; say what was checked.

    With keys configured, a document that does not verify (tampered, unknown key, unsigned) is
    an error, not a display detail. Without keys the document cannot be checked: commands say
    so in their output and, once done, on stderr, in the same words for every command.

    Raises:
        SignatureError: If keys are configured and the document does not verify with them.
    """
    spec = os.environ.get(KEYS_ENV)
    if spec:
        if cont.signature is None:
            raise UnsignedContinuation(
                f"The stored document is not signed, but ${KEYS_ENV} is set: it cannot be "
                "verified, so it is refused. Nothing was changed. Find out how an unsigned "
                "continuation got into this store before deciding on it.",
                continuation_id=cont.id,
            )
        cont.verify(Keyring.parse(spec))
        return f"verified with key {cont.signature.kid}"
    if cont.signature is None:
        status = "not verified (the document is not signed)"
    else:
        status = f"not verified (signed with key {cont.signature.kid}; set ${KEYS_ENV} to verify)"
    return status


def _warn_if_unverified(signature: str) -> None:
    if not signature.startswith("verified"):
        print(f"warning: signature {inert(signature)}", file=sys.stderr)


def _expiry(value: str | None) -> str:
    if value is None:
        return "never"
    moment = datetime.fromisoformat(value)
    return f"{value} (expired)" if moment <= datetime.now(UTC) else value


def _describe(record: dict[str, Any] | None) -> str:
    if record is None:
        return "undecided"
    decision = DecisionRecord.model_validate(record)
    who = f" by {decision.by}" if decision.by else ""
    when = f" at {decision.at:%Y-%m-%d %H:%M:%S %Z}"
    d = decision.decision
    if isinstance(d, Approve):
        what = "approved" + (f" with edited args {json.dumps(d.args)}" if d.args else "")
    elif isinstance(d, Deny):
        what = f"denied ({d.message})"
    else:
        what = f"answered {json.dumps(d.value, ensure_ascii=False)}"
    comment = f"; comment: {decision.comment}" if decision.comment else ""
    return f"{what}{who}{when}{comment}"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="continuations", description="Review and decide suspended agent runs."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--json", action="store_true", help="print JSON for machines")
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS keeps a --json given before the command from being reset by the subparser.
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    with_store = argparse.ArgumentParser(add_help=False, parents=[common])
    with_store.add_argument("--store", help=f"store URL (default: ${STORE_ENV})")
    with_store.add_argument(
        "--engine", choices=["builtin", "dbos"], default=os.environ.get(ENGINE_ENV) or "builtin",
        help="who runs decided continuations: the built-in workers (builtin) or DBOS workers "
        "(dbos, extra: dbos; a decision or retry that makes one ready enqueues its workflow). "
        f"Default: ${ENGINE_ENV} or builtin",
    )  # fmt: skip
    with_store.add_argument(
        "--dbos-url", default=None,
        help=f"with --engine dbos: DBOS's system database (default: ${DBOS_URL_ENV}, else the "
        "store's Postgres database)",
    )  # fmt: skip
    with_store.add_argument(
        "--dbos-schema", default="dbos", help="with --engine dbos: DBOS's schema (default: dbos)"
    )
    decide = argparse.ArgumentParser(add_help=False, parents=[with_store])
    decide.add_argument("id", help="continuation id")
    decide.add_argument("request", help="request number from `show`, or a JSON array path")
    decide.add_argument("--by", help="who decides (default: your login name)")
    decide.add_argument("--comment", help="a note kept with the decision")
    decide.add_argument(
        "--replace",
        action="store_true",
        help="override an earlier decision of this request (audited with the one it replaces)",
    )

    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, handler: Handler, help: str, parent: argparse.ArgumentParser) -> Any:
        cmd = sub.add_parser(name, help=help, description=help, parents=[parent])
        cmd.set_defaults(handler=handler)
        return cmd

    add("schema", _cmd_schema, "print the JSON Schema of continuations and decisions", common)
    add("keygen", _cmd_keygen, f"print a new signing key for ${KEYS_ENV}", common).add_argument(
        "--kid", default="k1", help="key id (default: k1)"
    )
    cmd = add("list", _cmd_list, "list stored continuations, newest first", with_store)
    cmd.add_argument("--status", choices=[*STATUSES, "all"], default="all")
    cmd.add_argument("--run", help="only this run id")
    cmd.add_argument("--limit", type=int, default=100)
    add("show", _cmd_show, "show a continuation's requests", with_store).add_argument("id")
    approve = add("approve", _cmd_decide, "approve a request", decide)
    approve.add_argument(
        "--args",
        metavar="JSON",
        help="edit the call's args: a JSON object of the args to change, merged onto the "
        "original args (args not given keep their values; nested objects are replaced whole), "
        "then validated against the tool's schema",
    )
    deny = add("deny", _cmd_decide, "deny a request", decide)
    deny.add_argument("--message", default="The tool call was denied.", help="told to the model")
    respond = add("respond", _cmd_decide, "answer an input request", decide)
    respond.add_argument("--value", required=True, help="the answer, as JSON")
    add("audit", _cmd_audit, "print a run's audit trail", with_store).add_argument("run_id")
    from ._cli_ops import add_commands  # its handlers use this module's helpers

    add_commands(add, with_store)
    inbox = add("inbox", _cmd_inbox, "serve the approval inbox (extra: inbox)", with_store)
    from .inbox._serve import add_arguments

    add_arguments(inbox)
    return parser
