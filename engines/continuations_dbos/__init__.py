"""Run continuations on DBOS: resumes, expiries and starts as DBOS workflows (``[dbos]`` extra).

The built-in worker (``continuations worker``) claims ready continuations from the store. This
engine hands that job to `DBOS <https://docs.dbos.dev>`_, a durable-execution library on the
same Postgres: its queues, workflow-id idempotency, recovery and durable timers decide who
runs what, while the signed continuation stays in the store and the store's rules (fencing
token, ``seq`` check, decision compare-and-set) still guard every write.

Three DBOS workflows, each under a deterministic workflow id, each taking ids only
(``PORTABLE`` serialization: JSON in DBOS's tables, never a pickle):

- ``continuations.resume`` (id ``"{run_id}:{seq}"``) resumes the run once the suspension at
  ``seq`` is decided. Enqueuing it twice runs it once.
- ``continuations.expire`` (id ``"{run_id}:{seq}:expire"``) is enqueued with a delay when a
  suspension with a deadline is stored. When it fires it applies ``on_expired`` to the
  requests still undecided and does nothing if they were decided.
- ``continuations.start`` (id ``"{run_id}:start"``) runs a new run (:meth:`DBOSEngine.start`),
  so a run started in DBOS mode is recovered by DBOS too.

Nothing waits while a person decides: a suspension ends the workflow, and the decision
enqueues the next one (the store's dispatcher is :class:`DBOSDispatcher`, which enqueues
through a ``DBOSClient``, so the CLI and the inbox enqueue without running DBOS).

Each workflow's work is one DBOS step that claims the run's latest continuation in the store
under the executor id and resumes it through the adapter that suspended it. A step that was
running when its process died runs again when DBOS recovers the workflow: the claim is taken
back at once (the same owner restarted) and the run goes on from its last checkpoint, so at
most the step in flight repeats and a tool marked ``@idempotent(False)`` is never run twice
(G9, G14). DBOS recovers a workflow under the executor id that started it: give each worker
process a stable ``--executor-id`` (one per pod or instance) so a restarted worker recovers
its own workflows at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from dbos import DBOS, DBOSClient, DBOSConfig, EnqueueOptions, WorkflowSerializationFormat

from continuations_core import ConfigurationError, ContinuationError, Keyring, Store
from continuations_core.errors import (
    AlreadyClaimed,
    BackingOff,
    ContinuationFailed,
    ContinuationNotFound,
    MissingDecisions,
    StoreUnavailable,
)
from continuations_core.spi import Dispatcher, RetryPolicy, expire_due, new_run_id
from continuations_core.stores import StoredContinuation, open_store
from continuations_core.worker import ADAPTERS, Worker, framework_of

__all__ = [
    "APP_NAME",
    "APP_VERSION",
    "EXPIRE_WORKFLOW",
    "QUEUE",
    "RESUME_WORKFLOW",
    "START_WORKFLOW",
    "DBOSDispatcher",
    "DBOSEngine",
    "client_dispatcher",
    "expire_workflow_id",
    "resume_workflow_id",
    "serve",
    "start_workflow_id",
    "system_url",
]

log = logging.getLogger("continuations.dbos")

RESUME_WORKFLOW = "continuations.resume"
EXPIRE_WORKFLOW = "continuations.expire"
START_WORKFLOW = "continuations.start"
#: The DBOS queue every workflow of this engine is enqueued on.
QUEUE = "continuations"
#: The DBOS application the workers run and clients enqueue for.
APP_NAME = "agent-continuations"
#: The application version workers run and clients enqueue for. Workflows carry ids only and
#: their code is this package's, so every worker may run any of them.
APP_VERSION = "agent-continuations-1"
_PORTABLE = WorkflowSerializationFormat.PORTABLE
_UNFINISHED = ("ENQUEUED", "PENDING", "DELAYED")


def resume_workflow_id(run_id: str, seq: int) -> str:
    """The id of the workflow that resumes run ``run_id`` from its suspension at ``seq``."""
    return f"{run_id}:{seq}"


def expire_workflow_id(run_id: str, seq: int) -> str:
    """The id of the workflow that expires the suspension of ``run_id`` at ``seq``."""
    return f"{run_id}:{seq}:expire"


def start_workflow_id(run_id: str) -> str:
    """The id of the workflow that runs run ``run_id`` from its start."""
    return f"{run_id}:start"


def _event(message: str, level: int = logging.INFO, **fields: Any) -> None:
    log.log(level, "event=%s %s", message, " ".join(f"{k}={v}" for k, v in fields.items()))


# -- dispatch ---------------------------------------------------------------------------------


class DBOSDispatcher(Dispatcher):
    """Enqueues ``continuations.resume`` and ``continuations.expire`` through a ``DBOSClient``.

    Install it on a store with :func:`client_dispatcher` (or ``store.dispatcher = ...`` after
    :meth:`bind`). The client only writes to DBOS's system database, so any process can
    dispatch: the CLI, the inbox, a web app, or a DBOS worker itself. Enqueues are idempotent
    by workflow id, so a repeated dispatch resumes nothing twice.

    Args:
        system_database_url: DBOS's system database (a Postgres URL).
        schema: DBOS's schema in it (``dbos`` by default; it must match the workers').
        queue: The queue the workers serve.
    """

    def __init__(
        self, system_database_url: str, *, schema: str = "dbos", queue: str = QUEUE
    ) -> None:
        self.system_database_url = system_database_url
        self.schema = schema
        self.queue = queue
        self._store: Store | None = None
        self._client: DBOSClient | None = None

    def bind(self, store: Store) -> DBOSDispatcher:
        """Become ``store``'s dispatcher; it reads run ids from it. Returns self."""
        self._store = store
        store.dispatcher = self
        return self

    def _dbos(self) -> DBOSClient:
        if self._client is None:
            self._client = DBOSClient(
                system_database_url=self.system_database_url, dbos_system_schema=self.schema,
                application_name=APP_NAME, lazy=True,
            )  # fmt: skip
        return self._client

    async def _record(self, continuation_id: str) -> StoredContinuation:
        if self._store is None:
            raise ConfigurationError(
                "This DBOSDispatcher is not bound to a store; use client_dispatcher(store, ...) "
                "or dispatcher.bind(store)."
            )
        return await self._store.get(continuation_id)

    async def enqueue(
        self, workflow: str, workflow_id: str, *args: Any, delay_seconds: float | None = None
    ) -> None:
        """Enqueue ``workflow`` under ``workflow_id`` (a no-op if that id exists already)."""
        options: EnqueueOptions = {
            "workflow_name": workflow, "queue_name": self.queue, "workflow_id": workflow_id,
            "app_version": APP_VERSION, "serialization_type": _PORTABLE,
        }  # fmt: skip
        if delay_seconds is not None:
            options["delay_seconds"] = max(0.0, delay_seconds)
        await self._dbos().enqueue_async(options, *args)

    async def ready(self, continuation_id: str, seq: int) -> None:
        """Enqueue ``continuations.resume`` for the run at ``seq``.

        Under ``"{run_id}:{seq}"``; while a resume workflow of that suspension is unfinished,
        nothing more is enqueued. Once they all finished (the continuation failed, then an
        operator retried it), under ``"{run_id}:{seq}:{n}"``, ``n`` counting the finished ones,
        so concurrent dispatches of one retry still agree on one id.
        """
        record = await self._record(continuation_id)
        if record.status != "ready":
            return  # resumed already, or not runnable: the store is the truth
        run_id = record.run_id
        base = resume_workflow_id(run_id, seq)
        earlier = await self._dbos().list_workflows_async(
            workflow_id_prefix=base, name=RESUME_WORKFLOW, load_input=False, load_output=False
        )
        mine = [w for w in earlier if w.workflow_id == base or w.workflow_id.startswith(base + ":")]
        if any(w.status in _UNFINISHED for w in mine):
            return  # the running workflow resumes it
        workflow_id = f"{base}:{len(mine)}" if mine else base
        await self.enqueue(RESUME_WORKFLOW, workflow_id, run_id, continuation_id, seq)
        _event(
            "dispatched", run=run_id, continuation=continuation_id, seq=seq, workflow=workflow_id
        )

    async def expire_at(self, continuation_id: str, seq: int, when: datetime) -> None:
        """Enqueue ``continuations.expire`` to fire at ``when``."""
        run_id = (await self._record(continuation_id)).run_id
        delay = (when - datetime.now(UTC)).total_seconds()
        await self.enqueue(
            EXPIRE_WORKFLOW, expire_workflow_id(run_id, seq), run_id, continuation_id, seq,
            delay_seconds=delay,
        )  # fmt: skip
        _event("expiry_scheduled", run=run_id, continuation=continuation_id, at=when.isoformat())

    def close(self) -> None:
        """Close the client's connections."""
        if self._client is not None:
            self._client.destroy()
            self._client = None

    def __repr__(self) -> str:
        return f"DBOSDispatcher(queue={self.queue!r}, schema={self.schema!r})"


