"""What an operator sees at start-up and from check-config: exit 2 and one line, or a warning."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.daemon import Daemon
from voicecalld.tap import Options

PLUGIN = "plugins.entries.voice-call.config"
SECRET = "tok-3f9a-never-printed"
WITHOUT_ENTRY = {"gateway": {"mode": "local"}, "plugins": {"entries": {"slack": {}}}}


def twilio(token: object) -> dict:
    return {
        "provider": "twilio",
        "fromNumber": "+15550001234",
        "twilio": {"accountSid": "AC1", "authToken": token},
    }


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A user with no config-choosing variables set."""
    for name in ("VOICECALLD_CONFIG", "OPENCLAW_CONFIG_PATH", "TWILIO_AUTH_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def start(args: list[str], capsys) -> tuple[int | None, list[str], Options]:
    options = Options()
    code = None
    try:
        options.parseOptions(args)
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err.splitlines(), options


def write(path: Path, data: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def test_a_named_whole_config_without_the_entry_does_not_start(home, capsys, monkeypatch):
    config = write(home / "openclaw.json", WITHOUT_ENTRY)
    expected = [
        f"voicecalld: bad config: {config}: plugins.entries.voice-call: not set: this OpenClaw"
        f" config has no voice-call plugin entry (add {PLUGIN}, or name a bare plugin config)"
    ]
    assert start(["--config", str(config)], capsys)[:2] == (2, expected)
    monkeypatch.setenv("OPENCLAW_CONFIG_PATH", str(config))
    assert start([], capsys)[:2] == (2, expected)


def test_the_implicit_default_without_the_entry_runs_the_mock_with_a_warning(home, capsys):
    write(home / ".openclaw" / "openclaw.json", WITHOUT_ENTRY)
    code, err, options = start(["--state-dir", str(home / "state")], capsys)
    assert (code, err) == (None, [])
    assert options.loaded.settings.provider == "mock"
    assert [str(n) for n in options.loaded.notes] == [
        "plugins.entries.voice-call: not set: this OpenClaw config has no voice-call plugin"
        " entry; running the mock provider with the defaults"
    ]


def test_an_unresolvable_reference_does_not_start(home, capsys):
    config = write(home / "v.json", twilio("${TWILIO_AUTH_TOKEN}"))
    assert start(["--config", str(config)], capsys)[:2] == (
        2,
        [
            f"voicecalld: bad config: {config}: twilio.authToken: cannot resolve secret"
            " reference env:default:TWILIO_AUTH_TOKEN: environment variable TWILIO_AUTH_TOKEN"
            " is missing or empty"
        ],
    )


def test_the_real_daemon_refuses_a_top_level_typo_before_any_socket(tmp_path):
    daemon = Daemon(tmp_path / "d", {"provider": "mock", "provder": "twilio"})
    daemon.start(wait=False)
    assert daemon.wait_exit() == 2
    assert daemon.log().splitlines() == [
        f"voicecalld: bad config: {daemon.config_path}: provder: unknown key"
        " (did you mean 'provider'?)"
    ]
    assert not daemon.socket.exists()


def test_check_config_shows_references_redacted(tmp_path):
    daemon = Daemon(tmp_path / "d")
    config = write(
        tmp_path / "openclaw.json",
        {
            "secrets": {"providers": {"vault": {"source": "env", "allowlist": ["TW_TOKEN"]}}},
            "plugins": {
                "entries": {
                    "voice-call": {
                        "config": twilio({"source": "env", "provider": "vault", "id": "TW_TOKEN"})
                    }
                }
            },
        },
    )
    shown = daemon.cli("--json", "check-config", "--config", str(config), TW_TOKEN=SECRET)
    assert shown.returncode == 0, shown.stderr
    assert SECRET not in shown.stdout + shown.stderr
    effective = json.loads(shown.stdout)["config"]
    assert effective["twilio"]["authToken"] == {
        "source": "env",
        "provider": "vault",
        "id": "<redacted>",
    }
    bad = daemon.cli("check-config", "--config", str(config))
    assert bad.returncode == 2
    assert bad.stderr == (
        f"voicecall: bad config: {config}: {PLUGIN}.twilio.authToken: cannot resolve secret"
        " reference env:vault:TW_TOKEN: environment variable TW_TOKEN is missing or empty\n"
    )


def test_an_unknown_log_format_does_not_start(home, capsys):
    state = str(home / "state")
    assert start(["--state-dir", state, "--log-format", "xml"], capsys)[:2] == (
        2,
        ["voicecalld: bad --log-format 'xml': use text or json"],
    )
    assert start(["--state-dir", state, "--log-format", "json"], capsys)[0] is None
