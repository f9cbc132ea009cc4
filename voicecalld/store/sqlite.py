"""
The call store in SQLite: one file in the state directory, written from one
worker thread (never the reactor), in WAL mode with full fsync so that a
commit that returned survives C{kill -9} and power loss alike.

Opening refuses a store that lost its data rather than starting empty
(see L{voicecalld.store.guard}).

The write-ahead log is kept small: SQLite checkpoints it every
L{AUTOCHECKPOINT_PAGES} pages and truncates it to L{JOURNAL_SIZE_LIMIT}
afterwards, and L{SQLiteCallStore.checkpoint} (run after each retention
sweep) empties it.

Commits asked for while the thread is busy are stored together, in one
transaction with one fsync (a group commit), in the order they were asked
for; each still fires only once it is durable.  Restoring hundreds of live
calls, or a burst of webhooks, waits for a few fsyncs rather than one per
write.  If that transaction fails, each commit is tried again alone, so one
bad write fails no other.  Any other store work closes the group, so the
order of all work is the order it was asked for.  A write that finds the disk full fails with
L{StoreFull}, and L{SQLiteCallStore.health} says so until a write works
again.
"""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable
from typing import Any

from attrs import define, field, frozen
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from voicecalld.store.guard import create, damaged, inspect, mark, newer_schema
from voicecalld.store.interface import ICallStore
from voicecalld.store.schema import CURRENT_VERSION, MIGRATIONS, NewerSchema, migrate
from voicecalld.values.record import CallRecord, TranscriptEntry

AUTOCHECKPOINT_PAGES = 16
JOURNAL_SIZE_LIMIT = 64 * 1024
BATCH = 200
BUSY_TIMEOUT_MS = 5000
_PROBE_KEY = "voicecalld:space-probe"


class StoreFull(Exception):
    """A write failed because the file system holding the store is full."""


@frozen
class StoreHealth:
    """
    Whether the store takes writes: C{status} is C{"ok"} or C{"full"}, with
    one sentence for operators (C{detail}).
    """

    status: str
    detail: str

    @property
    def ok(self) -> bool:
        """Whether writes work."""
        return self.status == "ok"


HEALTHY = StoreHealth("ok", "the call store takes writes")


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


@frozen
class _Commit:
    """One commit asked for, and the Deferred its caller waits on."""

    record: CallRecord
    entries: tuple[TranscriptEntry, ...]
    processed: tuple[tuple[str, float], ...]
    done: Deferred = field(factory=Deferred, eq=False)


@define
class _Group:
    """Commits to store in one transaction; C{taken} once the store thread began on them."""

    commits: list[_Commit]
    taken: bool = False


