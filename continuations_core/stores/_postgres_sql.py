"""The SQL of the Postgres store: its migrations and statements (``{s}`` is the schema).

Kept apart from :mod:`.postgres` so the schema's history reads in one place. Append to
``MIGRATIONS``; never edit a shipped one.
"""

from __future__ import annotations

from typing import LiteralString

__all__ = [
    "APPEND_SEGMENT",
    "AUDIT",
    "BOOTSTRAP",
    "CLAIMABLE",
    "CLAIM_COLUMNS",
    "CLAIM_NEXT",
    "CLAIM_NEXT_READ",
    "COLUMNS",
    "COMPLETE",
    "DROP_SEGMENTS",
    "FAIL_UNREADABLE",
    "HEARTBEAT",
    "INSERT",
    "JOURNAL",
    "MIGRATIONS",
    "READ",
    "READ_LOCKED",
    "READ_RAW",
    "READ_SEGMENTED",
    "SEGMENTS_OF_C",
    "SEGMENT_AT",
    "UPDATE",
]

# When a ready or claimed row is claimable: a ready one when it changed, or when its backoff
# ends; a claimed one when its lease ends. claim_next takes the row due longest ago.
DUE: LiteralString = (
    "CASE WHEN status = 'claimed' THEN lease_until ELSE COALESCE(not_before, updated_at) END"
)

# MIGRATIONS[n - 1] upgrades the schema to version n; ``{s}`` is the quoted schema name.
# Append only; never edit a shipped one.
MIGRATIONS: tuple[LiteralString, ...] = (
    """CREATE TABLE {s}.continuations (
        id TEXT PRIMARY KEY, pos BIGINT GENERATED ALWAYS AS IDENTITY,
        run_id TEXT NOT NULL, seq INTEGER NOT NULL, version INTEGER NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('waiting', 'ready', 'claimed', 'done')),
        created_at TIMESTAMPTZ NOT NULL, updated_at TIMESTAMPTZ NOT NULL,
        claimed_by TEXT, claim_token TEXT, lease_until TIMESTAMPTZ,
        document TEXT NOT NULL, decisions TEXT NOT NULL DEFAULT '[]');
    CREATE INDEX continuations_status ON {s}.continuations (status, created_at);
    CREATE INDEX continuations_run ON {s}.continuations (run_id, created_at);
    CREATE INDEX continuations_claimable ON {s}.continuations (updated_at)
        WHERE status IN ('ready', 'claimed');
    CREATE TABLE {s}.audit (
        seq BIGSERIAL PRIMARY KEY, run_id TEXT NOT NULL, continuation_id TEXT NOT NULL,
        kind TEXT NOT NULL, at TIMESTAMPTZ NOT NULL, actor TEXT, detail TEXT NOT NULL);
    CREATE INDEX audit_run ON {s}.audit (run_id, seq)""",
    """ALTER TABLE {s}.continuations DROP CONSTRAINT continuations_status_check;
    ALTER TABLE {s}.continuations ADD CONSTRAINT continuations_status_check
        CHECK (status IN ('waiting', 'ready', 'claimed', 'done', 'failed'));
    ALTER TABLE {s}.continuations
        ADD COLUMN fence BIGINT NOT NULL DEFAULT 0,
        ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0,
        ADD COLUMN not_before TIMESTAMPTZ,
        ADD COLUMN last_error TEXT,
        ADD COLUMN holder TEXT,
        ADD COLUMN output TEXT;
    CREATE INDEX continuations_owner ON {s}.continuations (claimed_by)
        WHERE status = 'claimed'""",
    """CREATE TABLE {s}.segments (
        base_id TEXT NOT NULL, idx INTEGER NOT NULL, body TEXT NOT NULL,
        PRIMARY KEY (base_id, idx))""",
    # claim_next's order in full (updated_at, then pos), so its pick is an index walk that
    # stops at the first claimable row, not a sort of every ready row.
    """CREATE INDEX continuations_next ON {s}.continuations (updated_at, pos)
        WHERE status IN ('ready', 'claimed');
    DROP INDEX {s}.continuations_claimable""",
    # claim_next's order by when a row became claimable (``DUE``), so live claims, due only
    # when their lease ends, sort after every claimable row: the pick never walks past them.
    # And the claims under an owner name by holder (byte order), so a restarted owner's
    # candidates, held by another session, are found without reading this session's own.
    f"""CREATE INDEX continuations_due ON {{s}}.continuations (({DUE}), pos)
        WHERE status IN ('ready', 'claimed');
    DROP INDEX {{s}}.continuations_next;
    CREATE INDEX continuations_holder ON {{s}}.continuations (claimed_by, holder COLLATE "C")
        WHERE status = 'claimed';
    DROP INDEX {{s}}.continuations_owner""",
)

