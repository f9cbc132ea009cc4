"""
Retention and disk: ended calls deleted after C{retentionDays} in small
batches between other writes, the write-ahead log kept small, a week-long
soak on a Clock that stays bounded, and a full disk reported and survived.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import threading
import time
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from tests.unit.harness import Harness
from voicecalld.errors import StoreError
from voicecalld.store.interface import ICallStore
from voicecalld.store.retention import DAY, SWEEP_SECONDS, Retention
from voicecalld.store.sqlite import (
    BATCH,
    SQLiteCallStore,
    StoreFull,
    SynchronousRunner,
    ThreadRunner,
)
from voicecalld.values import events as ev
from voicecalld.values.record import CallRecord, TranscriptEntry
from voicecalld.values.states import CallState

START = 1_800_000_000.0


def call(n: int, started: float, ended: float | None = None, lines: int = 0) -> CallRecord:
    """Call C{n}, started at C{started}, ended at C{ended} (live if None), saying C{lines}."""
    record = CallRecord(
        call_id=f"c{n}",
        provider="mock",
        direction="outbound",
        mode="conversation",
        from_number="+15550000000",
        to_number="+15551234567",
        state=CallState.ACTIVE if ended is None else CallState.COMPLETED,
        started_at=started,
        ended_at=ended,
        end_reason=None if ended is None else "completed",
    )
    for i in range(lines):
        record = record.with_entry(
            TranscriptEntry(started + i, "user" if i % 2 else "bot", f"line {i} of call {n} " * 4)
        )
    return record


def counts(path: str) -> tuple[int, int]:
    """Calls and transcript entries in the store at C{path}, read as the CLI reads it."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return (
            db.execute("SELECT COUNT(*) FROM calls").fetchone()[0],
            db.execute("SELECT COUNT(*) FROM transcript").fetchone()[0],
        )
    finally:
        db.close()


def size(path: str, suffix: str = "") -> int:
    try:
        return os.stat(path + suffix).st_size
    except FileNotFoundError:
        return 0


class StepRunner:
    """Store work that runs only when the test says (one job at a time, in order)."""

    def __init__(self) -> None:
        self.queue: list[tuple[Any, tuple[Any, ...], Deferred]] = []
        self.ran: list[str] = []

    def __call__(self, fn, *args) -> Deferred:
        d: Deferred = Deferred()
        self.queue.append((fn, args, d))
        return d

    def step(self) -> None:
        fn, args, d = self.queue.pop(0)
        self.ran.append(getattr(args[0], "__name__", fn.__name__) if args else fn.__name__)
        maybeDeferred(fn, *args).chainDeferred(d)

    def drain(self) -> None:
        while self.queue:
            self.step()

    def stop(self) -> None:
        pass


