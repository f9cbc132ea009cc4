"""The SQLite call store: round trips, ordering, processed keys, schema versions."""

from __future__ import annotations

import sqlite3

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from voicecalld.store.schema import CURRENT_VERSION, NewerSchema, migrate
from voicecalld.store.sqlite import SQLiteCallStore, SynchronousRunner, ThreadRunner
from voicecalld.values.record import CallRecord, TranscriptEntry
from voicecalld.values.states import CallState


def record(call_id: str = "c1", **changes) -> CallRecord:
    base = dict(
        call_id=call_id,
        provider="mock",
        direction="outbound",
        mode="notify",
        from_number="+15550000000",
        to_number="+15551234567",
        state=CallState.INITIATED,
        started_at=1000.0,
    )
    base.update(changes)
    return CallRecord(**base)


class SynchronousStoreTests(TestCase):
    """The store's behaviour, run in the test's thread."""

    def setUp(self):
        self.path = self.mktemp()
        self.store = SQLiteCallStore(self.path, SynchronousRunner())
        self.successResultOf(self.store.open())

    def test_round_trip_with_transcript(self):
        r = record(provider_call_id="P1", initial_message="hi", metadata={"turnCount": 2})
        entry = TranscriptEntry(1001.5, "bot", "hello", interrupted=True)
        r = r.with_entry(entry)
        self.successResultOf(self.store.commit(r, [entry]))
        loaded = self.successResultOf(self.store.load("c1"))
        self.assertEqual(loaded, r)
        self.assertEqual(self.successResultOf(self.store.find("mock", "P1")), r)
        self.assertIsNone(self.successResultOf(self.store.load("nope")))

    def test_transcript_entries_append_once(self):
        r = record()
        first = TranscriptEntry(1.0, "user", "a")
        r = r.with_entry(first)
        self.successResultOf(self.store.commit(r, [first]))
        self.successResultOf(self.store.commit(r, [first]))
        second = TranscriptEntry(2.0, "bot", "b")
        r = r.with_entry(second)
        self.successResultOf(self.store.commit(r, [second]))
        loaded = self.successResultOf(self.store.load("c1"))
        self.assertEqual([e.text for e in loaded.transcript], ["a", "b"])

    def test_live_and_recent(self):
        self.successResultOf(self.store.commit(record("a", started_at=1.0)))
        ended = record(
            "b", started_at=2.0, state=CallState.COMPLETED, ended_at=3.0, end_reason="completed"
        )
        self.successResultOf(self.store.commit(ended))
        self.successResultOf(self.store.commit(record("c", started_at=3.0, state=CallState.ACTIVE)))
        live = self.successResultOf(self.store.live_calls())
        self.assertEqual([r.call_id for r in live], ["a", "c"])
        recent = self.successResultOf(self.store.recent(2))
        self.assertEqual([r.call_id for r in recent], ["c", "b"])

    def test_processed_keys_expire(self):
        self.successResultOf(self.store.commit(record(), processed=[("k1", 50.0), ("k2", 150.0)]))
        self.assertEqual(self.successResultOf(self.store.processed_keys(100.0)), {"k2": 150.0})
        self.assertEqual(self.successResultOf(self.store.prune(100.0)), 1)
        self.assertEqual(self.successResultOf(self.store.processed_keys(0.0)), {"k2": 150.0})

    def test_data_survives_reopening(self):
        self.successResultOf(self.store.commit(record(state=CallState.ACTIVE)))
        self.successResultOf(self.store.close())
        again = SQLiteCallStore(self.path, SynchronousRunner())
        self.successResultOf(again.open())
        self.assertEqual(self.successResultOf(again.load("c1")).state, CallState.ACTIVE)
        db = sqlite3.connect(self.path)
        self.assertEqual(db.execute("PRAGMA journal_mode").fetchone()[0], "wal")
        db.close()


class SchemaTests(TestCase):
    """Versions and migrations."""

    def test_migrates_step_by_step_and_refuses_newer_files(self):
        db = sqlite3.connect(":memory:", isolation_level=None)
        steps = ("CREATE TABLE a (x INTEGER)", "ALTER TABLE a ADD COLUMN y INTEGER")
        self.assertEqual(migrate(db, steps[:1]), 1)
        self.assertEqual(migrate(db, steps), 2)
        db.execute("INSERT INTO a (x, y) VALUES (1, 2)")
        self.assertEqual(db.execute("PRAGMA user_version").fetchone()[0], 2)
        with self.assertRaises(NewerSchema) as raised:
            migrate(db, steps[:1])
        self.assertIn("newer than this voicecalld knows", str(raised.exception))

    def test_a_failed_migration_changes_nothing(self):
        db = sqlite3.connect(":memory:", isolation_level=None)
        with self.assertRaises(sqlite3.Error):
            migrate(db, ("CREATE TABLE a (x); CREATE TABLE a (x)",))
        self.assertEqual(db.execute("PRAGMA user_version").fetchone()[0], 0)
        self.assertEqual(db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0], 0)

    def test_current_version(self):
        self.assertGreaterEqual(CURRENT_VERSION, 1)


class ThreadedStoreTests(TestCase):
    """The real runner: work happens on the store's thread, in order."""

    def test_commits_in_order_off_the_reactor_thread(self):
        store = SQLiteCallStore(self.mktemp(), ThreadRunner(reactor))

        async def work():
            await store.open()
            for n in range(20):
                await store.commit(record(state=CallState.ACTIVE, metadata={"n": n}))
            loaded = await store.load("c1")
            await store.close()
            return loaded

        from twisted.internet.defer import Deferred

        d = Deferred.fromCoroutine(work())
        d.addCallback(lambda loaded: self.assertEqual(loaded.metadata["n"], 19))
        return d