def client_dispatcher(
    store: Store, store_url: str, *, system_database_url: str | None = None, schema: str = "dbos"
) -> DBOSDispatcher:
    """Make ``store`` (opened from ``store_url``) dispatch to DBOS workers (``--engine dbos``).

    DBOS's system database is ``system_database_url``, by default the store's own Postgres.
    """
    return DBOSDispatcher(system_url(store_url, system_database_url), schema=schema).bind(store)


def system_url(store_url: str, system_database_url: str | None = None) -> str:
    """DBOS's system database: ``system_database_url``, or the store's Postgres database.

    The store's own ``?schema=`` (where its tables live) is not DBOS's: DBOS keeps its tables
    in its own schema (``schema=``, ``dbos`` by default).

    Raises:
        ConfigurationError: If neither names a Postgres database.
    """
    url = system_database_url or store_url
    scheme = url.split("://", 1)[0].lower()
    if scheme not in ("postgresql", "postgres"):
        raise ConfigurationError(
            "The DBOS engine keeps its tables in Postgres: pass --dbos-url postgresql://... "
            "(or set $CONTINUATIONS_DBOS_URL), or keep the store on Postgres."
        )
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "schema"]
    return urlunsplit(parts._replace(scheme="postgresql", query=urlencode(query)))


# -- the engine ---------------------------------------------------------------------------------

