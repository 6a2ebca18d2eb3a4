"""The engine conformance suite: the built-in worker and the DBOS engine keep the same promises.

Each test runs on the built-in engine (SQLite, Postgres) and on DBOS (Postgres):

- a continuation dispatched twice is resumed once;
- expiry fires once, and never after a decision (DBOS at the deadline with a durable timer,
  the built-in worker with its sweep of waiting continuations);
- a worker SIGKILLed mid-run is recovered by its restart (same owner / executor id): at most the
  step in flight runs again, and a non-idempotent tool never runs twice.

The HR demo runs on DBOS too: the CLI's approve enqueues through ``DBOSClient`` and a DBOS
worker resumes the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import engine_agents
import fleet_agents
import pytest
from _backends import POSTGRES_URL, namespace_url

from continuations_core import Keyring, Suspended
from continuations_core.errors import ContinuationFailed
from continuations_core.stores import Store, open_store
from continuations_core.testing.spec import Ledger
from continuations_core.worker import Worker

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
KEYS = Keyring.generate("engines")


@dataclass
class Engine:
    """One engine on one store: how to dispatch to it, serve it in-process, or run its CLI."""

    name: str  # "builtin" or "dbos"
    url: str
    dbos_schema: str | None = None

    def bind(self, store: Store) -> Store:
        """Make ``store`` dispatch to this engine (DBOS: through a ``DBOSClient``)."""
        if self.name == "dbos":
            from continuations_dbos import client_dispatcher

            client_dispatcher(store, self.url, schema=self.dbos_schema or "dbos")
        return store

    @contextlib.asynccontextmanager
    async def serving(
        self, agents: dict[str, Any], *, idle: float = 2.0, on_expired: str = "raise"
    ) -> AsyncIterator[None]:
        """Serve in this process while the block runs; on leaving, until idle for ``idle`` s."""
        if self.name == "dbos":
            from continuations_dbos import DBOSEngine

            engine = DBOSEngine(
                self.url, agents, "exec-1", keys=KEYS, schema=self.dbos_schema or "dbos",
                lease_seconds=5, on_expired=on_expired,  # type: ignore[arg-type]
            )  # fmt: skip
            task = asyncio.create_task(engine.serve(idle_exit=idle, install_signals=False))
            waiter = asyncio.create_task(engine.started.wait())
            await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                task.result()  # launch failed: raise its error
            yield
            await asyncio.wait_for(task, timeout=60)
            return
        async with open_store(self.url) as store:
            worker = Worker(
                store, agents, keys=KEYS, owner="w-1", poll_seconds=0.05, lease_seconds=5,
                on_expired=on_expired,  # type: ignore[arg-type]
                expiry_sweep_seconds=0.5,
            )  # fmt: skip
            task = asyncio.create_task(worker.run(install_signals=False, idle_exit=idle))
            yield
            await asyncio.wait_for(task, 60)
            # It may have gone idle before the block stored its work: drain what is left.
            await asyncio.wait_for(worker.run(install_signals=False, once=True), 60)

    def command(self, agents: str, name: str, *, idle: float) -> list[str]:
        """The worker command line (``name`` is the owner / executor id)."""
        base = [sys.executable, "-m", "continuations_core", "worker", "--store", self.url,
                "--agents", agents, "--lease", "2", "--idle-exit", str(idle)]  # fmt: skip
        if self.name == "dbos":
            return [*base, "--engine", "dbos", "--executor-id", name,
                    "--dbos-schema", self.dbos_schema or "dbos"]  # fmt: skip
        return [*base, "--owner", name, "--poll", "0.05"]


def _drop_schema(schema: str) -> None:
    import psycopg

    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


ENGINES = {
    "builtin-sqlite": ("builtin", "sqlite"),
    "builtin-postgres": ("builtin", "postgres"),
    "dbos-postgres": ("dbos", "postgres"),
}


def _engine(key: str, tmp_path: Path) -> Iterator[Engine]:
    name, backend = ENGINES[key]
    for url in namespace_url(backend, tmp_path):
        if name != "dbos":
            yield Engine(name, url)
            continue
        schema = f"dbos_{uuid.uuid4().hex[:12]}"
        try:
            yield Engine(name, url, schema)
        finally:
            _drop_schema(schema)


@pytest.fixture(
    params=[
        pytest.param("builtin-sqlite"),
        pytest.param("builtin-postgres", marks=pytest.mark.postgres),
        pytest.param("dbos-postgres", marks=pytest.mark.postgres),
    ]
)
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """Each engine on each store it runs on."""
    yield from _engine(request.param, tmp_path)


@pytest.fixture(params=[pytest.param("dbos-postgres", marks=pytest.mark.postgres)])
def dbos_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """The DBOS engine only (for what only an engine with durable timers does)."""
    yield from _engine(request.param, tmp_path)


async def _workflows(engine: Engine, prefix: str) -> list[tuple[str, str, str]]:
    """DBOS's workflows whose id starts with ``prefix``: (id, name, status)."""
    import psycopg

    async with await psycopg.AsyncConnection.connect(POSTGRES_URL) as conn:
        cur = await conn.execute(
            f'SELECT workflow_uuid, name, status FROM "{engine.dbos_schema}".workflow_status '
            "WHERE workflow_uuid LIKE %s ORDER BY workflow_uuid",
            (prefix + "%",),
        )
        return [tuple(row) for row in await cur.fetchall()]  # type: ignore[misc]


