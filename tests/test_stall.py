"""The stall test (G14): a worker frozen inside a tool batch past its lease becomes a harmless zombie.

Worker A is SIGSTOPped inside ``lookup`` (batch: ``lookup`` then the non-idempotent
``charge``), past its one-second lease. Worker B takes the run over and finishes it. Then A is
SIGCONTed: its ``lookup`` returns, the store refuses every write under A's superseded token, A
starts no further tool (``charge`` ran once, by B), leaves its run cleanly and keeps serving.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import g14_agents
import pytest
from _backends import namespace_url

from continuations_core import Keyring
from continuations_core.stores import open_store
from continuations_core.testing.spec import Ledger

HERE = Path(__file__).resolve().parent
KEYS = Keyring.generate("stall")


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("redis", marks=pytest.mark.redis),
    ]
)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh shared store."""
    yield from namespace_url(request.param, tmp_path)


def _worker(url: str, tmp: Path, owner: str, lookup_seconds: str, *extra: str) -> Any:
    env = {
        **os.environ,
        "CONTINUATIONS_SIGNING_KEYS": KEYS.export(),
        "G14_LEDGER": str(tmp / "ledger.jsonl"),
        "G14_LOOKUP_SECONDS": lookup_seconds,
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
    }
    log = (tmp / f"{owner}.log").open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "continuations_core", "worker", "--store", url,
         "--agents", "g14_agents:AGENTS", "--owner", owner, "--lease", "1", "--poll", "0.05",
         *extra],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip


def _wait(condition: Any, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


async def _start(url: str) -> str:
    async with open_store(url) as store:
        return (await g14_agents.decided(g14_agents.payer, store, KEYS)).run_id


async def _state(url: str, run_id: str) -> tuple[str, list[Any]]:
    async with open_store(url) as store:
        return (await store.status(run_id)).state, await store.audit(run_id)


def test_a_worker_stalled_past_its_lease_writes_nothing_and_starts_no_tool(
    url: str, tmp_path: Path
) -> None:
    """SIGSTOP inside a batch, takeover, SIGCONT: charge ran once and the zombie wrote nothing."""
    run_id = asyncio.run(_start(url))
    book = Ledger(path=tmp_path / "ledger.jsonl")
    zombie = _worker(url, tmp_path, "wA", "3")
    rescuer = None
    try:
        _wait(lambda: book.count("lookup_entered") == 1, "worker A to enter lookup")
        zombie.send_signal(signal.SIGSTOP)
        stopped = time.monotonic()
        rescuer = _worker(url, tmp_path, "wB", "0", "--idle-exit", "5")
        _wait(lambda: asyncio.run(_state(url, run_id))[0] == "completed", "worker B to finish")
        print(
            f"\nstall: worker B finished the run {time.monotonic() - stopped:.2f} s after the stop"
        )
        zombie.send_signal(signal.SIGCONT)
        log_a = tmp_path / "wA.log"
        _wait(lambda: "event=claim_lost" in log_a.read_text(), "worker A to notice", 30)
        time.sleep(1.0)  # let A do whatever it would do next
        assert zombie.poll() is None, "worker A died instead of leaving the run and serving on"
        assert rescuer.wait(timeout=60) == 0
    finally:
        zombie.send_signal(signal.SIGCONT)
        zombie.send_signal(signal.SIGTERM)
        code = zombie.wait(timeout=30)
        if rescuer is not None and rescuer.poll() is None:
            rescuer.kill()
    assert code == 0, (tmp_path / "wA.log").read_text()
    assert book.count("transfer") == 1 and book.count("charge") == 1, book.all()
    assert book.count("lookup_entered") == 2  # idempotent lookup: B ran the step again
    _, events = asyncio.run(_state(url, run_id))
    taken = next(i for i, e in enumerate(events) if e.actor == "wB")
    late = [(e.kind, e.detail.get("path")) for e in events[taken:] if e.actor == "wA"]
    assert late == [], f"the zombie's writes were accepted after the takeover: {late}"
    assert events[taken].kind == "expired" and events[taken].detail["owner"] == "wA"
