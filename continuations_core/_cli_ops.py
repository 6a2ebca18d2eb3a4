"""The operator commands of the ``continuations`` CLI: ``worker``, ``status`` and ``retry``.

``continuations status RUN_ID`` shows where a run stands (and its output once it completed);
``continuations retry ID`` puts a failed continuation back to ready, audited with who retried
it; ``continuations worker`` resumes decided continuations until stopped, or once with
``--once``. ``list --status failed`` and ``show`` (in :mod:`.cli`) show failures and why.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
from collections.abc import Callable
from typing import Any

from ._attempts import DEFAULT_BACKOFF_SECONDS, RetryPolicy
from ._signing import Keyring
from .cli import DBOS_URL_ENV, KEYS_ENV, STORE_ENV, _emit, _open, _whoami
from .errors import ConfigurationError, StoreUnavailable
from .stores import (
    DEFAULT_MAX_ATTEMPTS,
    LastError,
    RunStatus,
    Store,
    StoredContinuation,
    open_store,
)

__all__ = ["add_commands", "failure_lines", "failure_view"]

Add = Callable[[str, Callable[[argparse.Namespace], None], str, argparse.ArgumentParser], Any]
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def add_commands(add: Add, with_store: argparse.ArgumentParser) -> None:
    """Register ``status``, ``retry`` and ``worker`` on the CLI's subcommands."""
    add("status", _cmd_status, "show where a run stands, and its output", with_store).add_argument(
        "run_id"
    )
    retry = add("retry", _cmd_retry, "put a failed continuation back to ready", with_store)
    retry.add_argument("id", help="continuation id (see `list --status failed`)")
    retry.add_argument("--by", help="who retries (default: your login name)")
    worker = add("worker", _cmd_worker, "resume decided and abandoned continuations", with_store)
    worker.add_argument("--agents", required=True, help="agent definitions, as module:attribute")
    worker.add_argument(
        "--owner", help="this worker's stable name, one per process (default: host:pid)"
    )
    worker.add_argument("--lease", type=float, default=30.0, help="claim lease in seconds")
    worker.add_argument("--concurrency", type=int, default=1, help="resumes at once")
    worker.add_argument("--poll", type=float, default=0.5, help="seconds between scans")
    worker.add_argument(
        "--idle-exit", type=float, default=None, help="exit after this many idle seconds"
    )
    worker.add_argument(
        "--once", action="store_true", help="drain what is ready now, then exit (for cron)"
    )
    worker.add_argument(
        "--max-attempts", type=int, default=DEFAULT_MAX_ATTEMPTS,
        help=f"attempts before a continuation fails (default: {DEFAULT_MAX_ATTEMPTS})",
    )  # fmt: skip
    worker.add_argument(
        "--backoff", type=float, default=DEFAULT_BACKOFF_SECONDS,
        help="seconds before the second attempt, doubling after each failure",
    )  # fmt: skip
    worker.add_argument(
        "--on-expired", choices=["raise", "deny"], default="raise",
        help="an expired approval fails the continuation (raise) or denies the call (deny)",
    )  # fmt: skip
    worker.add_argument(
        "--allow-unsigned", action="store_true", help="resume unsigned continuations too"
    )
    worker.add_argument(
        "--expiry-sweep", type=float, default=30.0, metavar="SECONDS",
        help="how often the built-in worker expires waiting continuations whose undecided "
        "requests passed their deadline (--on-expired applies); 0 leaves it to the next resume "
        "(default: 30). DBOS workers expire each at its deadline instead",
    )  # fmt: skip
    worker.add_argument(
        "--executor-id",
        help="with --engine dbos (required, or --owner): this process's stable DBOS executor "
        "id, one per pod or instance; a restart under it recovers its workflows",
    )
    worker.add_argument(
        "--connect-timeout", type=float, default=30.0,
        help="at start, exit 2 if the store stays unreachable this long (default: 30 seconds); "
        "once serving, the worker rides out outages",
    )  # fmt: skip


def failure_view(record: StoredContinuation) -> dict[str, Any]:
    """The attempt and failure fields of a record, for ``show`` and ``list``."""
    return {
        "attempts": record.attempts,
        "fence": record.fence,
        "not_before": record.not_before.isoformat() if record.not_before else None,
        "last_error": _error(record.last_error),
    }


def failure_lines(record: StoredContinuation) -> list[str]:
    """Lines for ``show`` saying why a continuation failed or waits to be retried."""
    lines = []
    if record.status == "failed":
        lines.append(
            f"  FAILED after {record.attempts} attempt(s). After fixing the cause: "
            f"continuations retry {record.id}"
        )
    elif record.status == "ready" and record.not_before is not None:
        lines.append(f"  retrying: the next attempt may start at {record.not_before.isoformat()}")
    if record.last_error is not None:
        error = record.last_error
        lines.append(f"  last error (attempt {error.attempt}, {error.at:%Y-%m-%d %H:%M:%S %Z}):")
        lines.append(f"    {error.type}: {error.message}")
    return lines


