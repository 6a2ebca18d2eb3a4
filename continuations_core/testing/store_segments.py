"""Store conformance for incremental checkpoints: segments appended to a checkpoint.

Like :mod:`.store_scenarios`, each scenario takes a fresh store and a continuation factory and
raises ``AssertionError`` on failure. :func:`broken_chains_are_refused` also needs a
:class:`RawSegments`: direct access to the backend's stored segment texts, to damage them as a
torn write, a lost or reordered row, or an edit would.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Protocol

from .._schema import Continuation, Frame
from .._segments import chain_start, diff, new_segment
from .._signing import Keyring
from ..errors import BrokenCheckpoint, ClaimSuperseded, ConflictError, ContinuationTampered
from ..stores import Claim, Segment, Store
from ._store_kit import ContinuationFactory, Scenario, check, raises

__all__ = [
    "SEGMENT_SCENARIOS",
    "RawSegments",
    "appended_steps_load_as_one_checkpoint",
    "appends_are_fenced",
    "broken_chains_are_refused",
    "claim_next_record_reads_what_get_reads",
    "full_checkpoints_retire_segments",
    "grown",
    "unsigned_chains_still_chain",
]

KEYS = Keyring.generate("segments")
#: A lease that expires within a test.
_SHORT = 0.3


class RawSegments(Protocol):
    """Direct access to a backend's stored segments of one checkpoint (for damaging them)."""

    async def read(self, store: Store, base_id: str) -> list[str]:
        """The stored texts, in index order."""
        ...

    async def write(self, store: Store, base_id: str, texts: list[str]) -> None:
        """Replace the stored texts (stored at indexes 1, 2, … in this order)."""
        ...


def grown(frame: Frame, step: int) -> Frame:
    """``frame`` one step later: two messages appended, its policy counter bumped."""
    messages = [
        *frame.state.get("messages", []),
        {"role": "assistant", "content": f"step {step}", "parts": [{"n": step}]},
        {"role": "tool", "content": f"result {step}"},
    ]
    state = {**frame.state, "messages": messages, "usage": {"requests": step}}
    policy = {**frame.policy_state, "turns": step}
    return frame.model_copy(update={"state": state, "policy_state": policy})


class _Chain:
    """Writes the segments of one checkpoint the way a run's checkpointer does."""

    def __init__(self, base: Continuation, keys: Keyring | None) -> None:
        self.base, self.keys = base, keys
        sig = base.signature
        self.prev = chain_start(base.id, sig.mac if sig is not None else None)
        self.frame, self.index, self.seq = base.root, 0, base.seq

    def next(self, frame: Frame) -> Segment:
        old, new = self.frame.model_dump(mode="json"), frame.model_dump(mode="json")
        self.index += 1
        self.seq += 1
        seg = new_segment(self.base.id, self.index, self.seq, self.prev, diff(old, new), self.keys)
        self.prev, self.frame = seg.mac, frame
        return seg


async def _held(
    store: Store, make: ContinuationFactory, keys: Keyring | None, lease: float = 60.0
) -> tuple[Continuation, Claim, _Chain]:
    cont = make(keys, leaves=0, run_id=f"run-{uuid.uuid4().hex[:8]}")
    base = cont.model_copy(update={"root": cont.root.model_copy(update={"pending": ()})})
    base = base.sign(keys) if keys is not None else base.model_copy(update={"signature": None})
    claim = await store.checkpoint(base, owner="w1", lease_seconds=lease)
    assert claim is not None
    return base, claim, _Chain(base, keys)


