"""Stores that misbehave on purpose, wrapping a real store: flaky calls and partitions.

``FlakyStore`` makes a share of calls fail with ``StoreUnavailable``, half of them before the
call reaches the store and half after it was committed (the answer is lost on the way back,
the harder case). ``PartitionedStore`` cuts this process off from the store while its
``partitioned`` flag is set: every call waits, as on a network partition, until it heals.
"""

from __future__ import annotations

import asyncio
import builtins
import random
import threading
from collections import Counter
from typing import Any

from continuations_core import Continuation, DecisionRecord, StoreUnavailable
from continuations_core.stores import AuditEvent, Claim, Segment, Store, StoredContinuation
from continuations_core.stores._base import AuditKind, RunStatus, Status


class WrappedStore(Store):
    """Delegates every call to ``inner``, around :meth:`_before` and :meth:`_after` hooks.

    Every method of the store protocol is delegated, those with a default too, so the
    backend's own implementation runs (its atomic ``append_step``, ``claim_next`` and
    ``claim_next_record``)."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner

    async def _before(self, name: str) -> None:
        return None

    async def _after(self, name: str) -> None:
        return None

    async def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        await self._before(name)
        result = await getattr(self.inner, name)(*args, **kwargs)
        await self._after(name)
        return result

    async def save(self, cont: Continuation, *, actor: str | None = None) -> StoredContinuation:
        return await self._call("save", cont, actor=actor)  # type: ignore[no-any-return]

    async def load(self, id: str) -> Continuation:
        return await self._call("load", id)  # type: ignore[no-any-return]

    async def get(self, id: str) -> StoredContinuation:
        return await self._call("get", id)  # type: ignore[no-any-return]

    async def list(
        self, *, status: Status | None = None, run_id: str | None = None, limit: int = 100
    ) -> builtins.list[StoredContinuation]:
        return await self._call("list", status=status, run_id=run_id, limit=limit)  # type: ignore[no-any-return]

    async def decide(self, id: str, record: DecisionRecord, **kwargs: Any) -> StoredContinuation:
        return await self._call("decide", id, record, **kwargs)  # type: ignore[no-any-return]

    async def claim(self, id: str, **kwargs: Any) -> Claim:
        return await self._call("claim", id, **kwargs)  # type: ignore[no-any-return]

    async def heartbeat(self, claim: Claim, **kwargs: Any) -> Claim:
        return await self._call("heartbeat", claim, **kwargs)  # type: ignore[no-any-return]

    async def release(self, claim: Claim) -> None:
        await self._call("release", claim)

    async def complete(self, claim: Claim, **kwargs: Any) -> None:
        await self._call("complete", claim, **kwargs)

    async def fail(self, claim: Claim, error: BaseException, **kwargs: Any) -> StoredContinuation:
        return await self._call("fail", claim, error, **kwargs)  # type: ignore[no-any-return]

    async def fail_unreadable(
        self, id: str, error: BaseException, *, actor: str | None = None
    ) -> bool:
        return await self._call("fail_unreadable", id, error, actor=actor)  # type: ignore[no-any-return]

    async def retry(self, id: str, *, by: str | None = None) -> StoredContinuation:
        return await self._call("retry", id, by=by)  # type: ignore[no-any-return]

    async def audit(self, run_id: str) -> builtins.list[AuditEvent]:
        return await self._call("audit", run_id)  # type: ignore[no-any-return]

    async def checkpoint(self, cont: Continuation, **kwargs: Any) -> Claim | None:
        return await self._call("checkpoint", cont, **kwargs)  # type: ignore[no-any-return]

    async def record(self, run_id: str, kind: AuditKind, **kwargs: Any) -> None:
        await self._call("record", run_id, kind, **kwargs)

    async def append_segment(self, segment: Segment, *, claim: Claim) -> None:
        await self._call("append_segment", segment, claim=claim)

    async def append_step(self, claim: Claim, run_id: str, **kwargs: Any) -> None:
        # The backend's own atomic step write, not the default's one write per part.
        await self._call("append_step", claim, run_id, **kwargs)

    async def claim_next(self, owner: str, **kwargs: Any) -> Claim | None:
        # The backend's own atomic pick-and-claim, not the default's scan then claim.
        return await self._call("claim_next", owner, **kwargs)  # type: ignore[no-any-return]

    async def claim_next_record(
        self, owner: str, **kwargs: Any
    ) -> tuple[Claim, StoredContinuation] | None:
        # The backend's own claim with its read (one round trip on Postgres and SQLite).
        return await self._call("claim_next_record", owner, **kwargs)  # type: ignore[no-any-return]

    async def claimable(self, *, limit: int = 10, owner: str | None = None) -> builtins.list[str]:
        return await self._call("claimable", limit=limit, owner=owner)  # type: ignore[no-any-return]

    async def status(self, run_id: str) -> RunStatus:
        return await self._call("status", run_id)  # type: ignore[no-any-return]

    async def wait_ready(self, timeout: float) -> builtins.list[str]:
        return await self._call("wait_ready", timeout)  # type: ignore[no-any-return]

    async def close(self) -> None:
        await self.inner.close()


class FlakyStore(WrappedStore):
    """Fails ``rate`` of all calls transiently: half before reaching the store, half after.

    Attributes:
        failures: How many calls failed, by method and side (``"claim:before"``...).
    """

    def __init__(self, inner: Store, *, rate: float, seed: int) -> None:
        super().__init__(inner)
        self.rate = rate
        self.rng = random.Random(seed)
        self.failures: Counter[str] = Counter()
        self.calls = 0

    def _fault(self, name: str, side: str) -> None:
        raise StoreUnavailable(f"injected transient failure of {name} ({side} the store)")

    async def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        # Each call draws once, on its way in, whether and where it fails.
        self.calls += 1
        draw = self.rng.random()
        if draw < self.rate / 2:
            self.failures[f"{name}:before"] += 1
            self._fault(name, "before")
        result = await getattr(self.inner, name)(*args, **kwargs)
        if draw < self.rate:
            self.failures[f"{name}:after"] += 1
            self._fault(name, "after")
        return result


class PartitionedStore(WrappedStore):
    """Every call waits while ``partitioned`` is set, as if the network to the store were cut."""

    def __init__(self, inner: Store) -> None:
        super().__init__(inner)
        self.partitioned = threading.Event()

    async def _before(self, name: str) -> None:
        while self.partitioned.is_set():
            await asyncio.sleep(0.01)