def _error(error: LastError | None) -> dict[str, Any] | None:
    return error.model_dump(mode="json") if error is not None else None


def _cmd_status(args: argparse.Namespace) -> None:
    with _open(args) as store:
        status = store.status(args.run_id)
    _emit(args, status.model_dump(mode="json"), list(_status_lines(status)))


def _status_lines(status: RunStatus) -> list[str]:
    lines = [f"Run {status.run_id}: {status.state}"]
    if status.continuation_id is not None:
        lines.append(
            f"  continuation {status.continuation_id} (seq {status.seq}), "
            f"attempts {status.attempts}, last claimed by {status.claimed_by or '-'}"
        )
    if status.state == "waiting":
        lines.append(f"  {status.pending} request(s) wait for a decision")
    if status.lease_until is not None:
        lines.append(f"  lease until {status.lease_until.isoformat()}")
    if status.not_before is not None:
        lines.append(f"  next attempt from {status.not_before.isoformat()}")
    if status.last_error is not None:
        lines.append(f"  last error: {status.last_error}")
    if status.state == "failed":
        lines.append(f"  retry it with: continuations retry {status.continuation_id}")
    if status.state == "completed":
        lines.append(f"  output: {json.dumps(status.output, ensure_ascii=False)}")
    return lines


def _cmd_retry(args: argparse.Namespace) -> None:
    by = args.by if args.by is not None else _whoami()
    with _open(args) as store:
        before = store.get(args.id)
        record = store.retry(args.id, by=by)
    view = {"id": record.id, "status": record.status, "version": record.version, "by": by}
    view["previous_error"] = _error(before.last_error)
    why = f" (it failed with {before.last_error})" if before.last_error is not None else ""
    _emit(args, view, [f"Continuation {record.id} is ready again{why}; a worker will resume it."])


def _cmd_worker(args: argparse.Namespace) -> None:
    from ._durable import default_owner
    from .worker import Worker, load_agents, load_engine

    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    url = args.store or os.environ.get(STORE_ENV)
    if not url:
        raise ConfigurationError(f"No store given: pass --store URL or set ${STORE_ENV}.")
    if os.environ.get(KEYS_ENV):
        keys: Keyring | None = Keyring.from_env(KEYS_ENV)
    elif args.allow_unsigned:
        keys = None
    else:
        raise ConfigurationError(
            f"Set ${KEYS_ENV} to the keys the runs were signed with (or pass --allow-unsigned)."
        )
    agents = load_agents(args.agents)
    policy = RetryPolicy(max_attempts=args.max_attempts, backoff=args.backoff)
    if args.engine != "builtin":
        if args.once:
            raise ConfigurationError("--once is for the built-in engine; use --idle-exit.")
        executor = args.executor_id or args.owner
        if not executor:
            raise ConfigurationError(
                f"--engine {args.engine} needs a stable --executor-id (one per pod or instance, "
                "the same after a restart): a worker recovers the workflows of its own id only, "
                "so a new id on every start would leave a dead worker's runs pending."
            )
        engine = load_engine(args.engine)

        async def reach() -> None:
            async with open_store(url) as store:
                await _reach(store, timeout=args.connect_timeout)

        asyncio.run(reach())
        asyncio.run(
            engine.serve(
                url, agents, executor_id=executor,
                concurrency=args.concurrency, polling_seconds=args.poll, keys=keys,
                lease_seconds=args.lease,
                on_expired=args.on_expired, allow_unsigned=args.allow_unsigned, retry=policy,
                system_database_url=args.dbos_url or os.environ.get(DBOS_URL_ENV),
                schema=args.dbos_schema,
                idle_exit=args.idle_exit,
            )
        )  # fmt: skip
        print(f"{args.engine} worker stopped")
        return

    async def work() -> int:
        async with open_store(url) as store:
            await _reach(store, timeout=args.connect_timeout)
            worker = Worker(
                store,
                agents,
                keys=keys,
                owner=args.owner or default_owner(),
                lease_seconds=args.lease,
                poll_seconds=args.poll,
                concurrency=args.concurrency,
                allow_unsigned=args.allow_unsigned,
                on_expired=args.on_expired,
                retry=policy,
                expiry_sweep_seconds=args.expiry_sweep or None,
            )
            return await worker.run(idle_exit=args.idle_exit, once=args.once)

    resumed = asyncio.run(work())
    print(f"worker stopped after resuming {resumed} continuation(s)")


async def _reach(store: Store, *, timeout: float) -> None:
    """Wait until ``store`` answers, for up to ``timeout`` seconds.

    A worker that cannot reach its store at start is misconfigured more often than not (a
    wrong host, a closed port), so it exits with the store's error rather than retrying for
    ever; an outage once it serves is ridden out by the worker itself.

    Raises:
        StoreUnavailable: If the store still does not answer after ``timeout`` seconds.
    """
    loop = asyncio.get_running_loop()
    deadline, delay = loop.time() + max(timeout, 0.0), 0.25
    while True:
        try:
            await store.list(limit=1)
            return
        except StoreUnavailable:
            if loop.time() + delay > deadline:
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