async def appended_steps_load_as_one_checkpoint(store: Store, make: ContinuationFactory) -> None:
    """Appended steps load as the checkpoint's current frame; the chain verifies with the keys."""
    base, claim, chain = await _held(store, make, KEYS)
    frames = [base.root]
    for step in range(1, 4):
        frames.append(grown(frames[-1], step))
        await store.append_segment(chain.next(frames[-1]), claim=claim)
    loaded = await store.load(base.id)
    check(loaded.root == frames[-1], "the loaded checkpoint is its base with every step applied")
    check(loaded.seq == base.seq + 3 and loaded.id == base.id, f"id and seq: {loaded.seq}")
    loaded.verify(KEYS)
    record = await store.get(base.id)
    check(record.status == "claimed" and record.version == 1, f"appends leave the row: {record}")
    check(record.seq == base.seq + 3, f"the record's seq is the last step's: {record.seq}")
    listed = await store.list(run_id=base.run_id)
    check([r.continuation.root for r in listed] == [frames[-1]], "list shows the current frame")
    # A retried append (its answer lost) is a no-op; a gap or another base's segment is refused.
    last = chain.next(grown(frames[-1], 4))
    await store.append_segment(last, claim=claim)
    await store.append_segment(last, claim=claim)
    check((await store.load(base.id)).seq == base.seq + 4, "a repeated append was stored twice")
    gap = new_segment(base.id, 7, base.seq + 7, last.mac, [], KEYS)
    await raises(ConflictError, store.append_segment(gap, claim=claim), "a gap in the chain")
    other = new_segment("another-base", 5, base.seq + 5, last.mac, [], KEYS)
    await raises(ConflictError, store.append_segment(other, claim=claim), "another base's segment")
    await raises(
        ContinuationTampered, _verify(store, base.id, Keyring.generate("segments")), "other key"
    )
    copy = await store.load(base.id)
    copy.root.state["messages"].append({"role": "user", "content": "injected"})
    await raises(ContinuationTampered, _verified(copy), "a loaded checkpoint edited in memory")
    await store.complete(claim, output="done")


async def claim_next_record_reads_what_get_reads(store: Store, make: ContinuationFactory) -> None:
    """claim_next_record claims like claim_next and returns the record as get reads it after.

    Shown on an abandoned checkpoint with appended steps (a worker's takeover after a crash):
    the record carries every step, the new claim's status, token, version and lease.
    """
    check(await store.claim_next_record("w2") is None, "claim_next_record on an empty store")
    base, dead, chain = await _held(store, make, KEYS, lease=_SHORT)
    frames = [base.root]
    for step in range(1, 3):
        frames.append(grown(frames[-1], step))
        await store.append_segment(chain.next(frames[-1]), claim=dead)
    await asyncio.sleep(_SHORT + 0.1)
    found = await store.claim_next_record("w2", lease_seconds=60)
    check(found is not None, "the abandoned checkpoint was claimed")
    assert found is not None
    claim, record = found
    check(claim.id == base.id and claim.token == dead.token + 1, f"a takeover: {claim}")
    check(claim.owner == "w2" and claim.attempt == dead.attempt + 1, f"{claim}")
    check(record.status == "claimed" and record.claimed_by == "w2", f"claimed: {record}")
    check(record.fence == claim.token and record.version == claim.version, f"{record}")
    check(record.lease_until == claim.lease_until, f"lease {record.lease_until}")
    check(record.continuation.root == frames[-1], "the record carries every appended step")
    check(record.seq == base.seq + 2, f"the last step's seq: {record.seq}")
    record.continuation.verify(KEYS)
    got = await store.get(base.id)
    check(got.continuation.to_json() == record.continuation.to_json(), "get reads the same")
    same = ("status", "version", "fence", "claimed_by", "lease_until", "attempts", "updated_at")
    check(all(getattr(got, f) == getattr(record, f) for f in same), f"{got} vs {record}")
    check(await store.claim_next_record("w3") is None, "a live claim was taken")
    await raises(ClaimSuperseded, store.complete(dead), "completing under the lost claim")
    await store.complete(claim, output="done")


async def _verify(store: Store, id: str, keys: Keyring) -> None:
    (await store.load(id)).verify(keys)


async def _verified(cont: Continuation) -> None:
    cont.verify(KEYS)


async def full_checkpoints_retire_segments(store: Store, make: ContinuationFactory) -> None:
    """A full checkpoint (or a completion) retires the checkpoint it follows with its segments."""
    base, claim, chain = await _held(store, make, KEYS)
    frame = grown(base.root, 1)
    await store.append_segment(chain.next(frame), claim=claim)
    full = Continuation(run_id=base.run_id, seq=base.seq + 2, root=grown(frame, 2)).sign(KEYS)
    held = await store.checkpoint(full, previous=claim, owner="w1", lease_seconds=60)
    assert held is not None
    old = await store.get(base.id)
    check(old.status == "done", f"the retired checkpoint: {old.status}")
    check(old.continuation.seq == base.seq, "a retired checkpoint kept its segments")
    follow = _Chain(full, KEYS)
    await store.append_segment(follow.next(grown(full.root, 3)), claim=held)
    check((await store.load(full.id)).seq == full.seq + 1, "the new checkpoint takes segments")
    stale = new_segment(base.id, 2, base.seq + 2, chain.prev, [], KEYS)
    await raises(ClaimSuperseded, store.append_segment(stale, claim=claim), "a retired base")
    await store.complete(held, output="done")
    done = await store.get(full.id)
    check(done.continuation.seq == full.seq, "a completed checkpoint kept its segments")


