"""
The real daemon refuses a call store that lost its data: one line, exit 2,
before any socket, and the damaged files left as they were.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

import pytest

from tests.integration.daemon import Daemon

pytestmark = pytest.mark.integration
TO = "+15551234567"


def _with_a_call(make_daemon) -> tuple[Daemon, str]:
    """A daemon that placed and ended one call and then stopped cleanly."""
    daemon = make_daemon().start()
    call_id = daemon.cli("call", "--to", TO, "--message", "hello").stdout.strip()
    assert daemon.cli("end", "--call-id", call_id).returncode == 0
    assert daemon.stop() == 0
    return daemon, call_id


def _truncate(store: str) -> None:
    os.truncate(store, 0)


def _delete(store: str) -> None:
    os.unlink(store)


def _garble(store: str) -> None:
    with open(store, "r+b") as f:
        f.write(b"garbage, not a database")


def _newer(store: str) -> None:
    db = sqlite3.connect(store)
    db.execute("PRAGMA user_version = 99")
    db.close()


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (_truncate, "is empty (0 bytes), so its calls were lost: restore it from a backup"),
        (_delete, "is missing, but {marker} shows this state directory held one"),
        (_garble, "is not a SQLite database: restore it from a backup"),
        (_newer, "has schema version 99, newer than this voicecalld knows"),
    ],
)
def test_a_lost_store_stops_the_start(make_daemon, damage, expected):
    daemon, _call_id = _with_a_call(make_daemon)
    store = str(daemon.state / "calls.sqlite3")
    marker = store + ".created"
    damage(store)
    before = {p.name: p.read_bytes() for p in daemon.state.iterdir()}
    daemon.log_path = daemon.root / "refused.log"
    daemon.start(wait=False)
    assert daemon.wait_exit() == 2
    lines = daemon.log().strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"voicecalld: the call store {store} "), lines[0]
    assert expected.format(marker=marker) in lines[0]
    # Nothing was listening, and nothing in the state directory was touched.
    assert not daemon.socket.exists()
    assert {p.name: p.read_bytes() for p in daemon.state.iterdir()} == before


def test_removing_store_and_marker_starts_empty_on_purpose(make_daemon):
    daemon, call_id = _with_a_call(make_daemon)
    store = daemon.state / "calls.sqlite3"
    _truncate(str(store))
    daemon.start(wait=False)
    assert daemon.wait_exit() == 2
    store.unlink()
    (daemon.state / "calls.sqlite3.created").unlink()
    daemon.start()
    assert "restored 0 live call(s) of 0 found" in daemon.log()
    result = daemon.cli("status", "--call-id", call_id)
    assert result.returncode == 1
    assert (daemon.state / "calls.sqlite3.created").exists()
    assert daemon.stop() == 0


LEAVE_IN_WAL = """
import os, sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("PRAGMA journal_mode=WAL")
db.execute("PRAGMA wal_autocheckpoint=0")
db.execute("PRAGMA user_version = 99")
os._exit(0)  # like a crash: the change stays in the write-ahead log
"""


def test_a_newer_schema_found_only_in_the_log_is_refused_at_open(make_daemon):
    daemon, _call_id = _with_a_call(make_daemon)
    store = str(daemon.state / "calls.sqlite3")
    subprocess.run([sys.executable, "-c", LEAVE_IN_WAL, store], check=True, timeout=60)
    assert os.path.getsize(store + "-wal") > 0
    daemon.log_path = daemon.root / "refused.log"
    daemon.start(wait=False)
    assert daemon.wait_exit() == 2
    output = daemon.log()
    assert (
        f"voicecalld: the call store {store} has schema version 99, newer than this"
        " voicecalld knows" in output
    )
    assert "listening for" not in output
    assert not daemon.socket.exists()
