"""
Streaming speech-to-text: the caller's audio in, what the caller said out.

A media stream opens one L{ISTTSession} per call and feeds it the phone's
8 kHz mu-law audio as it arrives; the session tells its
L{ITranscriptListener} when the caller starts speaking, what they have said
so far, and each finished turn.  L{make_stt} picks the configured provider.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.logger import Logger
from zope.interface import Interface

if TYPE_CHECKING:
    from voicecalld.config.model import StreamingSettings

# Provider ids that mean OpenAI Realtime transcription (the second is upstream's alias).
OPENAI_PROVIDER_IDS = frozenset({"openai", "openai-realtime"})

# G.711 mu-law from the phone: 8000 samples a second, one byte each.
ULAW_BYTES_PER_SECOND = 8000

_log = Logger(namespace="voicecalld.voice.stt")


class ITranscriptListener(Interface):
    """
    Hears what the caller says on one call.  Called in the reactor thread;
    must not block.
    """

    def speech_started():
        """The caller started speaking (the barge-in signal)."""

    def speech_stopped():
        """The caller stopped speaking (the end of a turn, before its transcript)."""

    def partial(text):
        """The current turn's words so far (C{text} replaces any earlier partial)."""

    def final(text):
        """One completed caller turn (never empty)."""

    def problem(message):
        """Speech-to-text trouble worth an event; the call goes on."""


class ISTTSession(Interface):
    """One call's transcription: audio in, listener calls out."""

    def feed(ulaw):
        """
        Add C{ulaw} (bytes of 8 kHz mu-law, typically a 20 ms frame) to the
        stream.  Cheap and never blocks or raises: it runs once per frame.
        """

    def close():
        """
        Stop for good: no more listener calls, no reconnects, no timers.
        Returns a L{Deferred} that fires once the socket is gone (callers need
        not wait for it).
        """


class ISTT(Interface):
    """A streaming speech-to-text provider."""

    def open_session(listener):
        """Start transcribing for C{listener} (an L{ITranscriptListener}); an L{ISTTSession}."""


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