BOOTSTRAP: LiteralString = """CREATE SCHEMA IF NOT EXISTS {s};
    CREATE TABLE IF NOT EXISTS {s}.schema_migrations (
        version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp())"""
COLUMNS: LiteralString = """id, run_id, seq, version, status, created_at, updated_at,
    claimed_by, lease_until, document, decisions, fence, attempts, not_before, last_error,
    holder, output"""
READ: LiteralString = f"SELECT {COLUMNS} FROM {{s}}.continuations WHERE id = %s"
# The segments appended to row ``c`` (its base), in order, as one array column.
SEGMENTS_OF_C: LiteralString = (
    "ARRAY(SELECT g.body FROM {s}.segments g WHERE g.base_id = c.id ORDER BY g.idx) AS segments"
)
READ_SEGMENTED: LiteralString = (
    f"SELECT {COLUMNS}, {SEGMENTS_OF_C} FROM {{s}}.continuations c WHERE id = %s"
)
# The row locked, and the database's time once the lock is held (the outer query's clock runs
# after the inner one's lock): one round trip for what a change needs.
READ_LOCKED: LiteralString = f"""SELECT locked.*, clock_timestamp() AS now FROM (
    SELECT {COLUMNS} FROM {{s}}.continuations WHERE id = %s FOR UPDATE) AS locked"""
INSERT: LiteralString = f"""INSERT INTO {{s}}.continuations ({COLUMNS})
    VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
    ON CONFLICT (id) DO NOTHING"""
UPDATE: LiteralString = """UPDATE {s}.continuations SET version = %s, status = %s,
    updated_at = %s, claimed_by = %s, lease_until = %s, decisions = %s, fence = %s,
    attempts = %s, not_before = %s, last_error = %s, holder = %s, output = %s
    WHERE id = %s AND version = %s"""
AUDIT: LiteralString = """INSERT INTO {s}.audit (run_id, continuation_id, kind, at, actor,
    detail) VALUES (%s, %s, %s, %s, %s, %s)"""
CLAIMABLE: LiteralString = f"""SELECT id FROM {{s}}.continuations
    WHERE status IN ('ready', 'claimed')
    AND (({DUE}) <= clock_timestamp() OR (status = 'claimed' AND claimed_by = %s))
    ORDER BY ({DUE}), pos LIMIT %s FOR UPDATE SKIP LOCKED"""
READ_RAW: LiteralString = """SELECT run_id, status, version, attempts FROM {s}.continuations
    WHERE id = %s FOR UPDATE"""
FAIL_UNREADABLE: LiteralString = """UPDATE {s}.continuations SET status = 'failed',
    version = %s, updated_at = %s, lease_until = NULL, holder = NULL, not_before = NULL,
    last_error = %s WHERE id = %s AND version = %s"""


def _iso(ts: LiteralString) -> LiteralString:
    """SQL for ``ts`` as the audit trail writes times (pydantic's JSON: UTC, ``Z``)."""
    utc = f"({ts} AT TIME ZONE 'UTC')"
    return (
        f"""to_char({utc}, 'YYYY-MM-DD"T"HH24:MI:SS') || CASE WHEN """
        f"""date_part('microseconds', {ts})::bigint %% 1000000 = 0 THEN '' """
        f"""ELSE to_char({utc}, '.US') END || 'Z'"""
    )


# Holders either side of this session's in byte order ("0" follows "/"): the index ranges.
_BELOW_SESSION: LiteralString = 'c.holder COLLATE "C" < %(session)s'
_ABOVE_SESSION: LiteralString = "c.holder COLLATE \"C\" >= %(session)s || '0'"