def _kinds(events: list[Any], kind: str) -> list[Any]:
    return [e for e in events if e.kind == kind]


# -- double dispatch -------------------------------------------------------------------------


async def test_a_continuation_dispatched_twice_is_resumed_once(engine: Engine) -> None:
    fleet_agents.LEDGER.entries.clear()
    async with engine.serving(fleet_agents.AGENTS), open_store(engine.url) as store:
        engine.bind(store)
        cont = await fleet_agents.decided_run(store, KEYS)  # dispatches once (ready)
        await store.dispatcher.ready(cont.id, cont.seq)  # and twice more, by hand
        await store.dispatcher.ready(cont.id, cont.seq)
    async with open_store(engine.url) as store:
        status = await store.status(cont.run_id)
        events = await store.audit(cont.run_id)
    assert status.state == "completed"
    assert len(_kinds(events, "completed")) == 1
    assert len(_kinds(events, "claimed")) == 1
    mine = [r for r in fleet_agents.LEDGER.runs("transfer") if cont.run_id in r["key"]]
    assert len(mine) == 1, "the approved transfer must run exactly once"
    if engine.name == "dbos":
        rows = await _workflows(engine, cont.run_id)
        assert rows == [(f"{cont.run_id}:{cont.seq}", "continuations.resume", "SUCCESS")]
        noted = _kinds(events, "engine")
        assert [e.detail["event"] for e in noted] == ["claim", "complete"]
        assert {e.detail["dbos.workflow_id"] for e in noted} == {f"{cont.run_id}:{cont.seq}"}


# -- expiry ----------------------------------------------------------------------------------


async def _suspend_wirer(store: Store) -> Any:
    from continuations_pydantic_ai import run

    outcome = await run(engine_agents.wirer, "pay ann", keys=KEYS, store=store)
    assert isinstance(outcome, Suspended)
    return outcome.continuation


async def test_a_request_decided_before_its_deadline_never_expires(engine: Engine) -> None:
    engine_agents.LEDGER.entries.clear()
    async with engine.serving(engine_agents.AGENTS, idle=3.5, on_expired="deny"):
        async with open_store(engine.url) as store:
            engine.bind(store)
            cont = await _suspend_wirer(store)
            decided = cont.approve(cont.requests[0].path, by="ops")
            await store.decide(cont.id, decided.decisions[0])
        await asyncio.sleep(3.5)  # past the deadline: an expiry must find it decided
    async with open_store(engine.url) as store:
        status = await store.status(cont.run_id)
        events = await store.audit(cont.run_id)
    assert status.state == "completed"
    assert engine_agents.LEDGER.count("wire") == 1
    decided_by = [e.actor for e in _kinds(events, "decided")]
    assert decided_by == ["ops"], "only the person decided; expiry wrote nothing"
    assert not [e for e in _kinds(events, "engine") if e.detail["event"] == "expire"]
    if engine.name == "dbos":
        rows = await _workflows(engine, f"{cont.run_id}:{cont.seq}:expire")
        assert rows == [(f"{cont.run_id}:{cont.seq}:expire", "continuations.expire", "SUCCESS")]


