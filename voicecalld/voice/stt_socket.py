"""
What every streaming speech-to-text vendor shares: one WebSocket per call,
audio buffered while it connects, batched while open, reconnects with
backoff when it drops mid-call, and reopens on demand once a quiet socket
was closed.  A vendor module subclasses L{StreamingSTT} and
L{StreamingSession} and supplies the wire format (what to send on open, how
audio is framed, what the server's messages mean).

Session states, and what moves between them::

    connecting --ready----------------------------> open
    connecting --refused / lost / 10 s timeout----> waiting  (problem, once per outage)
    open       --lost, audio in the last 5 s------> waiting  (problem, once per outage)
    open       --lost, no audio for 5 s-----------> idle
    waiting    --backoff timer, audio recent------> connecting
    waiting    --backoff timer, no audio for 5 s--> idle
    idle       --feed-----------------------------> connecting
    any        --close()--------------------------> closed
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from voicecalld.voice import vendor_socket
from voicecalld.voice.audio_batch import AudioBatcher
from voicecalld.voice.stt import ULAW_BYTES_PER_SECOND, ITranscriptListener
from voicecalld.voice.vendor_socket import (
    SocketSet,
    VendorClientFactory,
    cancel,
    close_socket,
    is_open,
)

CONNECT_TIMEOUT = 10.0
"""Seconds from starting a connection to a ready session."""

BACKOFF = (1.0, 2.0, 4.0, 8.0, 16.0)
"""Delays between reconnect attempts; the last one repeats."""

MAX_BUFFER_BYTES = 5 * ULAW_BYTES_PER_SECOND
"""At most 5 s of audio is kept while there is no socket; older audio is dropped."""

IDLE_AFTER = 5.0
"""A socket lost after this long without audio was closed for idling: reopen on demand."""

CONNECTING = "connecting"
OPEN = "open"
WAITING = "waiting"
IDLE = "idle"
CLOSED = "closed"


class StreamingSTT:
    """
    A vendor's provider: dials C{url} with C{headers()} for each session.
    Subclasses give L{headers} and C{open_session} (which builds their session).
    """

    def __init__(self, url: str, reactor: Any, clock: IReactorTime | None = None) -> None:
        self.url = url
        self.reactor = reactor
        self.clock: IReactorTime = clock if clock is not None else reactor

    def headers(self) -> dict[str, str]:
        """The handshake's extra headers (the vendor's key)."""
        return {}

    def client_factory(self, session: StreamingSession) -> VendorClientFactory:
        """The autobahn client factory for C{session}'s sockets."""
        return vendor_socket.client_factory(session, self.url, self.headers(), self.reactor)

    def connect(self, factory: WebSocketClientFactory) -> Deferred:
        """Open a TCP (TLS for C{wss}) connection for C{factory}; fire with its protocol."""
        return vendor_socket.connect(self.reactor, factory, CONNECT_TIMEOUT)


