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
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from . import __version__
from ._schema import Approve, Continuation, DecisionRecord, Deny, Request, json_schema
from ._signing import Keyring
from .errors import ConfigurationError, ContinuationError, InvalidDecision, UnknownPath
from .stores import STATUSES, SyncStore, open_store

__all__ = ["main"]

STORE_ENV = "CONTINUATIONS_STORE"
KEYS_ENV = "CONTINUATIONS_SIGNING_KEYS"
Handler = Callable[[argparse.Namespace], None]


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
        print(f"error: {exc}", file=sys.stderr)
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
    _emit(args, {"kid": args.kid, "keys": spec, "env": KEYS_ENV}, spec)


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
    _emit(args, rows, "\n".join(lines) if rows else "No continuations.")


def _cmd_show(args: argparse.Namespace) -> None:
    from ._cli_ops import failure_lines, failure_view  # it imports this module's helpers

    with _open(args) as store:
        stored = store.get(args.id)
    cont = stored.continuation
    signature = _signature(cont)
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
    _emit(args, view, "\n".join(lines))


def _cmd_decide(args: argparse.Namespace) -> None:
    with _open(args) as store:
        stored = store.get(args.id)
        cont = stored.continuation
        number, path = _resolve(cont, args.request)
        by = args.by if args.by is not None else _whoami()
        # The core builds the record, so kind, schema and binding are checked before writing.
        if args.command == "approve":
            edited = _json_arg("--args", args.args) if args.args is not None else None
            if edited is not None and not isinstance(edited, dict):
                raise InvalidDecision("--args must be a JSON object.", continuation_id=cont.id)
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
        result = store.decide(
            stored.id, record, expected_version=stored.version, replace=args.replace
        )
    decision = record.model_dump(mode="json")
    view = {
        "id": result.id,
        "status": result.status,
        "version": result.version,
        "undecided": len(result.continuation.undecided),
        "decision": decision,
    }
    text = (
        f"Recorded for [{number}] {' > '.join(path)}: {_describe(decision)}\n"
        f"Continuation {result.id} is now {result.status} "
        f"({view['undecided']} undecided, version {result.version})."
    )
    _emit(args, view, text)


def _cmd_audit(args: argparse.Namespace) -> None:
    with _open(args) as store:
        events = store.audit(args.run_id)
    rows = [e.model_dump(mode="json") for e in events]
    lines = [
        f"{e.at:%Y-%m-%d %H:%M:%S}  {e.kind:<9}  {e.actor or '-':<12}  {e.continuation_id}  "
        f"{json.dumps(e.detail, ensure_ascii=False, separators=(',', ':'))}"
        for e in events
    ]
    _emit(args, rows, "\n".join(lines) if lines else f"No audit events for run {args.run_id}.")


# -- helpers -----------------------------------------------------------------------------------


def _emit(args: argparse.Namespace, data: Any, text: str) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False) if args.json else text)


def _open(args: argparse.Namespace) -> SyncStore:
    url = args.store or os.environ.get(STORE_ENV)
    if not url:
        raise ConfigurationError(f"No store given: pass --store URL or set ${STORE_ENV}.")
    return SyncStore(open_store(url))


def _whoami() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name in some containers
        return None


def _json_arg(flag: str, text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise InvalidDecision(
            f"{flag} is not valid JSON ({exc}). Quote strings as JSON, e.g. {flag} '\"text\"'."
        ) from exc


def _resolve(cont: Continuation, text: str) -> tuple[int, tuple[str, ...]]:
    """Turn a request number (1-based, as ``show`` numbers them) or a JSON path into a path."""
    requests = cont.requests
    if text.strip().startswith("["):
        path = _json_arg("REQUEST", text)
        if not isinstance(path, list) or not all(isinstance(p, str) for p in path):
            raise UnknownPath(
                "A REQUEST path must be a JSON array of strings.", continuation_id=cont.id
            )
        for number, request in enumerate(requests, 1):
            if request.path == tuple(path):
                return number, request.path
        cont.pending_call(tuple(path))  # raises UnknownPath listing the pending paths
    if text.strip().isdigit() and 1 <= int(text) <= len(requests):
        return int(text), requests[int(text) - 1].path
    raise UnknownPath(
        f"There is no request {text!r}: this continuation has {len(requests)} request(s), "
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


def _signature(cont: Continuation) -> str:
    if cont.signature is None:
        return "none (unsigned)"
    spec = os.environ.get(KEYS_ENV)
    if not spec:
        return f"key {cont.signature.kid}, not verified (set ${KEYS_ENV} to verify)"
    cont.verify(Keyring.parse(spec))  # a tampered document is an error, not a display detail
    return f"verified with key {cont.signature.kid}"


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
    approve.add_argument("--args", help="edited args as a JSON object")
    deny = add("deny", _cmd_decide, "deny a request", decide)
    deny.add_argument("--message", default="The tool call was denied.", help="told to the model")
    respond = add("respond", _cmd_decide, "answer an input request", decide)
    respond.add_argument("--value", required=True, help="the answer, as JSON")
    add("audit", _cmd_audit, "print a run's audit trail", with_store).add_argument("run_id")
    from ._cli_ops import add_commands  # its handlers use this module's helpers

    add_commands(add, with_store)
    return parser
