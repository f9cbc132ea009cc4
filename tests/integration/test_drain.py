"""SIGTERM with shutdown.mode drain, systemd's STATUS= lines and the watchdog."""

from __future__ import annotations

import json
import signal

import pytest

from tests.integration.daemon import state_of

pytestmark = pytest.mark.integration
TO = "+15551234567"
CALLER = "+15557654321"


def _draining(seconds: int) -> dict:
    return {
        "maxConcurrentCalls": 3,
        "inboundPolicy": "open",
        "shutdown": {"mode": "drain", "drainSeconds": seconds},
    }


def _listening_call(daemon, tail, text: str) -> str:
    call_id = daemon.cli(
        "call", "--to", TO, "--message", text, "--mode", "conversation"
    ).stdout.strip()
    tail.until(lambda e: e.get("callId") == call_id and e.get("state") == "listening")
    return call_id


def test_drain_refuses_new_calls_lets_live_ones_finish_then_ends_them(make_daemon):
    daemon = make_daemon(_draining(6)).start()
    tail = daemon.tail()
    try:
        finishing = _listening_call(daemon, tail, "Hello")
        lingering = _listening_call(daemon, tail, "Still there?")
        said = daemon.cli("simulate", "say", "--call-id", lingering, "--text", "yes")
        assert said.returncode == 0, said.stderr
        tail.until(lambda e: e.get("callId") == lingering and e.get("text") == "yes")
    finally:
        tail.close()
    assert daemon.wait_notified(lambda m: "STATUS=ready: 0 live calls" in m)

    daemon.process.send_signal(signal.SIGTERM)
    daemon.wait_notified(lambda m: m == "STATUS=draining 2 calls")
    outbound = daemon.cli("call", "--to", TO, "--message", "one more")
    assert outbound.returncode == 1
    assert outbound.stderr.startswith("voicecall: NOT_ALLOWED: voicecalld is draining")
    inbound = daemon.cli("simulate", "inbound", "--from", CALLER)
    assert inbound.returncode == 1
    assert "NOT_ALLOWED: inbound call refused" in inbound.stderr
    assert "draining" in inbound.stderr
    # A live call may still be used and ended while draining.
    assert daemon.cli("end", "--call-id", finishing).returncode == 0
    daemon.wait_notified(lambda m: m == "STATUS=draining 1 call")

    assert daemon.wait_exit(timeout=60) == 0
    log = daemon.log()
    assert "drained: 1 calls ended as shutdown" in log
    # The stop summary says what the drain did, not that calls stay with the carrier.
    assert (
        "voicecalld stopping: drained 2 calls, 1 ended as shutdown;"
        " no call is left with the carrier" in log
    )
    assert "left with the carrier for the next process" not in log

    daemon.start()
    assert daemon.wait_notified(lambda m: "STATUS=ready: 0 live calls" in m)
    ended = state_of(daemon, lingering)
    assert ended["state"] == "shutdown" and ended["endReason"] == "shutdown"
    assert [e["text"] for e in ended["transcript"]] == ["Still there?", "yes"]
    assert state_of(daemon, finishing)["endReason"] == "hangup-bot"
    assert daemon.stop() == 0


def test_a_second_sigterm_stops_at_once_and_loses_nothing(make_daemon):
    daemon = make_daemon(_draining(600)).start()
    tail = daemon.tail()
    try:
        live = _listening_call(daemon, tail, "Hello")
        assert daemon.cli("simulate", "say", "--call-id", live, "--text", "hi").returncode == 0
        tail.until(lambda e: e.get("callId") == live and e.get("text") == "hi")
    finally:
        tail.close()
    daemon.process.send_signal(signal.SIGTERM)
    daemon.wait_notified(lambda m: m == "STATUS=draining 1 call")
    daemon.process.send_signal(signal.SIGTERM)
    assert daemon.wait_exit(timeout=30) == 0
    log = daemon.log()
    assert "voicecalld stopping: 1 call left with the carrier for the next process" in log
    assert "drained:" not in log

    daemon.config_path.write_text(json.dumps({"maxConcurrentCalls": 3}))
    daemon.start()
    daemon.wait_notified(lambda m: m == "STATUS=restoring 1 call")
    daemon.wait_notified(lambda m: "STATUS=ready: 1 live call" in m)
    restored = state_of(daemon, live)
    assert restored["state"] in ("active", "listening")
    assert [e["text"] for e in restored["transcript"]] == ["Hello", "hi"]
    assert daemon.stop() == 0


def test_resume_stops_without_ending_calls(make_daemon):
    daemon = make_daemon({"maxConcurrentCalls": 2}).start()
    tail = daemon.tail()
    try:
        live = _listening_call(daemon, tail, "Hello")
    finally:
        tail.close()
    assert daemon.stop() == 0
    assert not any("draining" in m for m in daemon.notified)
    assert "voicecalld stopping: 1 call left with the carrier for the next process" in daemon.log()
    daemon.start()
    assert state_of(daemon, live)["state"] in ("active", "listening")
    assert daemon.stop() == 0


def test_watchdog_pings_from_the_reactor(make_daemon):
    daemon = make_daemon(env={"WATCHDOG_USEC": "200000"}).start()
    daemon.wait_notified(lambda m: m == "WATCHDOG=1")
    count = sum(m == "WATCHDOG=1" for m in daemon.notified)
    daemon.wait_notified(lambda m: sum(x == "WATCHDOG=1" for x in daemon.notified) > count)
    assert daemon.stop() == 0
    assert daemon.wait_notified(lambda m: m.startswith("STOPPING=1"), timeout=5)


def test_no_watchdog_unless_the_unit_asks(make_daemon):
    daemon = make_daemon().start()
    assert daemon.stop() == 0
    assert daemon.notified and not any("WATCHDOG" in m for m in daemon.notified)
