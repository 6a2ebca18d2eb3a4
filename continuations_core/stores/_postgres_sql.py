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
    "COLUMNS",
    "DROP_SEGMENTS",
    "FAIL_UNREADABLE",
    "INSERT",
    "MIGRATIONS",
    "READ",
    "READ_RAW",
    "SEGMENTS",
    "SEGMENT_AT",
    "UPDATE",
]

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
)

BOOTSTRAP: LiteralString = """CREATE SCHEMA IF NOT EXISTS {s};
    CREATE TABLE IF NOT EXISTS {s}.schema_migrations (
        version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp())"""
COLUMNS: LiteralString = """id, run_id, seq, version, status, created_at, updated_at,
    claimed_by, lease_until, document, decisions, fence, attempts, not_before, last_error,
    holder, output"""
READ: LiteralString = f"SELECT {COLUMNS} FROM {{s}}.continuations WHERE id = %s"
INSERT: LiteralString = f"""INSERT INTO {{s}}.continuations ({COLUMNS})
    VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
    ON CONFLICT (id) DO NOTHING"""
UPDATE: LiteralString = """UPDATE {s}.continuations SET version = %s, status = %s,
    updated_at = %s, claimed_by = %s, lease_until = %s, decisions = %s, fence = %s,
    attempts = %s, not_before = %s, last_error = %s, holder = %s, output = %s
    WHERE id = %s AND version = %s"""
AUDIT: LiteralString = """INSERT INTO {s}.audit (run_id, continuation_id, kind, at, actor,
    detail) VALUES (%s, %s, %s, %s, %s, %s)"""
CLAIMABLE: LiteralString = """SELECT id FROM {s}.continuations
    WHERE (status = 'ready' AND (not_before IS NULL OR not_before <= clock_timestamp()))
    OR (status = 'claimed' AND (lease_until <= clock_timestamp() OR claimed_by = %s))
    ORDER BY updated_at, pos LIMIT %s FOR UPDATE SKIP LOCKED"""
READ_RAW: LiteralString = """SELECT run_id, status, version, attempts FROM {s}.continuations
    WHERE id = %s FOR UPDATE"""
FAIL_UNREADABLE: LiteralString = """UPDATE {s}.continuations SET status = 'failed',
    version = %s, updated_at = %s, lease_until = NULL, holder = NULL, not_before = NULL,
    last_error = %s WHERE id = %s AND version = %s"""
CLAIM_COLUMNS: LiteralString = """SELECT status, fence, claimed_by, clock_timestamp()
    FROM {s}.continuations
    WHERE id = %s FOR UPDATE"""
SEGMENTS: LiteralString = "SELECT body FROM {s}.segments WHERE base_id = %s ORDER BY idx"
SEGMENT_AT: LiteralString = """SELECT (SELECT COUNT(*) FROM {s}.segments WHERE base_id = %s),
    (SELECT body FROM {s}.segments WHERE base_id = %s AND idx = %s)"""
APPEND_SEGMENT: LiteralString = "INSERT INTO {s}.segments (base_id, idx, body) VALUES (%s, %s, %s)"
DROP_SEGMENTS: LiteralString = "DELETE FROM {s}.segments WHERE base_id = %s"