class StreamingSession:
    """
    One call's transcription over a (re)connecting vendor socket.

    Subclasses say how audio goes out (L{encode}), what is sent on a new
    socket (L{hello}), whether the socket is usable at once
    (L{ready_on_open}) or only after a server message (they call L{ready}),
    and what server messages mean (L{handle}).
    """

    log = Logger(namespace="voicecalld.voice.stt")

    batch_seconds: ClassVar[float] = 0.1
    """Audio is sent once this much has gathered, or this long after the oldest unsent frame."""

    ready_on_open: ClassVar[bool] = True

    _in_turn = False
    """Whether the caller's turn began (L{start_turn}) and has not ended yet."""

    def __init__(self, stt: StreamingSTT, listener: ITranscriptListener) -> None:
        self._stt = stt
        self._listener = listener
        self._clock = stt.clock
        self._factory = stt.client_factory(self)
        self._host = self._factory.host
        self._state = CONNECTING
        self._attempt: Deferred | None = None
        self._proto: WebSocketClientProtocol | None = None
        self._sockets = SocketSet()
        self._connect_timeout: IDelayedCall | None = None
        self._retry: IDelayedCall | None = None
        self._audio = AudioBatcher(
            self._clock,
            self._send_audio,
            lambda: is_open(self._proto),
            self.batch_seconds,
            MAX_BUFFER_BYTES,
        )
        self._last_fed = self._clock.seconds()
        self._last_sent = self._clock.seconds()
        self._failures = 0
        self._outage_since: float | None = None
        self._fault_logged = False
        self._connect()

    # What a vendor supplies

    def hello(self, proto: WebSocketClientProtocol) -> None:
        """Send what a new socket needs first (nothing by default)."""

    def encode(self, audio: bytes) -> tuple[bytes, bool]:
        """One batch of mu-law as a WebSocket message: (payload, is_binary)."""
        return audio, True

    def handle(self, event: dict[str, Any]) -> None:
        """A JSON object from the server."""

    def goodbye(self, proto: WebSocketClientProtocol) -> None:
        """Send what the vendor wants before we close the socket (nothing by default)."""

    def socket_gone(self) -> None:
        """The current socket is gone: forget per-socket turn state."""

    def became_ready(self) -> None:
        """The session just became open (start vendor timers here)."""

    # The interface

    @property
    def state(self) -> str:
        """C{connecting}, C{open}, C{waiting}, C{idle} or C{closed}."""
        return self._state

    def feed(self, ulaw: bytes) -> None:
        """Queue caller audio; sent in batches while open, buffered (5 s at most) otherwise."""
        try:
            state = self._state
            if state == CLOSED:
                return
            self._last_fed = self._clock.seconds()
            self._audio.add(ulaw, state == OPEN)
            if state == IDLE:
                self._connect()
        except Exception:
            if not self._fault_logged:
                self._fault_logged = True
                self.log.failure("speech-to-text could not take audio", log_code="stt.fault")

    def close(self) -> Deferred:
        """Stop for good; fires once every socket of this session is gone."""
        if self._state != CLOSED:
            self._state = CLOSED
            self.cancel_timers()
            attempt, self._attempt = self._attempt, None
            if attempt is not None:
                attempt.cancel()
            proto = self._proto
            if is_open(proto):
                try:
                    self.goodbye(proto)
                except Exception:
                    self.log.failure("speech-to-text goodbye failed", log_code="stt.fault")
            self._proto = None
            self._sockets.close_all()
            self._audio.clear()
            self.socket_gone()
            self.log.debug(
                "speech-to-text session closed ({host})", host=self._host, log_code="stt.closed"
            )
        return self._sockets.gone()

    # For subclasses

    def ready(self) -> None:
        """The socket is usable: send what was buffered."""
        if self._state != CONNECTING:
            return
        cancel(self._connect_timeout)
        self._connect_timeout = None
        self._state = OPEN
        self._failures = 0
        if self._outage_since is None:
            self.log.debug(
                "speech-to-text session open ({host})", host=self._host, log_code="stt.open"
            )
        else:
            self.log.info(
                "speech-to-text reconnected to {host} after {seconds:.1f} s"
                " ({dropped_ms} ms of audio dropped)",
                host=self._host,
                seconds=self._clock.seconds() - self._outage_since,
                dropped_ms=self._audio.dropped * 1000 // ULAW_BYTES_PER_SECOND,
                log_code="stt.recovered",
            )
            self._outage_since = None
            self._audio.dropped = 0
        self._last_sent = self._clock.seconds()
        self.became_ready()
        self._audio.release()

    def send_json(self, message: dict[str, Any]) -> bool:
        """Send C{message} on the open socket; whether it went."""
        proto = self._proto
        if not is_open(proto):
            return False
        proto.sendMessage(json.dumps(message).encode("utf-8"), isBinary=False)
        return True

    def tell(self, method: str, *args: Any) -> None:
        """Call the listener's C{method}, unless closed; its errors are logged, not raised."""
        if self._state == CLOSED:
            return
        try:
            getattr(self._listener, method)(*args)
        except Exception:
            self.log.failure(
                "transcript listener failed in {method}",
                method=method,
                log_code="stt.listener_fault",
            )

    def start_turn(self) -> None:
        """The caller is speaking: C{speech_started}, once a turn."""
        if not self._in_turn:
            self._in_turn = True
            self.tell("speech_started")

    def end_turn(self, text: str) -> None:
        """The caller's turn is over: C{speech_stopped}, then C{text} as its final (if any)."""
        if not (self._in_turn or text):
            return
        self._in_turn = False
        self.tell("speech_stopped")
        if text:
            self.tell("final", text)

    @property
    def clock(self) -> IReactorTime:
        """The session's clock."""
        return self._clock

    @property
    def last_sent(self) -> float:
        """When audio (or anything the vendor counts as activity) last went out."""
        return self._last_sent

    def touched(self) -> None:
        """Something that keeps the socket alive was just sent."""
        self._last_sent = self._clock.seconds()

    def cancel_timers(self) -> None:
        """Cancel the session's timers (subclasses extend this with their own)."""
        self._audio.stop()
        for call in (self._retry, self._connect_timeout):
            cancel(call)
        self._retry = self._connect_timeout = None

    # Connecting

    def _connect(self) -> None:
        self._state = CONNECTING
        self._connect_timeout = self._clock.callLater(CONNECT_TIMEOUT, self._timed_out)
        self.log.debug(
            "speech-to-text connecting to {host}", host=self._host, log_code="stt.connect"
        )
        attempt = maybeDeferred(self._stt.connect, self._factory)
        self._attempt = attempt
        attempt.addCallbacks(
            self._connected, self._connect_failed, callbackArgs=(attempt,), errbackArgs=(attempt,)
        )

    def _connected(self, proto: WebSocketClientProtocol, attempt: Deferred) -> None:
        self._sockets.add(proto)
        if attempt is not self._attempt:
            close_socket(proto)
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
        cancel(self._connect_timeout)
        self._connect_timeout = None
        self._outage("connection failed", detail)

    def _outage(self, what: str, detail: str) -> None:
        self._state = WAITING
        delay = BACKOFF[min(self._failures, len(BACKOFF) - 1)]
        self._failures += 1
        self._retry = self._clock.callLater(delay, self._retry_now)
        self.log.warn(
            "speech-to-text {what} ({host}): {detail}; retrying in {delay:g} s",
            what=what,
            host=self._host,
            detail=detail,
            delay=delay,
            log_code="stt.retry",
        )
        if self._outage_since is None:
            self._outage_since = self._clock.seconds()
            self.tell("problem", f"speech-to-text {what} ({detail}); reconnecting")

    def _retry_now(self) -> None:
        self._retry = None
        if self._quiet():
            self._go_idle("no audio during the outage")
            self._audio.clear()
            return
        self._connect()

    def _quiet(self) -> bool:
        return self._clock.seconds() - self._last_fed >= IDLE_AFTER

    def _go_idle(self, why: str) -> None:
        self._state = IDLE
        self.log.debug(
            "speech-to-text socket to {host} closed ({why}); reopening when audio arrives",
            host=self._host,
            why=why,
            log_code="stt.idle",
        )

    # Sending

    def _send_audio(self, audio: bytes) -> None:
        payload, is_binary = self.encode(audio)
        self._proto.sendMessage(payload, isBinary=is_binary)
        self._last_sent = self._clock.seconds()

    # Called by the protocol

    def _opened(self, proto: WebSocketClientProtocol) -> None:
        if proto is not self._proto:
            return
        self.hello(proto)
        if self.ready_on_open:
            self.ready()

    def _received(self, proto: WebSocketClientProtocol, payload: bytes, is_binary: bool) -> None:
        if proto is not self._proto or is_binary:
            return
        try:
            event = json.loads(payload)
        except ValueError:
            self.log.warn(
                "speech-to-text server sent something that is not JSON", log_code="stt.bad_message"
            )
            return
        if isinstance(event, dict):
            self.handle(event)

    def _lost(self, proto: WebSocketClientProtocol, detail: str) -> None:
        self._sockets.discard(proto)
        if self._state == CLOSED:
            return
        if proto is not self._proto:
            return
        self._proto = None
        if self._state == CONNECTING:
            self._attempt_failed(detail)
            return
        self._audio.stop()
        self.socket_gone()
        if self._quiet():
            self._go_idle(detail)
        else:
            self._outage("connection lost", detail)
