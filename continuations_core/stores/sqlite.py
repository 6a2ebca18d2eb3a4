"""The embedded default store: one SQLite file, zero set-up, safe across processes.

The database runs in WAL mode with a busy timeout. Every write is one ``BEGIN IMMEDIATE``
transaction that reads, validates and writes, so concurrent deciders never lose each other's
decisions and of N processes claiming one continuation exactly one wins. Calls run in a
worker thread on one connection guarded by a lock, so the event loop never blocks.

The signed document is stored as the exact text the continuation serializes to (without its
decisions) and loaded from that text, so the signature covers exactly the stored bytes.
Schema changes are an ordered list of migrations, recorded in ``schema_migrations``.
Migration 2 (fencing tokens, attempts, the ``failed`` status, last errors, outputs) rebuilds
the table, since SQLite cannot change a CHECK constraint in place; rows keep their order.
Migration 3 adds the index ``claim_next`` walks; migration 4 the ``segments`` table: the steps
appended to a checkpoint since it was written (see :meth:`Store.append_segment`). Migration 5
rebuilds ``segments`` as a rowid table, which stores large rows far more cheaply.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import heapq
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, TypeAlias, TypeVar

from .._decisions import load_records
from .._schema import Continuation, DecisionRecord
from .._segments import Segment
from ..errors import ConfigurationError, ContinuationFailed, StoreUnavailable
from ._base import (
    AuditEvent,
    AuditKind,
    Claim,
    LastError,
    Status,
    StoredContinuation,
)
from ._owners import holder_id, takeback_terms
from ._rowstore import Change, PickingRowStore, claim_first, plain_claim
from ._rules import (
    Events,
    Row,
    already_saved,
    check_fence,
    check_segment,
    checkpoint_rows,
    completion_events,
    jsonable,
    new_row,
    not_found,
    readable,
    recorded_event,
    renewed_claim,
    unreadable_failure,
    utcnow,
)
from ._urls import redact

__all__ = ["MIGRATIONS", "SQLiteStore"]

T = TypeVar("T")

# When a ready or claimed row is claimable: a ready one when it changed, or when its backoff
# ends; a claimed one when its lease ends (all times in _ts's fixed-width UTC text).
_DUE = "CASE WHEN status = 'claimed' THEN lease_until ELSE COALESCE(not_before, updated_at) END"

_PICKED = "id, run_id, status, claimed_by, lease_until, version, fence, attempts"
# claim_next's two walks (see SQLiteStore._pick): the rows due longest ago, in index order,
# and the live claims under the owner's name a restarted owner may take back.
_DUE_WALK = (
    f"SELECT {_PICKED}, {_DUE} AS key, rowid FROM continuations "
    "INDEXED BY continuations_due WHERE status IN ('ready', 'claimed') "
    f"AND ({_DUE}) <= :now ORDER BY ({_DUE}), rowid"
)


def _walk_order(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """A picked row's place in claim_next's walk: its key (due or claimed time), its rowid."""
    return row[8], row[9]


def _takeback(holders: str) -> str:
    """The live claims under the owner's name a restarted owner may take back whose holder
    satisfies ``holders``: one side of this session's holders in the index (a holder is
    session/machine/pid/start, and "0" follows "/"), so this session's own are not read."""
    return (
        f"SELECT {_PICKED}, updated_at AS key, rowid FROM continuations "
        "INDEXED BY continuations_owner WHERE status = 'claimed' AND claimed_by = :owner "
        f"AND {holders} AND (lease_until IS NULL OR lease_until > :now) "
        "AND COALESCE(holder, '') <> '' AND holder <> :session "
        "AND substr(holder, 1, length(:session) + 1) <> :session || '/' "
        "AND (:explicit OR substr(holder, instr(holder, '/') + 1, length(:machine) + 1) "
        "= :machine || '/')"
    )


# Both sides in one statement, unordered (there are few): sorted where they are merged.
_TAKEBACK = _takeback("holder < :session") + " UNION ALL " + _takeback("holder >= :session || '0'")

