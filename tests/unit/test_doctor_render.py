"""What C{voicecall doctor} prints: one line per check, the fix after a warning or failure."""

from __future__ import annotations

import json
import os

from voicecalld.cli.doctor import Check, check_control_socket, check_state_dir, render, report


def test_one_line_per_check_with_the_fix_unless_ok():
    checks = [
        Check("config", "ok", "/etc/voice.json loads", "unused"),
        Check("webhook-exposure", "fail", "carriers cannot reach x", "set publicUrl"),
    ]
    assert render(checks).splitlines() == [
        "ok   config: /etc/voice.json loads",
        "fail webhook-exposure: carriers cannot reach x -- fix: set publicUrl",
    ]
    assert json.loads(json.dumps(report(checks))) == {
        "ok": False,
        "checks": [
            {"id": "config", "status": "ok", "detail": "/etc/voice.json loads", "fix": "unused"},
            {
                "id": "webhook-exposure",
                "status": "fail",
                "detail": "carriers cannot reach x",
                "fix": "set publicUrl",
            },
        ],
    }


def test_a_world_readable_state_dir_is_a_warning(tmp_path):
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    os.chmod(state, 0o755)
    result = check_state_dir(str(state))
    assert (result.status, result.fix) == ("warn", f"chmod 700 {state}")
    os.chmod(state, 0o700)
    assert check_state_dir(str(state)).status == "ok"


def test_a_missing_socket_says_to_start_the_daemon(tmp_path):
    result = check_control_socket(str(tmp_path / "control.sock"))
    assert result.status == "fail"
    assert "start voicecalld" in result.fix