@pytest.mark.parametrize("dispatches", [1, 2])
async def test_an_undecided_request_expires_once(engine: Engine, dispatches: int) -> None:
    """At the deadline ``on_expired`` applies (here deny) once, even when dispatched twice:
    DBOS fires a durable timer, the built-in worker's sweep finds it. The model is told the
    call expired and the tool never runs."""
    engine_agents.LEDGER.entries.clear()
    async with (
        engine.serving(engine_agents.AGENTS, idle=3.5, on_expired="deny"),
        open_store(engine.url) as store,
    ):
        engine.bind(store)
        cont = await _suspend_wirer(store)  # schedules the expiry once
        for _ in range(dispatches - 1):
            assert cont.requests[0].expires_at is not None
            await store.dispatcher.expire_at(cont.id, cont.seq, cont.requests[0].expires_at)
    async with open_store(engine.url) as store:
        status = await store.status(cont.run_id)
        events = await store.audit(cont.run_id)
    assert status.state == "completed"
    assert engine_agents.LEDGER.count("wire") == 0, "an expired request never runs its tool"
    told = engine_agents.LEDGER.received("wirer")
    assert len(told) == 1 and "expired" in told[0]
    assert [e.actor for e in _kinds(events, "decided")] == ["expiry"]
    if engine.name == "dbos":
        expiries = [e for e in _kinds(events, "engine") if e.detail["event"] == "expire"]
        assert len(expiries) == 1
        rows = await _workflows(engine, cont.run_id)
        assert [(r[0], r[2]) for r in rows] == [
            (f"{cont.run_id}:{cont.seq}", "SUCCESS"),
            (f"{cont.run_id}:{cont.seq}:expire", "SUCCESS"),
        ]


async def test_an_undecided_request_fails_its_continuation_at_the_deadline(
    engine: Engine,
) -> None:
    """With ``on_expired="raise"`` the expiry fails the continuation (typed, permanent): the
    tool never runs, and a decision arriving afterwards is refused."""
    engine_agents.LEDGER.entries.clear()
    async with (
        engine.serving(engine_agents.AGENTS, idle=3.5, on_expired="raise"),
        open_store(engine.url) as store,
    ):
        engine.bind(store)
        cont = await _suspend_wirer(store)
    async with open_store(engine.url) as store:
        record = await store.get(cont.id)
        events = await store.audit(cont.run_id)
        late = cont.approve(cont.requests[0].path, by="late")
        with pytest.raises(ContinuationFailed):
            await store.decide(cont.id, late.decisions[0])
        after = await store.get(cont.id)
    assert record.status == "failed"
    assert record.last_error is not None and record.last_error.type == "ContinuationExpired"
    assert after.status == "failed", "a late decision is refused: it does not make it ready"
    await asyncio.sleep(1.0)
    assert engine_agents.LEDGER.count("wire") == 0
    assert [e.actor for e in _kinds(events, "failed")] == ["expiry"]
    if engine.name == "dbos":
        assert [e.detail["event"] for e in _kinds(events, "engine")] == ["expire"]
    assert _kinds(events, "decided") == []


async def test_a_run_started_on_dbos_suspends_and_resumes_there(dbos_engine: Engine) -> None:
    """``DBOSEngine.start`` runs a new run as ``continuations.start``: it suspends (the workflow
    ends), the decision enqueues ``continuations.resume``, and the run completes."""
    from continuations_dbos import DBOSEngine

    engine = dbos_engine
    fleet_agents.LEDGER.entries.clear()
    dbos = DBOSEngine(
        engine.url, fleet_agents.AGENTS, "exec-1", keys=KEYS, schema=str(engine.dbos_schema)
    )
    serving = asyncio.create_task(dbos.serve(idle_exit=2.0, install_signals=False))
    await asyncio.wait_for(dbos.started.wait(), 60)
    run_id = await dbos.start("payer", "pay bob")
    async with open_store(engine.url) as store:
        engine.bind(store)
        deadline = asyncio.get_running_loop().time() + 30
        while (status := await store.status(run_id)).state != "waiting":
            assert asyncio.get_running_loop().time() < deadline, status
            await asyncio.sleep(0.05)
        assert fleet_agents.LEDGER.count("transfer") == 0, "the gated call waits"
        assert status.continuation_id is not None
        cont = await store.load(status.continuation_id)
        await store.decide(cont.id, cont.approve(cont.requests[0].path, by="ops").decisions[0])
    await asyncio.wait_for(serving, 60)
    async with open_store(engine.url) as store:
        status = await store.status(run_id)
        events = await store.audit(run_id)
    assert status.state == "completed"
    assert fleet_agents.LEDGER.count("transfer") == 1
    assert fleet_agents.LEDGER.count("lookup") == 1, "the step before the suspension ran once"
    rows = await _workflows(engine, run_id)
    assert [(r[0], r[1], r[2]) for r in rows] == [
        (f"{run_id}:{cont.seq}", "continuations.resume", "SUCCESS"),
        (f"{run_id}:start", "continuations.start", "SUCCESS"),
    ]
    assert [e.detail["event"] for e in _kinds(events, "engine")] == ["start", "claim", "complete"]


