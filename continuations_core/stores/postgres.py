"""The PostgreSQL store: one database shared by many processes on many machines.

Everything lives in one Postgres schema, created on first use by ordered migrations recorded
in ``schema_migrations`` (one transaction under an advisory lock, so workers starting together
do not race). The signed document is stored as the exact text it serializes to.

Every change is one transaction that locks the row (``SELECT … FOR UPDATE``), applies the
shared rules of :mod:`._base` at the database's clock (so worker clocks do not matter) and
writes with a compare-and-set on the version: of N concurrent claimers exactly one wins.
Whenever a continuation becomes ``ready`` the transaction sends ``NOTIFY <schema>_ready,
'<id>'``, which :meth:`PostgresStore.wait_ready` listens for.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import functools
import hashlib
import json
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, LiteralString, TypeAlias, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .._decisions import load_records
from .._schema import Continuation, DecisionRecord
from .._segments import Segment
from ..errors import (
    ConfigurationError,
    ConflictError,
    ContinuationNotFound,
    DecisionError,
    MissingExtra,
    StoreUnavailable,
)
from . import _postgres_sql as q
from ._base import (
    AuditEvent,
    AuditKind,
    Claim,
    LastError,
    Status,
    StoredContinuation,
)
from ._owners import holder_id, takeback_terms
from ._rowstore import Change, PickingRowStore
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
    readable,
    recorded_event,
    unreadable_failure,
)
from ._urls import redact, scrub

try:
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict
    from psycopg.rows import dict_row
    from psycopg_pool import AsyncConnectionPool
except ImportError as exc:
    raise MissingExtra(exc.name or "psycopg", "postgres") from exc

__all__ = ["LOCK_TIMEOUT_SECONDS", "MIGRATIONS", "PostgresStore", "from_url"]

T = TypeVar("T")
Connection: TypeAlias = "psycopg.AsyncConnection[Any]"
Pool: TypeAlias = "AsyncConnectionPool[Any]"

MIGRATIONS = q.MIGRATIONS  # the schema's history: see ``_postgres_sql``

# The channel "<schema>_ready" must fit Postgres's 63-byte identifier limit too.
_SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,56}")
_POOL_MAX = 10
#: A statement waiting longer than this for a lock fails (as ``StoreUnavailable``, retried)
#: rather than hang: the holder may be a process paused mid-transaction.
LOCK_TIMEOUT_SECONDS = 5


def from_url(url: str) -> PostgresStore:
    """Open a store from ``postgresql://user:pass@host:port/db?schema=name``.

    The optional ``schema`` query parameter (ours, not libpq's) picks the Postgres schema;
    every other parameter goes to libpq. Nothing connects until first use.
    """
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schemas = [value for key, value in query if key == "schema"]
    if not schemas:
        return PostgresStore(url)
    rest = urlencode([(key, value) for key, value in query if key != "schema"])
    return PostgresStore(urlunsplit(parts._replace(query=rest)), schema=schemas[-1])


class PostgresStore(PickingRowStore):
    """A store in one PostgreSQL schema, shared safely by many processes on many machines.

    Args:
        url_or_pool: A libpq URL or conninfo string (the store then opens its own small
            pool on first use), an ``AsyncConnectionPool``, or one ``AsyncConnection``. A
            pool or connection passed in is used as is and stays open after :meth:`close`.
        schema: The Postgres schema holding the tables; created on first use.

    Raises:
        ConfigurationError: If ``schema`` is not a plain identifier of at most 57 characters.
    """

    def __init__(
        self, url_or_pool: str | Pool | Connection, *, schema: str = "continuations"
    ) -> None:
        if not _SCHEMA_NAME.fullmatch(schema):
            raise ConfigurationError(
                f"Invalid Postgres schema name {schema!r}: use letters, digits and underscores "
                "(at most 57 characters), not starting with a digit."
            )
        self.schema = schema
        self.channel = f"{schema}_ready"
        self._ident = sql.Identifier(schema)
        self._queries: dict[str, sql.Composed] = {}
        self._url: str | None = None
        self._pool: Pool | None = None
        self._conn: Connection | None = None
        if isinstance(url_or_pool, str):
            self._url, self._where = url_or_pool, _describe(url_or_pool)
        elif isinstance(url_or_pool, AsyncConnectionPool):
            self._pool, self._where = url_or_pool, _describe(url_or_pool.conninfo)
        else:
            info = url_or_pool.info
            self._conn = url_or_pool
            self._where = f"postgresql://{info.user}@{info.host}:{info.port}/{info.dbname}"
        self._migrated = False
        self._closed = False
        self._init_lock = asyncio.Lock()
        self._conn_lock = asyncio.Lock()  # one connection runs one transaction at a time
        self._listen_lock = asyncio.Lock()
        self._listener: Connection | None = None

    # -- plumbing ---------------------------------------------------------------------------

    def _q(self, template: LiteralString) -> sql.Composed:
        """``template`` with ``{s}`` this store's schema, composed once per template."""
        query = self._queries.get(template)
        if query is None:
            query = self._queries[template] = sql.SQL(template).format(s=self._ident)
        return query

    def _unavailable(self, exc: BaseException) -> StoreUnavailable:
        text = scrub(str(exc), self._url) if self._url else str(exc)
        reason = " ".join(text.split()).rstrip(".")  # libpq's messages span lines
        return StoreUnavailable(
            f"PostgreSQL store {self._where} (schema {self.schema!r}) failed: {reason}. Check "
            "that the server is running and reachable, then retry."
        )

    def _cause(self, exc: BaseException) -> BaseException | None:
        """``exc`` to chain, unless its text repeats a secret of the URL (tracebacks show it)."""
        return exc if not self._url or scrub(str(exc), self._url) == str(exc) else None

    async def _ensure(self) -> None:
        """Connect and migrate on first use (``open_store`` is synchronous)."""
        if self._closed:
            raise StoreUnavailable("This PostgresStore is closed; open a new one.")
        async with self._init_lock:  # uncontended once migrated: it does not even yield
            if self._migrated:
                return
            try:
                if self._url is not None:
                    # Migrate on a direct connection first: an unreachable server then fails
                    # at once with the driver's reason, rather than as a pool timeout.
                    options = _bounded_lock_waits(self._url)
                    conn = await psycopg.AsyncConnection.connect(
                        self._url, autocommit=True, options=options
                    )
                    async with conn:
                        await self._migrate(conn)
                    pool: Pool = AsyncConnectionPool(
                        self._url, min_size=1, max_size=_POOL_MAX, open=False,
                        kwargs={"autocommit": True, "options": options},
                        name=f"continuations-{self.schema}",
                    )  # fmt: skip
                    await pool.open(wait=False)
                    self._pool = pool
                else:
                    async with self._connection() as conn:
                        await self._migrate(conn)
            except psycopg.Error as exc:
                raise self._unavailable(exc) from self._cause(exc)
            self._migrated = True

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[Connection]:
        if self._pool is not None:
            async with self._pool.connection() as conn:
                yield conn
        else:
            assert self._conn is not None
            async with self._conn_lock:
                yield self._conn

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[Connection]:
        """One transaction; driver errors become ``StoreUnavailable``."""
        await self._ensure()
        try:
            async with self._connection() as conn, conn.transaction():
                yield conn
        except psycopg.Error as exc:
            raise self._unavailable(exc) from self._cause(exc)

    @asynccontextmanager
    async def _single(self) -> AsyncIterator[Connection]:
        """A connection for one statement: a transaction of its own (one round trip, not
        ``BEGIN``/``COMMIT`` around it) on the usual autocommit connections."""
        await self._ensure()
        try:
            async with self._connection() as conn:
                if conn.autocommit:
                    yield conn
                else:
                    async with conn.transaction():
                        yield conn
        except psycopg.Error as exc:
            raise self._unavailable(exc) from self._cause(exc)

    async def _migrate(self, conn: Connection) -> None:
        if await self._applied(conn) == len(MIGRATIONS):
            return  # the usual case: no lock, so a process paused while starting blocks no one
        key = hashlib.blake2b(f"agent-continuations:{self.schema}".encode(), digest_size=8)
        async with conn.transaction():
            lock_id = int.from_bytes(key.digest(), "big", signed=True)
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock_id,))
            await conn.execute(self._q(q.BOOTSTRAP))
            cur = await conn.execute(self._q("SELECT MAX(version) FROM {s}.schema_migrations"))
            current = int((await cur.fetchone() or (0,))[0] or 0)
            if current > len(MIGRATIONS):
                raise ConfigurationError(
                    f"The schema {self.schema!r} is at version {current}, newer than this "
                    f"package knows ({len(MIGRATIONS)}). Upgrade agent-continuations."
                )
            for version in range(current + 1, len(MIGRATIONS) + 1):
                await conn.execute(self._q(MIGRATIONS[version - 1]))
                insert = "INSERT INTO {s}.schema_migrations (version) VALUES (%s)"
                await conn.execute(self._q(insert), (version,))

    async def _applied(self, conn: Connection) -> int:
        """The schema's migration version, read without locking (0 if it does not exist)."""
        async with conn.transaction():
            table = f"{sql.Identifier(self.schema).as_string(conn)}.schema_migrations"
            cur = await conn.execute("SELECT to_regclass(%s)", (table,))
            if (await cur.fetchone() or (None,))[0] is None:
                return 0
            cur = await conn.execute(self._q("SELECT MAX(version) FROM {s}.schema_migrations"))
            return int((await cur.fetchone() or (0,))[0] or 0)

    async def _read(self, conn: Connection, id: str, *, lock: bool) -> Row:
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(self._q(q.READ + (" FOR UPDATE" if lock else "")), (id,))
            found = await cur.fetchone()
        if found is None:
            raise not_found(id)
        return _row(found)

    async def _record(self, conn: Connection, row: Row | None, events: Events) -> None:
        """Append the audit events, and wake workers if the row is now ready."""
        async with conn.cursor() as cur:
            await cur.executemany(
                self._q(q.AUDIT),
                [(e.run_id, e.continuation_id, e.kind, e.at, e.actor, json.dumps(e.detail))
                 for e in events],
            )  # fmt: skip
        if row is not None and row.status == "ready" and row.not_before is None:
            await conn.execute("SELECT pg_notify(%s, %s)", (self.channel, row.id))

    async def _update(self, conn: Connection, new: Row, old_version: int) -> None:
        cur = await conn.execute(self._q(q.UPDATE), (*_values(new), new.id, old_version))
        if cur.rowcount != 1:  # cannot happen under the row lock; refuse rather than guess
            raise ConflictError("The record changed during the update.", continuation_id=new.id)

    async def _insert(self, conn: Connection, new: Row, text: str) -> None:
        doc = new.document
        (version, status, updated, claimed_by, lease, decisions, fence, attempts, not_before,
         error, holder, output) = _values(new)  # fmt: skip
        cur = await conn.execute(
            self._q(q.INSERT),
            (doc.id, doc.run_id, doc.seq, version, status, new.created_at, updated, claimed_by,
             lease, text, decisions, fence, attempts, not_before, error, holder, output),
        )  # fmt: skip
        if cur.rowcount != 1:
            raise already_saved(doc.id)

    async def _transact(self, id: str, change: Change[T]) -> T:
        """One transition in one transaction: lock, apply the rules at DB time, write, audit."""
        async with self._tx() as conn:
            async with conn.cursor(row_factory=dict_row) as cur:
                await cur.execute(self._q(q.READ_LOCKED), (id,))
                found = await cur.fetchone()
            if found is None:
                raise not_found(id)
            old = _row(found)
            new, events, result = change(old, _utc(found["now"]))
            if new is not old:
                await self._update(conn, new, old.version)
                if new.status == "done":  # a retired checkpoint's segments go with it
                    await conn.execute(self._q(q.DROP_SEGMENTS), (id,))
            await self._record(conn, new if new is not old else None, events)
            return result

    # -- the protocol -----------------------------------------------------------------------

    async def _save(self, cont: Continuation, *, actor: str | None = None) -> StoredContinuation:
        """See :meth:`Store.save`."""
        text = cont.model_copy(update={"decisions": ()}).to_json()
        document = Continuation.from_json(text)  # rules see the document as it will load
        async with self._tx() as conn:
            row, events = new_row(document, cont.decisions, actor=actor, at=await _clock(conn))
            await self._insert(conn, row, text)
            await self._record(conn, row, events)
        return row.record()

    async def get(self, id: str) -> StoredContinuation:
        """See :meth:`Store.get`."""
        # One statement, so the row and its segments come from one snapshot.
        async with self._single() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(self._q(q.READ_SEGMENTED), (id,))
            found = await cur.fetchone()
        if found is None:
            raise not_found(id)
        return _record(found)

    async def list(
        self, *, status: Status | None = None, run_id: str | None = None, limit: int = 100
    ) -> builtins.list[StoredContinuation]:
        """See :meth:`Store.list`."""
        filters = {k: v for k, v in (("status", status), ("run_id", run_id)) if v is not None}
        where = sql.SQL(" AND ").join(sql.SQL("{} = %s").format(sql.Identifier(k)) for k in filters)
        query = sql.SQL("SELECT {}, {} FROM {}.continuations c {} ").format(
            sql.SQL(q.COLUMNS),
            self._q(q.SEGMENTS_OF_C),
            self._ident,
            sql.SQL("WHERE {}").format(where) if filters else sql.SQL(""),
        )
        query += sql.SQL("ORDER BY created_at DESC, pos DESC LIMIT %s")
        # One statement, so each row and its segments come from one snapshot.
        async with self._single() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(query, (*filters.values(), max(int(limit), 0)))
            found = await cur.fetchall()
        return [_record(r) for r in found]

    async def _checkpoint(
        self,
        cont: Continuation,
        *,
        previous: Claim | None = None,
        owner: str | None = None,
        lease_seconds: float = 30.0,
        progress: bool = True,
    ) -> Claim | None:
        """See :meth:`Store.checkpoint`. One transaction; the lease runs on the DB clock."""
        text = cont.model_copy(update={"decisions": ()}).to_json()
        document = Continuation.from_json(text)
        holder = holder_id()
        async with self._tx() as conn:
            exists = "SELECT 1 FROM {s}.continuations WHERE id = %s"
            if await (await conn.execute(self._q(exists), (cont.id,))).fetchone():
                raise already_saved(cont.id)
            old = None if previous is None else await self._read(conn, previous.id, lock=True)
            held = None if old is None or previous is None else (old, previous)
            new, retired, claim, events = checkpoint_rows(
                document, cont.decisions, held, owner=owner, lease_seconds=lease_seconds,
                at=await _clock(conn), progress=progress, holder=holder,
            )  # fmt: skip
            if retired is not None and old is not None:
                await self._update(conn, retired, old.version)
                await conn.execute(self._q(q.DROP_SEGMENTS), (old.id,))
            await self._insert(conn, new, text)
            await self._record(conn, new, events)
        return claim

    async def _fenced(
        self, claim: Claim, events: Callable[[datetime], Events], segment: Segment | None
    ) -> None:
        """One transaction that locks the row, reading its claim columns only.

        Without a segment it is one statement (one round trip); the events are then stamped
        with the database's clock by that statement (``events`` is called for their content).
        """
        if segment is None:
            await self._journal(claim, events(datetime.now(UTC)))
            return
        async with self._tx() as conn:
            at = await self._claim_holds(conn, claim)
            if segment is not None:
                base, index = segment.base, segment.index
                cur = await conn.execute(self._q(q.SEGMENT_AT), (base, base, index))
                count, stored = await cur.fetchone() or (0, None)
                if check_segment(segment, int(count), stored):
                    await conn.execute(self._q(q.APPEND_SEGMENT), (base, index, segment.text))
            await self._record(conn, None, events(at))

    async def _journal(self, claim: Claim, events: Events) -> None:
        """Append ``events`` under ``claim`` in one statement (see ``q.JOURNAL``)."""
        columns: dict[str, list[Any]] = {
            "run_ids": [], "cids": [], "kinds": [], "actors": [], "details": []
        }  # fmt: skip
        for e in events:
            columns["run_ids"].append(e.run_id)
            columns["cids"].append(e.continuation_id)
            columns["kinds"].append(e.kind)
            columns["actors"].append(e.actor)
            columns["details"].append(json.dumps(e.detail))
        async with self._single() as conn:
            cur = await conn.execute(
                self._q(q.JOURNAL), {"id": claim.id, "token": claim.token, **columns}
            )
            found = await cur.fetchone()
        if found is None:
            raise not_found(claim.id)
        status, fence, claimed_by = found
        check_fence(claim.id, status, fence, claimed_by, claim)  # raises: nothing was written

    async def _append(
        self,
        run_id: str,
        kind: AuditKind,
        *,
        continuation_id: str,
        actor: str | None,
        detail: dict[str, Any] | None,
    ) -> None:
        """Append one event outside any claim, stamped with the database's clock."""
        async with self._tx() as conn:
            event = recorded_event(
                run_id, kind, at=await _clock(conn), continuation_id=continuation_id,
                actor=actor, detail=detail,
            )  # fmt: skip
            await self._record(conn, None, [event])

    async def fail_unreadable(
        self, id: str, error: BaseException, *, actor: str | None = None
    ) -> bool:
        """See :meth:`Store.fail_unreadable`."""
        async with self._tx() as conn:
            found = await (await conn.execute(self._q(q.READ_RAW), (id,))).fetchone()
            if found is None:
                raise not_found(id)
            run_id, status, version, attempts = found
            if status in ("done", "failed"):
                return False
            at = await _clock(conn)
            last, event = unreadable_failure(
                id, run_id, error, attempts=attempts, actor=actor, at=at
            )
            params = (version + 1, at, last.model_dump_json(), id, version)
            await conn.execute(self._q(q.FAIL_UNREADABLE), params)
            await self._record(conn, None, [event])
        return True

    async def audit(self, run_id: str) -> builtins.list[AuditEvent]:
        """See :meth:`Store.audit`."""
        query = "SELECT kind, at, actor, detail, continuation_id FROM {s}.audit WHERE run_id = %s"
        async with self._single() as conn:
            cur = await conn.execute(self._q(query + " ORDER BY seq"), (run_id,))
            found = await cur.fetchall()
        return [
            AuditEvent(run_id=run_id, continuation_id=cid, kind=kind, at=_utc(at), actor=actor,
                       detail=json.loads(detail))
            for kind, at, actor, detail, cid in found
        ]  # fmt: skip

    # -- for workers --------------------------------------------------------------------------

    async def claimable(self, *, limit: int = 10, owner: str | None = None) -> builtins.list[str]:
        """See :meth:`Store.claimable`; times are the database's.

        Longest unchanged first; rows another transaction holds locked (being claimed now) are
        skipped. This only reads: :meth:`claim` is the atomic step and may still raise
        ``AlreadyClaimed`` when another worker got there first.
        """
        async with self._single() as conn:
            cur = await conn.execute(self._q(q.CLAIMABLE), (owner, max(int(limit), 0)))
            return [str(r[0]) for r in await cur.fetchall()]

    async def _pick(
        self, owner: str, lease_seconds: float, max_attempts: int, *, read: bool
    ) -> tuple[Claim, Callable[[], StoredContinuation] | None] | None:
        """See :meth:`Store.claim_next`: one statement picks, claims and audits (DB time);
        with ``read`` it also returns the claimed row and its segments.

        Rows other transactions hold locked are skipped (``FOR UPDATE SKIP LOCKED``), so
        workers never queue behind each other. A live claim taken back by a restarted owner,
        or an abandoned one out of attempts, is claimed through :meth:`claim`'s exact rules.
        """
        params = self._claim_next_params(owner, lease_seconds, max_attempts)
        skipped: builtins.list[str] = []
        query = self._q(q.CLAIM_NEXT_READ if read else q.CLAIM_NEXT)
        while True:
            async with self._single() as conn, conn.cursor(row_factory=dict_row) as cur:
                await cur.execute(query, {**params, "skip": skipped})
                found = await cur.fetchone()
            if found is None:
                return None
            id = found["picked" if read else "id"]
            if not found["special"]:
                claim = Claim(
                    id=id, version=found["version"], owner=owner,
                    lease_until=_utc(found["lease_until"]), token=found["fence"],
                    attempt=found["attempts"],
                )  # fmt: skip
                return claim, functools.partial(_record, found) if read else None
            try:  # raises ContinuationFailed once it is stored failed (out of attempts)
                claim = await self.claim(
                    id, owner=owner, lease_seconds=lease_seconds, max_attempts=max_attempts
                )
            except (ConflictError, DecisionError, ContinuationNotFound):
                skipped.append(id)  # its holder is not gone, or another worker won
                continue
            return claim, None  # read with ``get``

    @staticmethod
    def _claim_next_params(owner: str, lease_seconds: float, max_attempts: int) -> dict[str, Any]:
        """The parameters of ``CLAIM_NEXT`` but ``skip``."""
        session, explicit, machine = takeback_terms(owner)
        return {
            "owner": owner, "lease_seconds": lease_seconds, "max_attempts": max_attempts,
            "holder": holder_id(), "session": session, "explicit": explicit, "machine": machine,
        }  # fmt: skip

    async def complete(
        self, claim: Claim, *, next_id: str | None = None, output: Any = None
    ) -> None:
        """See :meth:`Store.complete`: one statement (one round trip) while the claim holds.

        It neither locks and reads the row nor parses its document first. If the claim no
        longer holds, nothing is written and the claim columns tell why.
        """
        ended = next_id is None
        kept = jsonable(output) if ended else None
        params = {
            "id": claim.id, "token": claim.token, "actor": claim.owner,
            "output": json.dumps(kept) if kept is not None else None,
            "resumed": json.dumps(jsonable({"next_id": next_id})),
            "completed": json.dumps(jsonable({"output": output})) if ended else None,
        }  # fmt: skip
        async with self._single() as conn:
            cur = await conn.execute(self._q(q.COMPLETE), params)
            done = await cur.fetchone()
        if done is None:
            await self._refuse(claim)
            await super().complete(claim, next_id=next_id, output=output)

    async def heartbeat(self, claim: Claim, *, lease_seconds: float = 300.0) -> Claim:
        """See :meth:`Store.heartbeat`: one statement while the claim holds.

        It does not read the document, so a heartbeat costs the same however long the run's
        history is. If the claim no longer holds, nothing is written and the claim columns
        tell why.
        """
        params = {"id": claim.id, "token": claim.token, "lease_seconds": lease_seconds}
        async with self._single() as conn:
            cur = await conn.execute(self._q(q.HEARTBEAT), params)
            renewed = await cur.fetchone()
        if renewed is None:
            await self._refuse(claim)
            return await super().heartbeat(claim, lease_seconds=lease_seconds)
        return claim.model_copy(update={"lease_until": _utc(renewed[0])})

    async def _refuse(self, claim: Claim) -> None:
        """Raise the precise error for a write under ``claim`` that found its row not claimed
        under its token, from the claim columns alone (an unreadable document does not hide
        it). Returns only if the claim does hold (it did not a moment ago: the full rules
        then decide).

        Raises:
            ClaimSuperseded: If ``claim`` no longer holds.
            ContinuationNotFound: If there is no row ``claim.id``.
        """
        async with self._single() as conn:
            await self._claim_holds(conn, claim)

    async def _claim_holds(self, conn: Connection, claim: Claim) -> datetime:
        """Lock row ``claim.id``, check ``claim`` holds from its claim columns alone, and
        return the database's time once the lock is held.

        Raises:
            ClaimSuperseded: If ``claim`` no longer holds.
            ContinuationNotFound: If there is no row ``claim.id``.
        """
        cur = await conn.execute(self._q(q.CLAIM_COLUMNS), (claim.id,))
        found = await cur.fetchone()
        if found is None:
            raise not_found(claim.id)
        status, fence, claimed_by, at = found
        check_fence(claim.id, status, fence, claimed_by, claim)
        return _utc(at)

    async def wait_ready(self, timeout: float) -> builtins.list[str]:
        """Wait up to ``timeout`` seconds for continuations to become ready; return their ids.

        Returns as soon as a notification arrives (with any others already received), or an
        empty list at the timeout. Listening starts with the first call and lasts until
        :meth:`close`; wake-ups before the first call, and expired leases, notify no one, so
        poll :meth:`claimable` after each wait (as the worker does). With one connection
        passed in, other calls wait while this one listens on it: give workers a pool or URL.
        """
        await self._ensure()
        ids: builtins.list[str] = []
        async with self._listening():
            try:
                conn = await self._listen()
                async for note in conn.notifies(timeout=max(timeout, 0.0), stop_after=1):
                    ids.append(note.payload)
                if ids:  # take whatever else has arrived already, without waiting
                    async for note in conn.notifies(timeout=0.0):
                        ids.append(note.payload)
            except psycopg.Error as exc:
                await self._stop_listening()
                raise self._unavailable(exc) from self._cause(exc)
        return list(dict.fromkeys(ids))

    @asynccontextmanager
    async def _listening(self) -> AsyncIterator[None]:
        async with self._listen_lock:
            if self._pool is not None:
                yield
                return
            async with self._conn_lock:  # a lone connection listens between transactions
                yield

    async def _listen(self) -> Connection:
        if self._listener is None:
            conn = self._conn if self._pool is None else await self._pool.getconn()
            assert conn is not None
            async with conn.transaction():  # a LISTEN takes effect at commit
                await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
            self._listener = conn
        return self._listener

    async def _stop_listening(self) -> None:
        conn, self._listener = self._listener, None
        if conn is None:
            return
        with contextlib.suppress(psycopg.Error):  # a broken one stops listening anyway
            async with conn.transaction():
                await conn.execute("UNLISTEN *")
        if self._pool is not None:
            await self._pool.putconn(conn)

    async def close(self) -> None:
        """Stop listening and close the pool this store opened; a caller's pool stays open."""
        if self._closed:
            return
        self._closed = True
        async with self._listening():
            await self._stop_listening()
        if self._url is not None and self._pool is not None:
            await self._pool.close()


