"""Plivo's config keys: the environment fallbacks, upstream's required keys, and the factory."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from voicecalld.config import parse_config
from voicecalld.config.loader import ConfigError
from voicecalld.providers.interface import IProvider
from voicecalld.providers.registry import make_provider

BASE = {"enabled": True, "provider": "plivo", "fromNumber": "+15550001111"}


def problems(config: dict, environ: dict | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(config, "/etc/voicecalld.json", environ or {})
    return [str(p) for p in caught.value.problems]


def test_auth_id_and_token_are_required_naming_their_variables():
    assert problems(BASE) == [
        "plivo.authId: required for provider 'plivo' (or set PLIVO_AUTH_ID)",
        "plivo.authToken: required for provider 'plivo' (or set PLIVO_AUTH_TOKEN)",
    ]


def test_the_environment_fills_what_the_config_leaves_out():
    environ = {"PLIVO_AUTH_ID": "MAENV", "PLIVO_AUTH_TOKEN": "env-token"}
    settings = parse_config({**BASE, "plivo": {"authId": "MACONFIG"}}, None, environ).settings
    assert settings.plivo.auth_id == "MACONFIG"
    assert settings.plivo.auth_token.reveal() == "env-token"


def test_other_providers_variables_are_not_read():
    environ = {"TWILIO_ACCOUNT_SID": "AC1", "TWILIO_AUTH_TOKEN": "t"}
    assert len(problems(BASE, environ)) == 2


def test_the_daemon_builds_a_plivo_provider():
    loaded = parse_config(
        {
            **BASE,
            "publicUrl": "https://voice.example.com/voice/webhook",
            "plivo": {"authId": "MA1", "authToken": "t", "apiBaseUrl": "http://127.0.0.1:9/"},
        },
        None,
        {},
    )
    provider = make_provider(loaded, Clock())
    assert verifyObject(IProvider, provider)
    assert provider.name == "plivo"
    assert set(provider.web_resources()) == {"/voice/webhook"}
