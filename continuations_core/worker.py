"""The worker: claims decided (or abandoned) continuations and resumes them.

``python -m continuations_core worker --store URL --agents module:attr`` runs one. Any number of
workers on any number of machines may share a store: each continuation is claimed with a
compare-and-set, so it is resumed once; a worker that dies loses its lease and another takes the
run over from its last checkpoint. On SIGTERM or SIGINT a worker stops claiming, cancels what it
is running, releases its claims and exits 0. With ``--once`` it drains what is ready and exits.

``--agents`` names the agent definitions: an agent, a list of agents, a dict of name to agent,
or a callable returning one of those. Continuations are matched to agents by the root frame's
agent name, and resumed by the adapter named by the root frame's framework.

A worker keeps serving whatever its continuations do (G14). A resume that fails is settled
(:mod:`._attempts`): retried after a backoff, or ``failed`` at once for a permanent error (a
bad signature, an unknown agent or one of another framework, drift, an expired approval, an
approved call that raised), and the worker moves on. A transient store error is retried with
backoff. Every claim, resume, suspension, completion, failure and retry is logged as one line
on the ``continuations.*`` loggers.

Give each worker process its own stable ``--owner`` (one per pod or service instance): a worker
restarted under the same name takes its predecessor's claims back at once instead of waiting
for their leases.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import signal
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from ._attempts import (
    RETRY_POLICY,
    RetryPolicy,
    is_permanent,
    log_event,
    settle,
    with_retries,
)
from ._durable import default_owner
from ._expiry import expire_due
from ._resume import CLAIMED_RECORD
from ._schema import Continuation, build_models
from ._signing import Keyring
from ._tracing import telemetry_ready
from .errors import (
    AlreadyClaimed,
    ConfigurationError,
    ContinuationError,
    ContinuationFailed,
    SchemaError,
    SignatureError,
)
from .stores import Claim, Store, StoredContinuation
from .stores._records import build_records

__all__ = [
    "ADAPTERS",
    "ENGINES",
    "FRAMEWORK_PACKAGES",
    "Worker",
    "framework_of",
    "load_agents",
    "load_engine",
    "prepare_agents",
]

log = logging.getLogger("continuations.worker")

#: Framework name (as written in frames) to the adapter module that resumes it.
ADAPTERS: dict[str, str] = {
    "pydantic-ai": "continuations_pydantic_ai",
    "strands": "continuations_strands",
}
#: Framework name to the top-level package its agent classes come from.
FRAMEWORK_PACKAGES: dict[str, str] = {"pydantic-ai": "pydantic_ai", "strands": "strands"}
#: Engine name (``worker --engine NAME``) to the module that implements it. The module offers
#: ``serve(...)`` (a worker process) and ``client_dispatcher(store, ...)`` (for the CLI).
ENGINES: dict[str, str] = {"dbos": "continuations_dbos"}
#: The most waiting continuations one expiry sweep looks at.
EXPIRY_SWEEP_LIMIT = 1_000
#: A worker that cannot reach its store waits this long at most before trying again.
STORE_BACKOFF_MAX_SECONDS = 30.0


def framework_of(agent: object) -> str | None:
    """The framework (a key of :data:`FRAMEWORK_PACKAGES`) whose class ``agent`` is, if any."""
    packages = {c.__module__.split(".")[0] for c in type(agent).__mro__}
    for framework, package in FRAMEWORK_PACKAGES.items():
        if package in packages:
            return framework
    return None


async def prepare_agents(agents: Mapping[str, Any]) -> dict[str, Exception]:
    """Build now what the frameworks and this package build on first use; return the agents
    whose adapter failed to, with the error.

    A framework builds some things lazily: Pydantic AI its message validator, for one, which
    takes tens of milliseconds. Built before a worker claims anything, the first continuation
    it claims does not hold its lease while they are built, and its resume costs what the
    next ones do. Each agent's adapter does its part (its ``prepare(agent)``, where it has
    one); the package builds its own models and telemetry instruments. Nothing of an agent
    runs: no model is called and nothing is written.
    """
    telemetry_ready()
    build_models()
    build_records()
    failed: dict[str, Exception] = {}
    for name, agent in agents.items():
        framework = framework_of(agent)
        if framework is None:
            continue  # resuming it fails, with a message that says why
        try:
            prepare = getattr(_adapter(framework), "prepare", None)
            if prepare is not None:
                await prepare(agent)
        except Exception as exc:
            failed[name] = exc
    return failed


def load_agents(spec: str) -> dict[str, Any]:
    """Import ``module:attr`` and return its agents by name.

    Raises:
        ConfigurationError: If the path cannot be imported or holds no agents.
    """
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigurationError(
            f"--agents must look like 'package.module:attribute', not {spec!r}."
        )
    try:
        target: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(f"Cannot load agents from {spec!r}: {exc}") from exc
    if callable(target) and not hasattr(target, "name"):
        target = target()
    if isinstance(target, Mapping):
        return {str(k): v for k, v in target.items()}
    agents = list(target) if isinstance(target, list | tuple) else [target]
    named = {str(getattr(a, "name", None) or "agent"): a for a in agents}
    if not named:
        raise ConfigurationError(f"{spec!r} holds no agents.")
    return named


def _adapter(framework: str) -> Any:
    module = ADAPTERS.get(framework)
    if module is None:
        raise ConfigurationError(f"No adapter is registered for framework {framework!r}.")
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        extra = "pydantic-ai" if framework == "pydantic-ai" else framework
        raise ConfigurationError(
            f'The {framework} adapter is not installed: pip install "agent-continuations[{extra}]"'
        ) from exc


def load_engine(name: str) -> Any:
    """Import the engine module named ``name`` (see :data:`ENGINES`).

    Raises:
        ConfigurationError: If no such engine exists, or its extra is not installed.
    """
    module = ENGINES.get(name)
    if module is None:
        raise ConfigurationError(
            f"No engine named {name!r}; choose one of {sorted(ENGINES)} or 'builtin'."
        )
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigurationError(
            f'The {name} engine is not installed: pip install "agent-continuations[{name}]"'
        ) from exc


@dataclass
class Worker:
    """Resume claimable continuations from ``store`` with ``agents`` until stopped.

    Attributes:
        store: The shared store.
        agents: Agent definitions by name.
        keys: Verifies and signs continuations.
        owner: This worker's name in claims and the audit trail; give each process its own
            stable one (one per pod or service instance) so a restart takes its claims back.
        lease_seconds: Lease on claims; a dead worker's work is taken over after it.
        poll_seconds: How long to wait for new work between scans.
        concurrency: How many continuations this worker resumes at once.
        allow_unsigned: Resume unsigned continuations (passed on to the adapter).
        on_expired: ``"raise"`` fails a continuation whose approval expired; ``"deny"`` denies
            the expired call and resumes.
        retry: Attempts and backoff for failed resumes.
        expiry_sweep_seconds: How often waiting continuations are checked for requests past
            their deadline, which then expire (``on_expired``: denied, so the run resumes, or
            the continuation fails); None or 0 leaves expiry to the next resume.
        resumed: How many resumes finished (completed or suspended again) so far.
        failed: How many attempts failed so far.
    """

    store: Store
    agents: dict[str, Any]
    keys: Keyring | None = None
    owner: str = field(default_factory=default_owner)
    lease_seconds: float = 30.0
    poll_seconds: float = 0.5
    concurrency: int = 1
    allow_unsigned: bool = False
    on_expired: Literal["raise", "deny"] = "raise"
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    expiry_sweep_seconds: float | None = 30.0
    resumed: int = 0
    failed: int = 0
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _prepared: bool = field(default=False, repr=False)

    def stop(self) -> None:
        """Stop claiming; running resumes are cancelled and their claims released."""
        self._stop.set()

    async def run(
        self, *, install_signals: bool = True, idle_exit: float | None = None, once: bool = False
    ) -> int:
        """Work until stopped; return how many continuations were resumed.

        Args:
            install_signals: Stop on SIGTERM and SIGINT.
            idle_exit: Also stop after this many seconds without work.
            once: Drain what is claimable now, finish it, and stop (for cron-style use).
        """
        loop = asyncio.get_running_loop()
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stop)
        await self.prepare()
        slots = asyncio.Semaphore(self.concurrency)
        running: set[asyncio.Task[None]] = set()
        idle_since = loop.time()
        store_errors = 0
        log_event(log, "worker_started", owner=self.owner, concurrency=self.concurrency)
        swept: float | None = None
        try:
            while not self._stop.is_set():
                sweep = self.expiry_sweep_seconds
                if sweep and (swept is None or loop.time() - swept >= sweep):
                    swept = loop.time()
                    await self._expire_due()
                try:
                    started = await self._claim_some(slots, running)
                    store_errors = 0
                except ContinuationError as exc:  # a store outage, or a row it cannot parse
                    store_errors += 1
                    delay = min(STORE_BACKOFF_MAX_SECONDS, self.poll_seconds * 2**store_errors)
                    log_event(
                        log, "store_error", logging.WARNING, owner=self.owner,
                        during="claiming", retry_in=delay, error=exc,
                    )  # fmt: skip
                    await self._sleep(delay)
                    continue
                if started or running:
                    idle_since = loop.time()
                elif once or (idle_exit is not None and loop.time() - idle_since >= idle_exit):
                    break
                if not started:
                    busy = bool(running)
                    await self._wait(running, full=slots.locked())
                    if busy:  # a resume ran until now: idle time starts when it ends
                        idle_since = loop.time()
        finally:
            for task in running:
                task.cancel()
            for task in list(running):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            log_event(
                log, "worker_stopped", owner=self.owner, resumed=self.resumed, failed=self.failed
            )
        return self.resumed

    async def prepare(self) -> None:
        """Build, before any claim, what the frameworks build on an agent's first run.

        See :func:`prepare_agents`. :meth:`run` calls it before its first claim; an engine
        that resumes through :meth:`resume_claimed` calls it before it takes work. Calling it
        again does nothing. A failure is logged and the worker goes on: the first resume then
        builds the same things itself.
        """
        if self._prepared:
            return
        self._prepared = True
        for name, exc in (await prepare_agents(self.agents)).items():
            log_event(
                log, "prepare_failed", logging.WARNING, owner=self.owner, agent=name, error=exc
            )

    async def _expire_due(self) -> None:
        """Expire waiting continuations whose undecided requests passed their deadline (G8)."""
        try:
            waiting = await self.store.list(status="waiting", limit=EXPIRY_SWEEP_LIMIT)
        except ContinuationError as exc:
            log_event(log, "store_error", logging.WARNING, owner=self.owner, during="expiry",
                      error=exc)  # fmt: skip
            return
        now = datetime.now(UTC)
        for record in waiting:
            if not any(
                call.expires_at is not None and call.expires_at <= now
                for path, _, call in record.continuation.leaves()
                if record.continuation.decision_for(path) is None
            ):
                continue
            try:
                done = await expire_due(
                    self.store, record.id, on_expired=self.on_expired, seq=record.continuation.seq
                )
            except ContinuationError as exc:
                log_event(log, "store_error", logging.WARNING, owner=self.owner,
                          during="expiry", error=exc)  # fmt: skip
                continue
            if done.outcome in ("denied", "failed"):
                log_event(
                    log, "expired", continuation=record.id, run=record.run_id, owner=self.owner,
                    outcome=done.outcome, requests=len(done.paths),
                )  # fmt: skip

    async def _claim_some(self, slots: asyncio.Semaphore, running: set[asyncio.Task[None]]) -> bool:
        """Claim what is claimable now while a slot is free, one task each; True if any started."""
        started = False
        while not self._stop.is_set() and not slots.locked():
            await slots.acquire()
            try:
                found = await self._claim_next()
            except BaseException:
                slots.release()
                raise
            if found is None:
                slots.release()
                return started
            started = True
            task = asyncio.create_task(self._resume(*found))
            running.add(task)

            def done(finished: asyncio.Task[None]) -> None:
                running.discard(finished)
                slots.release()

            task.add_done_callback(done)
        return started

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)

    async def _wait(self, running: set[asyncio.Task[None]], *, full: bool) -> None:
        """Wait for new work, a free slot, or :meth:`stop`.

        With every slot taken, until a running resume finishes; otherwise until the store
        notifies new work (Postgres ``LISTEN``, Redis pub/sub) or the poll interval passes.
        """
        stopper = asyncio.create_task(self._stop.wait())
        waiters: list[asyncio.Task[Any]]
        if full and running:
            await asyncio.wait({*running, stopper}, return_when=asyncio.FIRST_COMPLETED)
            waiters = [stopper]
        else:
            waiter = asyncio.create_task(self.store.wait_ready(self.poll_seconds))
            await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            waiters = [waiter, stopper]
        for task in waiters:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _claim_next(self) -> tuple[Claim, StoredContinuation] | None:
        """Claim the next claimable continuation and read it; None if none is claimable.

        One atomic store step claims it (with its read, on Postgres and SQLite). Also takes
        back claims held under this owner's name by a process that is gone (a restarted
        worker). One that cannot be claimed, or read, is settled here and the next one tried.
        """
        while True:
            try:
                found = await self.store.claim_next_record(
                    self.owner, lease_seconds=self.lease_seconds,
                    max_attempts=self.retry.max_attempts,
                )  # fmt: skip
            except ContinuationFailed as exc:
                # Its last allowed attempt died with its process: it is stored failed now.
                self.failed += 1
                log_event(
                    log, "failed", logging.ERROR, continuation=exc.continuation_id,
                    owner=self.owner, error=exc,
                )  # fmt: skip
                continue
            except (SchemaError, SignatureError) as exc:  # a claimed record nothing can run
                if exc.continuation_id is None:
                    raise
                await self._fail_unreadable(exc.continuation_id, exc)
                continue
            return found

    async def _fail_unreadable(self, cid: str, error: SchemaError | SignatureError) -> None:
        """Fail a record written by a newer version, edited, or whose checkpoint chain is
        broken, without parsing it; go on."""
        self.failed += 1
        failed = await with_retries(
            lambda: self.store.fail_unreadable(cid, error, actor=self.owner),
            what="failing an unreadable continuation",
        )
        if failed:
            log_event(
                log, "failed", logging.ERROR, continuation=cid, owner=self.owner,
                permanent=True, error=error,
            )  # fmt: skip

    async def resume_claimed(self, claim: Claim) -> None:
        """Resume the continuation of ``claim``, which an engine claimed under :attr:`owner`.

        The same path as the worker's own claims: the adapter named by the root frame
        resumes it with this worker's agents, keys and policies, and a failure is settled
        (retried after a backoff, or ``failed``). It raises only when cancelled; the store
        tells how it ended (:meth:`Store.status`).
        """
        await self._resume(claim)

    async def _resume(self, claim: Claim, record: StoredContinuation | None = None) -> None:
        """Resume the continuation ``claim`` holds; ``record`` is it as read with the claim."""
        token = RETRY_POLICY.set(self.retry)
        try:
            try:
                if record is None:
                    record = await with_retries(lambda: self.store.get(claim.id), what="loading")
            except SchemaError as exc:  # claimed without parsing it
                await self._fail_unreadable(claim.id, exc)
                return
            cont = record.continuation
            CLAIMED_RECORD.set(record)  # resuming under this claim needs no second read
            log_event(
                log, "claimed", continuation=claim.id, run=cont.run_id, owner=self.owner,
                token=claim.token, attempt=claim.attempt,
            )  # fmt: skip
            await self._dispatch(cont, claim)
            self.resumed += 1
        except asyncio.CancelledError:
            with contextlib.suppress(ContinuationError):
                await asyncio.shield(self.store.release(claim))
            raise
        except AlreadyClaimed:
            return  # the run was taken over (its lease expired): the new holder goes on
        except Exception as exc:
            self.failed += 1
            log.debug("resume of %s raised", claim.id, exc_info=True)
            # A failure inside the run was settled by the run already (this is then a no-op);
            # one before it started (signature, agent, expiry...) is settled here.
            await settle(self.store, claim, exc, policy=self.retry, permanent=is_permanent(exc))
        finally:
            RETRY_POLICY.reset(token)

    async def _dispatch(self, cont: Continuation, claim: Claim) -> None:
        framework = cont.root.framework
        adapter = _adapter(framework)
        agent = self.agents.get(cont.root.agent)
        if agent is None:
            raise ConfigurationError(
                f"No agent named {cont.root.agent!r} among {sorted(self.agents)}; "
                "pass the same agent definitions that started the run.",
                continuation_id=cont.id,
            )
        if framework_of(agent) != framework:
            raise ConfigurationError(
                f"The agent named {cont.root.agent!r} is a {type(agent).__module__}."
                f"{type(agent).__qualname__}, but the run was suspended by a {framework} agent. "
                "Pass the agent definitions of the framework that started the run.",
                continuation_id=cont.id,
            )
        await adapter.resume(
            agent,
            cont,
            keys=self.keys,
            allow_unsigned=self.allow_unsigned,
            on_expired=self.on_expired,
            store=self.store,
            claim=claim,
            owner=self.owner,
            lease_seconds=self.lease_seconds,
        )