async def test_a_retried_continuation_runs_again(engine: Engine) -> None:
    """A continuation that failed (its agent was missing) and that an operator retried is
    resumed again; on DBOS under a new workflow id, since its first workflow finished."""
    fleet_agents.LEDGER.entries.clear()
    async with engine.serving({}), open_store(engine.url) as store:  # no agents: it fails
        engine.bind(store)
        cont = await fleet_agents.decided_run(store, KEYS)
    async with open_store(engine.url) as store:
        failed = await store.get(cont.id)
    assert failed.status == "failed" and failed.last_error is not None
    assert failed.last_error.type == "ConfigurationError"
    async with engine.serving(fleet_agents.AGENTS), open_store(engine.url) as store:
        engine.bind(store)
        await store.retry(cont.id, by="ops")
    async with open_store(engine.url) as store:
        status = await store.status(cont.run_id)
    assert status.state == "completed"
    assert fleet_agents.LEDGER.count("transfer") == 1
    if engine.name == "dbos":
        rows = await _workflows(engine, cont.run_id)
        base = f"{cont.run_id}:{cont.seq}"
        assert [(r[0], r[2]) for r in rows] == [(base, "SUCCESS"), (f"{base}:1", "SUCCESS")]


# -- a worker killed mid-run -------------------------------------------------------------------


