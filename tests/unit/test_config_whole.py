"""A file is a whole OpenClaw config or a bare plugin config, decided by its top-level keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from voicecalld.config import ConfigError, is_implicit_default, load_config, parse_config
from voicecalld.config.loader import PLUGIN_KEYS
from voicecalld.config.openclaw import TOP_LEVEL_KEYS

FIXTURES = Path(__file__).parent.parent / "fixtures" / "configs"
PLUGIN = "plugins.entries.voice-call.config"
SOURCE = "/etc/voicecalld.json5"
TWILIO = {
    "provider": "twilio",
    "fromNumber": "+15550001234",
    "twilio": {"accountSid": "AC1", "authToken": "t"},
}


def refused(data: object, **kwargs: object) -> str:
    with pytest.raises(ConfigError) as raised:
        parse_config(data, SOURCE, {}, **kwargs)
    message = str(raised.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        # The case: a typo at the top of a bare config is not an OpenClaw config.
        (
            {**TWILIO, "provder": "twilio"},
            f"{SOURCE}: provder: unknown key (did you mean 'provider'?)",
        ),
        ({"maxConcurentCalls": 2}, f"{SOURCE}: maxConcurentCalls: unknown key (did you mean"),
        ({"colour": "red"}, f"{SOURCE}: colour: unknown key (known keys here: agentId, "),
        # A whole config names the full path of a plugin typo.
        (
            {"plugins": {"entries": {"voice-call": {"config": {"provder": "x"}}}}},
            f"{SOURCE}: {PLUGIN}.provder: unknown key (did you mean 'provider'?)",
        ),
        # Plugin keys put at the top of a whole config are misplaced, not ignored.
        (
            {"gateway": {"port": 1}, "provider": "twilio"},
            f"{SOURCE}: provider: a voice-call plugin key at the top level of an OpenClaw"
            f" config; it belongs under {PLUGIN}",
        ),
        # A whole config named explicitly must have the entry.
        (
            {"plugins": {"entries": {"slack": {}}}},
            f"{SOURCE}: plugins.entries.voice-call: not set: this OpenClaw config has no"
            f" voice-call plugin entry (add {PLUGIN}, or name a bare plugin config)",
        ),
        (
            {"agents": {"list": [{"id": "main"}]}},
            f"{SOURCE}: plugins.entries.voice-call: not set:",
        ),
    ],
)
def test_refused(data, expected):
    assert expected in refused(data)


@pytest.mark.parametrize(
    ("data", "whole"),
    [
        ({}, False),
        ({"provider": "mock", "serve": {"port": 4000}}, False),
        # tts is both a plugin key and an OpenClaw key: alone, it is the plugin's.
        ({"tts": {"provider": "openai"}}, False),
        ({"stt": {"provider": "openai"}}, False),
        ({"plugins": {"entries": {"voice-call": {}}}}, True),
        ({"plugins": {"entries": {"voice-call": {"config": TWILIO}}}}, True),
        # Recognised by an OpenClaw key, without plugins (implicit file: the defaults).
        ({"gateway": {"mode": "local"}}, True),
        ({"$schema": "https://openclaw.ai/schema.json"}, True),
        ({"tts": {"provider": "openai"}, "messages": {}}, True),
    ],
)
def test_decision(data, whole):
    loaded = parse_config(data, SOURCE, {}, named=False)
    assert loaded.whole is whole
    assert loaded.prefix == ((*PLUGIN.split("."),) if whole else ())


def test_every_plugin_key_is_a_bare_key_and_only_tts_is_shared():
    assert {"provider", "fromNumber", "numbers", "realtime", "sessionScope", "stt"} <= PLUGIN_KEYS
    assert PLUGIN_KEYS & TOP_LEVEL_KEYS == {"tts"}
    assert len(TOP_LEVEL_KEYS) == 44


def test_implicit_default_without_an_entry_runs_the_mock_and_says_so():
    loaded = parse_config({"gateway": {"port": 1}, "channels": {}}, SOURCE, {}, named=False)
    assert loaded.settings.provider == "mock"
    assert [str(n) for n in loaded.notes] == [
        "plugins.entries.voice-call: not set: this OpenClaw config has no voice-call plugin"
        " entry; running the mock provider with the defaults"
    ]


def test_which_file_is_the_implicit_default():
    assert is_implicit_default(None, {})
    assert is_implicit_default(None, {"HOME": "/home/x"})
    assert not is_implicit_default("/etc/v.json", {})
    assert not is_implicit_default(None, {"VOICECALLD_CONFIG": "/a"})
    assert not is_implicit_default(None, {"OPENCLAW_CONFIG_PATH": "/b"})


def test_unknown_openclaw_top_level_keys_are_openclaws_business():
    loaded = parse_config(
        {"gateway": {}, "futureThing": {}, "plugins": {"entries": {"voice-call": {}}}},
        SOURCE,
        {},
    )
    assert [str(n) for n in loaded.notes] == [
        "futureThing: not a top-level key of OpenClaw 2026.9.6's config; ignored"
    ]


@pytest.mark.parametrize("name", ["seed-era.json5", "current-2026.9.json5", "bare-plugin.json5"])
def test_the_example_configs_still_load(name):
    loaded = load_config(str(FIXTURES / name), {})
    assert loaded.whole is (name != "bare-plugin.json5")
    assert loaded.settings.enabled
