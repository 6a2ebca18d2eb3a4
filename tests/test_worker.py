"""The worker command: drains decided continuations, and releases its claims on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import fleet_agents

from continuations_core import ConfigurationError, Keyring
from continuations_core.stores import open_store
from continuations_core.testing._store_kit import decision
from continuations_core.testing.conformance import BIG, payer, suspended
from continuations_core.testing.spec import Call, Harness, Ledger
from continuations_core.worker import Worker, load_agents

HERE = Path(__file__).resolve().parent
KEYS = Keyring.generate("worker")


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "CONTINUATIONS_SIGNING_KEYS": KEYS.export(),
        "FLEET_LEDGER": str(tmp / "ledger.jsonl"),
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        **extra,
    }


def _worker(url: str, env: dict[str, str], *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "continuations_core", "worker", "--store", url,
         "--agents", "fleet_agents:AGENTS", "--poll", "0.05", *extra],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def test_worker_resumes_every_decided_continuation_once(tmp_path: Path) -> None:
    """A worker process claims each decided continuation, resumes it and records completion."""
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    run_ids = [c.run_id for c in asyncio.run(fleet_agents.decided_runs(url, KEYS, 5))]
    proc = _worker(url, _env(tmp_path), "--idle-exit", "1")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "resuming 5 continuation(s)" in out

    async def completions() -> list[int]:
        async with open_store(url) as store:
            return [sum(e.kind == "completed" for e in await store.audit(rid)) for rid in run_ids]

    assert asyncio.run(completions()) == [1] * 5
    book = Ledger(path=tmp_path / "ledger.jsonl")
    assert book.count("transfer") == 5 and book.count("receipt") == 5


def test_sigterm_stops_the_worker_and_releases_its_claim(tmp_path: Path) -> None:
    """On SIGTERM a worker cancels its resume, gives the run back (ready) and exits 0."""
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    [run_id] = [c.run_id for c in asyncio.run(fleet_agents.decided_runs(url, KEYS, 1))]
    proc = _worker(url, _env(tmp_path, FLEET_SLOW="30"), "--owner", "slow-worker")

    async def held() -> str | None:
        async with open_store(url) as store:
            records = await store.list(run_id=run_id)
            claimed = [r for r in records if r.status == "claimed"]
            return claimed[0].claimed_by if claimed else None

    deadline = time.monotonic() + 60
    while asyncio.run(held()) != "slow-worker" or not Ledger(path=tmp_path / "ledger.jsonl").count(
        "transfer"
    ):
        assert time.monotonic() < deadline, "the worker never started the run"
        time.sleep(0.1)
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=20)
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
    assert time.monotonic() - started < 10

    async def state() -> tuple[list[str], list[str]]:
        async with open_store(url) as store:
            records = await store.list(run_id=run_id)
            return [r.status for r in records], [e.kind for e in await store.audit(run_id)]

    statuses, kinds = asyncio.run(state())
    assert "claimed" not in statuses and "ready" in statuses
    assert kinds[-1] == "released"


def test_load_agents_accepts_dicts_lists_and_single_agents() -> None:
    """--agents resolves a dict, a list or one agent by name, and explains a bad path."""
    sys.path.insert(0, str(HERE))
    assert set(load_agents("fleet_agents:AGENTS")) == {"payer"}
    assert set(load_agents("fleet_agents:payer")) == {"payer"}
    try:
        load_agents("fleet_agents")
    except ConfigurationError as exc:
        assert "module:attribute" in str(exc)
    else:
        raise AssertionError("a path without an attribute was accepted")


def _completed(url: str, run_ids: list[str]) -> list[str]:
    async def states() -> list[str]:
        async with open_store(url) as store:
            return [(await store.status(rid)).state for rid in run_ids]

    return asyncio.run(states())


def test_worker_once_drains_what_is_ready_and_exits(tmp_path: Path) -> None:
    """``worker --once`` resumes every ready continuation, then exits 0 without idling."""
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    run_ids = [c.run_id for c in asyncio.run(fleet_agents.decided_runs(url, KEYS, 3))]
    proc = _worker(url, _env(tmp_path), "--once")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "resuming 3 continuation(s)" in out
    assert _completed(url, run_ids) == ["completed"] * 3
    assert err.count("event=completed") == 3 and err.count("event=claimed") == 3, err


def test_worker_allow_unsigned_resumes_unsigned_continuations(tmp_path: Path) -> None:
    """``--allow-unsigned`` is passed on: unsigned runs resume, with or without keys set."""
    url = f"sqlite:///{tmp_path / 'runs.db'}"

    async def unsigned(n: int) -> list[str]:
        async with open_store(url) as store:
            return [(await fleet_agents.decided_run(store, None)).run_id for _ in range(n)]

    run_ids = asyncio.run(unsigned(2))
    without_keys = {k: v for k, v in _env(tmp_path).items() if k != "CONTINUATIONS_SIGNING_KEYS"}
    proc = _worker(url, without_keys, "--once", "--allow-unsigned")
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert _completed(url, run_ids) == ["completed"] * 2

    more = asyncio.run(unsigned(1))
    proc = _worker(url, _env(tmp_path), "--once", "--allow-unsigned")
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert _completed(url, more) == ["completed"]


def test_a_worker_restarted_under_its_owner_takes_its_claims_back_at_once(tmp_path: Path) -> None:
    """SIGKILLed mid-run under ``--owner``, a worker restarted under that name resumes at once."""
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    [run_id] = [c.run_id for c in asyncio.run(fleet_agents.decided_runs(url, KEYS, 1))]
    first = _worker(url, _env(tmp_path, FLEET_SLOW="60"), "--owner", "svc-1")
    book = Ledger(path=tmp_path / "ledger.jsonl")

    async def held() -> bool:
        async with open_store(url) as store:
            records = await store.list(run_id=run_id, status="claimed")
            return any(r.claimed_by == "svc-1" and r.seq > 1 for r in records)

    deadline = time.monotonic() + 60
    while not (book.count("transfer") and asyncio.run(held())):
        assert time.monotonic() < deadline, "the first worker never reached the receipt step"
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    started = time.monotonic()
    second = _worker(url, _env(tmp_path), "--owner", "svc-1", "--once")  # default 30 s lease
    _out, err = second.communicate(timeout=120)
    elapsed = time.monotonic() - started
    assert second.returncode == 0, err
    assert _completed(url, [run_id]) == ["completed"]
    assert elapsed < 15, f"the restarted worker waited {elapsed:.1f} s: the lease, not the owner"
    assert "event=claimed" in err and "attempt=2" in err, err

    async def takeover() -> str:
        async with open_store(url) as store:
            events = await store.audit(run_id)
            return str(next(e for e in events if e.kind == "taken_over").detail["reason"])

    assert "restarted" in asyncio.run(takeover())
    assert book.count("transfer") == 1
    print(f"\nworker restart under the same owner: completed {elapsed:.2f} s after the restart")


_PREPARE_PROBE = """
import asyncio, json, sys
import fleet_agents
from pydantic_ai import ModelMessagesTypeAdapter
from continuations_core import Continuation, Keyring
from continuations_core.stores import Claim, open_store
from continuations_core.worker import Worker