def _wait_for(what: str, check: Any, timeout: float, procs: list[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_a_killed_worker_is_recovered_by_its_restart(engine: Engine, tmp_path: Path) -> None:
    """SIGKILL while the idempotent receipt runs (after the approved transfer ran): the
    restarted worker (same owner / executor id) finishes the run; the transfer ran once."""
    ledger_path = tmp_path / "ledger.jsonl"
    env = {
        **os.environ,
        "CONTINUATIONS_SIGNING_KEYS": KEYS.export(),
        "FLEET_LEDGER": str(ledger_path),
        "FLEET_SLOW": "3",
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
    }
    book = Ledger(path=ledger_path)
    cmd = engine.command("fleet_agents:AGENTS", "pod-0", idle=2)
    first = subprocess.Popen(cmd, env=env, stdout=(tmp_path / "w1.log").open("wb"),
                             stderr=subprocess.STDOUT)  # fmt: skip
    try:
        if engine.name == "dbos":  # its tables exist once it launched: then decide
            _wait_for("the DBOS worker", lambda: "engine_started" in
                      (tmp_path / "w1.log").read_text(errors="replace"), 60, [first])  # fmt: skip

        async def decided() -> Any:
            async with open_store(engine.url) as store:
                engine.bind(store)
                return await fleet_agents.decided_run(store, KEYS)

        cont = asyncio.run(decided())
        _wait_for("the receipt to start", lambda: book.count("receipt") == 1, 60, [first])
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    second = subprocess.run(cmd, env=env, capture_output=True, timeout=120)
    assert second.returncode == 0, second.stdout.decode()[-3000:]

    async def read() -> tuple[Any, list[Any]]:
        async with open_store(engine.url) as store:
            return await store.status(cont.run_id), await store.audit(cont.run_id)

    status, events = asyncio.run(read())
    assert status.state == "completed", (status, second.stdout.decode()[-3000:])
    assert len(_kinds(events, "completed")) == 1
    assert book.count("transfer") == 1, "a non-idempotent tool never runs twice"
    assert book.count("lookup") == 0, "the step before the suspension is not repeated"
    assert book.count("receipt") == 2, "only the step in flight ran again"
    # Taken back at once (same owner, dead holder) or after the two-second lease expired.
    assert _kinds(events, "taken_over") or _kinds(events, "expired")


# -- the HR demo on DBOS ---------------------------------------------------------------------


def test_the_hr_demo_runs_on_dbos(dbos_engine: Engine, tmp_path: Path) -> None:
    """Suspend in one process, approve from the CLI (it enqueues through ``DBOSClient``), and
    a DBOS worker resumes the nested run."""
    engine = dbos_engine
    log = tmp_path / "tool-calls.log"
    env = {
        **os.environ,
        "CONTINUATIONS_SIGNING_KEYS": KEYS.export(),
        "HR_DEMO_LOG": str(log),
        "PYTHONPATH": os.pathsep.join([str(ROOT / "examples"), os.environ.get("PYTHONPATH", "")]),
    }
    worker_log = tmp_path / "worker.log"
    worker = subprocess.Popen(
        engine.command("hr_agents:AGENTS", "hr-pod-0", idle=12), env=env, cwd=tmp_path,
        stdout=worker_log.open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        _wait_for("the DBOS worker", lambda: "engine_started" in
                  worker_log.read_text(errors="replace"), 60, [worker])  # fmt: skip
        py, cli = sys.executable, "continuations_core"
        started = subprocess.run(
            [py, str(ROOT / "examples" / "hr_agents.py"), "--db", str(tmp_path / "hr.db"),
             "--store", engine.url, "start"],
            env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path,
        )  # fmt: skip
        assert started.returncode == 0, started.stderr
        cid = started.stderr.strip().splitlines()[-1]
        assert "authorize_account" not in log.read_text(), "the gated call waits for a person"
        approved = subprocess.run(
            [py, "-m", cli, "approve", "--store", engine.url, "--engine", "dbos",
             "--dbos-schema", str(engine.dbos_schema), cid, "1", "--by", "manager@example.com"],
            env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path,
        )  # fmt: skip
        assert approved.returncode == 0, approved.stderr
        assert "warning" not in approved.stderr, approved.stderr
        assert worker.wait(timeout=120) == 0, worker_log.read_text()[-3000:]
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()

    async def read() -> tuple[Any, list[Any], list[tuple[str, str, str]], int]:
        async with open_store(engine.url) as store:
            record = await store.get(cid)
            flows = await _workflows(engine, record.run_id)
            status, events = await store.status(record.run_id), await store.audit(record.run_id)
            return status, events, flows, record.continuation.seq

    status, events, flows, suspended_at = asyncio.run(read())
    assert status.state == "completed", worker_log.read_text()[-3000:]
    calls = log.read_text().splitlines()
    assert sum("authorize_account" in line for line in calls) == 1
    assert [e.actor for e in _kinds(events, "decided")] == ["manager@example.com"]
    assert [(name, state) for _, name, state in flows] == [("continuations.resume", "SUCCESS")]
    workflow_id = flows[0][0]
    assert {e.detail["dbos.workflow_id"] for e in _kinds(events, "engine")} == {workflow_id}
    assert workflow_id == f"{status.run_id}:{suspended_at}", "id: run id and the suspension's seq"


async def test_dbos_workers_ride_out_a_flaky_store(dbos_engine: Engine) -> None:
    """A fifth of the engine's store calls fail (half after committing): every run completes
    once, the transfer runs once per run, and the worker keeps serving."""
    from _faulty import FlakyStore

    from continuations_dbos import DBOSEngine

    engine = dbos_engine
    fleet_agents.LEDGER.entries.clear()
    runs = 12
    async with open_store(engine.url) as store:
        run_ids = [(await fleet_agents.decided_run(store, KEYS)).run_id for _ in range(runs)]
    flaky: list[FlakyStore] = []

    def opener(url: str) -> Store:
        flaky.append(FlakyStore(open_store(url), rate=0.2, seed=3))
        return flaky[-1]

    dbos = DBOSEngine(
        engine.url, fleet_agents.AGENTS, "exec-1", keys=KEYS, schema=str(engine.dbos_schema),
        lease_seconds=2.0, concurrency=4, polling_seconds=0.05, open_store=opener,
        sweep_seconds=1.0,
    )  # fmt: skip
    serving = asyncio.create_task(dbos.serve(install_signals=False))
    states: dict[str, str] = {}
    try:
        await asyncio.wait_for(dbos.started.wait(), 60)
        async with open_store(engine.url) as store:
            deadline = asyncio.get_running_loop().time() + 120
            while asyncio.get_running_loop().time() < deadline and not serving.done():
                states = {rid: (await store.status(rid)).state for rid in run_ids}
                if all(s == "completed" for s in states.values()):
                    break
                await asyncio.sleep(0.2)
            events = {rid: await store.audit(rid) for rid in run_ids}
    finally:
        dbos.stop()
        await asyncio.wait_for(serving, 60)
    failures = sum(sum(f.failures.values()) for f in flaky)
    assert failures > runs, "too few injected failures to test anything"
    assert set(states.values()) == {"completed"}, states
    assert all(len(_kinds(ev, "completed")) == 1 for ev in events.values())
    transfers = Counter(r["key"] for r in fleet_agents.LEDGER.runs("transfer"))
    assert len(transfers) == runs and max(transfers.values()) == 1


def test_a_dbos_worker_needs_a_stable_executor_id(tmp_path: Path) -> None:
    """Without --executor-id (or --owner) a restart could not recover its workflows: refused."""
    done = subprocess.run(
        [sys.executable, "-m", "continuations_core", "worker", "--engine", "dbos", "--store",
         f"sqlite:///{tmp_path / 's.db'}", "--agents", "engine_agents:AGENTS",
         "--allow-unsigned"],
        env={**os.environ, "PYTHONPATH": str(HERE)}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert "--executor-id" in done.stderr


def test_an_approval_dbos_could_not_be_told_of_is_kept_and_sent_at_launch(
    dbos_engine: Engine, tmp_path: Path
) -> None:
    """The CLI approves before any DBOS worker ever ran (no DBOS tables): the decision is
    stored and ready, the CLI warns and exits 0, and the first worker enqueues and runs it."""
    engine = dbos_engine

    async def suspended() -> Any:
        from continuations_pydantic_ai import run

        async with open_store(engine.url) as store:
            outcome = await run(fleet_agents.payer, "pay bob", keys=KEYS, store=store)
            assert isinstance(outcome, Suspended)
            return outcome.continuation

    cont = asyncio.run(suspended())
    env = {**os.environ, "CONTINUATIONS_SIGNING_KEYS": KEYS.export(),
           "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}  # fmt: skip
    approved = subprocess.run(
        [sys.executable, "-m", "continuations_core", "approve", "--store", engine.url,
         "--engine", "dbos", "--dbos-schema", str(engine.dbos_schema), cont.id, "1"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert approved.returncode == 0, approved.stderr
    assert "warning" in approved.stderr and cont.id in approved.stderr
    assert "ready" in approved.stdout
    worker = subprocess.run(
        engine.command("fleet_agents:AGENTS", "pod-0", idle=2), env=env, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    assert worker.returncode == 0, worker.stdout[-3000:]

    async def state() -> str:
        async with open_store(engine.url) as store:
            return (await store.status(cont.run_id)).state

    assert asyncio.run(state()) == "completed"


async def test_an_inbox_decision_is_enqueued_for_dbos(dbos_engine: Engine) -> None:
    """The approval inbox over a store bound to DBOS (``inbox --engine dbos``): approving in
    it enqueues the resume, a DBOS worker runs it, and the transfer ran once."""
    from _inbox import app_for, decision_body, person, post_decision

    from continuations_pydantic_ai import run

    engine = dbos_engine
    fleet_agents.LEDGER.entries.clear()
    async with engine.serving(fleet_agents.AGENTS), open_store(engine.url) as store:
        engine.bind(store)
        outcome = await run(fleet_agents.payer, "pay bob", keys=KEYS, store=store)
        assert isinstance(outcome, Suspended)
        cont = outcome.continuation
        assert fleet_agents.LEDGER.count("transfer") == 0
        async with person(app_for(store, keys=KEYS), "alice") as alice:
            response = await post_decision(alice, cont.id, await decision_body(alice, cont.id))
            assert response.status_code == 200, response.text
    async with open_store(engine.url) as store:
        status = await store.status(cont.run_id)
    assert status.state == "completed"
    assert fleet_agents.LEDGER.count("transfer") == 1
    rows = await _workflows(engine, cont.run_id)
    assert rows == [(f"{cont.run_id}:{cont.seq}", "continuations.resume", "SUCCESS")]


def test_a_cli_retry_is_enqueued_for_dbos(dbos_engine: Engine, tmp_path: Path) -> None:
    """``continuations retry --engine dbos`` of a failed continuation enqueues a new resume
    workflow (its first one finished when it failed)."""
    engine = dbos_engine

    async def failed() -> Any:
        async with engine.serving({}), open_store(engine.url) as store:  # no agents: it fails
            engine.bind(store)
            return await fleet_agents.decided_run(store, KEYS)

    cont = asyncio.run(failed())
    done = subprocess.run(
        [sys.executable, "-m", "continuations_core", "retry", "--store", engine.url,
         "--engine", "dbos", "--dbos-schema", str(engine.dbos_schema), cont.id, "--by", "ops"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "warning" not in done.stderr, done.stderr
    base = f"{cont.run_id}:{cont.seq}"
    rows = asyncio.run(_workflows(engine, cont.run_id))
    assert [(r[0], r[2]) for r in rows] == [(base, "SUCCESS"), (f"{base}:1", "ENQUEUED")]
