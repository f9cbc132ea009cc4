"""
The call store in SQLite: one file in the state directory, written from one
worker thread (never the reactor), in WAL mode with full fsync so that a
commit that returned survives C{kill -9} and power loss alike.

Opening refuses a store that lost its data rather than starting empty
(see L{voicecalld.store.guard}).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from voicecalld.store.guard import create, damaged, inspect, mark, newer_schema
from voicecalld.store.interface import ICallStore
from voicecalld.store.schema import CURRENT_VERSION, MIGRATIONS, NewerSchema, migrate
from voicecalld.values.record import CallRecord, TranscriptEntry


class SynchronousRunner:
    """Runs store work in the calling thread: for tests only."""

    def __call__(self, fn: Callable[..., Any], *args: Any) -> Deferred:
        return maybeDeferred(fn, *args)

    def stop(self) -> None:
        """Nothing to stop."""


class ThreadRunner:
    """
    Runs store work, in order, on one dedicated thread, started on first use
    (after twistd has daemonized) and stopped by L{stop}.
    """

    def __init__(self, reactor: IReactorThreads) -> None:
        self._reactor = reactor
        self._pool = ThreadPool(minthreads=1, maxthreads=1, name="voicecalld-store")

    def __call__(self, fn: Callable[..., Any], *args: Any) -> Deferred:
        if not self._pool.started:
            self._pool.start()
        return deferToThreadPool(self._reactor, self._pool, fn, *args)

    def stop(self) -> None:
        """Finish queued work and end the thread."""
        if self._pool.started:
            self._pool.stop()


Runner = SynchronousRunner | ThreadRunner


@implementer(ICallStore)
class SQLiteCallStore:
    """L{ICallStore} in one SQLite file."""

    def __init__(self, path: str, runner: Runner) -> None:
        self.path = path
        self._run = runner
        self._db: sqlite3.Connection | None = None

    def open(self) -> Deferred:
        return self._run(self._open)

    def _open(self) -> None:
        if inspect(self.path, CURRENT_VERSION):
            create(self.path, _build)
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA foreign_keys=ON")
            db.execute("PRAGMA busy_timeout=5000")
            (verdict,) = db.execute("PRAGMA quick_check(1)").fetchone()
            if verdict != "ok":
                raise damaged(self.path, verdict)
            migrate(db)
        except NewerSchema as e:
            db.close()
            raise newer_schema(self.path, e.version, e.known) from e
        except sqlite3.OperationalError:
            db.close()
            raise
        except sqlite3.DatabaseError as e:
            # "file is not a database", "database disk image is malformed".
            db.close()
            raise damaged(self.path, str(e)) from e
        except BaseException:
            db.close()
            raise
        mark(self.path)
        self._db = db

    def close(self) -> Deferred:
        d = self._run(self._close)
        d.addBoth(self._stopped)
        return d

    def _stopped(self, result: Any) -> Any:
        self._run.stop()
        return result

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def commit(
        self,
        record: CallRecord,
        entries: Iterable[TranscriptEntry] = (),
        processed: Iterable[tuple[str, float]] = (),
    ) -> Deferred:
        return self._run(self._commit, record, tuple(entries), tuple(processed))

    def _commit(
        self,
        record: CallRecord,
        entries: tuple[TranscriptEntry, ...],
        processed: tuple[tuple[str, float], ...],
    ) -> None:
        db = self._connection()
        with _Transaction(db):
            (first,) = db.execute(
                "SELECT COALESCE(MAX(seq) + 1, 0) FROM transcript WHERE call_id = ?",
                (record.call_id,),
            ).fetchone()
            db.execute(
                "INSERT INTO calls (call_id, provider, provider_call_id, direction, state,"
                " live, started_at, ended_at, record) VALUES (?,?,?,?,?,?,?,?,?)"
                " ON CONFLICT(call_id) DO UPDATE SET provider_call_id=excluded.provider_call_id,"
                " state=excluded.state, live=excluded.live, ended_at=excluded.ended_at,"
                " record=excluded.record",
                (
                    record.call_id,
                    record.provider,
                    record.provider_call_id,
                    record.direction,
                    record.state.value,
                    int(not record.ended),
                    record.started_at,
                    record.ended_at,
                    json.dumps(record.to_json(transcript=False)),
                ),
            )
            # An entry is stored once, however often it is committed.
            for i, entry in enumerate(entries):
                text = json.dumps(entry.to_json())
                db.execute(
                    "INSERT INTO transcript (call_id, seq, entry) SELECT ?, ?, ?"
                    " WHERE NOT EXISTS (SELECT 1 FROM transcript WHERE call_id = ? AND entry = ?)",
                    (record.call_id, first + i, text, record.call_id, text),
                )
            db.executemany(
                "INSERT OR REPLACE INTO processed_events (key, call_id, expires_at) VALUES (?,?,?)",
                [(key, record.call_id, expires) for key, expires in processed],
            )

    def load(self, call_id: str) -> Deferred:
        return self._run(self._load_where, "call_id = ?", (call_id,))

    def find(self, provider: str, provider_call_id: str) -> Deferred:
        return self._run(
            self._load_where, "provider = ? AND provider_call_id = ?", (provider, provider_call_id)
        )

    def _load_where(self, where: str, args: tuple[Any, ...]) -> CallRecord | None:
        rows = self._records(
            f"SELECT call_id, record FROM calls WHERE {where} ORDER BY started_at DESC LIMIT 1",
            args,
        )
        return rows[0] if rows else None

    def live_calls(self) -> Deferred:
        return self._run(
            self._records,
            "SELECT call_id, record FROM calls WHERE live = 1 ORDER BY started_at",
            (),
        )

    def recent(self, limit: int) -> Deferred:
        return self._run(
            self._records,
            "SELECT call_id, record FROM calls ORDER BY started_at DESC LIMIT ?",
            (limit,),
        )

    def _records(self, query: str, args: tuple[Any, ...]) -> list[CallRecord]:
        db = self._connection()
        result = []
        for call_id, data in db.execute(query, args).fetchall():
            entries = tuple(
                TranscriptEntry.from_json(json.loads(entry))
                for (entry,) in db.execute(
                    "SELECT entry FROM transcript WHERE call_id = ?"
                    " ORDER BY json_extract(entry, '$.timestamp'), seq",
                    (call_id,),
                )
            )
            result.append(CallRecord.from_json(json.loads(data), entries))
        return result

    def processed_keys(self, now: float) -> Deferred:
        return self._run(self._processed_keys, now)

    def _processed_keys(self, now: float) -> dict[str, float]:
        rows = self._connection().execute(
            "SELECT key, expires_at FROM processed_events WHERE expires_at > ?", (now,)
        )
        return dict(rows.fetchall())

    def prune(self, now: float) -> Deferred:
        return self._run(self._prune, now)

    def _prune(self, now: float) -> int:
        db = self._connection()
        with _Transaction(db):
            return db.execute("DELETE FROM processed_events WHERE expires_at <= ?", (now,)).rowcount

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("the call store is not open")
        return self._db


def _build(path: str) -> None:
    """Create the current schema in a new file at C{path}, durably, and close it."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA synchronous=FULL")
        migrate(db, MIGRATIONS)
    finally:
        db.close()


class _Transaction:
    """BEGIN IMMEDIATE … COMMIT, or ROLLBACK on error (autocommit connection)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, value: object, tb: object) -> None:
        self._db.execute("COMMIT" if kind is None else "ROLLBACK")