async def appends_are_fenced(store: Store, make: ContinuationFactory) -> None:
    """After a takeover, an append under the old claim is refused and writes nothing."""
    base, claim, chain = await _held(store, make, KEYS, lease=0.05)
    first = grown(base.root, 1)
    await store.append_segment(chain.next(first), claim=claim)
    await asyncio.sleep(0.2)
    taken = await store.claim(base.id, owner="w2")
    check(taken.token == claim.token + 1, f"the takeover's token: {taken}")
    before = await store.audit(base.run_id)
    zombie = chain.next(grown(first, 2))
    exc = await raises(ClaimSuperseded, store.append_segment(zombie, claim=claim), "a zombie")
    check("token 1" in str(exc), f"the refusal names the stale token: {exc}")
    check(await store.audit(base.run_id) == before, "a refused append left an audit event")
    loaded = await store.load(base.id)
    check(loaded.root == first and loaded.seq == base.seq + 1, "a refused append was stored")
    await store.append_segment(zombie, claim=taken)  # the new holder may go on with the chain
    check((await store.load(base.id)).seq == base.seq + 2, "the holder's append")
    await store.complete(taken, output="done")


async def unsigned_chains_still_chain(store: Store, make: ContinuationFactory) -> None:
    """Without keys the segments form a SHA-256 chain: it loads, and an unsigned run resumes."""
    base, claim, chain = await _held(store, make, None)
    frame = base.root
    for step in range(1, 3):
        frame = grown(frame, step)
        await store.append_segment(chain.next(frame), claim=claim)
    loaded = await store.load(base.id)
    check(loaded.root == frame and loaded.signature is None, "the unsigned checkpoint")
    loaded.verify(None, allow_unsigned=True)
    await store.complete(claim, output="done")


async def broken_chains_are_refused(
    store: Store, make: ContinuationFactory, raw: RawSegments
) -> None:
    """A torn, missing, reordered, foreign or edited segment is a typed error on every read."""
    for keys in (KEYS, None):
        base, claim, chain = await _held(store, make, keys)
        frame = base.root
        for step in range(1, 4):
            frame = grown(frame, step)
            await store.append_segment(chain.next(frame), claim=claim)
        good = await raw.read(store, base.id)
        check(len(good) == 3, f"three segments are stored: {len(good)}")
        other, other_claim, other_chain = await _held(store, make, keys)
        foreign = other_chain.next(grown(other.root, 1)).text
        edited = good[1].replace('"step 2"', '"step 9"')
        check(edited != good[1], "the edit changed the text")
        damaged = {
            "torn": [good[0], good[1][: len(good[1]) // 2], good[2]],
            "missing": [good[0], good[2]],
            "reordered": [good[1], good[0], good[2]],
            "foreign": [good[0], foreign, good[2]],
            "edited": [good[0], edited, good[2]],
        }
        for what, texts in damaged.items():
            await raw.write(store, base.id, texts)
            exc = await _refused(store, base.id, keys)
            check(isinstance(exc, BrokenCheckpoint), f"{what} ({keys is not None}): {exc!r}")
            check("Segment" in str(exc) and base.id in str(exc), f"it says which: {exc}")
        await raw.write(store, base.id, good)
        loaded = await store.load(base.id)
        check(loaded.root == frame, "the repaired chain loads again")
        await store.complete(claim, output="done")
        await store.complete(other_claim, output="done")


async def _refused(store: Store, id: str, keys: Keyring | None) -> BaseException | None:
    """The error reading (and verifying) checkpoint ``id`` raises, if any."""
    try:
        cont = await store.load(id)
        cont.verify(keys, allow_unsigned=keys is None)
    except Exception as exc:
        return exc
    return None


SEGMENT_SCENARIOS: list[Scenario] = [
    appended_steps_load_as_one_checkpoint,
    claim_next_record_reads_what_get_reads,
    full_checkpoints_retire_segments,
    appends_are_fenced,
    unsigned_chains_still_chain,
]
