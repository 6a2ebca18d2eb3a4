"""The Redis store: the same protocol as SQL stores, for deployments that already run Redis.

Keys live under one prefix (``continuations`` by default)::

    <prefix>:c:<id>             hash: the record; ``document`` is the exact signed text
    <prefix>:all                sorted set of ids, by creation time (microseconds)
    <prefix>:status:<status>    the same, per status
    <prefix>:run:<run_id>       the same, per run
    <prefix>:queue              ready and claimed ids, by when each is claimable: a ready
                                one when it changed or its backoff ends, a claimed one
                                when its lease ends (older versions scored them by last
                                change; claim_next rescores such an entry when it meets it)
    <prefix>:leases             claimed ids by lease end, and backing-off ready ids by the
                                time they may be claimed again
    <prefix>:owner:<owner>      claimed ids held under that owner name (layout 2), by their
                                holder's session (codec.session_score)
    <prefix>:audit:<run_id>     list of the run's audit events, in order
    <prefix>:seg:<id>           list of the segments appended to checkpoint <id> (layout 3)
    <prefix>:layout             the key layout's version
    <prefix>:ready              pub/sub channel: ids that became ready

Layout 2 added the owner index and the record fields ``fence``, ``attempts``, ``not_before``,
``last_error``, ``holder`` and ``output``; opening layout-1 keys migrates them in place.
Layout 3 added checkpoint segments (nothing to migrate: older keys have none).

Every change is an optimistic transaction: ``WATCH`` the records, read them, apply the shared
rules of :mod:`._base` at the server's clock, and write records, indexes and audit in one
``MULTI``/``EXEC``. If another writer touched a record in between, ``EXEC`` fails and the
change is planned again on the new record, so of N concurrent claimers exactly one wins.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeAlias, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .._schema import Continuation
from .._segments import Segment
from ..errors import (
    ConfigurationError,
    ConflictError,
    ContinuationNotFound,
    DecisionError,
    MissingExtra,
    StoreUnavailable,
)
from . import _redis_codec as codec
from ._base import (
    DEFAULT_MAX_ATTEMPTS,
    AuditEvent,
    AuditKind,
    Claim,
    Status,
    StoredContinuation,
)
from ._owners import holder_id, takeback_terms
from ._redis_claim import CLAIM_NEXT
from ._rowstore import Change, RowStore
from ._rules import (
    Events,
    Row,
    already_saved,
    check_fence,
    check_segment,
    checkpoint_rows,
    jsonable,
    new_row,
    not_found,
    recorded_event,
    renewed_claim,
    unreadable_failure,
)
from ._urls import redact, scrub

try:
    from redis.asyncio import Redis
    from redis.asyncio.client import Pipeline, PubSub
    from redis.exceptions import RedisError, WatchError
except ImportError as exc:
    raise MissingExtra("redis", "redis") from exc

__all__ = ["LAYOUT_VERSION", "RedisStore", "from_url"]

T = TypeVar("T")
Changes: TypeAlias = list[tuple[Row | None, Row]]  # (before, after); before None: a new record
Plan: TypeAlias = Callable[[list[Row | None], datetime], tuple[Changes, Events, T]]

LAYOUT_VERSION = 3  # bump with a migration in _LAYOUT_MIGRATIONS when the key layout changes
_ATTEMPTS = 1000  # optimistic retries; each failed one means another writer succeeded
_WAKE_UPS = 1000  # at most this many ids per wait_ready call


def from_url(url: str) -> RedisStore:
    """Open a store from ``redis://[:password@]host:port/db?prefix=name``.

    The optional ``prefix`` query parameter (ours, not redis-py's) namespaces the keys; every
    other parameter goes to redis-py. Nothing connects until first use.
    """
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefixes = [value for key, value in query if key == "prefix"]
    if not prefixes:
        return RedisStore(url)
    rest = urlencode([(key, value) for key, value in query if key != "prefix"])
    return RedisStore(urlunsplit(parts._replace(query=rest)), prefix=prefixes[-1])


class RedisStore(RowStore):
    """A store in Redis, shared safely by many processes.

    Args:
        url_or_client: A ``redis://`` URL (the store then owns its client), or a
            ``redis.asyncio.Redis`` client, used as is and left open by :meth:`close`.
        prefix: The namespace of every key this store uses.

    Raises:
        ConfigurationError: If ``prefix`` is empty or contains glob characters.
    """

    def __init__(self, url_or_client: str | Redis, *, prefix: str = "continuations") -> None:
        if not prefix or any(c in prefix for c in "*?[]"):
            raise ConfigurationError(f"Invalid Redis key prefix {prefix!r}: use plain text.")
        self._owns = isinstance(url_or_client, str)
        self._url = url_or_client if isinstance(url_or_client, str) else ""
        if isinstance(url_or_client, str):
            self._where = redact(url_or_client)
            try:
                # A read that never returns must fail (and the lease expire), not hang a worker.
                url_or_client = Redis.from_url(
                    url_or_client, socket_connect_timeout=10, socket_timeout=30
                )
            except ValueError as exc:  # redis-py parses the URL here
                raise ConfigurationError(
                    f"Invalid Redis URL {self._where!r}: {scrub(str(exc), self._url).rstrip('.')}. Use "
                    "redis://[:password@]host:port/db?prefix=name."
                ) from None
        else:
            kwargs = url_or_client.connection_pool.connection_kwargs
            self._where = f"redis://{kwargs.get('host', '?')}:{kwargs.get('port', '?')}"
        self._client: Redis = url_or_client
        self.prefix = prefix
        self.channel = self._k("ready")
        self._checked = False
        self._closed = False
        self._pubsub: PubSub | None = None
        self._listen_lock = asyncio.Lock()
        self._claim_next_script = self._client.register_script(CLAIM_NEXT)

    # -- plumbing ---------------------------------------------------------------------------

    def _k(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        """Driver errors become ``StoreUnavailable``, naming the server (never the password)."""
        try:
            yield
        except RedisError as exc:
            reason = " ".join(scrub(str(exc), self._url).split()).rstrip(".")
            raise StoreUnavailable(
                f"Redis store {self._where} (prefix {self.prefix!r}) failed: {reason}. Check "
                "that the server is running and reachable, then retry."
            ) from (exc if scrub(str(exc), self._url) == str(exc) else None)

    async def _open(self) -> Redis:
        if self._closed:
            raise StoreUnavailable("This RedisStore is closed; open a new one.")
        if not self._checked:
            with self._guard():
                await self._client.set(self._k("layout"), LAYOUT_VERSION, nx=True)
                layout = int(await self._client.get(self._k("layout")) or 0)
                if layout > LAYOUT_VERSION:
                    raise ConfigurationError(
                        f"The keys under {self.prefix!r} use layout {layout}, newer than this "
                        f"package knows ({LAYOUT_VERSION}). Upgrade agent-continuations."
                    )
                for version in range(layout, LAYOUT_VERSION):
                    await _LAYOUT_MIGRATIONS[version](self)
                    await self._client.set(self._k("layout"), version + 1)
            self._checked = True
        return self._client

    async def _layout_1_to_2(self) -> None:
        """Index claims by owner; records without the new fields read them as defaults.

        Idempotent, so processes opening the keys together may both run it.
        """
        claimed: builtins.list[Any] = await self._client.zrange(self._k("status", "claimed"), 0, -1)
        ids = [codec.text(id) for id in claimed]
        async with self._client.pipeline(transaction=False) as pipe:
            for id in ids:
                pipe.hget(self._k("c", id), "claimed_by")
            owners = await pipe.execute()
        async with self._client.pipeline(transaction=False) as pipe:
            for id, owner in zip(ids, owners, strict=True):
                if owner is not None:
                    pipe.zadd(self._k("owner", codec.text(owner)), {id: 0})
            await pipe.execute()

    async def _atomic(self, ids: Sequence[str], plan: Plan[T], *, text: str = "") -> T:
        """WATCH the records and read them, plan at server time, write it all in one MULTI."""
        client = await self._open()
        keys = [self._k("c", id) for id in ids]
        with self._guard():
            for _ in range(_ATTEMPTS):
                async with client.pipeline(transaction=True) as pipe:
                    await pipe.watch(*keys)
                    rows = [
                        codec.row(data) if (data := await pipe.hgetall(k)) else None for k in keys
                    ]
                    changes, events, result = plan(rows, codec.from_time(await pipe.time()))
                    pipe.multi()  # type: ignore[no-untyped-call]  # unannotated in redis-py
                    for old, new in changes:
                        if new is not old:  # a journal write leaves its row unchanged
                            self._write(pipe, old, new, text)
                    for event in events:
                        pipe.rpush(self._k("audit", event.run_id), event.model_dump_json())
                    try:
                        await pipe.execute()
                    except WatchError:
                        continue  # another writer changed a record first: plan again
                    return result
        raise ConflictError(
            f"Gave up after {_ATTEMPTS} conflicting writes.", continuation_id=ids[0]
        )

    async def _transact(self, id: str, change: Change[T]) -> T:
        def plan(rows: builtins.list[Row | None], at: datetime) -> tuple[Changes, Events, T]:
            if (old := rows[0]) is None:
                raise not_found(id)
            new, events, result = change(old, at)
            return [(old, new)], events, result

        return await self._atomic([id], plan)

    def _write(self, pipe: Pipeline, old: Row | None, new: Row, text: str) -> None:
        id, run_id, score = new.id, new.document.run_id, codec.micros(new.created_at)
        error = new.last_error.model_dump_json() if new.last_error is not None else None
        output = json.dumps(jsonable(new.output)) if new.output is not None else None
        values: dict[str, str | int | None] = {
            "version": new.version, "status": new.status, "updated_at": codec.ts(new.updated_at),
            "claimed_by": new.claimed_by, "claim_token": None,
            "lease_until": codec.ts(new.lease_until), "decisions": codec.dump(new.decisions),
            "fence": new.fence, "attempts": new.attempts, "not_before": codec.ts(new.not_before),
            "last_error": error, "holder": new.holder, "output": output,
        }  # fmt: skip
        if old is None:
            values.update(id=id, run_id=run_id, seq=new.document.seq, document=text)
            values["created_at"] = codec.ts(new.created_at)
            pipe.zadd(self._k("all"), {id: score})
            pipe.zadd(self._k("run", run_id), {id: score})
        pipe.hset(self._k("c", id), mapping={k: v for k, v in values.items() if v is not None})
        if unset := [k for k, v in values.items() if v is None]:
            pipe.hdel(self._k("c", id), *unset)
        if old is not None and old.status != new.status:
            pipe.zrem(self._k("status", old.status), id)
        pipe.zadd(self._k("status", new.status), {id: score})
        if new.status in ("ready", "claimed"):  # by when it is due (claim_next's order)
            due = new.lease_until if new.status == "claimed" else new.not_before
            pipe.zadd(self._k("queue"), {id: codec.micros(due or new.updated_at)})
        else:
            pipe.zrem(self._k("queue"), id)
        if new.status == "claimed" and new.lease_until is not None:
            pipe.zadd(self._k("leases"), {id: codec.micros(new.lease_until)})
        elif new.status == "ready" and new.not_before is not None:
            pipe.zadd(self._k("leases"), {id: codec.micros(new.not_before)})
        else:
            pipe.zrem(self._k("leases"), id)
        if old is not None and old.status == "claimed" and old.claimed_by is not None:
            pipe.zrem(self._k("owner", old.claimed_by), id)
        if new.status == "claimed" and new.claimed_by is not None:
            pipe.zadd(self._k("owner", new.claimed_by), {id: codec.session_score(new.holder)})
        if new.status == "ready" and new.not_before is None:
            pipe.publish(self.channel, id)
        if new.status == "done" and (old is None or old.status != "done"):
            pipe.delete(self._k("seg", id))  # a retired checkpoint's segments go with it

    # -- the protocol -----------------------------------------------------------------------

    async def _save(self, cont: Continuation, *, actor: str | None = None) -> StoredContinuation:
        """See :meth:`Store.save`."""
        text = cont.model_copy(update={"decisions": ()}).to_json()
        document = Continuation.from_json(text)  # rules see the document as it will load

        def plan(rows: builtins.list[Row | None], at: datetime) -> tuple[Changes, Events, Row]:
            if rows[0] is not None:
                raise already_saved(cont.id)
            row, events = new_row(document, cont.decisions, actor=actor, at=at)
            return [(None, row)], events, row

        return (await self._atomic([cont.id], plan, text=text)).record()

    async def get(self, id: str) -> StoredContinuation:
        """See :meth:`Store.get`."""
        client = await self._open()
        with self._guard():
            async with client.pipeline(transaction=True) as pipe:
                pipe.hgetall(self._k("c", id))
                pipe.lrange(self._k("seg", id), 0, -1)
                data, segments = await pipe.execute()
        if not data:
            raise not_found(id)
        return codec.row(data).record([codec.text(s) for s in segments])

    async def list(
        self, *, status: Status | None = None, run_id: str | None = None, limit: int = 100
    ) -> builtins.list[StoredContinuation]:
        """See :meth:`Store.list`."""
        client = await self._open()
        if run_id is not None:
            index = self._k("run", run_id)
        else:
            index = self._k("status", status) if status is not None else self._k("all")
        found: builtins.list[tuple[Row, builtins.list[str]]] = []
        start, page = 0, max(limit, 16)
        with self._guard():
            while len(found) < limit:
                ids: builtins.list[Any] = await client.zrevrange(index, start, start + page - 1)
                if not ids:
                    break
                async with client.pipeline(transaction=False) as pipe:
                    for id in ids:
                        pipe.hgetall(self._k("c", codec.text(id)))
                        pipe.lrange(self._k("seg", codec.text(id)), 0, -1)
                    read = await pipe.execute()
                rows = [
                    (codec.row(data), [codec.text(s) for s in segments])
                    for data, segments in zip(read[::2], read[1::2], strict=True)
                    if data
                ]
                # The index and the records are read apart: filter on the records themselves.
                found += [r for r in rows if status is None or r[0].status == status]
                start += page
        return [row.record(segments) for row, segments in found[: max(limit, 0)]]

    async def _checkpoint(
        self,
        cont: Continuation,
        *,
        previous: Claim | None = None,
        owner: str | None = None,
        lease_seconds: float = 30.0,
        progress: bool = True,
    ) -> Claim | None:
        """See :meth:`Store.checkpoint`. One transaction; the lease runs on the server clock."""
        text = cont.model_copy(update={"decisions": ()}).to_json()
        document = Continuation.from_json(text)
        holder = holder_id()

        def plan(rows: builtins.list[Row | None], at: datetime) -> tuple[Changes, Events, Any]:
            if rows[0] is not None:
                raise already_saved(cont.id)
            old = rows[1] if previous is not None else None
            if previous is not None and old is None:
                raise not_found(previous.id)
            held = (old, previous) if old is not None and previous is not None else None
            new, retired, claim, events = checkpoint_rows(
                document, cont.decisions, held, owner=owner, lease_seconds=lease_seconds, at=at,
                progress=progress, holder=holder,
            )  # fmt: skip
            changes: Changes = [(old, retired)] if retired is not None else []
            return [*changes, (None, new)], events, claim

        ids = [cont.id] if previous is None else [cont.id, previous.id]
        claim: Claim | None = await self._atomic(ids, plan, text=text)
        return claim

    async def _claimed(
        self,
        claim: Claim,
        plan: Callable[[Pipeline, datetime], Awaitable[Callable[[], T]]],
        *also: str,
    ) -> T:
        """A write under ``claim`` that reads the record's claim fields only, never its
        document: WATCH the record (and the keys ``also``), check the claim holds, then
        ``plan`` reads what else it needs (at the server's time) and returns what queues its
        writes; they go in one MULTI. Retried while another writer changes a watched key.

        Raises:
            ClaimSuperseded: If ``claim`` no longer holds; nothing is written.
            ContinuationNotFound: If there is no record ``claim.id``.
        """
        client = await self._open()
        key = self._k("c", claim.id)
        with self._guard():
            for _ in range(_ATTEMPTS):
                async with client.pipeline(transaction=True) as pipe:
                    await pipe.watch(key, *also)
                    status, fence, claimed_by = await pipe.hmget(
                        key, ["status", "fence", "claimed_by"]
                    )
                    if status is None:
                        raise not_found(claim.id)
                    check_fence(
                        claim.id, codec.text(status), int(fence or 0),
                        codec.text(claimed_by) if claimed_by is not None else None, claim,
                    )  # fmt: skip
                    queue = await plan(pipe, codec.from_time(await pipe.time()))
                    pipe.multi()  # type: ignore[no-untyped-call]  # unannotated in redis-py
                    result = queue()
                    try:
                        await pipe.execute()
                    except WatchError:
                        continue
                    return result
        raise ConflictError(
            f"Gave up after {_ATTEMPTS} conflicting writes.", continuation_id=claim.id
        )

    async def _fenced(
        self, claim: Claim, events: Callable[[datetime], Events], segment: Segment | None
    ) -> None:
        """Check the claim fields only, then append the segment and events in one MULTI."""
        seg_key = self._k("seg", claim.id)

        async def plan(pipe: Pipeline, at: datetime) -> Callable[[], None]:
            write = False
            if segment is not None:
                count = int(await pipe.llen(seg_key))
                stored = await pipe.lindex(seg_key, segment.index - 1)
                there = codec.text(stored) if stored is not None else None
                write = check_segment(segment, count, there)
            made = events(at)

            def queue() -> None:
                if write and segment is not None:
                    pipe.rpush(seg_key, segment.text)
                for event in made:
                    pipe.rpush(self._k("audit", event.run_id), event.model_dump_json())

            return queue

        await self._claimed(claim, plan, seg_key)

    async def heartbeat(self, claim: Claim, *, lease_seconds: float = 300.0) -> Claim:
        """See :meth:`Store.heartbeat`. Reads the claim's fields, not the document: a
        heartbeat costs the same however long the run's history is."""

        async def plan(pipe: Pipeline, at: datetime) -> Callable[[], Claim]:
            renewed = renewed_claim(claim, lease_seconds=lease_seconds, at=at)

            def queue() -> Claim:
                pipe.hset(self._k("c", claim.id), "lease_until", codec.ts(renewed.lease_until))
                lease = codec.micros(renewed.lease_until)
                pipe.zadd(self._k("leases"), {claim.id: lease})
                pipe.zadd(self._k("queue"), {claim.id: lease})  # due when the lease ends
                return renewed

            return queue

        return await self._claimed(claim, plan)

    async def _append(
        self,
        run_id: str,
        kind: AuditKind,
        *,
        continuation_id: str,
        actor: str | None,
        detail: dict[str, Any] | None,
    ) -> None:
        """Append one event outside any claim, stamped with the server's clock."""
        client = await self._open()
        with self._guard():
            event = recorded_event(
                run_id, kind, at=codec.from_time(await client.time()),
                continuation_id=continuation_id, actor=actor, detail=detail,
            )  # fmt: skip
            await client.rpush(self._k("audit", run_id), event.model_dump_json())

    async def fail_unreadable(
        self, id: str, error: BaseException, *, actor: str | None = None
    ) -> bool:
        """See :meth:`Store.fail_unreadable`. The record's fields are read raw, never parsed."""
        client = await self._open()
        key = self._k("c", id)
        fields = ("run_id", "status", "version", "attempts", "created_at", "claimed_by")
        with self._guard():
            for _ in range(_ATTEMPTS):
                async with client.pipeline(transaction=True) as pipe:
                    await pipe.watch(key)
                    values = await pipe.hmget(key, list(fields))
                    raw = dict(zip(fields, [codec.text(v) if v is not None else None for v in values],
                                   strict=True))  # fmt: skip
                    if raw["status"] is None or raw["run_id"] is None:
                        raise not_found(id)
                    if raw["status"] in ("done", "failed"):
                        return False
                    at = codec.from_time(await pipe.time())
                    last, event = unreadable_failure(
                        id, raw["run_id"], error, attempts=int(raw["attempts"] or 0), actor=actor,
                        at=at,
                    )  # fmt: skip
                    created = raw["created_at"]
                    score = codec.micros(datetime.fromisoformat(created) if created else at)
                    pipe.multi()  # type: ignore[no-untyped-call]  # unannotated in redis-py
                    pipe.hset(key, mapping={
                        "status": "failed", "version": int(raw["version"] or 0) + 1,
                        "updated_at": codec.ts(at) or "", "last_error": last.model_dump_json(),
                    })  # fmt: skip
                    pipe.hdel(key, "lease_until", "holder", "not_before")
                    pipe.zrem(self._k("status", raw["status"]), id)
                    pipe.zadd(self._k("status", "failed"), {id: score})
                    pipe.zrem(self._k("queue"), id)
                    pipe.zrem(self._k("leases"), id)
                    if raw["claimed_by"] is not None:
                        pipe.zrem(self._k("owner", raw["claimed_by"]), id)
                    pipe.rpush(self._k("audit", raw["run_id"]), event.model_dump_json())
                    try:
                        await pipe.execute()
                    except WatchError:
                        continue
                    return True
        raise ConflictError(f"Gave up after {_ATTEMPTS} conflicting writes.", continuation_id=id)

    async def audit(self, run_id: str) -> builtins.list[AuditEvent]:
        """See :meth:`Store.audit`."""
        client = await self._open()
        with self._guard():
            found = await client.lrange(self._k("audit", run_id), 0, -1)
        return [AuditEvent.model_validate_json(item) for item in found]

    # -- for workers --------------------------------------------------------------------------

    async def claimable(self, *, limit: int = 10, owner: str | None = None) -> builtins.list[str]:
        """See :meth:`Store.claimable`; times are the server's.

        An owner's own claims first, then longest unchanged first. This only reads:
        :meth:`claim` is the atomic step and may still raise ``AlreadyClaimed`` when another
        worker got there first.
        """
        client = await self._open()
        found: builtins.list[str] = []
        start, page = 0, max(limit, 16)
        with self._guard():
            if owner is not None:
                held: builtins.list[Any] = await client.zrange(
                    self._k("owner", owner), 0, limit - 1
                )
                found += [codec.text(id) for id in held]
            now = codec.micros(codec.from_time(await client.time()))
            while len(found) < limit:  # the due part of the queue (see claim_next)
                queue: builtins.list[Any] = await client.zrangebyscore(
                    self._k("queue"), "-inf", now, start=start, num=page
                )
                if not queue:
                    break
                ids = [codec.text(id) for id in queue]
                leases = await client.zmscore(self._k("leases"), ids)
                found += [id for id, lease in zip(ids, leases, strict=True) if (lease or 0) <= now]
                found = list(dict.fromkeys(found))  # an owner's expired claim is listed twice
                start += page
        return found[: max(limit, 0)]

    async def _claim_next(
        self,
        owner: str,
        *,
        lease_seconds: float = 300.0,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    ) -> Claim | None:
        """See :meth:`Store.claim_next`: one Lua script picks, claims and audits (server time).

        A live claim taken back by a restarted owner, or an abandoned one out of attempts,
        is claimed through :meth:`claim`'s exact rules.
        """
        await self._open()
        session, explicit, machine = takeback_terms(owner)
        args: builtins.list[Any] = [
            self.prefix, owner, round(lease_seconds * 1_000_000), holder_id(), session,
            "1" if explicit else "0", machine or "", max_attempts, codec.session_score(session),
        ]  # fmt: skip
        skipped: builtins.list[str] = []
        while True:
            with self._guard():
                found: Any = await self._claim_next_script(args=[*args, *skipped])
            if found is None:
                return None
            kind, id, *values = (codec.text(v) for v in found)
            if kind == "claimed":
                version, lease, token, attempt = (int(v) for v in values)
                return Claim(
                    id=id, version=version, owner=owner, token=token, attempt=attempt,
                    lease_until=codec.EPOCH + timedelta(microseconds=lease),
                )  # fmt: skip
            try:  # raises ContinuationFailed once it is stored failed (out of attempts)
                return await self.claim(
                    id, owner=owner, lease_seconds=lease_seconds, max_attempts=max_attempts
                )
            except (ConflictError, DecisionError, ContinuationNotFound):
                skipped.append(id)  # its holder is not gone, or another writer won

    async def wait_ready(self, timeout: float) -> builtins.list[str]:
        """Wait up to ``timeout`` seconds for continuations to become ready; return their ids.

        Returns as soon as a message arrives (with any others already received), or an empty
        list at the timeout. The subscription starts with the first call and lasts until
        :meth:`close`; wake-ups before the first call, and expired leases, notify no one, so
        poll :meth:`claimable` after each wait (as the worker does).
        """
        client = await self._open()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(timeout, 0.0)
        ids: builtins.list[str] = []
        async with self._listen_lock:
            with self._guard():
                if self._pubsub is None:
                    self._pubsub = client.pubsub(ignore_subscribe_messages=True)
                    await self._pubsub.subscribe(self.channel)
                while len(ids) < _WAKE_UPS:
                    remaining = max(deadline - loop.time(), 0.0)
                    # Once one id arrived, only take what is already there.
                    message = await self._pubsub.get_message(timeout=0.0 if ids else remaining)
                    if message is not None and message["type"] == "message":
                        ids.append(codec.text(message["data"]))
                    elif ids or remaining <= 0:
                        break
        return list(dict.fromkeys(ids))

    async def close(self) -> None:
        """Unsubscribe, and close the client if this store opened it from a URL."""
        if self._closed:
            return
        self._closed = True
        async with self._listen_lock:
            pubsub, self._pubsub = self._pubsub, None
            with contextlib.suppress(RedisError):
                if pubsub is not None:
                    await pubsub.aclose()  # type: ignore[no-untyped-call]  # unannotated in redis-py
                if self._owns:
                    await self._client.aclose()


async def _layout_2_to_3(store: RedisStore) -> None:
    """Nothing to move: layout-2 keys hold no checkpoint segments."""


_LAYOUT_MIGRATIONS: dict[int, Callable[[RedisStore], Awaitable[None]]] = {
    1: RedisStore._layout_1_to_2,
    2: _layout_2_to_3,
}