class StoreRetentionTests(TestCase):
    """The store's part: batches, checkpoints, a bounded log."""

    def setUp(self):
        self.path = self.mktemp()
        self.store = SQLiteCallStore(self.path, SynchronousRunner())
        self.successResultOf(self.store.open())

    def commit(self, record: CallRecord) -> None:
        self.successResultOf(self.store.commit(record, record.transcript))

    def test_the_store_provides_the_interface(self):
        self.assertTrue(verifyObject(ICallStore, self.store))
        self.assertTrue(self.store.health().ok)
        self.assertEqual(self.store.health().status, "ok")

    def test_expire_deletes_only_ended_calls_older_than_the_cutoff(self):
        self.commit(call(1, START, START + 60, lines=3))
        self.commit(call(2, START, START + 7200, lines=2))
        self.commit(call(3, START))  # live: kept however old
        self.assertEqual(self.successResultOf(self.store.expire(START + 3600)), 1)
        self.assertIsNone(self.successResultOf(self.store.load("c1")))
        self.assertEqual(counts(self.path), (2, 2))
        self.assertEqual(len(self.successResultOf(self.store.load("c2")).transcript), 2)
        self.assertIsNotNone(self.successResultOf(self.store.load("c3")))

    def test_expiry_runs_in_small_transactions_with_calls_writes_between_them(self):
        self.store._connection().execute("PRAGMA synchronous=OFF")  # order, not durability
        for n in range(2 * BATCH + 50):
            self.commit(call(n, START, START + n))
        runner = StepRunner()
        store = SQLiteCallStore(self.path, runner)
        opened = store.open()
        runner.drain()
        self.successResultOf(opened)
        runner.ran.clear()
        expired = store.expire(START + 10 * DAY)
        # A call's write asked for while the first batch runs goes before the next.
        written = store.commit(call(9999, START + 10 * DAY))
        runner.drain()
        self.assertEqual(self.successResultOf(expired), 2 * BATCH + 50)
        self.successResultOf(written)
        self.assertEqual(runner.ran, ["_expire_batch", "_commit", "_expire_batch", "_expire_batch"])
        self.assertEqual(counts(self.path), (1, 0))
        runner.queue.clear()
        closed = store.close()
        runner.drain()
        self.successResultOf(closed)

    def test_expired_event_keys_are_pruned_in_batches(self):
        keys = [(f"k{n}", START + n) for n in range(BATCH + 10)]
        self.successResultOf(self.store.commit(call(1, START), processed=keys))
        self.assertEqual(self.successResultOf(self.store.prune(START + BATCH + 5)), BATCH + 6)
        self.assertEqual(
            sorted(self.successResultOf(self.store.processed_keys(0))),
            sorted(f"k{n}" for n in range(BATCH + 6, BATCH + 10)),
        )

    def test_a_checkpoint_truncates_the_write_ahead_log(self):
        for n in range(20):
            self.commit(call(n, START, START + 1, lines=4))
        self.assertGreater(size(self.path, "-wal"), 0)
        busy, _, _ = self.successResultOf(self.store.checkpoint())
        self.assertEqual(busy, 0)
        self.assertEqual(size(self.path, "-wal"), 0)
        self.assertEqual(self.store.disk_usage(), size(self.path))

    def test_a_checkpoint_does_not_wait_for_a_reader(self):
        for n in range(5):
            self.commit(call(n, START, START + 1, lines=4))
        reader = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None)
        self.addCleanup(reader.close)
        reader.execute("BEGIN")
        reader.execute("SELECT COUNT(*) FROM calls").fetchone()
        self.commit(call(99, START, START + 1, lines=4))
        started = time.monotonic()
        busy, _, _ = self.successResultOf(self.store.checkpoint())
        self.assertEqual(busy, 1)
        self.assertLess(time.monotonic() - started, 1.0)  # not the 5 s busy timeout
        reader.execute("COMMIT")
        self.assertEqual(self.successResultOf(self.store.checkpoint())[0], 0)
        self.assertEqual(size(self.path, "-wal"), 0)

    def test_the_log_stays_small_between_checkpoints(self):
        self.store._connection().execute("PRAGMA synchronous=OFF")  # sizes, not durability
        biggest = 0
        for n in range(600):
            self.commit(call(n, START, START + 1, lines=6))
            biggest = max(biggest, size(self.path, "-wal"))
        # SQLite's default lets it grow to 4 MB and keeps it that big.
        self.assertLess(biggest, 256 * 1024)

    def calls_in(self, budget: int) -> int:
        """How many calls (each written three times, eight lines said) fit in C{budget} bytes."""
        n = 0
        while True:
            record = call(n, START)
            self.commit(record)
            self.commit(call(n, START, lines=4))
            self.commit(call(n, START, START + 60, lines=8))
            if size(self.path) + size(self.path, "-wal") > budget:
                return n
            n += 1

    def test_a_small_file_system_holds_as_many_calls_as_its_size_allows(self):
        # The issue: on a 256 KiB file system the log alone filled it after five calls.
        self.store._connection().execute("PRAGMA synchronous=OFF")  # sizes, not durability
        held = self.calls_in(256 * 1024)
        self.assertGreater(held, 60)


class ThreadedSweepTests(TestCase):
    def test_the_sweep_runs_on_the_stores_thread_not_the_reactors(self):
        from twisted.internet import reactor

        store = SQLiteCallStore(self.mktemp(), ThreadRunner(reactor))
        threads: list[str] = []
        batch = store._expire_batch

        def recording(before: float, limit: int) -> int:
            threads.append(threading.current_thread().name)
            return batch(before, limit)

        store._expire_batch = recording

        async def work() -> int:
            await store.open()
            for n in range(BATCH + 1):
                await store.commit(call(n, START, START + 1))
            try:
                clock = Clock()
                clock.advance(START + 2 * DAY)
                return await Retention(store, clock, 1).sweep()
            finally:
                await store.close()

        d = Deferred.fromCoroutine(work())

        def check(removed: int) -> None:
            self.assertEqual(removed, BATCH + 1)
            self.assertEqual(len(threads), 2)
            self.assertNotIn(threading.current_thread().name, threads)

        d.addCallback(check)
        return d