# MIGRATIONS[n - 1] upgrades the database to version n. Append only; never edit a shipped one.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE continuations (
            id TEXT PRIMARY KEY, run_id TEXT NOT NULL, seq INTEGER NOT NULL,
            version INTEGER NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('waiting', 'ready', 'claimed', 'done')),
            created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
            claimed_by TEXT, claim_token TEXT, lease_until TEXT,
            document TEXT NOT NULL, decisions TEXT NOT NULL DEFAULT '[]')""",
        "CREATE INDEX continuations_status ON continuations (status, created_at)",
        "CREATE INDEX continuations_run ON continuations (run_id, created_at)",
        """CREATE TABLE audit (
            seq INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL,
            continuation_id TEXT NOT NULL, kind TEXT NOT NULL, at TEXT NOT NULL,
            actor TEXT, detail TEXT NOT NULL)""",
        "CREATE INDEX audit_run ON audit (run_id, seq)",
    ),
    (
        """CREATE TABLE continuations_v2 (
            id TEXT PRIMARY KEY, run_id TEXT NOT NULL, seq INTEGER NOT NULL,
            version INTEGER NOT NULL,
            status TEXT NOT NULL
                CHECK (status IN ('waiting', 'ready', 'claimed', 'done', 'failed')),
            created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
            claimed_by TEXT, claim_token TEXT, lease_until TEXT,
            document TEXT NOT NULL, decisions TEXT NOT NULL DEFAULT '[]',
            fence INTEGER NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0,
            not_before TEXT, last_error TEXT, holder TEXT, output TEXT)""",
        """INSERT INTO continuations_v2 (id, run_id, seq, version, status, created_at,
            updated_at, claimed_by, claim_token, lease_until, document, decisions)
            SELECT id, run_id, seq, version, status, created_at, updated_at, claimed_by,
            claim_token, lease_until, document, decisions FROM continuations ORDER BY rowid""",
        "DROP TABLE continuations",
        "ALTER TABLE continuations_v2 RENAME TO continuations",
        "CREATE INDEX continuations_status ON continuations (status, created_at)",
        "CREATE INDEX continuations_run ON continuations (run_id, created_at)",
    ),
    (
        # claim_next walks ready and claimed rows in the order they last changed.
        """CREATE INDEX continuations_claimable ON continuations (updated_at)
            WHERE status IN ('ready', 'claimed')""",
    ),
    (
        """CREATE TABLE segments (
            base_id TEXT NOT NULL, idx INTEGER NOT NULL, body TEXT NOT NULL,
            PRIMARY KEY (base_id, idx)) WITHOUT ROWID""",
    ),
    (
        # A segment is kilobytes of JSON: stored in the key B-tree of a WITHOUT ROWID table it
        # spills to overflow pages and every insert rebalances the tree (measured: 0.9 ms of
        # CPU per insert against 0.16 ms in a rowid table). Same columns, same order.
        """CREATE TABLE segments_v2 (
            base_id TEXT NOT NULL, idx INTEGER NOT NULL, body TEXT NOT NULL,
            PRIMARY KEY (base_id, idx))""",
        "INSERT INTO segments_v2 (base_id, idx, body) "
        "SELECT base_id, idx, body FROM segments ORDER BY base_id, idx",
        "DROP TABLE segments",
        "ALTER TABLE segments_v2 RENAME TO segments",
    ),
    (
        # claim_next walks rows by when they became claimable (_DUE), so live claims, due
        # only when their lease ends, sort after every claimable row and are never walked
        # past; a restarted owner's candidates are found by owner name and holder.
        f"CREATE INDEX continuations_due ON continuations ({_DUE}) "
        "WHERE status IN ('ready', 'claimed')",
        "CREATE INDEX continuations_owner ON continuations (claimed_by, holder) "
        "WHERE status = 'claimed'",
        "DROP INDEX continuations_claimable",
    ),
)

# Calls between two WAL checkpoints of a store that runs calls inline (see SQLiteStore).
_CHECKPOINT_EVERY = 128
# Result codes (primary) of a lock another connection holds: an inline call waits on a thread.
_BUSY = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)

_COLUMNS = (
    "id, run_id, seq, version, status, created_at, updated_at, claimed_by, lease_until, "
    "document, decisions, fence, attempts, not_before, last_error, holder, output"
)
_MARKS = ", ".join("?" * len(_COLUMNS.split(",")))


def _ts(value: datetime | None) -> str | None:
    # One fixed-width UTC format, so text comparison in SQL orders like time.
    return value.isoformat(timespec="microseconds") if value is not None else None


def sqlite_path(target: str | os.PathLike[str]) -> str:
    """Turn ``sqlite:///relative.db``, ``sqlite:////abs.db`` or a plain path into a path.

    Raises:
        ConfigurationError: If the URL has a host part (``sqlite://host/...``).
    """
    text = os.fspath(target)
    if not text.startswith("sqlite:"):
        return os.path.expanduser(text)
    rest = text[len("sqlite:") :]
    if rest in ("", "//", "///", "//:memory:", "///:memory:", ":memory:"):
        return ":memory:"
    if rest.startswith("///"):
        return os.path.expanduser(rest[3:])
    raise ConfigurationError(
        f"Unsupported SQLite URL {redact(text)!r}: use sqlite:///relative/path.db or "
        "sqlite:////absolute/path.db."
    )


@contextmanager
def _immediate(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


class SQLiteStore(PickingRowStore):
    """A store in one SQLite file (or ``:memory:``), shared safely by several processes.

    Args:
        target: A file path, ``sqlite:///relative.db``, ``sqlite:////absolute.db`` or
            ``:memory:``. Parent folders are created.
        connection: An existing connection to use instead (it is not closed by
            :meth:`close`; open it with ``check_same_thread=False``).
        busy_timeout: Seconds to wait for another process's write lock.
        inline: Run each call on the caller's thread when it needs no wait (the connection is
            free and so is the write lock), instead of on a worker thread: one short
            transaction, without the hand-off to a thread and back. A call that would wait
            for a lock runs on a thread, as every call does with ``inline=False``; so do the
            WAL checkpoints (every 128 calls). Only for a connection the store opens. Turn it
            off if the disk's sync is slow (a network file system): the event loop then never
            waits for a commit.

    Raises:
        StoreUnavailable: If the database cannot be opened or migrated.
        ConfigurationError: If the database was migrated by a newer version of this package.
    """

    def __init__(
        self,
        target: str | os.PathLike[str] | None = None,
        *,
        connection: sqlite3.Connection | None = None,
        busy_timeout: float = 30.0,
        inline: bool = True,
    ) -> None:
        if (target is None) == (connection is None):
            raise ConfigurationError("Pass either a path/URL or connection=, not both or neither.")
        self._lock = threading.Lock()
        self._owns = connection is None
        # Inline calls need the connection to wait for no lock: it rests at busy_timeout 0, and
        # a call on a thread sets the real timeout for its duration.
        self._inline = inline and self._owns
        self._busy_ms = int(busy_timeout * 1000)
        self._since_checkpoint = 0
        if connection is None:
            assert target is not None
            self.path = sqlite_path(target)
            try:
                if self.path != ":memory:":
                    Path(self.path).parent.mkdir(parents=True, exist_ok=True)
                connection = sqlite3.connect(
                    self.path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
                )
                connection.execute(f"PRAGMA busy_timeout = {self._busy_ms}")
                connection.execute("PRAGMA journal_mode = WAL")
                if self._inline:
                    # Checkpoints run on a thread (see _sync), never inside an inline commit.
                    connection.execute("PRAGMA wal_autocheckpoint = 0")
            except (OSError, sqlite3.Error) as exc:
                raise StoreUnavailable(f"Cannot open SQLite database {self.path!r}: {exc}") from exc
        else:
            self.path = "<connection>"
        self._conn: sqlite3.Connection | None = connection
        self._sync(self._migrate)  # which leaves an inline store's busy timeout at 0

    # -- plumbing ---------------------------------------------------------------------------

    def _sync(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` on the connection, waiting for locks up to the busy timeout."""
        with self._lock:
            conn = self._conn
            if conn is None:
                raise StoreUnavailable("This SQLiteStore is closed; open a new one.")
            try:
                if not self._inline:
                    return fn(conn)
                conn.execute(f"PRAGMA busy_timeout = {self._busy_ms}")
                try:
                    return fn(conn)
                finally:
                    self._since_checkpoint += 1
                    if self._since_checkpoint >= _CHECKPOINT_EVERY:
                        self._wal_checkpoint(conn)
                    conn.execute("PRAGMA busy_timeout = 0")
            except sqlite3.Error as exc:
                raise self._unavailable(exc) from exc

    def _unavailable(self, exc: sqlite3.Error) -> StoreUnavailable:
        return StoreUnavailable(
            f"SQLite error on {self.path!r}: {exc}. Check that the file is writable and "
            "not locked for longer than the busy timeout."
        )

    def _wal_checkpoint(self, conn: sqlite3.Connection) -> None:
        """Copy the WAL into the database without waiting for anyone (PASSIVE)."""
        self._since_checkpoint = 0
        with contextlib.suppress(sqlite3.Error):  # done or not, the next one tries again
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def _now(self, fn: Callable[[sqlite3.Connection], T]) -> tuple[T] | None:
        """Run ``fn`` on this thread if that needs no wait and return ``(result,)``; None, with
        nothing done, if it would wait (a lock was held: what ``fn`` began is rolled back)."""
        if not self._lock.acquire(blocking=False):
            return None  # a call on a thread has the connection
        try:
            conn = self._conn
            if conn is None:
                raise StoreUnavailable("This SQLiteStore is closed; open a new one.")
            try:
                try:
                    result = fn(conn)
                except sqlite3.OperationalError as exc:
                    code = getattr(exc, "sqlite_errorcode", None)
                    if code is None or code & 0xFF not in _BUSY:
                        raise
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    return None  # another connection holds a lock: wait for it on a thread
            except sqlite3.Error as exc:
                raise self._unavailable(exc) from exc
            self._since_checkpoint += 1
            return (result,)
        finally:
            self._lock.release()

    async def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        # The call that reaches _CHECKPOINT_EVERY runs on a thread, which checkpoints after it.
        if self._inline and self._since_checkpoint < _CHECKPOINT_EVERY - 1:
            done = self._now(fn)
            if done is not None:
                return done[0]
        return await asyncio.to_thread(self._sync, fn)

    @staticmethod
    def _migrate(conn: sqlite3.Connection) -> None:
        def applied() -> int:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
            )
            row = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()
            return int(row[0])

        if applied() == len(MIGRATIONS):
            return
        with _immediate(conn):
            current = applied()  # again, under the write lock: another process may have won
            if current > len(MIGRATIONS):
                raise ConfigurationError(
                    f"The database is at schema version {current}, newer than this package "
                    f"knows ({len(MIGRATIONS)}). Upgrade agent-continuations."
                )
            for version in range(current + 1, len(MIGRATIONS) + 1):
                for statement in MIGRATIONS[version - 1]:
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
                    (version, _ts(utcnow())),
                )

    async def _transact(self, id: str, change: Change[T]) -> T:
        """One transition in one write transaction: read, apply the rules, write, audit."""

        def run(conn: sqlite3.Connection) -> T:
            with _immediate(conn):
                old = _read(conn, id)
                new, events, result = change(old, utcnow())
                if new is not old:
                    _write(conn, new, old.version)
                    if new.status == "done":  # a retired checkpoint's segments go with it
                        conn.execute("DELETE FROM segments WHERE base_id = ?", (id,))
                _audit(conn, events)
                return result

        return await self._call(run)

    # -- the protocol -----------------------------------------------------------------------

    async def _save(self, cont: Continuation, *, actor: str | None = None) -> StoredContinuation:
        """See :meth:`Store.save`."""
        text = cont.model_copy(update={"decisions": ()}).to_json()
        # Rules and validation see the document exactly as it will be loaded back.
        document = Continuation.from_json(text)

        def run(conn: sqlite3.Connection) -> Row:
            with _immediate(conn):
                if conn.execute("SELECT 1 FROM continuations WHERE id = ?", (cont.id,)).fetchone():
                    raise already_saved(cont.id)
                row, events = new_row(document, cont.decisions, actor=actor, at=utcnow())
                _insert(conn, row, text)
                _audit(conn, events)
                return row

        return (await self._call(run)).record()

    async def get(self, id: str) -> StoredContinuation:
        """See :meth:`Store.get`."""

        def run(conn: sqlite3.Connection) -> tuple[Row, builtins.list[str]]:
            return _read(conn, id), _segments(conn, id)

        row, segments = await self._call(run)
        return row.record(segments)

    async def list(
        self, *, status: Status | None = None, run_id: str | None = None, limit: int = 100
    ) -> builtins.list[StoredContinuation]:
        """See :meth:`Store.list`."""
        filters = {k: v for k, v in (("status", status), ("run_id", run_id)) if v is not None}
        where = " AND ".join(f"{k} = ?" for k in filters)
        sql = f"SELECT {_COLUMNS} FROM continuations {'WHERE ' + where if where else ''} "
        sql += f"ORDER BY created_at DESC, rowid DESC LIMIT {max(int(limit), 0)}"

        def run(conn: sqlite3.Connection) -> builtins.list[tuple[Row, builtins.list[str]]]:
            rows = [_row(r) for r in _rows(conn, sql, tuple(filters.values()))]
            return [(row, _segments(conn, row.id)) for row in rows]

        return [row.record(segments) for row, segments in await self._call(run)]

    async def _checkpoint(
        self,
        cont: Continuation,
        *,
        previous: Claim | None = None,
        owner: str | None = None,
        lease_seconds: float = 30.0,
        progress: bool = True,
    ) -> Claim | None:
        """See :meth:`Store.checkpoint`."""
        text = cont.model_copy(update={"decisions": ()}).to_json()
        document = Continuation.from_json(text)
        holder = holder_id()

        def run(conn: sqlite3.Connection) -> Claim | None:
            with _immediate(conn):
                if conn.execute("SELECT 1 FROM continuations WHERE id = ?", (cont.id,)).fetchone():
                    raise already_saved(cont.id)
                old = _read(conn, previous.id) if previous is not None else None
                held = (old, previous) if old is not None and previous is not None else None
                new, retired, claim, events = checkpoint_rows(
                    document, cont.decisions, held, owner=owner, lease_seconds=lease_seconds,
                    at=utcnow(), progress=progress, holder=holder,
                )  # fmt: skip
                if retired is not None and old is not None:
                    _write(conn, retired, old.version)
                    conn.execute("DELETE FROM segments WHERE base_id = ?", (old.id,))
                _insert(conn, new, text)
                _audit(conn, events)
                return claim

        return await self._call(run)

    async def heartbeat(self, claim: Claim, *, lease_seconds: float = 300.0) -> Claim:
        """See :meth:`Store.heartbeat`. Reads the claim's columns, not the document: a
        heartbeat costs the same however long the run's history is."""

        def run(conn: sqlite3.Connection) -> Claim:
            with _immediate(conn):
                status, fence, claimed_by, _ = _claim_columns(conn, claim.id)
                check_fence(claim.id, status, fence, claimed_by, claim)
                renewed = renewed_claim(claim, lease_seconds=lease_seconds, at=utcnow())
                conn.execute(
                    "UPDATE continuations SET lease_until = ? WHERE id = ?",
                    (_ts(renewed.lease_until), claim.id),
                )
                return renewed

        return await self._call(run)

    async def complete(
        self, claim: Claim, *, next_id: str | None = None, output: Any = None
    ) -> None:
        """See :meth:`Store.complete`. Reads the claim's columns, not the document."""
        kept = jsonable(output) if next_id is None else None
        stored = json.dumps(kept) if kept is not None else None

        def run(conn: sqlite3.Connection) -> None:
            with _immediate(conn):
                status, fence, claimed_by, run_id = _claim_columns(conn, claim.id)
                check_fence(claim.id, status, fence, claimed_by, claim)
                at = utcnow()
                conn.execute(
                    "UPDATE continuations SET version = version + 1, status = 'done', "
                    "updated_at = ?, lease_until = NULL, holder = NULL, output = ? WHERE id = ?",
                    (_ts(at), stored, claim.id),
                )
                conn.execute("DELETE FROM segments WHERE base_id = ?", (claim.id,))
                _audit(conn, completion_events(
                    run_id, claim, next_id=next_id, output=output, at=at
                ))  # fmt: skip

        await self._call(run)

    async def _fenced(
        self, claim: Claim, events: Callable[[datetime], Events], segment: Segment | None
    ) -> None:

        def run(conn: sqlite3.Connection) -> None:
            with _immediate(conn):
                status, fence, claimed_by, _ = _claim_columns(conn, claim.id)
                check_fence(claim.id, status, fence, claimed_by, claim)
                if segment is not None:
                    (count,) = conn.execute(
                        "SELECT COUNT(*) FROM segments WHERE base_id = ?", (claim.id,)
                    ).fetchone()
                    stored = conn.execute(
                        "SELECT body FROM segments WHERE base_id = ? AND idx = ?",
                        (claim.id, segment.index),
                    ).fetchone()
                    if check_segment(segment, count, stored[0] if stored else None):
                        conn.execute(
                            "INSERT INTO segments (base_id, idx, body) VALUES (?, ?, ?)",
                            (claim.id, segment.index, segment.text),
                        )
                _audit(conn, events(utcnow()))

        await self._call(run)

    async def _append(
        self,
        run_id: str,
        kind: AuditKind,
        *,
        continuation_id: str,
        actor: str | None,
        detail: dict[str, Any] | None,
    ) -> None:
        event = recorded_event(
            run_id, kind, at=utcnow(), continuation_id=continuation_id, actor=actor, detail=detail
        )

        def run(conn: sqlite3.Connection) -> None:
            with _immediate(conn):
                _audit(conn, [event])

        await self._call(run)

    async def fail_unreadable(
        self, id: str, error: BaseException, *, actor: str | None = None
    ) -> bool:
        """See :meth:`Store.fail_unreadable`."""

        def run(conn: sqlite3.Connection) -> bool:
            with _immediate(conn):
                sql = "SELECT run_id, status, version, attempts FROM continuations WHERE id = ?"
                found = conn.execute(sql, (id,)).fetchone()
                if found is None:
                    raise not_found(id)
                run_id, status, version, attempts = found
                if status in ("done", "failed"):
                    return False
                at = utcnow()
                last, event = unreadable_failure(
                    id, run_id, error, attempts=attempts, actor=actor, at=at
                )
                conn.execute(
                    "UPDATE continuations SET status = 'failed', version = ?, updated_at = ?, "
                    "lease_until = NULL, holder = NULL, not_before = NULL, last_error = ? "
                    "WHERE id = ? AND version = ?",
                    (version + 1, _ts(at), last.model_dump_json(), id, version),
                )
                _audit(conn, [event])
                return True

        return await self._call(run)

    async def claimable(self, *, limit: int = 10, owner: str | None = None) -> builtins.list[str]:
        """See :meth:`Store.claimable`. Reads ids only, so one unreadable row blocks nothing."""
        sql = (
            "SELECT id FROM continuations WHERE status IN ('ready', 'claimed') AND "
            f"(({_DUE}) <= ? OR (status = 'claimed' AND claimed_by = ?)) "
            f"ORDER BY ({_DUE}), rowid LIMIT ?"
        )

        def run(conn: sqlite3.Connection) -> builtins.list[str]:
            now = _ts(utcnow())
            rows = conn.execute(sql, (now, owner, max(int(limit), 0))).fetchall()
            return [str(r[0]) for r in rows]

        return await self._call(run)

    async def _pick(
        self, owner: str, lease_seconds: float, max_attempts: int, *, read: bool
    ) -> tuple[Claim, Callable[[], StoredContinuation] | None] | None:
        """See :meth:`Store.claim_next`: picked and claimed in one ``BEGIN IMMEDIATE``; with
        ``read`` the claimed row and its segments are read in it too."""
        # Only the columns the rules need: a document is parsed only for a live claim taken
        # back or one out of attempts (claim_first then applies the full rules). Two walks,
        # merged in order: the rows due longest ago (ready ones, backoffs that ended, expired
        # leases), in index order, stopping at the first one claimed; and the live claims
        # under ``owner`` that a restarted owner takes back, by when they were claimed, as
        # Postgres picks them: held by another session (never this process's own), under an
        # explicit owner name or taken on this machine. Live claims are never walked past,
        # however many this process or others hold.
        session, explicit, machine = takeback_terms(owner)
        update = (
            "UPDATE continuations SET version = ?, status = 'claimed', updated_at = ?, "
            "claimed_by = ?, lease_until = ?, fence = ?, attempts = ?, not_before = NULL, "
            "holder = ? WHERE id = ? AND version = ?"
        )
        one = f"SELECT {_COLUMNS} FROM continuations WHERE id = ?"
        holder = holder_id()

        def run(conn: sqlite3.Connection) -> tuple[Claim | ContinuationFailed | None, Raw | None]:
            with _immediate(conn):
                claim = pick(conn)
                if read and isinstance(claim, Claim):  # the row as claimed, parsed after commit
                    return claim, (_rows(conn, one, (claim.id,))[0], _segments(conn, claim.id))
                return claim, None

        def pick(conn: sqlite3.Connection) -> Claim | ContinuationFailed | None:
            at = utcnow()
            terms = {
                "now": _ts(at), "owner": owner, "session": session, "explicit": explicit,
                "machine": machine,
            }  # fmt: skip
            back = sorted(conn.execute(_TAKEBACK, terms), key=_walk_order)
            cursor = conn.execute(_DUE_WALK, terms)
            walk = heapq.merge(back, cursor, key=_walk_order)
            for id, run_id, status, held_by, lease, version, fence, attempts, _, _ in walk:
                plain = plain_claim(
                    id, run_id, status=status, claimed_by=held_by, lease_until=_time(lease),
                    version=version, fence=fence, attempts=attempts, owner=owner,
                    lease_seconds=lease_seconds, max_attempts=max_attempts, at=at,
                )  # fmt: skip
                if plain is not None:
                    cursor.close()
                    claim, events = plain
                    conn.execute(update, (
                        claim.version, _ts(at), owner, _ts(claim.lease_until), claim.token,
                        claim.attempt, holder, id, version,
                    ))  # fmt: skip
                    _audit(conn, events)
                    return claim
                found = claim_first(
                    [_read(conn, id)], at, owner=owner, lease_seconds=lease_seconds,
                    max_attempts=max_attempts,
                )  # fmt: skip
                if found is not None:
                    cursor.close()
                    old, new, taken, events = found
                    _write(conn, new, old.version)
                    _audit(conn, events)
                    return taken
            return None

        claim, raw = await self._call(run)
        if isinstance(claim, ContinuationFailed):
            raise claim  # out of attempts: it is stored failed now
        if claim is None:
            return None
        if raw is None:
            return claim, None
        row, segments = raw
        return claim, lambda: _row(row).record(segments)

    async def audit(self, run_id: str) -> builtins.list[AuditEvent]:
        """See :meth:`Store.audit`."""
        sql = "SELECT kind, at, actor, detail, continuation_id FROM audit WHERE run_id = ? "

        def run(conn: sqlite3.Connection) -> builtins.list[tuple[Any, ...]]:
            return conn.execute(sql + "ORDER BY seq", (run_id,)).fetchall()

        return [
            AuditEvent(
                run_id=run_id,
                continuation_id=cid,
                kind=kind,
                at=datetime.fromisoformat(at),
                actor=actor,
                detail=json.loads(detail),
            )
            for kind, at, actor, detail, cid in await self._call(run)
        ]

    async def close(self) -> None:
        """Close the connection if this store opened it; later calls raise StoreUnavailable."""
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None and self._owns:
            conn.close()


