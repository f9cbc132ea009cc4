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
from voicecalld.config.model import VoiceCallSettings


@frozen
class Unbuilt:
    """A feature not built yet, and how to tell whether a config asks for it."""

    keys: str
    feature: str
    asked: Callable[[VoiceCallSettings], bool]


UNBUILT = (
    Unbuilt(
        "realtime.agentContext",
        "the agent identity and workspace files in the realtime model's instructions",
        lambda s: s.realtime.agent_context.enabled,
    ),
    Unbuilt(
        "realtime.fastContext",
        "the memory search before a realtime consult (consults go to the agent directly)",
        lambda s: s.realtime.fast_context.enabled,
    ),
    Unbuilt(
        "realtime.consultThinkingLevel",
        "per-consult thinking and fast-mode overrides (consults use the agent's own)",
        lambda s: (
            s.realtime.consult_thinking_level is not None
            or s.realtime.consult_fast_mode is not None
        ),
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


# The realtime providers this voicecalld knows (voicecalld.realtime.factory builds them).
REALTIME_PROVIDERS = ("google", "openai")


def unbuilt_notes(loaded: LoadedConfig) -> list[str]:
    """One warning per feature the config asks for that voicecalld does not run."""
    return [
        f"{loaded.path(u.keys)}: {u.feature}; the setting is validated but has no effect"
        for u in UNBUILT
        if u.asked(loaded.settings)
    ] + realtime_notes(loaded)


def realtime_notes(loaded: LoadedConfig) -> list[str]:
    """Why C{realtime.enabled} will be skipped, if it will (upstream warns, never fails)."""
    s = loaded.settings
    realtime = s.realtime
    if not realtime.enabled:
        return []
    if s.provider == "mock":
        return [
            f"{loaded.path('realtime.enabled')}: realtime voice needs a carrier's media"
            " stream (twilio, telnyx or plivo); the mock provider runs without it"
        ]
    if realtime.provider is not None and realtime.provider not in REALTIME_PROVIDERS:
        return [
            f"{loaded.path('realtime.provider')}: unknown realtime provider"
            f" {realtime.provider!r} (known: {', '.join(REALTIME_PROVIDERS)}); realtime is skipped"
        ]
    providers = realtime.providers
    named = providers if isinstance(providers, dict) else vars(providers)
    if realtime.provider is None and not any(named.get(p) is not None for p in REALTIME_PROVIDERS):
        return [
            f"{loaded.path('realtime.providers')}: realtime.enabled is set but no realtime"
            " provider is configured (google or openai); realtime is skipped"
        ]
    if realtime.provider is not None and named.get(realtime.provider) is None:
        return [
            f"{loaded.path('realtime.providers', realtime.provider)}: realtime.provider is"
            f" {realtime.provider!r} but this block is missing; realtime is skipped"
        ]
    return []