async def _clock(conn: Connection) -> datetime:
    """The database's time: leases and audit times do not depend on worker clocks."""
    row = await (await conn.execute("SELECT clock_timestamp()")).fetchone()
    assert row is not None
    return _utc(row[0])


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def _record(r: dict[str, Any]) -> StoredContinuation:
    """The stored record of row ``r`` read with its segments (``READ_SEGMENTED``'s columns)."""
    return _row(r).record(r["segments"])


def _row(r: dict[str, Any]) -> Row:
    return readable(r["id"], lambda: _parse(r))


def _parse(r: dict[str, Any]) -> Row:
    return Row(
        document=Continuation.from_json(r["document"]),
        decisions=load_records(r["decisions"], continuation_id=r["id"]),
        version=r["version"],
        status=r["status"],
        created_at=_utc(r["created_at"]),
        updated_at=_utc(r["updated_at"]),
        claimed_by=r["claimed_by"],
        lease_until=_utc(r["lease_until"]) if r["lease_until"] else None,
        fence=r["fence"],
        attempts=r["attempts"],
        not_before=_utc(r["not_before"]) if r["not_before"] else None,
        last_error=LastError.model_validate_json(r["last_error"]) if r["last_error"] else None,
        holder=r["holder"],
        output=json.loads(r["output"]) if r["output"] is not None else None,
    )


