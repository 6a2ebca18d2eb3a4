"""G5 across processes: of 8 processes resuming one continuation, exactly one wins."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import fleet_agents
import pytest
from _backends import namespace_url

from continuations_core import Continuation, Keyring, StoredContinuation, Suspended
from continuations_core.stores import open_store
from continuations_core.testing.spec import Ledger

HERE = Path(__file__).resolve().parent
KEYS = Keyring.generate("race")


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("redis", marks=pytest.mark.redis),
    ]
)
def shared(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh store that several processes open."""
    yield from namespace_url(request.param, tmp_path)


def _race(n: int, url: str, source: str, tmp_path: Path, **env_changes: str | None) -> list[str]:
    """Start ``n`` race workers together; return what each printed."""
    go = tmp_path / "go"
    env = {
        **os.environ,
        "CONTINUATIONS_SIGNING_KEYS": KEYS.export(),
        "FLEET_LEDGER": str(tmp_path / "ledger.jsonl"),
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
    }
    for key, value in env_changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    procs = [
        subprocess.Popen(
            [sys.executable, str(HERE / "race_worker.py"), url, source, str(go)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(n)
    ]
    go.touch()
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        results.append(out.strip())
    return sorted(results)


def test_eight_processes_resume_one_continuation_tool_runs_once(
    shared: str, tmp_path: Path
) -> None:
    """8 processes race to resume one decided continuation: one completes, 7 get AlreadyClaimed."""
    [decided] = asyncio.run(fleet_agents.decided_runs(shared, KEYS, 1))
    assert _race(8, shared, decided.id, tmp_path) == ["lost"] * 7 + ["won"]
    book = Ledger(path=tmp_path / "ledger.jsonl")
    assert book.count("transfer") == 1 and book.count("receipt") == 1


def test_eight_processes_resume_one_continuation_approved_in_memory(
    shared: str, tmp_path: Path
) -> None:
    """8 processes resume one JSON approved in memory against the store: the transfer runs once."""
    cont = asyncio.run(_suspended_in(shared))
    doc = tmp_path / "approved.json"
    doc.write_text(cont.approve(cont.requests[0].path, by="ops").to_json())
    assert _race(8, shared, f"file:{doc}", tmp_path) == ["lost"] * 7 + ["won"]
    book = Ledger(path=tmp_path / "ledger.jsonl")
    assert book.count("transfer") == 1 and book.count("receipt") == 1
    stored = asyncio.run(_stored(shared, cont.id))
    assert stored.status == "done"
    record = stored.continuation.decision_for(cont.requests[0].path)
    assert record is not None and record.by == "ops"


def test_resuming_one_json_in_two_processes_without_a_store_runs_once(tmp_path: Path) -> None:
    """Without store=, two processes resuming the same JSON share the default store: one runs."""
    cont = asyncio.run(_suspended_in(f"sqlite:///{tmp_path / 'origin.db'}"))
    doc = tmp_path / "approved.json"
    doc.write_text(cont.approve(cont.requests[0].path, by="ops").to_json())
    data_home = tmp_path / "xdg"
    results = _race(
        2, "-", f"file:{doc}", tmp_path, CONTINUATIONS_STORE=None, XDG_DATA_HOME=str(data_home)
    )
    assert results == ["lost", "won"]
    assert (data_home / "agent-continuations" / "continuations.db").exists()
    book = Ledger(path=tmp_path / "ledger.jsonl")
    assert book.count("transfer") == 1


async def _suspended_in(url: str) -> Continuation:
    from continuations_pydantic_ai import run

    async with open_store(url) as store:
        outcome = await run(fleet_agents.payer, "pay bob", keys=KEYS, store=store)
    assert isinstance(outcome, Suspended)
    return outcome.continuation


async def _stored(url: str, cid: str) -> StoredContinuation:
    async with open_store(url) as store:
        return await store.get(cid)
