"""Which streaming speech-to-text provider a config asks for, built and ready."""

from __future__ import annotations

from twisted.logger import Logger

from voicecalld.config.model import StreamingSettings
from voicecalld.voice.stt import ISTT

# Provider ids that mean OpenAI Realtime transcription (the second is upstream's alias).
OPENAI_PROVIDER_IDS = frozenset({"openai", "openai-realtime"})

_log = Logger(namespace="voicecalld.voice.stt")


def make_stt(streaming: StreamingSettings, reactor) -> ISTT | None:
    """
    The configured streaming STT provider, or None (with one warning) when it
    cannot be used: another provider is named, or no OpenAI key is set.
    """
    provider = streaming.provider
    if provider is not None and provider not in OPENAI_PROVIDER_IDS:
        _log.warn(
            "streaming STT provider {provider!r} is not available; only 'openai' is built in,"
            " so calls will not be transcribed",
            provider=provider,
        )
        return None
    openai = streaming.providers.get("openai")
    api_key = getattr(openai, "api_key", None)
    if api_key is None or not api_key.reveal():
        _log.warn(
            "streaming STT needs an OpenAI key (streaming.providers.openai.apiKey or"
            " $OPENAI_API_KEY); calls will not be transcribed"
        )
        return None
    from voicecalld.voice.stt_openai import OpenAIRealtimeSTT

    return OpenAIRealtimeSTT(openai, streaming.stt_url, reactor)