class SoakTests(TestCase):
    """A week on a Clock: many calls a day, retention of a day or two."""

    def soak(self, retention_days: int, days: int = 8, per_day: int = 400) -> dict[str, Any]:
        clock = Clock()
        clock.advance(START)
        path = self.mktemp()
        store = SQLiteCallStore(path, SynchronousRunner())
        self.successResultOf(store.open())
        # Sizes are what is measured here, not durability: spare the fsyncs.
        store._connection().execute("PRAGMA synchronous=OFF")
        retention = Retention(store, clock, retention_days)
        retention.start()
        spacing = DAY / per_day
        n = 0
        daily = []
        for _day in range(days):
            wal = 0
            for _ in range(per_day):
                record = call(n, clock.seconds())
                self.successResultOf(
                    store.commit(record, processed=[(f"ev-{n}", clock.seconds() + DAY)])
                )
                ended = call(n, record.started_at, clock.seconds() + 30, lines=8)
                self.successResultOf(store.commit(ended, ended.transcript))
                n += 1
                wal = max(wal, size(path, "-wal"))
                clock.advance(spacing)
            calls, entries = counts(path)
            daily.append((calls, entries, size(path), wal))
        self.successResultOf(retention.stop())
        self.successResultOf(store.close())
        return {"daily": daily, "path": path}

    def test_a_week_with_one_day_of_retention_stays_bounded(self):
        result = self.soak(retention_days=1)
        daily = result["daily"]
        keep = 400 * (1 * DAY + SWEEP_SECONDS) / DAY + 1
        for calls, entries, _, wal in daily:
            self.assertLessEqual(calls, keep)
            self.assertLessEqual(entries, keep * 8)
            self.assertLess(wal, 128 * 1024)
        # Once retention has begun (day 2 on), the file grows no more: deleted
        # calls' pages are reused.
        steady = [main for _, _, main, _ in daily[2:]]
        self.assertLessEqual(max(steady), daily[1][2] * 1.1)
        self.assertEqual(daily[-1][0], daily[2][0])

    def test_a_week_with_two_days_of_retention_stays_bounded(self):
        daily = self.soak(retention_days=2)["daily"]
        keep = 400 * (2 * DAY + SWEEP_SECONDS) / DAY + 1
        for calls, _, _, wal in daily:
            self.assertLessEqual(calls, keep)
            self.assertLess(wal, 128 * 1024)
        steady = [main for _, _, main, _ in daily[3:]]
        self.assertLessEqual(max(steady), daily[2][2] * 1.1)

    def test_zero_days_keeps_every_call(self):
        daily = self.soak(retention_days=0, days=3, per_day=50)["daily"]
        self.assertEqual([calls for calls, *_ in daily], [50, 100, 150])

    def test_processed_event_keys_expire_in_the_sweep(self):
        clock = Clock()
        clock.advance(START)
        store = SQLiteCallStore(self.mktemp(), SynchronousRunner())
        self.successResultOf(store.open())
        self.successResultOf(store.commit(call(1, START), processed=[("ev", START + 60)]))
        retention = Retention(store, clock, 30)
        retention.start()
        self.assertEqual(self.successResultOf(store.processed_keys(0)), {"ev": START + 60})
        clock.advance(SWEEP_SECONDS)
        self.assertEqual(self.successResultOf(store.processed_keys(0)), {})
        self.successResultOf(retention.stop())


