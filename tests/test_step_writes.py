"""What a durable step writes, and when: two writes a step, nothing held past a tool start.

A step that records a model response waits for the run's next write and goes in the same
transaction as the ``tool_started`` of the first call it asked for; a call's result waits for
the run's next write only while no other call runs. These tests watch the store's writes.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest
from _harnesses import HARNESSES

from continuations_core import Completed, Frame, Keyring
from continuations_core._durable import Checkpointer, run_durably
from continuations_core.stores import Claim, MemoryStore, Segment
from continuations_core.testing.spec import AgentSpec, Call, Ledger, ToolSpec

KEYS = Keyring.generate("writes")


class CountingStore(MemoryStore):
    """A memory store that records each write a run makes, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[tuple[str, bool, list[str]]] = []  # (method, segment?, journal kinds)

    async def append_step(
        self,
        claim: Claim,
        run_id: str,
        *,
        segment: Segment | None = None,
        journal: Any = (),
        actor: str | None = None,
    ) -> None:
        entries = list(journal)
        self.writes.append(("append_step", segment is not None, [k for k, _ in entries]))
        await super().append_step(claim, run_id, segment=segment, journal=entries, actor=actor)

    async def checkpoint(self, *args: Any, **kwargs: Any) -> Claim | None:
        self.writes.append(("checkpoint", False, []))
        return await super().checkpoint(*args, **kwargs)

    async def complete(self, *args: Any, **kwargs: Any) -> None:
        self.writes.append(("complete", False, []))
        await super().complete(*args, **kwargs)


def _loop(steps: int) -> AgentSpec:
    return AgentSpec(
        name="loop",
        turns=tuple((Call("lookup", {"who": f"p{i}"}),) for i in range(steps)),
        tools=(ToolSpec("lookup", kind="plain", params="who"),),
    )


@pytest.mark.parametrize("harness", ["pydantic-ai", "strands"])
async def test_a_durable_step_costs_two_writes_and_stores_the_response_before_its_tool(
    harness: str,
) -> None:
    """Each step after the first: one write carries the model response's segment with the
    tool's start, one the tool's result; the run makes no other write but its first
    checkpoint and its completion."""
    h = HARNESSES[harness]()
    steps = 20
    store = CountingStore()
    ledger = Ledger()
    outcome = await h.run(h.build(_loop(steps), ledger), "go", keys=KEYS, store=store)
    assert isinstance(outcome, Completed)
    assert ledger.count("lookup") == steps
    writes = store.writes
    assert writes[0][0] == "checkpoint" and writes[-1][0] == "complete"
    middle = writes[1:-1]
    starts = [w for w in middle if "tool_started" in w[2]]
    assert len(starts) == steps
    # The first response goes with the first start too (appended to the first checkpoint).
    assert all(segment for _, segment, _ in starts), starts
    assert all(kinds == ["tool_started"] for _, _, kinds in starts)
    results = [w for w in middle if "tool_completed" in w[2]]
    assert [kinds for _, _, kinds in results] == [["tool_completed"]] * steps
    assert len(middle) == 2 * steps, middle


async def test_a_result_waits_for_the_next_write_only_while_no_other_call_runs() -> None:
    """A call that ends while another call still runs has its result stored at once, even
    after a checkpoint of the tree was written in between (a sub-agent's step)."""
    store = MemoryStore()
    cp = Checkpointer(store, "run-p", "w1", None)
    frame = Frame(framework="test", agent="a")
    await cp.step(frame)
    await cp.step(frame, hold=True)  # the model response asking for two calls
    await cp.tool_started(("a:c0",), "a")
    await cp.tool_started(("b:c1",), "b")
    await cp.step(frame)  # a sub-agent of call b reached a step boundary
    await cp.tool_completed(("a:c0",), "a", {"ok": "a"})  # b still runs
    stored = [e.detail["path"] for e in await store.audit("run-p") if e.kind == "tool_completed"]
    assert stored == ["a:c0"], "the result of a call that ended while another ran was held"
    await cp.tool_completed(("b:c1",), "b", {"ok": "b"})  # the last one: held...
    stored = [e.detail["path"] for e in await store.audit("run-p") if e.kind == "tool_completed"]
    assert stored == ["a:c0"]
    await cp.tool_started(("c:c2",), "c")  # ...until the next write, before the next tool runs
    kinds = [(e.kind, e.detail.get("path")) for e in await store.audit("run-p")]
    assert kinds.index(("tool_completed", "b:c1")) < kinds.index(("tool_started", "c:c2"))


