"""
OpenAI Realtime transcription as streaming speech-to-text.

One WebSocket per call to C{streaming.sttUrl}, GA protocol: the phone's
mu-law goes through untouched (C{audio/pcmu}) and the server's VAD splits
turns.  A session buffers audio while it connects, batches frames into
appends of about 80 ms, reconnects with backoff when the socket drops
mid-call, and reopens on demand when the vendor closed a socket that had gone
quiet.

The connection rules (states, backoff, idling) are
L{voicecalld.voice.stt_socket}'s.
"""

from __future__ import annotations

import json
from collections import deque
from typing import Any

from autobahn.websocket.protocol import WebSocketProtocol
from zope.interface import implementer

from voicecalld.config.model import OpenAIStreamingSettings
from voicecalld.voice import openai_ws
from voicecalld.voice.stt import ISTT, ULAW_BYTES_PER_SECOND, ISTTSession, ITranscriptListener
from voicecalld.voice.stt_socket import (
    BACKOFF,
    CONNECT_TIMEOUT,
    IDLE_AFTER,
    MAX_BUFFER_BYTES,
    StreamingSession,
    StreamingSTT,
)

__all__ = [
    "BACKOFF",
    "BATCH_BYTES",
    "BATCH_SECONDS",
    "CONNECT_TIMEOUT",
    "IDLE_AFTER",
    "MAX_BUFFER_BYTES",
    "OpenAIRealtimeSTT",
    "OpenAIRealtimeSession",
    "session_update",
]

BATCH_SECONDS = 0.08
"""OpenAI audio goes out in appends of about 80 ms."""

BATCH_BYTES = int(ULAW_BYTES_PER_SECOND * BATCH_SECONDS)

MAX_HELD_TURNS = 2
"""Finished turns held back waiting for an earlier one before giving up on it."""


# Server events.  The beta protocol names its session events differently; the
# rest are shared.
_CONFIGURED = frozenset({"session.updated", "transcription_session.updated"})
_SPEECH_STARTED = "input_audio_buffer.speech_started"
_SPEECH_STOPPED = "input_audio_buffer.speech_stopped"
_COMMITTED = "input_audio_buffer.committed"
_DELTA = "conversation.item.input_audio_transcription.delta"
_COMPLETED = "conversation.item.input_audio_transcription.completed"
_FAILED = "conversation.item.input_audio_transcription.failed"
_ERROR = "error"


def session_update(settings: OpenAIStreamingSettings) -> dict[str, Any]:
    """The GA C{session.update} that makes a transcription session for phone audio."""
    transcription: dict[str, Any] = {"model": settings.model}
    if settings.language:
        transcription["language"] = settings.language
    if settings.prompt:
        transcription["prompt"] = settings.prompt
    return {
        "type": "session.update",
        "session": {
            "type": "transcription",
            "audio": {
                "input": {
                    "format": {"type": "audio/pcmu"},
                    "transcription": transcription,
                    "turn_detection": {
                        "type": "server_vad",
                        "threshold": settings.vad_threshold,
                        "prefix_padding_ms": 300,
                        "silence_duration_ms": settings.silence_duration_ms,
                    },
                }
            },
        },
    }


@implementer(ISTT)
class OpenAIRealtimeSTT(StreamingSTT):
    """Opens OpenAI Realtime transcription sessions: one WebSocket per call."""

    def __init__(
        self,
        settings: OpenAIStreamingSettings,
        url: str,
        reactor: Any,
        clock: Any = None,
    ) -> None:
        super().__init__(url, reactor, clock)
        self.settings = settings
        self._update = json.dumps(session_update(settings)).encode("utf-8")

    def headers(self) -> dict[str, str]:
        """The bearer key."""
        return openai_ws.bearer_headers(self.settings.api_key)

    def open_session(self, listener: ITranscriptListener) -> OpenAIRealtimeSession:
        """Start a session for one call; it connects at once."""
        return OpenAIRealtimeSession(self, listener)

    @property
    def session_update_message(self) -> bytes:
        """The C{session.update} sent on every new socket."""
        return self._update


@implementer(ISTTSession)
class OpenAIRealtimeSession(StreamingSession):
    """One call's transcription over a (re)connecting OpenAI Realtime socket."""

    batch_seconds = BATCH_SECONDS
    ready_on_open = False

    def __init__(self, stt: OpenAIRealtimeSTT, listener: ITranscriptListener) -> None:
        # Per socket: words so far for each item, and finished turns in commit order.
        self._texts: dict[str, str] = {}
        self._order: deque[str] = deque()
        self._done: dict[str, str] = {}
        self._openai = stt
        super().__init__(stt, listener)

    # The wire format

    def hello(self, proto: WebSocketProtocol) -> None:
        """Configure the transcription session."""
        proto.sendMessage(self._openai.session_update_message, isBinary=False)

    def encode(self, audio: bytes) -> tuple[bytes, bool]:
        """An C{input_audio_buffer.append}."""
        return openai_ws.append_message(audio), False

    def socket_gone(self) -> None:
        """Deliver turns held for ordering, then forget the socket's items."""
        self._release_held_turns()
        self._forget_turns()

    # Server events

    def handle(self, event: dict[str, Any]) -> None:
        """One OpenAI server event."""
        kind = event.get("type")
        if kind in _CONFIGURED:
            self.ready()
        elif kind == _SPEECH_STARTED:
            self.tell("speech_started")
        elif kind == _SPEECH_STOPPED:
            self.tell("speech_stopped")
        elif kind == _DELTA:
            item, delta = event.get("item_id"), event.get("delta")
            if isinstance(item, str) and isinstance(delta, str) and delta:
                text = self._texts.pop(item, "") + delta
                self._texts[item] = text
                if len(self._texts) > 16:
                    del self._texts[next(iter(self._texts))]
                self.tell("partial", text)
        elif kind == _COMMITTED:
            item = event.get("item_id")
            if isinstance(item, str) and item not in self._order:
                self._order.append(item)
                if len(self._order) > 16:
                    self._done.pop(self._order.popleft(), None)
        elif kind == _COMPLETED:
            item, transcript = _item(event), event.get("transcript")
            self._texts.pop(item, None)
            self._finish(item, transcript.strip() if isinstance(transcript, str) else "")
        elif kind == _FAILED:
            item = _item(event)
            self._texts.pop(item, None)
            self._finish(item, "")
            message = openai_ws.error_message(event)
            self.tell("problem", f"speech-to-text could not transcribe a turn: {message}")
        elif kind == _ERROR:
            self.tell("problem", f"speech-to-text error: {openai_ws.error_message(event)}")

    def _finish(self, item: str, transcript: str) -> None:
        """Deliver a finished turn, in commit order when the server told us the order."""
        if item not in self._order:
            if transcript:
                self.tell("final", transcript)
            return
        self._done[item] = transcript
        while self._order:
            head = self._order[0]
            if head not in self._done:
                if len(self._done) <= MAX_HELD_TURNS:
                    break
                # That turn is not coming; stop holding the later ones for it.
                self._order.popleft()
                continue
            self._order.popleft()
            text = self._done.pop(head)
            if text:
                self.tell("final", text)

    def _release_held_turns(self) -> None:
        for item in self._order:
            text = self._done.get(item)
            if text:
                self.tell("final", text)

    def _forget_turns(self) -> None:
        self._texts.clear()
        self._order.clear()
        self._done.clear()


def _item(event: dict[str, Any]) -> str:
    item = event.get("item_id")
    return item if isinstance(item, str) else ""
