"""
C{voicecall export}: the store's ended calls as JSON lines (what C{status
--json} shows of each), read-only without a daemon, ordered by end time.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
from datetime import UTC, datetime

from twisted.trial.unittest import TestCase

from tests.unit.test_cli import usage_error
from voicecalld.cli import main
from voicecalld.cli.export import parse_since
from voicecalld.store.sqlite import SQLiteCallStore, SynchronousRunner
from voicecalld.values.record import CallRecord, TranscriptEntry
from voicecalld.values.states import CallState

DEC_1 = datetime(2026, 12, 1, tzinfo=UTC).timestamp()


def ended(call_id: str, started: float, ended_at: float, said: tuple[str, ...] = ()) -> CallRecord:
    record = CallRecord(
        call_id=call_id,
        provider="twilio",
        direction="inbound",
        mode="conversation",
        from_number="+15557654321",
        to_number="+15550001111",
        state=CallState.COMPLETED,
        started_at=started,
        provider_call_id=f"CA-{call_id}",
        answered_at=started + 2,
        ended_at=ended_at,
        end_reason="completed",
        metadata={"turnCount": len(said)},
    )
    for i, text in enumerate(said):
        record = record.with_entry(TranscriptEntry(started + 3 + i, ("bot", "user")[i % 2], text))
    return record


class ExportTests(TestCase):
    def setUp(self):
        self.state = self.mktemp()
        os.makedirs(self.state)
        self.path = os.path.join(self.state, "calls.sqlite3")
        # The daemon's own store, left open as a running daemon keeps it.
        self.store = SQLiteCallStore(self.path, SynchronousRunner())
        self.successResultOf(self.store.open())
        self.addCleanup(lambda: self.successResultOf(self.store.close()))
        self.late = ended("late", DEC_1 + 7200, DEC_1 + 7300, ("Hello", "Hi, it's me", "Bye"))
        self.early = ended("early", DEC_1 - 600, DEC_1 - 60, ("Hello",))
        self.middle = ended("middle", DEC_1 - 3600, DEC_1 + 10)  # started first, ended second
        live = CallRecord(
            call_id="live",
            provider="twilio",
            direction="outbound",
            mode="notify",
            from_number="+15550001111",
            to_number="+15557654321",
            state=CallState.ACTIVE,
            started_at=DEC_1,
        )
        for record in (self.late, self.early, self.middle, live):
            self.successResultOf(self.store.commit(record, record.transcript))

    def export(self, *argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main.main(["export", "--state-dir", self.state, *argv])
            except SystemExit as e:
                return e.code, out.getvalue(), err.getvalue()
        raise AssertionError("export did not exit")

    def lines(self, *argv: str) -> list[dict]:
        code, out, err = self.export(*argv)
        self.assertEqual((code, err), (0, ""))
        self.assertTrue(out == "" or out.endswith("\n"))
        return [json.loads(line) for line in out.splitlines()]

    def test_every_ended_call_as_status_json_shows_it_by_end_time(self):
        lines = self.lines()
        self.assertEqual(lines, [r.to_json() for r in (self.early, self.middle, self.late)])
        self.assertEqual(
            [e["text"] for e in lines[2]["transcript"]], ["Hello", "Hi, it's me", "Bye"]
        )

    def test_since_a_date_or_a_datetime_in_utc(self):
        since_day = self.lines("--since", "2026-12-01")
        self.assertEqual([r["callId"] for r in since_day], ["middle", "late"])
        self.assertEqual(
            [r["callId"] for r in self.lines("--since", "2026-12-01T01:00:00")], ["late"]
        )
        self.assertEqual(
            [r["callId"] for r in self.lines("--since", "2026-12-01T02:01:40Z")], ["late"]
        )
        # 01:00 in Paris is midnight UTC.
        self.assertEqual(
            [r["callId"] for r in self.lines("--since", "2026-12-01T01:00+01:00")],
            ["middle", "late"],
        )
        self.assertEqual(self.lines("--since", "2027-01-01"), [])

    def test_the_store_is_only_read(self):
        self.successResultOf(self.store.checkpoint())

        def digest() -> str:
            with open(self.path, "rb") as f:
                return hashlib.sha256(f.read()).hexdigest()

        before = digest()
        self.assertEqual(len(self.lines()), 3)
        self.assertEqual(digest(), before)

    def test_a_bad_date_is_a_usage_error(self):
        code, err = usage_error(["export", "--since", "yesterday"])
        self.assertEqual(code, 2)
        self.assertIn("not an ISO date or datetime: 'yesterday'", err)

    def test_no_store_is_a_store_error(self):
        code, out, err = main_export(self.mktemp())
        self.assertEqual((code, out), (1, ""))
        self.assertTrue(err.startswith("voicecall: STORE_ERROR: no call store at "), err)

    def test_parse_since(self):
        self.assertEqual(parse_since("2026-12-01"), DEC_1)
        self.assertEqual(parse_since(" 2026-12-01 00:00:30 "), DEC_1 + 30)
        with self.assertRaises(ValueError):
            parse_since("12/01/2026")


def main_export(state: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main.main(["export", "--state-dir", state])
        except SystemExit as e:
            return e.code, out.getvalue(), err.getvalue()
    raise AssertionError("export did not exit")
