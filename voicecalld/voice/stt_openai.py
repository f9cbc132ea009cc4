"""
OpenAI Realtime transcription as streaming speech-to-text.

One WebSocket per call to C{streaming.sttUrl}, GA protocol: the phone's
mu-law goes through untouched (C{audio/pcmu}) and the server's VAD splits
turns.  A session buffers audio while it connects, batches frames into
appends of about 80 ms, reconnects with backoff when the socket drops
mid-call, and reopens on demand when the vendor closed a socket that had gone
quiet.

Session states, and what moves between them::

    connecting --session.updated----------------> open
    connecting --refused / lost / 10 s timeout--> waiting  (problem, once per outage)
    open       --lost, audio in the last 5 s----> waiting  (problem, once per outage)
    open       --lost, no audio for 5 s---------> idle
    waiting    --backoff timer, audio recent----> connecting
    waiting    --backoff timer, no audio for 5 s> idle
    idle       --feed---------------------------> connecting
    any        --close()------------------------> closed
"""

from __future__ import annotations

import json
from collections import deque
from typing import Any

from autobahn.twisted.websocket import WebSocketClientFactory
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from voicecalld.config.model import OpenAIStreamingSettings
from voicecalld.voice import openai_ws
from voicecalld.voice.openai_ws import OpenAIClientFactory, OpenAIClientProtocol
from voicecalld.voice.stt import ISTT, ULAW_BYTES_PER_SECOND, ISTTSession, ITranscriptListener

CONNECT_TIMEOUT = 10.0
"""Seconds from starting a connection to a configured session."""

BACKOFF = (1.0, 2.0, 4.0, 8.0, 16.0)
"""Delays between reconnect attempts; the last one repeats."""

BATCH_SECONDS = 0.08
"""Audio is sent once this much has gathered, or this long after the oldest unsent frame."""

BATCH_BYTES = int(ULAW_BYTES_PER_SECOND * BATCH_SECONDS)

MAX_BUFFER_BYTES = 5 * ULAW_BYTES_PER_SECOND
"""At most 5 s of audio is kept while there is no socket; older audio is dropped."""

IDLE_AFTER = 5.0
"""A socket lost after this long without audio was closed for idling: reopen on demand."""

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

_CONNECTING = "connecting"
_OPEN = "open"
_WAITING = "waiting"
_IDLE = "idle"
_CLOSED = "closed"


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
class OpenAIRealtimeSTT:
    """Opens OpenAI Realtime transcription sessions: one WebSocket per call."""

    def __init__(
        self,
        settings: OpenAIStreamingSettings,
        url: str,
        reactor: Any,
        clock: IReactorTime | None = None,
    ) -> None:
        self.settings = settings
        self.url = url
        self.reactor = reactor
        self.clock: IReactorTime = clock if clock is not None else reactor
        self._update = json.dumps(session_update(settings)).encode("utf-8")

    def open_session(self, listener: ITranscriptListener) -> OpenAIRealtimeSession:
        """Start a session for one call; it connects at once."""
        return OpenAIRealtimeSession(self, listener)

    def client_factory(self, session: OpenAIRealtimeSession) -> OpenAIClientFactory:
        """The autobahn client factory for C{session}'s sockets."""
        return openai_ws.client_factory(session, self.url, self.settings.api_key, self.reactor)

    def connect(self, factory: WebSocketClientFactory) -> Deferred:
        """Open a TCP (TLS for C{wss}) connection for C{factory}; fire with its protocol."""
        return openai_ws.connect(self.reactor, factory, CONNECT_TIMEOUT)

    @property
    def session_update_message(self) -> bytes:
        """The C{session.update} sent on every new socket."""
        return self._update