#: A row as read and its segments' bodies, not parsed yet.
Raw: TypeAlias = tuple[sqlite3.Row, builtins.list[str]]


def _rows(
    conn: sqlite3.Connection, sql: str, params: tuple[Any, ...]
) -> builtins.list[sqlite3.Row]:
    cursor = conn.execute(sql, params)
    cursor.row_factory = sqlite3.Row  # per cursor: a caller's connection keeps its own factory
    return cursor.fetchall()


def _segments(conn: sqlite3.Connection, id: str) -> builtins.list[str]:
    sql = "SELECT body FROM segments WHERE base_id = ? ORDER BY idx"
    return [str(r[0]) for r in conn.execute(sql, (id,)).fetchall()]


def _claim_columns(conn: sqlite3.Connection, id: str) -> tuple[str, int, str | None, str]:
    """Row ``id``'s status, fence, owner and run id: what a write under a claim checks."""
    sql = "SELECT status, fence, claimed_by, run_id FROM continuations WHERE id = ?"
    found = conn.execute(sql, (id,)).fetchone()
    if found is None:
        raise not_found(id)
    return str(found[0]), int(found[1]), found[2], str(found[3])


def _read(conn: sqlite3.Connection, id: str) -> Row:
    found = _rows(conn, f"SELECT {_COLUMNS} FROM continuations WHERE id = ?", (id,))
    if not found:
        raise not_found(id)
    return _row(found[0])


