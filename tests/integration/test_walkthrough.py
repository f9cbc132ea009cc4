"""The README's five-minute walk-through, on the real daemon with the real CLI."""

from __future__ import annotations

import json

import pytest

from tests.integration.daemon import state_of

pytestmark = pytest.mark.integration
TO = "+15551234567"


def test_walkthrough(make_daemon):
    daemon = make_daemon({"inboundPolicy": "open"}).start()
    tail = daemon.tail()
    try:
        placed = daemon.cli(
            "call", "--to", TO, "--message", "Hi, this is your assistant.", "--mode", "conversation"
        )
        assert placed.returncode == 0, placed.stderr
        call_id = placed.stdout.strip()
        tail.until(lambda e: e["type"] == "call.created" and e["callId"] == call_id)
        tail.until(lambda e: e["type"] == "call.transcript" and e["speaker"] == "bot")
        tail.until(lambda e: e["type"] == "call.state" and e["state"] == "listening")

        status = daemon.cli("status", "--call-id", call_id)
        assert status.returncode == 0
        assert "state:     listening" in status.stdout
        assert "bot: Hi, this is your assistant." in status.stdout

        listed = daemon.cli("status")
        assert call_id in listed.stdout and "listening" in listed.stdout

        said = daemon.cli("simulate", "say", "--call-id", call_id, "--text", "Who is this?")
        assert (said.returncode, said.stdout) == (0, "")
        tail.until(lambda e: e.get("text") == "Who is this?")

        waiting = daemon.spawn_cli(
            "continue",
            "--call-id",
            call_id,
            "--message",
            "I'm calling about your order. What's your name?",
        )
        tail.until(lambda e: e["type"] == "call.state" and e["state"] == "speaking")
        tail.until(lambda e: e["type"] == "call.state" and e["state"] == "listening")
        assert daemon.cli("simulate", "say", "--call-id", call_id, "--text", "Ann").returncode == 0
        out, err = waiting.communicate(timeout=30)
        assert (waiting.returncode, out, err) == (0, "Ann\n", "")

        assert (
            daemon.cli("simulate", "dtmf", "--call-id", call_id, "--digits", "42").returncode == 0
        )
        assert daemon.cli("dtmf", "--call-id", call_id, "--digits", "1w2").returncode == 0
        spoken = daemon.cli("--json", "speak", "--call-id", call_id, "--message", "Thanks!")
        assert json.loads(spoken.stdout) == {"ok": True}

        ended = daemon.cli("end", "--call-id", call_id)
        assert (ended.returncode, ended.stdout) == (0, "")
        tail.until(lambda e: e["type"] == "call.ended" and e["reason"] == "hangup-bot")

        record = state_of(daemon, call_id)
        assert record["state"] == "hangup-bot"
        transcript = [(e["speaker"], e["text"]) for e in record["transcript"]]
        assert transcript == [
            ("bot", "Hi, this is your assistant."),
            ("user", "Who is this?"),
            ("bot", "I'm calling about your order. What's your name?"),
            ("user", "Ann"),
            ("user", "42"),
            ("bot", "1w2"),
            ("bot", "Thanks!"),
        ]
        assert daemon.cli("status").stdout.strip() == "no live calls"
        assert json.loads(daemon.cli("--json", "status").stdout) == {"calls": []}
    finally:
        tail.close()
    assert daemon.stop() == 0
    assert "voicecalld stopped" in daemon.log()


def test_notify_call_hangs_up_by_itself(make_daemon):
    daemon = make_daemon({"outbound": {"notifyHangupDelaySec": 0}}).start()
    tail = daemon.tail()
    try:
        placed = daemon.cli("--json", "call", "--to", TO, "--message", "Your parcel is here.")
        call_id = json.loads(placed.stdout)["callId"]
        ended = tail.until(lambda e: e["type"] == "call.ended")
        assert (ended["callId"], ended["reason"]) == (call_id, "hangup-bot")
    finally:
        tail.close()
    assert state_of(daemon, call_id)["mode"] == "notify"


def test_inbound_simulation_and_policy(make_daemon):
    daemon = make_daemon(
        {
            "inboundPolicy": "allowlist",
            "allowFrom": ["+15557654321"],
            "inboundGreeting": "Hello caller",
        }
    ).start()
    refused = daemon.cli("simulate", "inbound", "--from", "+15550000111")
    assert refused.returncode == 1
    assert refused.stderr.startswith("voicecall: NOT_ALLOWED: inbound call refused:")
    # Following from before the call rings: the greeting may be over before
    # a tail started afterwards has subscribed.
    tail = daemon.tail()
    try:
        accepted = daemon.cli("simulate", "inbound", "--from", "+15557654321")
        assert accepted.returncode == 0, accepted.stderr
        call_id = accepted.stdout.strip()
        tail.until(lambda e: e.get("callId") == call_id and e.get("text") == "Hello caller")
    finally:
        tail.close()
    assert daemon.cli("simulate", "hangup", "--call-id", call_id).returncode == 0
    assert state_of(daemon, call_id)["endReason"] == "hangup-user"


def test_errors_and_exit_codes(make_daemon):
    daemon = make_daemon().start()
    unknown = daemon.cli("status", "--call-id", "no-such-call")
    assert unknown.returncode == 1
    assert unknown.stderr == "voicecall: UNKNOWN_CALL: No call with id no-such-call\n"
    bad = daemon.cli("call", "--to", "12345", "--message", "x")
    assert bad.returncode == 1
    assert bad.stderr.startswith("voicecall: NOT_ALLOWED: '12345' is not an E.164 number")
    usage = daemon.cli("call", "--to", TO)
    assert usage.returncode == 2
    assert "--message" in usage.stderr
    premium = daemon.cli("call", "--to", "+19005550123", "--message", "x")
    assert premium.returncode == 1 and "premium-rate" in premium.stderr
    assert daemon.stop() == 0
    gone = daemon.cli("status")
    assert gone.returncode == 3
    assert str(daemon.socket) in gone.stderr
    assert gone.stderr.count("\n") == 1
    assert "systemctl start voicecalld" in gone.stderr


def test_check_config_redacts_secrets(make_daemon, tmp_path):
    daemon = make_daemon()
    config = tmp_path / "openclaw.json"
    config.write_text(
        json.dumps(
            {
                "plugins": {
                    "entries": {
                        "voice-call": {
                            "config": {
                                "provider": "twilio",
                                "fromNumber": "+15550001234",
                                "twilio": {
                                    "accountSid": "AC123",
                                    "authToken": "super-secret-token",
                                },
                            }
                        }
                    }
                }
            }
        )
    )
    shown = daemon.cli("check-config", "--config", str(config))
    assert shown.returncode == 0, shown.stderr
    assert "super-secret-token" not in shown.stdout + shown.stderr
    assert shown.stdout.startswith(f"# {config}\n")
    effective = json.loads(
        "".join(line for line in shown.stdout.splitlines(True) if not line.startswith("#"))
    )
    assert effective["twilio"]["authToken"] == "<redacted>"
    config.write_text(
        '{"plugins": {"entries": {"voice-call": {"config": {"serve": {"port": 0}}}}}}'
    )
    bad = daemon.cli("check-config", "--config", str(config))
    assert bad.returncode == 2
    assert bad.stderr == (
        f"voicecall: bad config: {config}: plugins.entries.voice-call.config"
        ".serve.port: must be a positive whole number, got 0\n"
    )
