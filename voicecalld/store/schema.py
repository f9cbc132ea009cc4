"""
The store's schema and its migrations.

The schema version is SQLite's C{user_version}.  Each entry of L{MIGRATIONS}
moves the file one version up, inside one transaction; a file written by a
newer voicecalld is refused rather than guessed at.
"""

from __future__ import annotations

import sqlite3

MIGRATIONS: tuple[str, ...] = (
    # 0 -> 1: calls, their transcripts, processed webhook/event ids.
    """
    CREATE TABLE calls (
        call_id TEXT PRIMARY KEY,
        provider TEXT NOT NULL,
        provider_call_id TEXT,
        direction TEXT NOT NULL,
        state TEXT NOT NULL,
        live INTEGER NOT NULL,
        started_at REAL NOT NULL,
        ended_at REAL,
        record TEXT NOT NULL
    );
    CREATE INDEX calls_live ON calls (live) WHERE live = 1;
    CREATE INDEX calls_provider_call_id ON calls (provider, provider_call_id);
    CREATE INDEX calls_started_at ON calls (started_at);
    CREATE TABLE transcript (
        call_id TEXT NOT NULL REFERENCES calls (call_id) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        entry TEXT NOT NULL,
        PRIMARY KEY (call_id, seq)
    );
    CREATE TABLE processed_events (
        key TEXT PRIMARY KEY,
        call_id TEXT,
        expires_at REAL NOT NULL
    );
    CREATE INDEX processed_events_expiry ON processed_events (expires_at);
    """,
    # 1 -> 2: ended calls by when they ended, for retention.
    """
    CREATE INDEX calls_ended ON calls (COALESCE(ended_at, started_at)) WHERE live = 0;
    """,
)

CURRENT_VERSION = len(MIGRATIONS)


class NewerSchema(Exception):
    """The store was written by a newer voicecalld."""

    def __init__(self, version: int, known: int) -> None:
        super().__init__(f"schema version {version} is newer than this voicecalld knows ({known})")
        self.version = version
        self.known = known


def migrate(db: sqlite3.Connection, migrations: tuple[str, ...] = MIGRATIONS) -> int:
    """Bring the schema of C{db} up to date; return the version it is at."""
    (version,) = db.execute("PRAGMA user_version").fetchone()
    if version > len(migrations):
        raise NewerSchema(version, len(migrations))
    for target in range(version + 1, len(migrations) + 1):
        db.execute("BEGIN IMMEDIATE")
        try:
            for statement in migrations[target - 1].split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(f"PRAGMA user_version = {target}")
        except Exception:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
    return len(migrations)