_ENGINE: DBOSEngine | None = None


def _engine() -> DBOSEngine:
    if _ENGINE is None:  # pragma: no cover - DBOS runs workflows only after serve() launched it
        raise ConfigurationError("No DBOSEngine is serving in this process.")
    return _ENGINE


@dataclass
class DBOSEngine:
    """A DBOS worker: serves the ``continuations`` queue with the given agents.

    Attributes:
        store_url: The store (its Postgres also holds DBOS's tables unless
            ``system_database_url`` says otherwise).
        agents: Agent definitions by name (as the built-in worker takes them).
        executor_id: This process's stable DBOS executor id, one per pod or instance: DBOS
            recovers a workflow under the executor id that ran it, and the store's claims are
            held under it, so a restarted worker takes its runs back at once.
        concurrency: How many workflows this worker runs at once (the queue's
            ``worker_concurrency``).
        keys: Verifies and signs continuations.
        lease_seconds: The store lease: the fencing token inside each step.
        on_expired: What an expired request becomes: ``"raise"`` fails the continuation,
            ``"deny"`` denies the call and resumes.
        allow_unsigned: Resume unsigned continuations.
        retry: Attempts and backoff for failed resumes (the same as the built-in worker's).
        system_database_url: DBOS's system database (default: the store's; see
            :func:`system_url`).
        schema: DBOS's schema there.
        polling_seconds: How often the queue is polled for new workflows (``--poll``); a
            worker starts at most ``concurrency`` workflows per poll.
        open_store: Opens the store from ``store_url`` (to wrap it, say for metrics).
        sweep_seconds: How often continuations the store holds ready are enqueued again, in
            case a decision's dispatch was lost (DBOS unreachable when it was made); also at
            launch. Their workflow ids make it a no-op for those enqueued already.
        sweep_limit: The most ready continuations one sweep looks at (oldest changes last).
    """

    store_url: str
    agents: Mapping[str, Any]
    executor_id: str
    concurrency: int = 1
    keys: Keyring | None = None
    lease_seconds: float = 30.0
    on_expired: Literal["raise", "deny"] = "raise"
    allow_unsigned: bool = False
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    system_database_url: str | None = None
    schema: str = "dbos"
    polling_seconds: float = 0.2
    open_store: Callable[[str], Store] = open_store
    sweep_seconds: float = 30.0
    sweep_limit: int = 1_000
    store: Store | None = field(default=None, init=False)
    dispatcher: DBOSDispatcher | None = field(default=None, init=False)
    _worker: Worker | None = field(default=None, init=False)
    _stop: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    #: Set once DBOS launched and the queue is served.
    started: asyncio.Event = field(default_factory=asyncio.Event, init=False)

    def stop(self) -> None:
        """Stop serving; running workflows are recovered by the next start of this executor."""
        self._stop.set()

    async def __aenter__(self) -> DBOSEngine:
        await self.launch()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.shutdown()

    async def launch(self) -> None:
        """Open the store, launch DBOS on this event loop and re-dispatch what is ready.

        DBOS recovers this executor's pending workflows at launch. Continuations the store
        holds ready (a decision whose dispatch failed, say) are enqueued again; their
        workflow ids make that a no-op for those already enqueued.
        """
        global _ENGINE
        if _ENGINE is not None:
            raise ConfigurationError("A DBOSEngine is serving in this process already.")
        sys_url = system_url(self.store_url, self.system_database_url)
        self.store = self.open_store(self.store_url)
        self.dispatcher = DBOSDispatcher(sys_url, schema=self.schema).bind(self.store)
        self._worker = Worker(
            self.store, dict(self.agents), keys=self.keys, owner=self.executor_id,
            lease_seconds=self.lease_seconds, allow_unsigned=self.allow_unsigned,
            on_expired=self.on_expired, retry=self.retry,
        )  # fmt: skip
        await self._worker.prepare()  # before DBOS can hand this executor any workflow
        config: DBOSConfig = {
            "name": APP_NAME, "system_database_url": sys_url,
            "executor_id": self.executor_id, "application_version": APP_VERSION,
            "dbos_system_schema": self.schema, "log_level": "WARNING",
        }  # fmt: skip
        _ENGINE = self
        try:
            DBOS(config=config)
            DBOS.launch()  # on this thread: queued workflows run on this event loop
            await DBOS.register_queue_async(
                QUEUE, worker_concurrency=self.concurrency,
                polling_interval_sec=self.polling_seconds,
            )  # fmt: skip
            await self._sweep()
        except BaseException:
            await self.shutdown()
            raise
        self.started.set()
        _event("engine_started", executor=self.executor_id, concurrency=self.concurrency)

    async def _redispatch(self) -> int:
        """Enqueue what the store holds ready (a dispatch lost to an outage, say).

        A no-op for those whose workflow is enqueued or running. Returns how many could not
        be dispatched now (the next sweep tries them again).
        """
        assert self.store is not None and self.dispatcher is not None
        missed = 0
        for record in await self.store.list(status="ready", limit=self.sweep_limit):
            try:
                await self.dispatcher.ready(record.id, record.continuation.seq)
            except ContinuationError:
                missed += 1
        return missed

    async def _sweep(self) -> None:
        try:
            missed = await self._redispatch()
        except ContinuationError as exc:
            missed = -1
            _event("sweep_failed", logging.WARNING, error=type(exc).__name__)
        if missed:
            _event("sweep_incomplete", logging.WARNING, missed=missed)

    async def shutdown(self) -> None:
        """Stop DBOS and close the store."""
        global _ENGINE
        with contextlib.suppress(Exception):
            DBOS.destroy(destroy_registry=False)
        if self.dispatcher is not None:
            self.dispatcher.close()
        if self.store is not None:
            await self.store.close()
        _ENGINE = None

    async def serve(self, *, idle_exit: float | None = None, install_signals: bool = True) -> None:
        """Launch, serve until stopped (SIGTERM/SIGINT, :meth:`stop`, or ``idle_exit`` seconds
        with no workflow of this queue enqueued or pending), then shut down."""
        loop = asyncio.get_running_loop()
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stop)
        async with self:
            idle_since = swept = loop.time()
            while not self._stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), timeout=0.5)
                if loop.time() - swept >= self.sweep_seconds:
                    await self._sweep()
                    swept = loop.time()
                if idle_exit is None:
                    continue
                if await self._busy():
                    idle_since = loop.time()
                elif loop.time() - idle_since >= idle_exit:
                    break
        _event("engine_stopped", executor=self.executor_id)

    async def _busy(self) -> bool:
        pending = await DBOS.list_workflows_async(
            status=["ENQUEUED", "PENDING", "DELAYED"], queue_name=QUEUE, load_input=False,
            load_output=False, limit=1,
        )  # fmt: skip
        return bool(pending)

    async def start(self, agent: str, prompt: str, *, run_id: str | None = None) -> str:
        """Enqueue a new run of ``agent`` on ``prompt`` as ``continuations.start``; its run id.

        The run goes on the queue like a resume; if its worker dies, DBOS recovers the
        workflow and the run goes on from its last checkpoint.
        """
        if agent not in self.agents:
            raise ConfigurationError(f"No agent named {agent!r} among {sorted(self.agents)}.")
        assert self.dispatcher is not None, "launch() the engine first"
        rid = run_id or new_run_id()
        await self.dispatcher.enqueue(START_WORKFLOW, start_workflow_id(rid), rid, agent, prompt)
        return rid

    # -- the work of each step ------------------------------------------------------------

    async def _note(self, run_id: str, cid: str, event: str, **detail: Any) -> None:
        assert self.store is not None
        wid = DBOS.workflow_id
        with contextlib.suppress(ContinuationError):
            await self.store.record(
                run_id, "engine", continuation_id=cid, actor=self.executor_id,
                detail={"event": event, "dbos.workflow_id": wid, **detail},
            )  # fmt: skip

    async def drive(self, run_id: str, seq: int) -> dict[str, Any]:
        """One step: claim the run's latest continuation if it can run now, and resume it.

        Returns what the workflow does next: ``{"next": "end", "state": ...}`` or
        ``{"next": "wait", "seconds": ...}`` (a backoff, or another process's live lease).
        """
        assert self.store is not None and self._worker is not None
        status = await self.store.status(run_id)
        state = status.state
        if state in ("completed", "failed", "unknown", "waiting"):
            return {"next": "end", "state": state, "seq": status.seq}
        now = datetime.now(UTC)
        if state == "retrying" and status.not_before is not None:
            return {"next": "wait", "seconds": (status.not_before - now).total_seconds()}
        if state == "running" and status.claimed_by != self.executor_id:
            left = (status.lease_until - now).total_seconds() if status.lease_until else 1.0
            return {"next": "wait", "seconds": max(left, 0.05)}
        assert status.continuation_id is not None
        cid = status.continuation_id
        try:
            claim = await self.store.claim(
                cid, owner=self.executor_id, lease_seconds=self.lease_seconds,
                max_attempts=self.retry.max_attempts,
            )  # fmt: skip
        except BackingOff:  # failed just now: the next status read says until when
            return {"next": "wait", "seconds": 0.5}
        except AlreadyClaimed:  # a live holder: look again when its lease could have ended
            return {"next": "wait", "seconds": max(self.lease_seconds / 3, 0.05)}
        except (ContinuationFailed, MissingDecisions, ContinuationNotFound) as exc:
            return {"next": "end", "state": type(exc).__name__}
        await self._note(run_id, cid, "claim", token=claim.token, attempt=claim.attempt)
        await self._worker.resume_claimed(claim)
        after = await self.store.status(run_id)
        event = "complete" if after.state == "completed" else "resume"
        await self._note(run_id, cid, event, state=after.state, seq=after.seq)
        return {"next": "again"}

    async def begin(self, run_id: str, agent_name: str, prompt: str) -> dict[str, Any]:
        """The step of ``continuations.start``: run a new run, or go on with it after a crash."""
        assert self.store is not None and self._worker is not None
        if (await self.store.status(run_id)).state != "unknown":
            return {"next": "again"}  # it ran before this step was recovered: drive it
        agent = self.agents.get(agent_name)
        if agent is None:  # enqueued by a process with other agent definitions
            raise ConfigurationError(
                f"No agent named {agent_name!r} among {sorted(self.agents)}; start runs of the "
                "agents the DBOS workers serve."
            )
        framework = framework_of(agent)
        if framework is None:
            raise ConfigurationError(f"Agent {agent_name!r} is of no supported framework.")
        adapter = _adapter_module(framework)
        await self._note(run_id, "", "start")
        try:
            await adapter.run(
                agent, prompt, keys=self.keys, run_id=run_id, store=self.store,
                owner=self.executor_id, lease_seconds=self.lease_seconds,
            )  # fmt: skip
        except Exception:
            if (await self.store.status(run_id)).state == "unknown":
                raise  # failed before its first checkpoint: the workflow's error says why
            return {"next": "again"}  # its attempt was settled: drive retries or ends it
        after = await self.store.status(run_id)
        if after.state == "completed":
            await self._note(run_id, after.continuation_id or "", "complete", state="completed")
        return {"next": "end", "state": after.state}

    async def expire(self, run_id: str, cid: str, seq: int) -> dict[str, Any]:
        """The step of ``continuations.expire``: apply ``on_expired`` to what is undecided."""
        assert self.store is not None
        done = await expire_due(self.store, cid, on_expired=self.on_expired, seq=seq)
        if done.outcome == "not_due" and done.next_at is not None:  # a timer that fired early
            return {"next": "wait", "seconds": (done.next_at - datetime.now(UTC)).total_seconds()}
        if done.outcome in ("denied", "failed"):
            await self._note(run_id, cid, "expire", outcome=done.outcome, requests=len(done.paths))
        return {"next": "end", "state": done.outcome}