class FullDiskTests(TestCase):
    """
    A store that cannot grow (SQLite's C{max_page_count}, as a full file
    system does to it): reported, new calls refused and not dialled, inbound
    calls rejected; calls work again once there is room, without a restart.
    """

    def fill(self, store: SQLiteCallStore) -> None:
        """Cap the store's file at its size now plus a little, and fill it to the brim."""
        db = store._connection()
        (pages,) = db.execute("PRAGMA page_count").fetchone()
        db.execute(f"PRAGMA max_page_count={pages + 4}")
        n = 10_000
        for lines in (10, 0):
            while n < 12_000:
                n += 1
                record = call(n, START, START + 1, lines=lines)
                outcome: list[Any] = []
                store.commit(record, record.transcript).addBoth(outcome.append)
                if isinstance(outcome[0], Failure):
                    outcome[0].trap(StoreFull)
                    break
        self.assertLess(n, 12_000, "the store never filled")

    def make_room(self, store: SQLiteCallStore) -> None:
        store._connection().execute("PRAGMA max_page_count=1073741823")

    def test_a_full_store_is_reported_and_recovers_on_the_next_write(self):
        store = SQLiteCallStore(self.mktemp(), SynchronousRunner())
        self.successResultOf(store.open())
        self.fill(store)
        health = store.health()
        self.assertFalse(health.ok)
        self.assertEqual(health.status, "full")
        self.assertIn("is full", health.detail)
        self.assertIn(store.path, health.detail)
        # Deleting does not prove there is room; a later write does.
        self.successResultOf(store.prune(START))
        self.assertEqual(store.health().status, "full")
        self.make_room(store)
        self.successResultOf(store.commit(call(1, START)))
        self.assertTrue(store.health().ok)

    def test_retention_frees_room_and_the_sweep_notices(self):
        clock = Clock()
        clock.advance(START + 3 * DAY)
        store = SQLiteCallStore(self.mktemp(), SynchronousRunner())
        self.successResultOf(store.open())
        self.fill(store)
        self.assertEqual(store.health().status, "full")
        # The old calls age out; the sweep deletes them and its probe finds room.
        Retention(store, clock, 1).start()
        self.assertTrue(store.health().ok)
        self.successResultOf(store.commit(call(1, clock.seconds())))

    def test_enospc_from_the_file_system_is_a_full_store_too_other_errors_are_not(self):
        store = SQLiteCallStore(self.mktemp(), SynchronousRunner())
        self.successResultOf(store.open())

        def no_space() -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        def broken() -> None:
            raise sqlite3.OperationalError("disk I/O error")

        self.failureResultOf(store._write(broken), sqlite3.OperationalError)
        self.assertTrue(store.health().ok)
        failure = self.failureResultOf(store._write(no_space), StoreFull)
        self.assertIn("No space left on device", str(failure.value))
        self.assertEqual(store.health().status, "full")
        self.successResultOf(store.probe())
        self.assertTrue(store.health().ok)

    def test_new_calls_are_refused_not_dialled_and_work_again_with_room(self):
        h = Harness(self, {"inboundPolicy": "open", "maxConcurrentCalls": 5})
        real = h.store._real
        self.fill(real)
        error = h.error(h.manager.initiate("+15551234567", "hi", "notify"), StoreError)
        self.assertEqual(error.code, "STORE_ERROR")
        self.assertIn("is full", error.message)
        self.assertIn("new calls are refused", error.message)
        self.assertNotIn("place_call", h.provider.kinds())
        self.assertEqual(h.manager.live_calls(), [])
        outcome = h.ok(
            h.provider.emit(
                ev.InboundCall(
                    provider_call_id="IN-1", from_number="+15557654321", to_number="+15550001111"
                )
            )
        )
        self.assertIsInstance(outcome, ev.Refused)
        self.assertIn("is full", outcome.reason)
        self.assertEqual(h.provider.kinds(), ["reject"])
        self.assertEqual(len(self.flushLoggedErrors(StoreFull)), 2)  # the journal's, one each
        self.make_room(real)
        record = h.ok(h.manager.initiate("+15551234567", "hi", "notify"))
        self.assertEqual(h.provider.kinds(), ["reject", "place_call"])
        self.assertEqual(h.stored(record.call_id).call_id, record.call_id)
        self.assertTrue(h.store.health().ok)


class MigrationTests(TestCase):
    def test_a_store_of_schema_1_gains_the_retention_index(self):
        from voicecalld.store.schema import MIGRATIONS

        path = self.mktemp()
        store = SQLiteCallStore(path, SynchronousRunner())
        self.successResultOf(store.open())
        self.successResultOf(store.close())
        db = sqlite3.connect(path, isolation_level=None)
        db.execute("DROP INDEX calls_ended")
        db.execute("PRAGMA user_version = 1")
        db.close()
        store = SQLiteCallStore(path, SynchronousRunner())
        self.successResultOf(store.open())
        self.successResultOf(store.commit(call(1, START, START + 1)))
        self.assertEqual(self.successResultOf(store.expire(START + 2)), 1)
        self.successResultOf(store.close())
        db = sqlite3.connect(path)
        self.assertEqual(db.execute("PRAGMA user_version").fetchone()[0], len(MIGRATIONS))
        plan = db.execute(
            "EXPLAIN QUERY PLAN SELECT call_id FROM calls WHERE live = 0"
            " AND COALESCE(ended_at, started_at) < 5"
            " ORDER BY COALESCE(ended_at, started_at) LIMIT 200"
        ).fetchall()
        db.close()
        self.assertIn("calls_ended", str(plan))


class RetentionConfigTests(TestCase):
    """C{retentionDays}: ours, top level, 30 by default, 0 keeps every call."""

    def test_default_and_values(self):
        from voicecalld.config import parse_config

        self.assertEqual(parse_config({}, None, {}).settings.retention_days, 30)
        self.assertEqual(parse_config({"retentionDays": 0}, None, {}).settings.retention_days, 0)
        self.assertEqual(parse_config({"retentionDays": 7}, None, {}).settings.retention_days, 7)

    def test_a_negative_or_fractional_value_names_the_key_and_the_file(self):
        from tests.unit.test_config import error

        for bad in (-1, 1.5, "30"):
            message = error({"retentionDays": bad})
            self.assertIn("/etc/openclaw.json", message)
            self.assertIn("retentionDays", message)