def _back(holders: LiteralString) -> LiteralString:
    """The live claim under the owner's name a restarted owner takes back, claimed first,
    among those whose holder satisfies ``holders``: one side of this session's holders in
    the index (a holder is session/machine/pid/start), so this session's own are not read."""
    return f"""
    SELECT c.id, c.status, c.claimed_by, c.lease_until, TRUE AS special,
        c.updated_at AS key, c.pos
    FROM {{s}}.continuations c, n
    WHERE c.status = 'claimed' AND c.claimed_by = %(owner)s AND {holders}
        AND (c.lease_until IS NULL OR c.lease_until > n.t)
        AND c.id <> ALL(%(skip)s::text[]) AND COALESCE(c.holder, '') <> ''
        AND split_part(c.holder, '/', 1) <> %(session)s
        AND (%(explicit)s OR split_part(c.holder, '/', 2) = %(machine)s)
    ORDER BY c.updated_at, c.pos LIMIT 1
    FOR UPDATE OF c SKIP LOCKED"""


# One statement picks a claimable row (locked rows skipped) and claims it, with its audit
# events: the row due longest ago (``DUE``: ready rows, backoffs that ended, expired leases),
# or a live claim under the owner's name a restarted owner takes back (ordered by when it was
# claimed), whichever is older. The due row is found walking ``continuations_due`` from its
# start and stopping at the first unlocked row, so neither live claims nor the table's size
# cost anything. A live claim taken back, or one out of attempts, is only picked ("special"):
# ``claim`` then applies the exact rules to it (taken_over, or failed).
def _claim_next(returning: LiteralString, select: LiteralString) -> LiteralString:
    """``CLAIM_NEXT`` with the claimed row's ``returning`` columns and the final ``select``."""
    return f"""WITH n AS MATERIALIZED (SELECT clock_timestamp() AS t),
back_lo AS MATERIALIZED ({_back(_BELOW_SESSION)}),
back_hi AS MATERIALIZED ({_back(_ABOVE_SESSION)}),
due AS MATERIALIZED (
    SELECT c.id, c.status, c.claimed_by, c.lease_until,
        (c.status = 'claimed' AND c.attempts >= %(max_attempts)s) AS special,
        ({DUE}) AS key, c.pos
    FROM {{s}}.continuations c
    -- now as a parameter, not a join: the planner then walks the index in order and stops
    WHERE c.status IN ('ready', 'claimed') AND ({DUE}) <= (SELECT t FROM n)
        AND c.id <> ALL(%(skip)s::text[])
    ORDER BY ({DUE}), c.pos LIMIT 1
    FOR UPDATE OF c SKIP LOCKED),
picked AS MATERIALIZED (
    SELECT * FROM back_lo UNION ALL SELECT * FROM back_hi UNION ALL SELECT * FROM due
    ORDER BY key, pos LIMIT 1),
claimed AS (
    UPDATE {{s}}.continuations c SET version = c.version + 1, status = 'claimed',
        updated_at = n.t, claimed_by = %(owner)s,
        lease_until = n.t + %(lease_seconds)s * interval '1 second', fence = c.fence + 1,
        attempts = c.attempts + 1, not_before = NULL, holder = %(holder)s
    FROM picked p, n WHERE c.id = p.id AND NOT p.special
    RETURNING {returning}, n.t AS at,
        p.status AS was, p.claimed_by AS was_owner, p.lease_until AS was_lease),
audited AS (
    INSERT INTO {{s}}.audit (run_id, continuation_id, kind, at, actor, detail)
    SELECT x.run_id, x.id, e.kind, x.at, %(owner)s, e.detail
    FROM claimed x CROSS JOIN LATERAL (VALUES
        (1, 'expired', json_build_object(
            'owner', x.was_owner, 'lease_until', {_iso("x.was_lease")})::text),
        (2, 'claimed', json_build_object('lease_until', {_iso("x.lease_until")},
            'token', x.fence, 'attempt', x.attempts)::text)) AS e(n, kind, detail)
    WHERE e.n = 2 OR x.was = 'claimed'
    ORDER BY e.n)
SELECT {select}
FROM picked p LEFT JOIN claimed x ON x.id = p.id"""


