"""Retention on the real daemon: old ended calls are gone after a start, the rest exported."""

from __future__ import annotations

import json
import time

from tests.unit.test_export import ended
from voicecalld.store.sqlite import SQLiteCallStore, SynchronousRunner

DAY = 86400.0


def test_a_start_sweeps_calls_older_than_retention_days(make_daemon):
    d = make_daemon({"retentionDays": 2})
    d.start()
    assert d.stop() == 0
    now = time.time()
    store = SQLiteCallStore(str(d.state / "calls.sqlite3"), SynchronousRunner())
    store.open()
    for record in (
        ended("old", now - 5 * DAY, now - 5 * DAY + 60, ("Hello",)),
        ended("recent", now - DAY, now - DAY + 60, ("Hello", "Hi")),
    ):
        store.commit(record, record.transcript)
    store.close()
    d.start()
    # Stopping waits for the sweep that began at start-up.
    assert d.stop() == 0
    assert "retention: deleted 1 ended calls older than 2 days" in d.log()
    out = d.cli("export", "--state-dir", str(d.state))
    assert (out.returncode, out.stderr) == (0, "")
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["callId"] for r in lines] == ["recent"]
    assert [e["text"] for e in lines[0]["transcript"]] == ["Hello", "Hi"]
