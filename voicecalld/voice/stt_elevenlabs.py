"""
ElevenLabs Scribe realtime transcription as streaming speech-to-text.

One WebSocket per call to C{<baseUrl>/v1/speech-to-text/realtime} with the
settings in the query string and the C{xi-api-key} header.  The phone's
mu-law goes out untouched (C{ulaw_8000}) in C{input_audio_chunk} messages
of about 100 ms; the server's VAD commits turns.  The session is ready once
the server says C{session_started}.  A C{partial_transcript} is the turn's
words so far (the first one of a turn is the speech-started signal); a
C{committed_transcript} ends the turn: speech stopped, then the final.
"""

from __future__ import annotations

import json
from base64 import b64encode
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from zope.interface import implementer

from voicecalld.config.model import ElevenLabsStreamingSettings
from voicecalld.voice.stt import ISTT, ISTTSession, ITranscriptListener
from voicecalld.voice.stt_socket import StreamingSession, StreamingSTT
from voicecalld.voice.vendor_socket import with_query

REALTIME_PATH = "/v1/speech-to-text/realtime"

_WS_SCHEMES = {"http": "ws", "https": "wss"}

# Server message types that report trouble (the SDK's error family).
ERROR_TYPES = frozenset(
    {
        "error",
        "auth_error",
        "quota_exceeded",
        "commit_throttled",
        "transcriber_error",
        "unaccepted_terms",
        "rate_limited",
        "input_error",
        "queue_overflow",
        "resource_exhausted",
        "session_time_limit_exceeded",
        "chunk_size_exceeded",
        "insufficient_audio_activity",
    }
)


def realtime_url(settings: ElevenLabsStreamingSettings) -> str:
    """The realtime socket's URL: the base (http(s) becomes ws(s)), the path, the settings."""
    parts = urlsplit(settings.base_url)
    scheme = _WS_SCHEMES.get(parts.scheme, parts.scheme)
    path = parts.path.rstrip("/")
    if not path.endswith(REALTIME_PATH):
        path += REALTIME_PATH
    base = urlunsplit((scheme, parts.netloc, path, parts.query, ""))
    query = [
        ("model_id", settings.model_id),
        ("audio_format", settings.audio_format),
        ("commit_strategy", settings.commit_strategy),
    ]
    if settings.language_code:
        query.append(("language_code", settings.language_code))
    if settings.vad_silence_threshold_secs is not None:
        query.append(("vad_silence_threshold_secs", f"{settings.vad_silence_threshold_secs:g}"))
    if settings.vad_threshold is not None:
        query.append(("vad_threshold", f"{settings.vad_threshold:g}"))
    return with_query(base, query)


@implementer(ISTT)
class ElevenLabsRealtimeSTT(StreamingSTT):
    """Opens ElevenLabs realtime transcription sessions: one WebSocket per call."""

    def __init__(
        self, settings: ElevenLabsStreamingSettings, reactor: Any, clock: Any = None
    ) -> None:
        super().__init__(realtime_url(settings), reactor, clock)
        self.settings = settings
        # Everything but the audio is the same in every chunk.
        head = {"message_type": "input_audio_chunk", "commit": False}
        head["sample_rate"] = settings.sample_rate
        self._chunk_head = json.dumps(head)[:-1].encode("utf-8") + b', "audio_base_64": "'

    def headers(self) -> dict[str, str]:
        """ElevenLabs' key header."""
        key = self.settings.api_key.reveal() if self.settings.api_key is not None else ""
        return {"xi-api-key": key}

    def open_session(self, listener: ITranscriptListener) -> ElevenLabsRealtimeSession:
        """Start a session for one call; it connects at once."""
        return ElevenLabsRealtimeSession(self, listener)

    def chunk(self, audio: bytes) -> bytes:
        """One C{input_audio_chunk} message carrying C{audio}."""
        return self._chunk_head + b64encode(audio) + b'"}'


@implementer(ISTTSession)
class ElevenLabsRealtimeSession(StreamingSession):
    """One call's transcription over a (re)connecting ElevenLabs realtime socket."""

    batch_seconds = 0.1
    ready_on_open = False

    def __init__(self, stt: ElevenLabsRealtimeSTT, listener: ITranscriptListener) -> None:
        self._eleven = stt
        self._just_committed: str | None = None
        super().__init__(stt, listener)

    def encode(self, audio: bytes) -> tuple[bytes, bool]:
        """An C{input_audio_chunk}."""
        return self._eleven.chunk(audio), False

    def socket_gone(self) -> None:
        """A turn in progress ends with the socket (its words are lost)."""
        self._in_turn = False
        self._just_committed = None

    def handle(self, event: dict[str, Any]) -> None:
        """One ElevenLabs server message."""
        kind = event.get("message_type")
        text = event.get("text")
        text = text.strip() if isinstance(text, str) else ""
        committed, self._just_committed = self._just_committed, None
        if kind == "session_started":
            self.ready()
        elif kind == "partial_transcript":
            if text:
                self.start_turn()
                self.tell("partial", text)
        elif kind == "committed_transcript":
            self.end_turn(text)
            self._just_committed = text
        elif kind == "committed_transcript_with_timestamps":
            # With timestamps on, this follows the plain commit of the same turn.
            if committed != text:
                self.end_turn(text)
        elif isinstance(kind, str) and (kind in ERROR_TYPES or kind.endswith("error")):
            detail = event.get("error") or event.get("message") or kind
            self.tell("problem", f"speech-to-text error ({kind}): {detail}")
