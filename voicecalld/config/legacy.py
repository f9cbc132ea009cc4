"""
Older config shapes, read as the current one.

Users bring configs written for the seed-era plugin and for the current one.
Each rewrite here leaves a note naming the old key and the new one; when both
are present the current key wins and the old one is dropped, as upstream's
C{openclaw doctor --fix} does.
"""

from __future__ import annotations

import copy
from typing import Any

from voicecalld.config.schema import Path, Problem

# Seed-era TTS blocks that now live under tts.providers (edge became microsoft).
_TTS_PROVIDER_BLOCKS = {
    "openai": "openai",
    "elevenlabs": "elevenlabs",
    "edge": "microsoft",
    "microsoft": "microsoft",
    "cli": "cli",
}
# Speaker fields renamed in 2026.9.
_SPEAKER_FIELDS = {
    "voice": "speakerVoice",
    "voiceName": "speakerVoice",
    "voiceId": "speakerVoiceId",
}
_STREAMING_OPENAI_FIELDS = {
    "openaiApiKey": "apiKey",
    "sttModel": "model",
    "silenceDurationMs": "silenceDurationMs",
    "vadThreshold": "vadThreshold",
}


def migrate_plugin(raw: dict[str, Any], path: Path, notes: list[Problem]) -> dict[str, Any]:
    """Return the plugin config with every legacy key rewritten to its current form."""
    config = copy.deepcopy(raw)
    if config.get("provider") == "log":
        config["provider"] = "mock"
        notes.append(Problem((*path, "provider"), "legacy value 'log', read as 'mock'"))

    twilio = config.get("twilio")
    if isinstance(twilio, dict) and "from" in twilio:
        old = twilio.pop("from")
        _move(config, "fromNumber", old, (*path, "twilio", "from"), (*path, "fromNumber"), notes)

    streaming = config.get("streaming")
    if isinstance(streaming, dict):
        _migrate_streaming(streaming, (*path, "streaming"), notes)

    if isinstance(config.get("tts"), dict):
        config["tts"] = migrate_tts(config["tts"], (*path, "tts"), notes)

    numbers = config.get("numbers")
    if isinstance(numbers, dict):
        for number, route in numbers.items():
            if isinstance(route, dict) and isinstance(route.get("tts"), dict):
                where = (*path, "numbers", number, "tts")
                route["tts"] = migrate_tts(route["tts"], where, notes)

    if "stt" in config:
        config.pop("stt")
        notes.append(
            Problem(
                (*path, "stt"), "removed upstream in 2026.4 (streaming STT replaced it); ignored"
            )
        )
    return config


def _migrate_streaming(streaming: dict[str, Any], path: Path, notes: list[Problem]) -> None:
    if "sttProvider" in streaming:
        old = streaming.pop("sttProvider")
        value = "openai" if old == "openai-realtime" else old
        _move(streaming, "provider", value, (*path, "sttProvider"), (*path, "provider"), notes)
    for old_key, new_key in _STREAMING_OPENAI_FIELDS.items():
        if old_key not in streaming:
            continue
        providers = streaming.setdefault("providers", {})
        if not isinstance(providers, dict):
            return
        openai = providers.setdefault("openai", {})
        if not isinstance(openai, dict):
            return
        _move(
            openai,
            new_key,
            streaming.pop(old_key),
            (*path, old_key),
            (*path, "providers", "openai", new_key),
            notes,
        )


def migrate_tts(raw: dict[str, Any], path: Path, notes: list[Problem]) -> dict[str, Any]:
    """Rewrite a TTS block (plugin C{tts}, core C{tts} or C{messages.tts})."""
    tts = copy.deepcopy(raw)
    for dropped in ("model", "voice", "instructions"):
        if dropped in tts:
            tts.pop(dropped)
            notes.append(
                Problem(
                    (*path, dropped),
                    "removed upstream in 2026.1.26 "
                    "(set it under tts.providers.<provider>); ignored",
                )
            )
    if tts.get("provider") == "edge":
        tts["provider"] = "microsoft"
        notes.append(Problem((*path, "provider"), "legacy value 'edge', read as 'microsoft'"))
    for old_key, new_key in _TTS_PROVIDER_BLOCKS.items():
        block = tts.get(old_key)
        if not isinstance(block, dict):
            continue
        tts.pop(old_key)
        providers = tts.setdefault("providers", {})
        if not isinstance(providers, dict):
            continue
        current = providers.get(new_key)
        merged = dict(block)
        if isinstance(current, dict):
            merged.update(current)
        providers[new_key] = merged
        notes.append(
            Problem(
                (*path, old_key), f"legacy key, read as {'.'.join((*path, 'providers', new_key))}"
            )
        )
    providers = tts.get("providers")
    if isinstance(providers, dict):
        for name, block in providers.items():
            if isinstance(block, dict):
                _rename_speaker_fields(block, (*path, "providers", name), notes)
    return tts


def _rename_speaker_fields(block: dict[str, Any], path: Path, notes: list[Problem]) -> None:
    for old_key, new_key in _SPEAKER_FIELDS.items():
        if old_key in block:
            _move(block, new_key, block.pop(old_key), (*path, old_key), (*path, new_key), notes)


def _move(
    target: dict[str, Any], key: str, value: Any, old: Path, new: Path, notes: list[Problem]
) -> None:
    if key in target:
        notes.append(Problem(old, f"legacy key dropped: {'.'.join(new)} is also set and wins"))
        return
    target[key] = value
    notes.append(Problem(old, f"legacy key, read as {'.'.join(new)}"))