def _row(r: sqlite3.Row) -> Row:
    return readable(r["id"], lambda: _parse(r))


def _parse(r: sqlite3.Row) -> Row:
    return Row(
        document=Continuation.from_json(r["document"]),
        decisions=load_records(r["decisions"], continuation_id=r["id"]),
        version=r["version"],
        status=r["status"],
        created_at=datetime.fromisoformat(r["created_at"]),
        updated_at=datetime.fromisoformat(r["updated_at"]),
        claimed_by=r["claimed_by"],
        lease_until=_time(r["lease_until"]),
        fence=r["fence"],
        attempts=r["attempts"],
        not_before=_time(r["not_before"]),
        last_error=LastError.model_validate_json(r["last_error"]) if r["last_error"] else None,
        holder=r["holder"],
        output=json.loads(r["output"]) if r["output"] is not None else None,
    )


def _time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def _values(new: Row) -> tuple[Any, ...]:
    """The mutable columns, in the order ``_write`` and ``_insert`` name them."""
    error = new.last_error.model_dump_json() if new.last_error is not None else None
    output = json.dumps(jsonable(new.output)) if new.output is not None else None
    return (new.version, new.status, _ts(new.updated_at), new.claimed_by, _ts(new.lease_until),
            _dump(new.decisions), new.fence, new.attempts, _ts(new.not_before), error,
            new.holder, output)  # fmt: skip