@implementer(ICallStore)
class SQLiteCallStore:
    """L{ICallStore} in one SQLite file."""

    log = Logger()

    def __init__(self, path: str, runner: Runner) -> None:
        self.path = path
        self._runner = runner
        self._db: sqlite3.Connection | None = None
        self._health = HEALTHY
        # The group later commits may join; shared with the store thread.
        self._group: _Group | None = None
        self._lock = threading.Lock()

    def _run(self, fn: Callable[..., Any], *args: Any) -> Deferred:
        """Queue store work other than a commit: no commit asked for later goes before it."""
        with self._lock:
            self._group = None
        return self._runner(fn, *args)

    def health(self) -> StoreHealth:
        return self._health

    def disk_usage(self) -> int:
        total = 0
        for name in (self.path, self.path + "-wal"):
            try:
                total += os.stat(name).st_size
            except OSError:
                pass
        return total

    def _write(self, fn: Callable[..., Any], *args: Any, adds: bool = True) -> Deferred:
        """
        Run the write C{fn}; note in L{health} when the disk was full, and
        that it is not any more when a write that C{adds} data worked.
        """
        d = self._run(self._guarded, fn, *args)
        d.addBoth(self._wrote, adds)
        return d

    def _guarded(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except (sqlite3.Error, OSError) as e:
            if not _is_full(e):
                raise
            raise self._problem(e) from None

    def _wrote(self, result: Any, adds: bool) -> Any:
        if isinstance(result, Failure) and result.check(StoreFull):
            if self._health.ok:
                self.log.error(
                    "call store full: {detail}", detail=str(result.value), log_code="store.full"
                )
            self._health = StoreHealth("full", str(result.value))
        elif adds and not isinstance(result, Failure) and not self._health.ok:
            self.log.info(
                "call store {path} takes writes again", path=self.path, log_code="store.space"
            )
            self._health = HEALTHY
        return result

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
            db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            db.execute(f"PRAGMA wal_autocheckpoint={AUTOCHECKPOINT_PAGES}")
            db.execute(f"PRAGMA journal_size_limit={JOURNAL_SIZE_LIMIT}")
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
        self._runner.stop()
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
        asked = _Commit(record, tuple(entries), tuple(processed))
        with self._lock:
            group = self._group
            if group is not None and not group.taken:
                group.commits.append(asked)
                return asked.done
            group = self._group = _Group([asked])
        self._runner(self._commit, group).addBoth(self._committed, group)
        return asked.done

    def _committed(self, outcomes: Any, group: _Group) -> None:
        """Fire each commit of C{group} with its outcome, in order (reactor thread)."""
        for n, asked in enumerate(group.commits):
            if isinstance(outcomes, Failure):
                result: Any = outcomes
            else:
                problem = outcomes[n]
                result = None if problem is None else Failure(problem)
            result = self._wrote(result, True)
            if isinstance(result, Failure):
                asked.done.errback(result)
            else:
                asked.done.callback(None)

    def _commit(self, group: _Group) -> list[BaseException | None]:
        """
        Store C{group} in one transaction, or each commit alone if that fails;
        each commit's problem (None when it was stored), in order.
        """
        with self._lock:
            group.taken = True
        db = self._connection()
        try:
            with _Transaction(db):
                for asked in group.commits:
                    _store(db, asked)
            return [None] * len(group.commits)
        except Exception as e:
            if len(group.commits) == 1:
                return [self._problem(e)]
        problems: list[BaseException | None] = []
        for asked in group.commits:
            try:
                with _Transaction(db):
                    _store(db, asked)
                problems.append(None)
            except Exception as e:
                problems.append(self._problem(e))
        return problems

    def _problem(self, e: Exception) -> Exception:
        """What a failed write tells its caller: L{StoreFull} for a full disk, else C{e}."""
        if isinstance(e, (sqlite3.Error, OSError)) and _is_full(e):
            # Give back what the log holds, so that the next try has room.
            self._checkpoint_quietly()
            return StoreFull(
                f"the file system holding the call store {self.path} is full ({e}):"
                " free space there; new calls are refused until then"
            )
        return e

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
        return Deferred.fromCoroutine(self._batches(self._prune_batch, now))

    def _prune_batch(self, now: float, limit: int) -> int:
        db = self._connection()
        with _Transaction(db):
            return db.execute(
                "DELETE FROM processed_events WHERE key IN (SELECT key FROM processed_events"
                " WHERE expires_at <= ? LIMIT ?)",
                (now, limit),
            ).rowcount

    def expire(self, before: float) -> Deferred:
        return Deferred.fromCoroutine(self._batches(self._expire_batch, before))

    def _expire_batch(self, before: float, limit: int) -> int:
        db = self._connection()
        with _Transaction(db):
            ids = [
                (call_id,)
                for (call_id,) in db.execute(
                    "SELECT call_id FROM calls WHERE live = 0"
                    " AND COALESCE(ended_at, started_at) < ?"
                    " ORDER BY COALESCE(ended_at, started_at) LIMIT ?",
                    (before, limit),
                )
            ]
            db.executemany("DELETE FROM transcript WHERE call_id = ?", ids)
            db.executemany("DELETE FROM calls WHERE call_id = ?", ids)
        return len(ids)

    async def _batches(self, batch: Callable[[float, int], int], when: float) -> int:
        # One transaction per batch, each its own turn on the store's thread,
        # so that calls' writes queued meanwhile go between them.
        total = 0
        while True:
            done = await self._write(batch, when, BATCH, adds=False)
            total += done
            if done < BATCH:
                return total

    def checkpoint(self) -> Deferred:
        return self._run(self._checkpoint)

    def _checkpoint(self) -> tuple[int, int, int]:
        db = self._connection()
        # Waiting for a reader (C{voicecall export}, say) would hold up the
        # calls' writes queued behind: do what can be done now, the rest next time.
        db.execute("PRAGMA busy_timeout=0")
        try:
            (busy, logged, moved) = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        finally:
            db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        return busy, logged, moved

    def _checkpoint_quietly(self) -> None:
        try:
            self._checkpoint()
        except (sqlite3.Error, OSError, RuntimeError):
            pass

    def probe(self) -> Deferred:
        return self._write(self._probe)

    def _probe(self) -> None:
        db = self._connection()
        with _Transaction(db):
            db.execute(
                "INSERT OR REPLACE INTO processed_events (key, call_id, expires_at)"
                " VALUES (?, NULL, 0)",
                (_PROBE_KEY,),
            )
            db.execute("DELETE FROM processed_events WHERE key = ?", (_PROBE_KEY,))

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("the call store is not open")
        return self._db


def _store(db: sqlite3.Connection, asked: _Commit) -> None:
    """The statements of one commit, inside the caller's transaction."""
    record = asked.record
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
    for i, entry in enumerate(asked.entries):
        text = json.dumps(entry.to_json())
        db.execute(
            "INSERT INTO transcript (call_id, seq, entry) SELECT ?, ?, ?"
            " WHERE NOT EXISTS (SELECT 1 FROM transcript WHERE call_id = ? AND entry = ?)",
            (record.call_id, first + i, text, record.call_id, text),
        )
    db.executemany(
        "INSERT OR REPLACE INTO processed_events (key, call_id, expires_at) VALUES (?,?,?)",
        [(key, record.call_id, expires) for key, expires in asked.processed],
    )


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
        if kind is None:
            try:
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        elif self._db.in_transaction:
            # SQLite may have rolled back already (on SQLITE_FULL, say).
            self._db.execute("ROLLBACK")


def _is_full(e: BaseException) -> bool:
    if isinstance(e, OSError):
        return e.errno == errno.ENOSPC
    return getattr(e, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
