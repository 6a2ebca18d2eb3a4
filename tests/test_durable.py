"""Durable-run internals: checkpoint writes, shutdown under cancellation, fenced tool starts."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from continuations_core import Completed, Frame
from continuations_core._durable import Checkpointer, run_durably
from continuations_core.stores import Claim, MemoryStore


class SlowStore(MemoryStore):
    """A store whose checkpoint writes take a while, so a cancellation can land mid-write."""

    async def checkpoint(self, *args: Any, **kwargs: Any) -> Claim | None:
        await asyncio.sleep(0.2)
        return await super().checkpoint(*args, **kwargs)


async def test_a_cancelled_checkpoint_write_keeps_its_claim() -> None:
    """Cancelled while a checkpoint is written, the step still records the claim it got."""
    store = SlowStore()
    cp = Checkpointer(store, "run-1", "w1", None)
    step = asyncio.create_task(cp.step(Frame(framework="test", agent="a")))
    await asyncio.sleep(0.05)
    step.cancel()
    with pytest.raises(asyncio.CancelledError):
        await step
    assert cp.claim is not None
    assert (await store.get(cp.claim.id)).status == "claimed"


async def test_cancelling_a_durable_run_releases_its_checkpoint() -> None:
    """A durable run cancelled mid-way (a worker's SIGTERM) gives its checkpoint back."""
    store = SlowStore()
    cp = Checkpointer(store, "run-2", "w1", None)
    gate = asyncio.Event()

    async def go() -> Completed[Any]:
        await cp.step(Frame(framework="test", agent="a"))
        gate.set()
        await asyncio.sleep(30)
        return Completed(output=None, run_id="run-2")

    task = asyncio.create_task(run_durably(cp, go))
    await gate.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    [record] = await store.list(run_id="run-2")
    assert record.status == "ready"
    assert [e.kind for e in await store.audit("run-2")] == ["checkpoint", "released"]


async def test_a_tool_start_under_a_superseded_claim_is_refused_and_nothing_is_journaled() -> None:
    """Once another process took the run over, tool_started raises and writes no journal entry."""
    from continuations_core import ClaimSuperseded

    store = MemoryStore()
    cp = Checkpointer(store, "run-3", "w1", None, lease_seconds=0.05)
    await cp.step(Frame(framework="test", agent="a"))
    await cp.tool_started(("lookup:c0",), "lookup")
    assert cp.claim is not None
    await asyncio.sleep(0.15)
    taken = await store.claim(cp.claim.id, owner="w2")
    assert taken.token == cp.claim.token + 1
    with pytest.raises(ClaimSuperseded):
        await cp.tool_started(("charge:c1",), "charge")
    with pytest.raises(ClaimSuperseded):  # known lost now: refused without asking the store
        await cp.tool_completed(("lookup:c0",), "lookup", {"ok": True})
    journal = [e.detail["path"] for e in await store.audit("run-3") if e.kind.startswith("tool_")]
    assert journal == ["lookup:c0"]
    with pytest.raises(ClaimSuperseded):
        cp.replay(("charge:c1",), idempotent=False)


async def test_an_approved_call_cut_off_by_its_run_failing_is_not_said_to_have_raised() -> None:
    """An approved call still running when another error fails the attempt (a sibling's store
    error) fails the continuation without claiming the call raised; a later attempt says the
    same, and does not run it."""
    from continuations_core import ApprovedCallFailed, StoreUnavailable

    store = MemoryStore()
    cp = Checkpointer(store, "run-4", "w1", None)
    await cp.step(Frame(framework="test", agent="a"))
    await cp.tool_started(("transfer:c0",), "transfer", approved=True)
    await cp.tool_started(("lookup:c1",), "lookup")
    failure = await cp.failed_attempt(StoreUnavailable("the store went away"))
    assert isinstance(failure, ApprovedCallFailed)
    message = str(failure)
    assert "did not finish" in message and "raised StoreUnavailable" not in message
    assert "StoreUnavailable: the store went away" in message
    [record] = await store.list(run_id="run-4")
    assert record.status == "failed"
    failed = [e.detail for e in await store.audit("run-4") if e.kind == "tool_failed"]
    assert [(d["path"], d["approved"]) for d in failed] == [
        ("transfer:c0", True),
        ("lookup:c1", False),
    ]

    again = Checkpointer(store, "run-4", "w2", None)  # what a later attempt reads
    await again.load_journal()
    with pytest.raises(ApprovedCallFailed, match="did not finish in an earlier attempt") as later:
        again.replay(("transfer:c0",), idempotent=False)
    assert "StoreUnavailable: the store went away" in str(later.value)
    assert again.replay(("lookup:c1",), idempotent=True) is None  # not approved: may run again