def _adapter_module(framework: str) -> Any:
    return importlib.import_module(ADAPTERS[framework])


# -- the workflows --------------------------------------------------------------------------------


async def _loop(step: Callable[[], Any]) -> str:
    """Run ``step`` until it ends, sleeping durably where it asks to wait.

    A store that cannot be reached is waited out with backoff (the step looks again), so
    an outage never ends a workflow with its continuation left behind.
    """
    outage = 0
    while True:
        try:
            outcome: dict[str, Any] = await step()
            outage = 0
        except StoreUnavailable as exc:
            outage += 1
            delay = min(30.0, 0.5 * 2**outage)
            _event("store_error", logging.WARNING, retry_in=delay, error=type(exc).__name__)
            outcome = {"next": "wait", "seconds": delay}
        if outcome["next"] == "end":
            return str(outcome.get("state"))
        if outcome["next"] == "wait":
            await DBOS.sleep_async(max(float(outcome["seconds"]), 0.05))


@DBOS.step(name="continuations.drive")
async def _drive_step(run_id: str, seq: int) -> dict[str, Any]:
    return await _engine().drive(run_id, seq)


@DBOS.step(name="continuations.begin")
async def _begin_step(run_id: str, agent: str, prompt: str) -> dict[str, Any]:
    return await _engine().begin(run_id, agent, prompt)


