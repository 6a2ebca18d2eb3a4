"""Operations: one structured log line per claim, resume, suspension, completion, failure, retry."""

from __future__ import annotations

import logging

import g14_agents
import pytest

from continuations_core import Keyring, MemoryStore
from continuations_core._attempts import RetryPolicy
from continuations_core.worker import Worker

KEYS = Keyring.generate("events")


async def test_every_operation_logs_one_parseable_line(caplog: pytest.LogCaptureFixture) -> None:
    """A suspension, a worker's drain (complete, attempt_failed, failed) and a retry each log once."""
    caplog.set_level(logging.INFO, logger="continuations")
    store = MemoryStore()
    ok = await g14_agents.decided(g14_agents.payer, store, KEYS)
    bad = await g14_agents.decided(g14_agents.broken, store, KEYS)
    worker = Worker(store, g14_agents.AGENTS, keys=KEYS, owner="w-events", poll_seconds=0.01,
                    retry=RetryPolicy(max_attempts=2, backoff=0.05))  # fmt: skip
    await worker.run(install_signals=False, idle_exit=0.5)
    failed = await store.status(bad.run_id)
    assert failed.state == "failed" and failed.continuation_id is not None
    await store.retry(failed.continuation_id, by="alice")

    records = [r for r in caplog.records if r.name.startswith("continuations")]
    assert all("\n" not in r.getMessage() for r in records), "an event spans several lines"
    events = [(r.continuations["event"], r.continuations.get("run")) for r in records]  # type: ignore[attr-defined]
    for r in records:
        fields = r.continuations  # type: ignore[attr-defined]
        assert r.getMessage().startswith(f"event={fields['event']}")
    assert events.count(("suspended", ok.run_id)) == 1
    assert events.count(("suspended", bad.run_id)) == 1
    assert events.count(("claimed", ok.run_id)) == 1 and events.count(("claimed", bad.run_id)) == 2
    assert events.count(("resumed", ok.run_id)) == 1 and events.count(("resumed", bad.run_id)) == 2
    assert events.count(("completed", ok.run_id)) == 1
    assert events.count(("attempt_failed", bad.run_id)) == 1
    assert events.count(("failed", bad.run_id)) == 1
    assert events.count(("retried", bad.run_id)) == 1
    [retried] = [r for r in records if r.continuations["event"] == "retried"]  # type: ignore[attr-defined]
    assert "by=alice" in retried.getMessage()
    [fail] = [r for r in records if r.continuations["event"] == "failed"]  # type: ignore[attr-defined]
    assert fail.levelno == logging.ERROR
    assert 'error="RuntimeError: the model provider is unavailable"' in fail.getMessage()
