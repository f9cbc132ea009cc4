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
from urllib.parse import urlencode

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from autobahn.websocket.protocol import WebSocketProtocol
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.ssl import optionsForClientTLS
from twisted.logger import Logger

from voicecalld.voice.stt import ULAW_BYTES_PER_SECOND, ITranscriptListener

CONNECT_TIMEOUT = 10.0
"""Seconds from starting a connection to a ready session."""

BACKOFF = (1.0, 2.0, 4.0, 8.0, 16.0)
"""Delays between reconnect attempts; the last one repeats."""

MAX_BUFFER_BYTES = 5 * ULAW_BYTES_PER_SECOND
"""At most 5 s of audio is kept while there is no socket; older audio is dropped."""

IDLE_AFTER = 5.0
"""A socket lost after this long without audio was closed for idling: reopen on demand."""

PING_INTERVAL = 15.0
PING_TIMEOUT = 10.0

USER_AGENT = "voicecalld"

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
        factory = VendorClientFactory(
            session,
            url=self.url,
            headers=self.headers(),
            useragent=USER_AGENT,
            reactor=self.reactor,
        )
        # The connect timeout runs on our clock, covering the handshake too.
        factory.setProtocolOptions(
            openHandshakeTimeout=0, autoPingInterval=PING_INTERVAL, autoPingTimeout=PING_TIMEOUT
        )
        return factory

    def connect(self, factory: WebSocketClientFactory) -> Deferred:
        """Open a TCP (TLS for C{wss}) connection for C{factory}; fire with its protocol."""
        endpoint = HostnameEndpoint(
            self.reactor, factory.host, factory.port, timeout=CONNECT_TIMEOUT
        )
        if factory.isSecure:
            endpoint = wrapClientTLS(optionsForClientTLS(factory.host), endpoint)
        return endpoint.connect(factory)


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

    def __init__(self, stt: StreamingSTT, listener: ITranscriptListener) -> None:
        self._stt = stt
        self._listener = listener
        self._clock = stt.clock
        self._batch_bytes = int(ULAW_BYTES_PER_SECOND * self.batch_seconds)
        self._factory = stt.client_factory(self)
        self._host = self._factory.host
        self._state = CONNECTING
        self._attempt: Deferred | None = None
        self._proto: WebSocketClientProtocol | None = None
        self._sockets: set[WebSocketClientProtocol] = set()
        self._gone: list[Deferred] = []
        self._connect_timeout: IDelayedCall | None = None
        self._retry: IDelayedCall | None = None
        self._flush_call: IDelayedCall | None = None
        self._pending = bytearray()
        self._last_fed = self._clock.seconds()
        self._last_sent = self._clock.seconds()
        self._failures = 0
        self._outage_since: float | None = None
        self._dropped = 0
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
            pending = self._pending
            pending += ulaw
            if state == OPEN:
                if len(pending) >= self._batch_bytes:
                    self._flush()
                elif self._flush_call is None:
                    self._flush_call = self._clock.callLater(self.batch_seconds, self._flush)
                return
            excess = len(pending) - MAX_BUFFER_BYTES
            if excess > 0:
                del pending[:excess]
                self._dropped += excess
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
            if proto is not None and proto.state == WebSocketProtocol.STATE_OPEN:
                try:
                    self.goodbye(proto)
                except Exception:
                    self.log.failure("speech-to-text goodbye failed", log_code="stt.fault")
            self._proto = None
            for each in list(self._sockets):
                close_socket(each)
            self._pending.clear()
            self.socket_gone()
            self.log.debug(
                "speech-to-text session closed ({host})", host=self._host, log_code="stt.closed"
            )
        if not self._sockets:
            return succeed(None)
        gone: Deferred = Deferred()
        self._gone.append(gone)
        return gone

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
                dropped_ms=self._dropped * 1000 // ULAW_BYTES_PER_SECOND,
                log_code="stt.recovered",
            )
            self._outage_since = None
            self._dropped = 0
        self._last_sent = self._clock.seconds()
        self.became_ready()
        if self._pending:
            self._flush()

    def send_json(self, message: dict[str, Any]) -> bool:
        """Send C{message} on the open socket; whether it went."""
        proto = self._proto
        if proto is None or proto.state != WebSocketProtocol.STATE_OPEN:
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
        for call in (self._flush_call, self._retry, self._connect_timeout):
            cancel(call)
        self._flush_call = self._retry = self._connect_timeout = None

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
            self._pending.clear()
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

    def _flush(self) -> None:
        call, self._flush_call = self._flush_call, None
        if call is not None and call.active():
            call.cancel()
        proto = self._proto
        if not self._pending or proto is None or proto.state != WebSocketProtocol.STATE_OPEN:
            return
        payload, is_binary = self.encode(bytes(self._pending))
        self._pending.clear()
        proto.sendMessage(payload, isBinary=is_binary)
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
            if not self._sockets:
                gone, self._gone = self._gone, []
                for d in gone:
                    d.callback(None)
            return
        if proto is not self._proto:
            return
        self._proto = None
        if self._state == CONNECTING:
            self._attempt_failed(detail)
            return
        cancel(self._flush_call)
        self._flush_call = None
        self.socket_gone()
        if self._quiet():
            self._go_idle(detail)
        else:
            self._outage("connection lost", detail)


class VendorClientProtocol(WebSocketClientProtocol):
    """Hands socket happenings to the session that owns the factory."""

    factory: VendorClientFactory

    def onOpen(self) -> None:
        self.factory.session._opened(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.factory.session._received(self, payload, isBinary)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if wasClean:
            detail = f"closed by the server (code {code}{': ' + reason if reason else ''})"
        else:
            detail = reason or "connection dropped"
        self.factory.session._lost(self, detail)


class VendorClientFactory(WebSocketClientFactory):
    """Builds L{VendorClientProtocol}s for one session."""

    protocol = VendorClientProtocol
    noisy = False

    def __init__(self, session: StreamingSession, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.session = session


def close_socket(proto: WebSocketClientProtocol) -> None:
    """Close C{proto} with a handshake if it is open, else drop it."""
    if proto.state == WebSocketProtocol.STATE_OPEN:
        proto.sendClose(code=1000)
    else:
        proto.dropConnection(abort=True)


def cancel(call: IDelayedCall | None) -> None:
    """Cancel C{call} if it is still pending."""
    if call is not None and call.active():
        call.cancel()


def with_query(url: str, params: list[tuple[str, str]]) -> str:
    """C{url} with C{params} added to its query string."""
    if not params:
        return url
    joiner = "&" if "?" in url else "?"
    return url + joiner + urlencode(params)
