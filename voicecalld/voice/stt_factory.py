"""Which streaming speech-to-text provider a config asks for, built and ready."""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger

from voicecalld.config.model import StreamingSettings
from voicecalld.voice.stt import ISTT

# Provider ids that mean OpenAI Realtime transcription (the second is upstream's alias).
OPENAI_PROVIDER_IDS = frozenset({"openai", "openai-realtime"})

# For each built provider: the settings block and where its key may come from.
_KEYS = {
    "openai": "streaming.providers.openai.apiKey or $OPENAI_API_KEY",
    "deepgram": "streaming.providers.deepgram.apiKey or $DEEPGRAM_API_KEY",
    "elevenlabs": "streaming.providers.elevenlabs.apiKey or $ELEVENLABS_API_KEY",
}
_NAMES = {"openai": "an OpenAI", "deepgram": "a Deepgram", "elevenlabs": "an ElevenLabs"}

_log = Logger(namespace="voicecalld.voice.stt")


def make_stt(streaming: StreamingSettings, reactor: Any) -> ISTT | None:
    """
    The configured streaming STT provider, or None (with one warning) when it
    cannot be used: an unknown provider is named, or its key is not set.
    """
    provider = streaming.provider
    name = "openai" if provider is None or provider in OPENAI_PROVIDER_IDS else provider
    if name not in _KEYS:
        _log.warn(
            "streaming STT provider {provider!r} is not available (built in: openai, deepgram,"
            " elevenlabs), so calls will not be transcribed",
            provider=provider,
            log_code="stt.unknown_provider",
        )
        return None
    settings = streaming.providers.get(name)
    if settings is None:
        settings = _default_settings(name)
    api_key = getattr(settings, "api_key", None)
    if api_key is None or not api_key.reveal():
        _log.warn(
            "streaming STT needs {what} key ({where}); calls will not be transcribed",
            what=_NAMES[name],
            where=_KEYS[name],
            log_code="stt.no_key",
        )
        return None
    if name == "deepgram":
        from voicecalld.voice.stt_deepgram import DeepgramSTT

        return DeepgramSTT(settings, reactor)
    if name == "elevenlabs":
        from voicecalld.voice.stt_elevenlabs import ElevenLabsRealtimeSTT

        return ElevenLabsRealtimeSTT(settings, reactor)
    from voicecalld.voice.stt_openai import OpenAIRealtimeSTT

    return OpenAIRealtimeSTT(settings, streaming.stt_url, reactor)


def _default_settings(name: str) -> Any:
    from voicecalld.config import model

    kinds = {
        "openai": model.OpenAIStreamingSettings,
        "deepgram": model.DeepgramStreamingSettings,
        "elevenlabs": model.ElevenLabsStreamingSettings,
    }
    return kinds[name]()
