"""
Deepgram live transcription (listen v1) as streaming speech-to-text.

One WebSocket per call to C{streaming.providers.deepgram.baseUrl} with the
settings in the query string and C{Authorization: Token <key>}.  The phone's
mu-law goes out untouched as binary frames of about 100 ms.  Deepgram's
answers become listener calls:

  - C{SpeechStarted} (with C{vad_events}) or the first words of a turn:
    speech started;
  - interim C{Results}: the turn's words so far;
  - C{is_final} C{Results}: one more settled segment of the turn;
  - C{speech_final} C{Results}, or C{UtteranceEnd} after settled segments:
    speech stopped, then the turn's segments as one final.

A socket that carries no audio for a while gets a C{KeepAlive} so Deepgram
does not close it; C{close()} says C{CloseStream} first.
"""

from __future__ import annotations

from typing import Any

from autobahn.twisted.websocket import WebSocketClientProtocol
from twisted.internet.interfaces import IDelayedCall
from zope.interface import implementer

from voicecalld.config.model import DeepgramStreamingSettings
from voicecalld.voice.stt import ISTT, ISTTSession, ITranscriptListener
from voicecalld.voice.stt_socket import OPEN, StreamingSession, StreamingSTT
from voicecalld.voice.vendor_socket import cancel, with_query

KEEPALIVE_CHECK = 2.0
"""How often an open socket is checked for silence on our side."""

KEEPALIVE_AFTER = 4.0
"""Seconds without audio after which a C{KeepAlive} goes out (Deepgram gives up at 10)."""

_KEEPALIVE = {"type": "KeepAlive"}
_CLOSE_STREAM = {"type": "CloseStream"}


def _flag(value: bool) -> str:
    return "true" if value else "false"


def listen_query(settings: DeepgramStreamingSettings) -> list[tuple[str, str]]:
    """The query parameters that configure a listen socket for phone audio."""
    query = [
        ("model", settings.model),
        ("encoding", settings.encoding),
        ("sample_rate", str(settings.sample_rate)),
        ("channels", "1"),
        ("interim_results", _flag(settings.interim_results)),
        ("endpointing", str(settings.endpointing_ms)),
        ("vad_events", _flag(settings.vad_events)),
        ("punctuate", "true"),
        ("smart_format", _flag(settings.smart_format)),
    ]
    # Deepgram refuses utterance_end_ms without interim results.
    if settings.interim_results:
        query.append(("utterance_end_ms", str(settings.utterance_end_ms)))
    if settings.language:
        query.append(("language", settings.language))
    return query


@implementer(ISTT)
class DeepgramSTT(StreamingSTT):
    """Opens Deepgram live transcription sessions: one WebSocket per call."""

    def __init__(
        self, settings: DeepgramStreamingSettings, reactor: Any, clock: Any = None
    ) -> None:
        super().__init__(with_query(settings.base_url, listen_query(settings)), reactor, clock)
        self.settings = settings

    def headers(self) -> dict[str, str]:
        """Deepgram's token header."""
        key = self.settings.api_key.reveal() if self.settings.api_key is not None else ""
        return {"Authorization": f"Token {key}"}

    def open_session(self, listener: ITranscriptListener) -> DeepgramSession:
        """Start a session for one call; it connects at once."""
        return DeepgramSession(self, listener)


@implementer(ISTTSession)
class DeepgramSession(StreamingSession):
    """One call's transcription over a (re)connecting Deepgram listen socket."""

    batch_seconds = 0.1
    ready_on_open = True

    def __init__(self, stt: DeepgramSTT, listener: ITranscriptListener) -> None:
        self._keepalive: IDelayedCall | None = None
        self._segments: list[str] = []
        super().__init__(stt, listener)

    # The wire format

    def became_ready(self) -> None:
        """Start watching for silence on our side."""
        self._schedule_keepalive()

    def goodbye(self, proto: WebSocketClientProtocol) -> None:
        """Ask Deepgram to finish what it has before the socket closes."""
        self.send_json(_CLOSE_STREAM)

    def socket_gone(self) -> None:
        """Deliver the settled part of an unfinished turn; stop the keepalive."""
        cancel(self._keepalive)
        self._keepalive = None
        if self._segments:
            self._end_turn()
        self._segments.clear()
        self._in_turn = False

    def cancel_timers(self) -> None:
        """The shared timers and the keepalive."""
        super().cancel_timers()
        cancel(self._keepalive)
        self._keepalive = None

    def handle(self, event: dict[str, Any]) -> None:
        """One Deepgram server message."""
        kind = event.get("type")
        if kind == "Results":
            self._results(event)
        elif kind == "SpeechStarted":
            self.start_turn()
        elif kind == "UtteranceEnd":
            if self._segments:
                self._end_turn()
        elif kind == "Metadata":
            self.log.debug(
                "Deepgram request {request_id}",
                request_id=event.get("request_id"),
                log_code="stt.metadata",
            )
        elif kind in ("Error", "error"):
            detail = next(
                (
                    v
                    for k in ("description", "message", "variant")
                    if isinstance(v := event.get(k), str) and v
                ),
                "unknown error",
            )
            self.tell("problem", f"speech-to-text error: {detail}")

    # Turns

    def _results(self, event: dict[str, Any]) -> None:
        transcript = _transcript(event)
        if event.get("is_final") is True:
            if transcript:
                self._segments.append(transcript)
                self.start_turn()
                self.tell("partial", " ".join(self._segments))
            if event.get("speech_final") is True:
                self._end_turn()
        elif transcript:
            self.start_turn()
            self.tell("partial", " ".join([*self._segments, transcript]))

    def _end_turn(self) -> None:
        text = " ".join(self._segments)
        self._segments.clear()
        self.end_turn(text)

    # Keepalive

    def _schedule_keepalive(self) -> None:
        cancel(self._keepalive)
        self._keepalive = self.clock.callLater(KEEPALIVE_CHECK, self._check_keepalive)

    def _check_keepalive(self) -> None:
        self._keepalive = None
        if self.state != OPEN:
            return
        if self.clock.seconds() - self.last_sent >= KEEPALIVE_AFTER and self.send_json(_KEEPALIVE):
            self.touched()
        self._schedule_keepalive()


def _transcript(event: dict[str, Any]) -> str:
    channel = event.get("channel")
    if not isinstance(channel, dict):
        return ""
    alternatives = channel.get("alternatives")
    if not isinstance(alternatives, list) or not alternatives:
        return ""
    first = alternatives[0]
    text = first.get("transcript") if isinstance(first, dict) else None
    return text.strip() if isinstance(text, str) else ""
