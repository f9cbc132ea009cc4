"""The plugin config JSON schema: generated from the model, embedded in the shim's manifest."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from voicecalld.config import ConfigError, parse_config
from voicecalld.config.jsonschema import main, plugin_schema, secret_paths

MANIFEST = Path(__file__).resolve().parents[2] / "gateway" / "openclaw.plugin.json"
REGENERATE = "python -m voicecalld.config.jsonschema --manifest gateway/openclaw.plugin.json"

TYPES = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
}


def problems(schema: dict[str, Any], value: Any, path: str = "") -> list[str]:
    """
    Check C{value} against the JSON-schema subset the generator emits (type,
    properties, additionalProperties, propertyNames, items, enum, minLength,
    pattern, minimum, maximum) and return what is wrong, by path.
    """
    kind = schema.get("type")
    if kind == "integer":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind == "number":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif kind is not None:
        ok = isinstance(value, TYPES[kind])
    else:
        ok = True
    if not ok:
        return [f"{path}: not {kind}"]
    found: list[str] = []
    if "enum" in schema and value not in schema["enum"]:
        found.append(f"{path}: not one of {schema['enum']}")
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            found.append(f"{path}: too short")
        if "pattern" in schema and re.search(schema["pattern"], value) is None:
            found.append(f"{path}: does not match {schema['pattern']}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            found.append(f"{path}: below minimum")
        if "maximum" in schema and value > schema["maximum"]:
            found.append(f"{path}: above maximum")
    if isinstance(value, list):
        for i, item in enumerate(value):
            found += problems(schema.get("items", {}), item, f"{path}[{i}]")
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            here = f"{path}.{key}" if path else key
            if "propertyNames" in schema:
                found += problems(schema["propertyNames"], key, f"{here} (key)")
            if key in properties:
                found += problems(properties[key], item, here)
            elif extra is False:
                found.append(f"{here}: unknown key")
            elif isinstance(extra, dict):
                found += problems(extra, item, here)
    return found


def daemon_accepts(config: dict[str, Any]) -> bool:
    try:
        parse_config({"plugins": {"entries": {"voice-call": {"config": config}}}}, "test", {})
    except ConfigError:
        return False
    return True


def test_manifest_embeds_the_generated_schema():
    manifest = json.loads(MANIFEST.read_text(encoding="utf-8"))
    assert manifest["configSchema"] == plugin_schema(), f"the manifest drifted: run {REGENERATE}"


def test_manifest_marks_every_secret_sensitive():
    hints = json.loads(MANIFEST.read_text(encoding="utf-8"))["uiHints"]
    for path in secret_paths():
        assert hints.get(path, {}).get("sensitive") is True, path


def test_schema_is_strict_everywhere_but_free_form_blobs():
    schema = plugin_schema()
    assert schema["additionalProperties"] is False
    for key in ("twilio", "serve", "outbound", "streaming", "tts", "realtime"):
        assert schema["properties"][key]["additionalProperties"] is False, key
    openai = schema["properties"]["tts"]["properties"]["providers"]["properties"]["openai"]
    assert openai["additionalProperties"] is False


def test_main_prints_the_schema(capsys):
    assert main([]) == 0
    assert json.loads(capsys.readouterr().out) == plugin_schema()


def test_main_rewrites_a_manifest(tmp_path):
    target = tmp_path / "openclaw.plugin.json"
    target.write_text(json.dumps({"id": "voice-call", "configSchema": {}}))
    assert main(["--manifest", str(target)]) == 0
    written = json.loads(target.read_text())
    assert written == {"id": "voice-call", "configSchema": plugin_schema()}


ACCEPTED = [
    {},
    {
        "provider": "mock",
        "toNumber": "+15551234567",
        "controlSocket": "/run/voicecalld/control.sock",
    },
    {
        "provider": "twilio",
        "fromNumber": "+15550001234",
        "twilio": {"accountSid": "AC1", "authToken": "t", "region": "ie1"},
        "streaming": {"enabled": True, "providers": {"openai": {"apiKey": "k"}, "other": {"x": 1}}},
        "tts": {
            "provider": "openai",
            "providers": {"openai": {"speakerVoice": "alloy"}, "someone": {"a": 1}},
        },
        "numbers": {"+15550001234": {"agentId": "main", "responseTimeoutMs": 5000}},
        "outbound": {"allowedPrefixes": ["+1"], "maxCallsPerHour": 10},
        "sessionScope": "per-call",
        "serve": {"port": 4000},
    },
    # Legacy shapes the daemon rewrites.
    {"provider": "log"},
    {"provider": "twilio", "twilio": {"from": "+15550001234", "accountSid": "A", "authToken": "t"}},
    {
        "streaming": {
            "sttProvider": "openai-realtime",
            "openaiApiKey": "k",
            "sttModel": "whisper",
            "silenceDurationMs": 700,
            "vadThreshold": 0.4,
        }
    },
    {"stt": {"provider": "openai", "model": "whisper-1"}},
    {"tts": {"model": "tts-1", "voice": "alloy", "instructions": "calm"}},
    {"tts": {"provider": "edge", "edge": {"voice": "en-US-AvaNeural"}}},
    {"tts": {"openai": {"apiKey": "k", "voice": "nova"}, "elevenlabs": {"voiceId": "v"}}},
    {"tts": {"providers": {"openai": {"voice": "nova"}, "microsoft": {"voiceName": "x"}}}},
]

REJECTED = [
    {"nope": 1},
    {"provider": "sip"},
    {"twilio": {"accountSid": "A", "colour": "red"}},
    {"fromNumber": "5551234"},
    {"serve": {"port": 0}},
    {"serve": {"port": 70000}},
    {"maxConcurrentCalls": 1.5},
    {"outbound": {"defaultMode": "shout"}},
    {"numbers": {"not-a-number": {}}},
    {"numbers": {"+15550001234": {"greeting": "hi"}}},
    {"tts": {"providers": {"openai": {"speed": 9}}}},
    {"tts": {"providers": {"elevenlabs": {"voice": "x"}}}},
    {"publicUrl": "ftp://example.com/voice"},
    {"streaming": {"sttUrl": "https://example.com"}},
    {"enabled": "yes"},
    {"controlSocket": ""},
]


@pytest.mark.parametrize("config", ACCEPTED)
def test_schema_accepts_what_the_daemon_accepts(config):
    assert daemon_accepts(config)
    assert problems(plugin_schema(), config) == []


@pytest.mark.parametrize("config", REJECTED)
def test_schema_rejects_what_the_daemon_rejects(config):
    assert not daemon_accepts(config)
    assert problems(plugin_schema(), config) != []