def built():
    return {
        "messages": ModelMessagesTypeAdapter.pydantic_complete,
        "documents": Continuation.__pydantic_complete__,
        "records": Claim.__pydantic_complete__,
        "anyio": "anyio._backends._asyncio" in sys.modules,
    }

async def main(url):
    async with open_store(url) as store:
        before = built()
        [record] = await store.list(status="ready")
        events = len(await store.audit(record.run_id))
        worker = Worker(store, fleet_agents.AGENTS, keys=Keyring.from_env(), owner="probe")
        await worker.prepare()
        after = built()
        await worker.prepare()  # again: nothing more to do
        stored = await store.get(record.id)
        print(json.dumps({"before": before, "after": after, "status": stored.status,
                          "version": [record.version, stored.version],
                          "events": [events, len(await store.audit(record.run_id))]}))

asyncio.run(main(sys.argv[1]))
"""


def test_a_worker_prepares_what_frameworks_build_lazily_without_touching_the_store(
    tmp_path: Path,
) -> None:
    """``Worker.prepare`` builds, in a fresh process, what a first resume would otherwise build
    while it holds its claim (Pydantic AI's message validator, anyio's backend, the package's
    own models); it claims nothing and writes nothing."""
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    asyncio.run(fleet_agents.decided_runs(url, KEYS, 1))
    probe = subprocess.run(
        [sys.executable, "-c", _PREPARE_PROBE, url], env=_env(tmp_path),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr
    seen = json.loads(probe.stdout.strip().splitlines()[-1])
    assert seen["before"] == dict.fromkeys(seen["before"], False), seen
    assert seen["after"] == dict.fromkeys(seen["after"], True), seen
    assert seen["status"] == "ready" and seen["version"][0] == seen["version"][1], seen
    assert seen["events"][0] == seen["events"][1], seen
    assert Ledger(path=tmp_path / "ledger.jsonl").count("transfer") == 0


def test_a_worker_prepares_before_its_first_claim(tmp_path: Path) -> None:
    """``Worker.run`` prepares once, while every continuation is still unclaimed, then resumes."""
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    run_ids = [c.run_id for c in asyncio.run(fleet_agents.decided_runs(url, KEYS, 2))]
    seen: list[list[str]] = []

    class Probe(Worker):
        async def prepare(self) -> None:
            seen.append([r.status for r in await self.store.list(status="ready")])
            await super().prepare()

    async def drain() -> int:
        async with open_store(url) as store:
            worker = Probe(store, fleet_agents.AGENTS, keys=KEYS, owner="probe")
            return await worker.run(install_signals=False, once=True)

    assert asyncio.run(drain()) == 2
    assert seen == [["ready", "ready"]]  # both still ready: neither claimed yet
    assert _completed(url, run_ids) == ["completed"] * 2


class CountingKeyring(Keyring):
    """A keyring that counts the signatures it checks."""

    checked = 0

    def verify(self, payload: bytes, kid: str, mac: str, *, continuation_id: str | None) -> None:
        type(self).checked += 1
        super().verify(payload, kid, mac, continuation_id=continuation_id)


def test_a_worker_checks_a_claimed_continuations_signature_once(
    harness: Harness, tmp_path: Path
) -> None:
    """A worker's resume verifies the claimed document once, and the adapter's checks still run.

    The adapter's own refusals (another framework's root, a drifted agent) run on the verified
    document inside the one verification, not after a second one.
    """
    keys = CountingKeyring({"count": b"worker-count-key-0123456789abcdef"})
    ledger = Ledger()
    agent = harness.build(payer(Call("transfer", BIG)), ledger)

    async def go() -> None:
        async with open_store(f"sqlite:///{tmp_path / 'runs.db'}") as store:
            cont = suspended(await harness.run(agent, "go", keys=keys, store=store))
            for index in range(len(cont.requests)):
                await store.decide(cont.id, decision(cont, index, by="ops"))
            CountingKeyring.checked = 0
            worker = Worker(store, {"payer": agent}, keys=keys, owner="w")
            assert await worker.run(install_signals=False, once=True) == 1
            assert CountingKeyring.checked == 1
            assert (await store.status(cont.run_id)).state == "completed"

    asyncio.run(go())
    assert ledger.count("transfer") == 1