def _write(conn: sqlite3.Connection, new: Row, old_version: int) -> None:
    conn.execute(
        "UPDATE continuations SET version = ?, status = ?, updated_at = ?, claimed_by = ?, "
        "lease_until = ?, decisions = ?, fence = ?, attempts = ?, not_before = ?, "
        "last_error = ?, holder = ?, output = ? WHERE id = ? AND version = ?",
        (*_values(new), new.id, old_version),
    )


def _insert(conn: sqlite3.Connection, new: Row, text: str) -> None:
    doc = new.document
    (version, status, updated, claimed_by, lease, decisions, fence, attempts, not_before, error,
     holder, output) = _values(new)  # fmt: skip
    conn.execute(
        f"INSERT INTO continuations ({_COLUMNS}) VALUES ({_MARKS})",
        (doc.id, doc.run_id, doc.seq, version, status, _ts(new.created_at), updated, claimed_by,
         lease, text, decisions, fence, attempts, not_before, error, holder, output),
    )  # fmt: skip


def _audit(conn: sqlite3.Connection, events: builtins.list[AuditEvent]) -> None:
    conn.executemany(
        "INSERT INTO audit (run_id, continuation_id, kind, at, actor, detail) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        [
            (e.run_id, e.continuation_id, e.kind, _ts(e.at), e.actor, json.dumps(e.detail))
            for e in events
        ],
    )


def _dump(records: tuple[DecisionRecord, ...]) -> str:
    return json.dumps([r.model_dump(mode="json") for r in records], ensure_ascii=False)