@implementer(ISTTSession)
class OpenAIRealtimeSession:
    """One call's transcription over a (re)connecting OpenAI Realtime socket."""

    log = Logger()

    def __init__(self, stt: OpenAIRealtimeSTT, listener: ITranscriptListener) -> None:
        self._stt = stt
        self._listener = listener
        self._clock = stt.clock
        self._factory = stt.client_factory(self)
        self._host = self._factory.host
        self._state = _CONNECTING
        self._attempt: Deferred | None = None
        self._proto: OpenAIClientProtocol | None = None
        self._sockets: set[OpenAIClientProtocol] = set()
        self._gone: list[Deferred] = []
        self._connect_timeout: IDelayedCall | None = None
        self._retry: IDelayedCall | None = None
        self._flush_call: IDelayedCall | None = None
        self._pending = bytearray()
        self._last_fed = self._clock.seconds()
        self._failures = 0
        self._outage_since: float | None = None
        self._dropped = 0
        self._fault_logged = False
        # Per socket: words so far for each item, and finished turns in commit order.
        self._texts: dict[str, str] = {}
        self._order: deque[str] = deque()
        self._done: dict[str, str] = {}
        self._connect()

    @property
    def state(self) -> str:
        """C{connecting}, C{open}, C{waiting}, C{idle} or C{closed}."""
        return self._state

    def feed(self, ulaw: bytes) -> None:
        """Queue caller audio; sent in batches while open, buffered (5 s at most) otherwise."""
        try:
            state = self._state
            if state == _CLOSED:
                return
            self._last_fed = self._clock.seconds()
            pending = self._pending
            pending += ulaw
            if state == _OPEN:
                if len(pending) >= BATCH_BYTES:
                    self._flush()
                elif self._flush_call is None:
                    self._flush_call = self._clock.callLater(BATCH_SECONDS, self._flush)
                return
            excess = len(pending) - MAX_BUFFER_BYTES
            if excess > 0:
                del pending[:excess]
                self._dropped += excess
            if state == _IDLE:
                self._connect()
        except Exception:
            if not self._fault_logged:
                self._fault_logged = True
                self.log.failure("speech-to-text could not take audio", code="stt.fault")

    def close(self) -> Deferred:
        """Stop for good; fires once every socket of this session is gone."""
        if self._state != _CLOSED:
            self._state = _CLOSED
            self._cancel_timers()
            attempt, self._attempt = self._attempt, None
            if attempt is not None:
                attempt.cancel()
            self._proto = None
            for proto in list(self._sockets):
                openai_ws.close_socket(proto)
            self._pending.clear()
            self._forget_turns()
            self.log.info(
                "speech-to-text session closed ({host})", host=self._host, code="stt.closed"
            )
        if not self._sockets:
            return succeed(None)
        gone: Deferred = Deferred()
        self._gone.append(gone)
        return gone

    # Connecting

    def _connect(self) -> None:
        self._state = _CONNECTING
        self._connect_timeout = self._clock.callLater(CONNECT_TIMEOUT, self._timed_out)
        self.log.debug("speech-to-text connecting to {host}", host=self._host, code="stt.connect")
        attempt = maybeDeferred(self._stt.connect, self._factory)
        self._attempt = attempt
        attempt.addCallbacks(
            self._connected, self._connect_failed, callbackArgs=(attempt,), errbackArgs=(attempt,)
        )

    def _connected(self, proto: OpenAIClientProtocol, attempt: Deferred) -> None:
        self._sockets.add(proto)
        if attempt is not self._attempt:
            openai_ws.close_socket(proto)
            return
        self._attempt = None
        self._proto = proto

    def _connect_failed(self, failure: Any, attempt: Deferred) -> None:
        if attempt is not self._attempt:
            return
        self._attempt = None
        self._attempt_failed(failure.getErrorMessage())

    def _timed_out(self) -> None:
        self._connect_timeout = None
        attempt, self._attempt = self._attempt, None
        proto, self._proto = self._proto, None
        if attempt is not None:
            attempt.cancel()
        if proto is not None:
            proto.dropConnection(abort=True)
        self._attempt_failed(f"no session within {CONNECT_TIMEOUT:g} s")

    def _attempt_failed(self, detail: str) -> None:
        self._cancel(self._connect_timeout)
        self._connect_timeout = None
        self._outage("connection failed", detail)

    def _configured(self) -> None:
        self._cancel(self._connect_timeout)
        self._connect_timeout = None
        self._state = _OPEN
        self._failures = 0
        if self._outage_since is None:
            self.log.info("speech-to-text session open ({host})", host=self._host, code="stt.open")
        else:
            self.log.info(
                "speech-to-text reconnected to {host} after {seconds:.1f} s"
                " ({dropped_ms} ms of audio dropped)",
                host=self._host,
                seconds=self._clock.seconds() - self._outage_since,
                dropped_ms=self._dropped * 1000 // ULAW_BYTES_PER_SECOND,
                code="stt.recovered",
            )
            self._outage_since = None
            self._dropped = 0
        if self._pending:
            self._flush()

    def _outage(self, what: str, detail: str) -> None:
        self._state = _WAITING
        delay = BACKOFF[min(self._failures, len(BACKOFF) - 1)]
        self._failures += 1
        self._retry = self._clock.callLater(delay, self._retry_now)
        self.log.warn(
            "speech-to-text {what} ({host}): {detail}; retrying in {delay:g} s",
            what=what,
            host=self._host,
            detail=detail,
            delay=delay,
            code="stt.retry",
        )
        if self._outage_since is None:
            self._outage_since = self._clock.seconds()
            self._tell("problem", f"speech-to-text {what} ({detail}); reconnecting")

    def _retry_now(self) -> None:
        self._retry = None
        if self._quiet():
            self._go_idle("no audio during the outage")
            self._pending.clear()
            return
        self._connect()

    def _quiet(self) -> bool:
        return self._clock.seconds() - self._last_fed >= IDLE_AFTER

    def _go_idle(self, why: str) -> None:
        self._state = _IDLE
        self.log.info(
            "speech-to-text socket to {host} closed ({why}); reopening when audio arrives",
            host=self._host,
            why=why,
            code="stt.idle",
        )

    # Sending

    def _flush(self) -> None:
        call, self._flush_call = self._flush_call, None
        if call is not None and call.active():
            call.cancel()
        proto = self._proto
        if not self._pending or not openai_ws.is_open(proto):
            return
        message = openai_ws.append_message(self._pending)
        self._pending.clear()
        proto.sendMessage(message, isBinary=False)

    # Called by the protocol

    def _opened(self, proto: OpenAIClientProtocol) -> None:
        if proto is self._proto:
            proto.sendMessage(self._stt.session_update_message, isBinary=False)

    def _received(self, proto: OpenAIClientProtocol, payload: bytes, is_binary: bool) -> None:
        if proto is not self._proto or is_binary:
            return
        try:
            event = json.loads(payload)
        except ValueError:
            self.log.warn("speech-to-text server sent something that is not JSON")
            return
        if isinstance(event, dict):
            self._handle(event)

    def _lost(self, proto: OpenAIClientProtocol, detail: str) -> None:
        self._sockets.discard(proto)
        if self._state == _CLOSED:
            if not self._sockets:
                gone, self._gone = self._gone, []
                for d in gone:
                    d.callback(None)
            return
        if proto is not self._proto:
            return
        self._proto = None
        if self._state == _CONNECTING:
            self._attempt_failed(detail)
            return
        self._cancel(self._flush_call)
        self._flush_call = None
        self._release_held_turns()
        self._forget_turns()
        if self._quiet():
            self._go_idle(detail)
        else:
            self._outage("connection lost", detail)

    # Server events

    def _handle(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind in _CONFIGURED:
            if self._state == _CONNECTING:
                self._configured()
        elif kind == _SPEECH_STARTED:
            self._tell("speech_started")
        elif kind == _SPEECH_STOPPED:
            self._tell("speech_stopped")
        elif kind == _DELTA:
            item, delta = event.get("item_id"), event.get("delta")
            if isinstance(item, str) and isinstance(delta, str) and delta:
                text = self._texts.pop(item, "") + delta
                self._texts[item] = text
                if len(self._texts) > 16:
                    del self._texts[next(iter(self._texts))]
                self._tell("partial", text)
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
            self._tell("problem", f"speech-to-text could not transcribe a turn: {message}")
        elif kind == _ERROR:
            self._tell("problem", f"speech-to-text error: {openai_ws.error_message(event)}")

    def _finish(self, item: str, transcript: str) -> None:
        """Deliver a finished turn, in commit order when the server told us the order."""
        if item not in self._order:
            if transcript:
                self._tell("final", transcript)
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
                self._tell("final", text)

    def _release_held_turns(self) -> None:
        for item in self._order:
            text = self._done.get(item)
            if text:
                self._tell("final", text)

    def _forget_turns(self) -> None:
        self._texts.clear()
        self._order.clear()
        self._done.clear()

    # Helpers

    def _tell(self, method: str, *args: Any) -> None:
        if self._state == _CLOSED:
            return
        try:
            getattr(self._listener, method)(*args)
        except Exception:
            self.log.failure("transcript listener failed in {method}", method=method)

    def _cancel_timers(self) -> None:
        for call in (self._flush_call, self._retry, self._connect_timeout):
            self._cancel(call)
        self._flush_call = self._retry = self._connect_timeout = None

    @staticmethod
    def _cancel(call: IDelayedCall | None) -> None:
        if call is not None and call.active():
            call.cancel()


def _item(event: dict[str, Any]) -> str:
    item = event.get("item_id")
    return item if isinstance(item, str) else ""
