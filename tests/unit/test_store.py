"""
The SQLite call store: round trips, ordering, processed keys, schema versions,
and refusing a store that lost its data instead of starting empty.
"""

from __future__ import annotations

import os
import sqlite3

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from voicecalld.store.guard import StoreRefused, create, marker_path
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


class StoreRefusalTests(TestCase):
    """
    A state directory that never held a store starts empty; one whose store
    is missing, empty, not SQLite, damaged or newer is refused with one line
    saying how to recover, and nothing on disk is changed.
    """

    def setUp(self):
        self.dir = self.mktemp()
        os.makedirs(self.dir)
        self.path = os.path.join(self.dir, "calls.sqlite3")
        self.marker = marker_path(self.path)

    def store_with_a_call(self):
        """A store that held a call and was closed cleanly, as after a normal stop."""
        store = SQLiteCallStore(self.path, SynchronousRunner())
        self.successResultOf(store.open())
        self.successResultOf(store.commit(record(state=CallState.ACTIVE)))
        self.successResultOf(store.close())
        self.assertEqual(sorted(os.listdir(self.dir)), ["calls.sqlite3", "calls.sqlite3.created"])

    def refused(self) -> str:
        """Open the store: it must be refused; the message, checked to be one line."""
        before = self.snapshot()
        store = SQLiteCallStore(self.path, SynchronousRunner())
        message = str(self.failureResultOf(store.open(), StoreRefused).value)
        self.assertNotIn("\n", message)
        self.assertIn(self.path, message)
        self.assertEqual(self.snapshot(), before)
        return message

    def snapshot(self) -> dict[str, bytes]:
        files = {}
        for name in os.listdir(self.dir):
            with open(os.path.join(self.dir, name), "rb") as f:
                files[name] = f.read()
        return files

    def test_a_new_directory_gets_a_store_and_its_marker(self):
        store = SQLiteCallStore(self.path, SynchronousRunner())
        self.successResultOf(store.open())
        self.assertEqual(self.successResultOf(store.recent(10)), [])
        self.successResultOf(store.close())
        self.assertEqual(sorted(os.listdir(self.dir)), ["calls.sqlite3", "calls.sqlite3.created"])
        with open(self.marker) as f:
            text = f.read()
        self.assertIn("refuses to start if calls.sqlite3 is missing", text)
        self.assertIn("delete both calls.sqlite3 and this file", text)

    def test_a_store_truncated_to_zero_bytes_is_refused(self):
        self.store_with_a_call()
        os.truncate(self.path, 0)
        message = self.refused()
        self.assertEqual(
            message,
            f"the call store {self.path} is empty (0 bytes), so its calls were lost: restore it"
            f" from a backup, or delete it and {self.marker} to start with no calls",
        )

    def test_an_empty_store_without_a_marker_is_refused_too(self):
        # voicecalld itself never leaves an empty file: it builds a new store
        # under another name and links it into place.
        open(self.path, "wb").close()
        message = self.refused()
        self.assertIn("is empty (0 bytes)", message)
        self.assertTrue(message.endswith("or delete it to start with no calls"), message)

    def test_a_missing_store_is_refused_while_the_marker_is_there(self):
        self.store_with_a_call()
        os.unlink(self.path)
        self.assertEqual(
            self.refused(),
            f"the call store {self.path} is missing, but {self.marker} shows this state"
            f" directory held one: restore it from a backup, or delete {self.marker} to start"
            " with no calls",
        )

    def test_a_missing_store_with_its_write_ahead_log_left_is_refused(self):
        with open(self.path + "-wal", "wb") as f:
            f.write(b"\x37\x7f\x06\x82" + b"\0" * 28)
        message = self.refused()
        self.assertIn(f"its write-ahead log {self.path}-wal is still there", message)

    def test_deleting_store_and_marker_starts_empty_on_purpose(self):
        self.store_with_a_call()
        os.unlink(self.path)
        os.unlink(self.marker)
        store = SQLiteCallStore(self.path, SynchronousRunner())
        self.successResultOf(store.open())
        self.assertEqual(self.successResultOf(store.recent(10)), [])
        self.successResultOf(store.close())
        self.assertTrue(os.path.exists(self.marker))

    def test_a_file_that_is_not_sqlite_is_refused(self):
        self.store_with_a_call()
        with open(self.path, "r+b") as f:
            f.write(b"this is not a database at all")
        self.assertEqual(
            self.refused(),
            f"the call store {self.path} is not a SQLite database: restore it from a backup,"
            f" or delete it and {self.marker} to start with no calls",
        )

    def test_a_newer_schema_is_refused(self):
        self.store_with_a_call()
        db = sqlite3.connect(self.path)
        db.execute(f"PRAGMA user_version = {CURRENT_VERSION + 1}")
        db.close()
        self.assertEqual(
            self.refused(),
            f"the call store {self.path} has schema version {CURRENT_VERSION + 1}, newer than"
            f" this voicecalld knows ({CURRENT_VERSION}): upgrade voicecalld, or restore a"
            " backup this version wrote",
        )

    def test_a_store_cut_short_is_refused_as_damaged(self):
        store = SQLiteCallStore(self.path, SynchronousRunner())
        self.successResultOf(store.open())
        for n in range(200):
            self.successResultOf(store.commit(record(f"c{n}", metadata={"pad": "x" * 500})))
        self.successResultOf(store.close())
        os.truncate(self.path, os.path.getsize(self.path) // 2)
        message = self.refused()
        self.assertIn(f"the call store {self.path} is damaged (", message)
        self.assertIn("restore it from a backup", message)

    def test_a_store_from_before_markers_is_kept_and_marked(self):
        self.store_with_a_call()
        os.unlink(self.marker)
        store = SQLiteCallStore(self.path, SynchronousRunner())
        self.successResultOf(store.open())
        self.assertEqual(self.successResultOf(store.load("c1")).state, CallState.ACTIVE)
        self.successResultOf(store.close())
        self.assertTrue(os.path.exists(self.marker))

    def test_a_store_put_in_place_by_another_process_first_is_kept(self):
        self.store_with_a_call()
        kept = self.snapshot()["calls.sqlite3"]

        def build(temporary):
            sqlite3.connect(temporary).close()

        create(self.path, build)
        self.assertEqual(self.snapshot()["calls.sqlite3"], kept)
        self.assertEqual(sorted(os.listdir(self.dir)), ["calls.sqlite3", "calls.sqlite3.created"])


class _HeldRunner:
    """Store work that waits until the test lets it run (as if the thread were busy)."""

    def __init__(self) -> None:
        self.queue: list = []
        self.jobs = 0

    def __call__(self, fn, *args):
        from twisted.internet.defer import Deferred, maybeDeferred

        d = Deferred()
        self.queue.append(lambda: maybeDeferred(fn, *args).chainDeferred(d))
        return d

    def drain(self) -> None:
        while self.queue:
            self.jobs += 1
            self.queue.pop(0)()

    def stop(self) -> None:
        pass


class GroupCommitTests(TestCase):
    """Commits asked for while the store is busy are stored together, each durable when it fires."""

    def setUp(self):
        self.path = self.mktemp()
        self.runner = _HeldRunner()
        self.store = SQLiteCallStore(self.path, self.runner)
        opened = self.store.open()
        self.runner.drain()
        self.successResultOf(opened)
        self.runner.jobs = 0

    def test_waiting_commits_share_one_transaction_and_fire_in_order(self):
        fired = []
        asked = [
            self.store.commit(record(f"c{n}", state=CallState.ACTIVE)).addCallback(
                lambda _, n=n: fired.append(n)
            )
            for n in range(5)
        ]
        self.assertEqual(fired, [])  # nothing is acknowledged before it is stored
        self.runner.drain()
        self.assertEqual(self.runner.jobs, 1)
        self.assertEqual(fired, [0, 1, 2, 3, 4])
        for d in asked:
            self.successResultOf(d)
        again = SQLiteCallStore(self.path, SynchronousRunner())
        self.successResultOf(again.open())
        live = self.successResultOf(again.live_calls())
        self.assertEqual(sorted(r.call_id for r in live), [f"c{n}" for n in range(5)])
        self.successResultOf(again.close())

    def test_one_bad_commit_fails_alone(self):
        good = self.store.commit(record("c1", state=CallState.ACTIVE))
        bad = self.store.commit(record("c2", metadata={"oops": object()}))
        also_good = self.store.commit(record("c3", state=CallState.ACTIVE))
        self.runner.drain()
        self.successResultOf(good)
        self.successResultOf(also_good)
        self.failureResultOf(bad, TypeError)
        loaded = self.store.load("c3")
        self.runner.drain()
        self.assertEqual(self.successResultOf(loaded).call_id, "c3")
        missing = self.store.load("c2")
        self.runner.drain()
        self.assertIsNone(self.successResultOf(missing))

    def test_other_work_keeps_its_place_between_commits(self):
        first = self.store.commit(record("c1", state=CallState.ACTIVE))
        loaded = self.store.load("c1")
        later = self.store.commit(record("c1", state=CallState.COMPLETED, ended_at=1001.0))
        self.runner.drain()
        self.assertEqual(self.runner.jobs, 3)
        self.successResultOf(first)
        self.successResultOf(later)
        # The load ran between the two commits: it saw the first, not the later one.
        self.assertEqual(self.successResultOf(loaded).state, CallState.ACTIVE)
