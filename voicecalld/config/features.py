"""
Keys voicecalld knows but whose feature it does not run (yet).

Such keys are validated like any other, and each feature whose keys a config
sets is named once in a start-up warning: never ignored in silence, never a
reason to refuse to start.
"""

from __future__ import annotations

from collections.abc import Callable

from attrs import frozen

from voicecalld.config.loader import LoadedConfig
from voicecalld.config.model import RealtimeSettings, VoiceCallSettings


@frozen
class Unbuilt:
    """A feature not built yet, and how to tell whether a config asks for it."""

    keys: str
    feature: str
    asked: Callable[[VoiceCallSettings], bool]


UNBUILT = (
    Unbuilt(
        "realtime.*",
        "realtime (full-duplex) voice; calls use streaming STT + TTS instead",
        lambda s: s.realtime != RealtimeSettings(),
    ),
    Unbuilt(
        "silenceTimeoutMs",
        "a separate end-of-speech timer (speech end is detected by the"
        " STT's voice activity detection)",
        lambda s: s.silence_timeout_ms != 800,
    ),
    Unbuilt(
        "store",
        "the JSONL call log (voicecalld keeps calls in SQLite in its state directory)",
        lambda s: s.store is not None,
    ),
)


def unbuilt_notes(loaded: LoadedConfig) -> list[str]:
    """One warning per feature the config asks for that voicecalld does not run."""
    return [
        f"{loaded.path(u.keys)}: {u.feature}; the setting is validated but has no effect"
        for u in UNBUILT
        if u.asked(loaded.settings)
    ]