def _values(new: Row) -> tuple[Any, ...]:
    """The mutable columns, in the order ``q.UPDATE`` names them."""
    error = new.last_error.model_dump_json() if new.last_error is not None else None
    output = json.dumps(jsonable(new.output)) if new.output is not None else None
    return (new.version, new.status, new.updated_at, new.claimed_by, new.lease_until,
            _dump(new.decisions), new.fence, new.attempts, new.not_before, error, new.holder,
            output)  # fmt: skip


def _dump(records: tuple[DecisionRecord, ...]) -> str:
    return json.dumps([r.model_dump(mode="json") for r in records], ensure_ascii=False)


def _bounded_lock_waits(url: str) -> str:
    """The libpq ``options`` that bound lock waits, keeping any the URL carries."""
    try:
        options = conninfo_to_dict(url).get("options") or ""
    except psycopg.Error:
        options = ""
    timeout = f"-c lock_timeout={LOCK_TIMEOUT_SECONDS * 1000}"
    return f"{options} {timeout}".strip()


def _describe(conninfo: object) -> str:
    """Where the store connects, for error messages: never the password."""
    if not isinstance(conninfo, str):
        return "postgresql://(unknown)"
    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.Error:  # it will fail to connect, saying why; name it as given, redacted
        return redact(conninfo)
    user = f"{params['user']}@" if params.get("user") else ""
    host, port = params.get("host") or "localhost", params.get("port") or 5432
    return f"postgresql://{user}{host}:{port}/{params.get('dbname') or ''}"