CLAIM_NEXT: LiteralString = _claim_next(
    "c.id, c.run_id, c.version, c.lease_until, c.fence, c.attempts",
    "p.id, p.special, x.version, x.lease_until, x.fence, x.attempts",
)
# The same, returning the claimed row as ``READ_SEGMENTED`` reads it (its columns after the
# claim, and its segments): a worker's claim and read in one round trip. The segments come
# from the statement's snapshot; an append to them holds the row's lock, which the claim
# skips (``SKIP LOCKED``), so none can be half seen.
CLAIM_NEXT_READ: LiteralString = _claim_next(
    "c.*",
    "p.id AS picked, p.special, "
    + ", ".join(f"x.{column.strip()}" for column in COLUMNS.split(","))
    + ", ARRAY(SELECT g.body FROM {s}.segments g WHERE g.base_id = x.id ORDER BY g.idx) "
    "AS segments",
)
CLAIM_COLUMNS: LiteralString = """SELECT status, fence, claimed_by, clock_timestamp()
    FROM {s}.continuations
    WHERE id = %s FOR UPDATE"""
SEGMENT_AT: LiteralString = """SELECT (SELECT COUNT(*) FROM {s}.segments WHERE base_id = %s),
    (SELECT body FROM {s}.segments WHERE base_id = %s AND idx = %s)"""
APPEND_SEGMENT: LiteralString = "INSERT INTO {s}.segments (base_id, idx, body) VALUES (%s, %s, %s)"
DROP_SEGMENTS: LiteralString = "DELETE FROM {s}.segments WHERE base_id = %s"

# One statement completes a continuation still claimed under the given fencing token, with
# its audit events (``completed`` only when the run ended) and its retired segments, at DB
# time. No row comes back when the claim no longer holds: ``complete`` then reads the claim
# columns for the precise error.
COMPLETE: LiteralString = """WITH n AS MATERIALIZED (SELECT clock_timestamp() AS t),
done AS (
    UPDATE {s}.continuations c SET version = c.version + 1, status = 'done', updated_at = n.t,
        lease_until = NULL, holder = NULL, output = %(output)s
    FROM n WHERE c.id = %(id)s AND c.status = 'claimed' AND c.fence = %(token)s
    RETURNING c.id, c.run_id, n.t AS at),
audited AS (
    INSERT INTO {s}.audit (run_id, continuation_id, kind, at, actor, detail)
    SELECT d.run_id, d.id, e.kind, d.at, %(actor)s, e.detail
    FROM done d CROSS JOIN LATERAL (VALUES
        (1, 'resumed', %(resumed)s::text), (2, 'completed', %(completed)s::text))
        AS e(n, kind, detail)
    WHERE e.detail IS NOT NULL
    ORDER BY e.n),
dropped AS (DELETE FROM {s}.segments g USING done d WHERE g.base_id = d.id)
SELECT id FROM done"""

# One statement extends the lease of a continuation still claimed under the given fencing
# token, from the database's clock once the row is locked, without reading the document. No
# row comes back when the claim no longer holds: ``heartbeat`` then reads the claim columns
# for the precise error.
HEARTBEAT: LiteralString = """UPDATE {s}.continuations
SET lease_until = clock_timestamp() + %(lease_seconds)s * interval '1 second'
WHERE id = %(id)s AND status = 'claimed' AND fence = %(token)s
RETURNING lease_until"""

# One statement appends journal events under a claim: the row is locked, and the events are
# inserted (stamped with the database's clock once the lock is held, in order) only if it is
# claimed under the token. The claim columns come back either way, for the caller to raise the precise error.
JOURNAL: LiteralString = """WITH c AS MATERIALIZED (
    SELECT locked.*, clock_timestamp() AS t FROM (
        SELECT status, fence, claimed_by FROM {s}.continuations WHERE id = %(id)s FOR UPDATE
    ) AS locked),
audited AS (
    INSERT INTO {s}.audit (run_id, continuation_id, kind, at, actor, detail)
    SELECT e.run_id, e.cid, e.kind, c.t, e.actor, e.detail
    FROM c CROSS JOIN ROWS FROM (unnest(%(run_ids)s::text[], %(cids)s::text[],
        %(kinds)s::text[], %(actors)s::text[], %(details)s::text[]))
        WITH ORDINALITY AS e(run_id, cid, kind, actor, detail, n)
    WHERE c.status = 'claimed' AND c.fence = %(token)s
    ORDER BY e.n)
SELECT status, fence, claimed_by FROM c"""