@pytest.mark.parametrize("cancel", [False, True], ids=["completes", "cancelled"])
async def test_a_held_result_is_stored_before_the_run_completes_or_gives_its_claim_back(
    cancel: bool,
) -> None:
    """The result of a run's last call goes to the store before the completion; a run
    cancelled with a result held (a worker shutting down) stores it before the release."""
    store = MemoryStore()
    run_id = f"run-{cancel}"
    cp = Checkpointer(store, run_id, "w1", None)
    gate = asyncio.Event()

    async def go() -> Completed[Any]:
        await cp.step(Frame(framework="test", agent="a"))
        await cp.step(Frame(framework="test", agent="a"), hold=True)
        await cp.tool_started(("t:c0",), "t")
        await cp.tool_completed(("t:c0",), "t", {"ok": True})
        gate.set()
        if cancel:
            await asyncio.sleep(30)
        return Completed(output="done", run_id=run_id)

    task = asyncio.create_task(run_durably(cp, go))
    await gate.wait()
    if cancel:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    else:
        await task
    kinds = [e.kind for e in await store.audit(run_id)]
    last = "released" if cancel else "completed"
    assert "tool_completed" in kinds and last in kinds, kinds
    assert kinds.index("tool_completed") < kinds.index(last), kinds


async def test_the_request_after_a_batch_writes_no_segment_and_a_held_response_is_dropped() -> None:
    """The model request after a batch writes the batch's results only; a response step that
    no tool start needed is never written (the completion stores the run's end)."""
    store = CountingStore()
    cp = Checkpointer(store, "run-b", "w1", None)
    frame = Frame(framework="test", agent="a")
    await cp.step(frame)  # the first request: the run's checkpoint
    await cp.step(frame, hold=True)  # a response asking for a call
    await cp.tool_started(("t:c0",), "t")  # the response goes with the start
    await cp.tool_completed(("t:c0",), "t", {"ok": True})
    assert await cp.after_batch()  # the next request: the result alone, no segment
    await cp.step(frame, hold=True)  # the final response: no call starts
    await cp.flush()  # the run completes: the held response is dropped, nothing written
    assert store.writes == [
        ("checkpoint", False, []),
        ("append_step", True, ["tool_started"]),
        ("append_step", False, ["tool_completed"]),
    ]
    fresh = Checkpointer(CountingStore(), "run-c", "w1", None)
    assert not await fresh.after_batch()  # a run's first request: the adapter writes its step


def _grown(messages: int, *, blob: str = "") -> Frame:
    history = [{"role": "user", "n": i, "text": f"message {i} " * 8} for i in range(messages)]
    return Frame(framework="test", agent="a", state={"messages": history, "blob": blob})


async def test_full_checkpoints_come_ever_further_apart_as_the_history_grows() -> None:
    """With a step adding a message each time, a full checkpoint is written only once the
    segments add up to the checkpoint they follow: a logarithmic number of them, where one
    every ``compact_every`` steps would be linear."""
    store = CountingStore()
    cp = Checkpointer(store, "run-g", "w1", None, compact_every=4)
    steps, at = 400, []
    for n in range(1, steps + 1):
        before = len(store.writes)
        await cp.step(_grown(n))
        if any(method == "checkpoint" for method, _, _ in store.writes[before:]):
            at.append(n)
    assert len(at) <= 25, at  # one every 4 steps would be 100
    gaps = [b - a for a, b in itertools.pairwise(at)]
    assert gaps[0] == 5 and gaps[-1] >= 40, gaps  # 4 segments, then the full step
    assert all(b >= a for a, b in itertools.pairwise(gaps)), gaps
    record = (await store.list(run_id="run-g"))[0]
    assert record.continuation.root.state == _grown(steps).state  # base plus segments


async def test_a_chain_of_small_segments_on_a_large_checkpoint_is_bounded() -> None:
    """Segments that never add up to a large checkpoint still end in a full one after
    ``MAX_CHAIN`` times ``compact_every`` of them, so reading it back stays bounded."""
    from continuations_core._checkpointer import MAX_CHAIN

    store = CountingStore()
    cp = Checkpointer(store, "run-m", "w1", None, compact_every=1)
    blob = "x" * 200_000
    for n in range(1, 3 * MAX_CHAIN + 2):
        await cp.step(_grown(n, blob=blob))
    chains = [w for w in store.writes if w[0] == "checkpoint"]
    assert len(chains) == 3, store.writes[:5]  # the first, then after each MAX_CHAIN segments