@DBOS.step(name="continuations.expire_step")
async def _expire_step(run_id: str, continuation_id: str, seq: int) -> dict[str, Any]:
    return await _engine().expire(run_id, continuation_id, seq)


@DBOS.workflow(name=RESUME_WORKFLOW, serialization_type=_PORTABLE)
async def resume_workflow(run_id: str, continuation_id: str, seq: int) -> str:
    """Resume run ``run_id`` from its suspension at ``seq`` (``continuation_id``)."""
    return await _loop(lambda: _drive_step(run_id, seq))


@DBOS.workflow(name=EXPIRE_WORKFLOW, serialization_type=_PORTABLE)
async def expire_workflow(run_id: str, continuation_id: str, seq: int) -> str:
    """Apply ``on_expired`` to the still undecided requests of ``continuation_id``."""
    return await _loop(lambda: _expire_step(run_id, continuation_id, seq))


@DBOS.workflow(name=START_WORKFLOW, serialization_type=_PORTABLE)
async def start_workflow(run_id: str, agent: str, prompt: str) -> str:
    """Run a new run of ``agent`` on ``prompt``, then drive it as a resume would."""
    first: dict[str, Any] = await _begin_step(run_id, agent, prompt)
    if first["next"] == "end":
        return str(first.get("state"))
    return await _loop(lambda: _drive_step(run_id, 0))


# -- entry points for the CLI ----------------------------------------------------------------


async def serve(
    store_url: str,
    agents: Mapping[str, Any],
    *,
    executor_id: str,
    concurrency: int = 1,
    polling_seconds: float = 0.2,
    keys: Keyring | None = None,
    lease_seconds: float = 30.0,
    on_expired: Literal["raise", "deny"] = "raise",
    allow_unsigned: bool = False,
    retry: RetryPolicy | None = None,
    system_database_url: str | None = None,
    schema: str = "dbos",
    idle_exit: float | None = None,
) -> None:
    """``continuations worker --engine dbos``: serve until SIGTERM/SIGINT (or ``idle_exit``)."""
    engine = DBOSEngine(
        store_url, agents, executor_id, concurrency=concurrency, keys=keys,
        polling_seconds=polling_seconds,
        lease_seconds=lease_seconds, on_expired=on_expired, allow_unsigned=allow_unsigned,
        retry=retry or RetryPolicy(), system_database_url=system_database_url, schema=schema,
    )  # fmt: skip
    await engine.serve(idle_exit=idle_exit)
