"""
The real daemon's log: one JSON object per line with C{--log-format json},
a handful of info lines per call, no secret in either format.
"""

from __future__ import annotations

import json

from tests.integration.daemon import state_of

TO = "+15551234567"
SECRETS = ("tok-SECRET-twilio-0001", "KEY-SECRET-telnyx-0004", "plivo-SECRET-token-0005")
CONFIG = {
    "inboundPolicy": "open",
    "outbound": {"notifyHangupDelaySec": 0},
    "twilio": {"accountSid": "AC" + "4" * 32, "authToken": SECRETS[0]},
    "telnyx": {"apiKey": SECRETS[1], "connectionId": "conn-1"},
    "plivo": {"authId": "MA" + "5" * 18, "authToken": SECRETS[2]},
}
# A handful: placed, answered by / ended and the odd warning a call earns.
MAX_INFO_PER_CALL = 8


def _calls(daemon) -> tuple[str, str]:
    """One notify call and one conversation call, each to its end."""
    tail = daemon.tail()
    try:
        notify = daemon.cli("--json", "call", "--to", TO, "--message", "Your parcel is here.")
        notify_id = json.loads(notify.stdout)["callId"]
        tail.until(lambda e: e["type"] == "call.ended" and e["callId"] == notify_id)
        talk = daemon.cli(
            "--json", "call", "--to", TO, "--message", "Hello!", "--mode", "conversation"
        )
        talk_id = json.loads(talk.stdout)["callId"]
        tail.until(lambda e: e["type"] == "call.state" and e["state"] == "listening")
        assert daemon.cli("simulate", "say", "--call-id", talk_id, "--text", "Hi").returncode == 0
        tail.until(lambda e: e.get("text") == "Hi")
        waiting = daemon.spawn_cli("continue", "--call-id", talk_id, "--message", "How are you?")
        tail.until(lambda e: e["type"] == "call.state" and e["state"] == "speaking")
        tail.until(lambda e: e["type"] == "call.state" and e["state"] == "listening")
        assert daemon.cli("simulate", "say", "--call-id", talk_id, "--text", "Fine").returncode == 0
        out, err = waiting.communicate(timeout=30)
        assert (waiting.returncode, out) == (0, "Fine\n"), err
        assert daemon.cli("end", "--call-id", talk_id).returncode == 0
        tail.until(lambda e: e["type"] == "call.ended" and e["callId"] == talk_id)
    finally:
        tail.close()
    return notify_id, talk_id


def _mentions(record: dict, call_id: str) -> bool:
    return call_id in record["message"] or record.get("call_id") == call_id


def test_json_log_of_two_calls(make_daemon):
    daemon = make_daemon(CONFIG).start("--log-format", "json")
    notify_id, talk_id = _calls(daemon)
    assert state_of(daemon, talk_id)["state"] == "hangup-bot"
    assert daemon.stop() == 0
    text = daemon.log()
    records = [json.loads(line) for line in text.splitlines()]
    for record in records:
        assert {"time", "level", "code", "namespace", "message"} <= record.keys(), record
    codes = [r["code"] for r in records]
    assert codes.count("call.placed") == 2 and codes.count("call.ended") == 2, codes
    for call_id in (notify_id, talk_id):
        info = [r for r in records if r["level"] == "info" and _mentions(r, call_id)]
        assert len(info) <= MAX_INFO_PER_CALL, [r["message"] for r in info]
    # A CLI connection per command is not an event of ours.
    assert not [r for r in records if r["namespace"] == "twisted.protocols.amp"]
    assert not [s for s in SECRETS if s in text]


def test_text_log_is_one_line_per_event_without_secrets(make_daemon):
    daemon = make_daemon(CONFIG).start()
    _calls(daemon)
    assert daemon.stop() == 0
    text = daemon.log()
    lines = text.splitlines()
    assert any(" info  [voicecalld.calls.manager.CallManager] call.placed: " in s for s in lines)
    assert all(line[:4].isdigit() for line in lines), [s for s in lines if not s[:4].isdigit()]
    assert not [s for s in SECRETS if s in text]
    print(f"\ntwo calls: {len(lines)} lines, {len(text.encode())} bytes of log")
