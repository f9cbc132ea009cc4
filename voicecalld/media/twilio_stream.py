"""
Twilio Media Streams, server side, on autobahn.

A socket is pending until it sends a valid C{start} (whose token, passed as a
C{<Parameter>}, is checked by the provider); pending sockets are capped in
total and per peer and closed after C{preStartTimeoutMs}.  Once started, the
hot path is one JSON parse and one base64 decode per inbound frame, and one
byte concatenation per outbound frame.  A socket whose send buffer keeps
growing is closed (the call ends with a reason) rather than buffered forever.
"""

from __future__ import annotations

import binascii
import json
from collections.abc import Callable
from typing import Any, Protocol

from attrs import frozen
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

CLOSE_NORMAL = 1000
CLOSE_UNSUPPORTED = 1003
CLOSE_BAD_DATA = 1007
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_TRY_LATER = 1013


@frozen
class StreamLimits:
    """The media-socket limits (C{streaming.*} in the config)."""

    pre_start_timeout: float = 5.0
    max_pending: int = 32
    max_pending_per_peer: int = 4
    max_connections: int = 128
    max_message_bytes: int = 64 * 1024
    max_send_backlog: int = 1024 * 1024


class StreamHandler(Protocol):
    """What a started stream reports to (the provider's per-call media session)."""

    def media(self, audio: bytes) -> None:
        """Inbound caller audio (mu-law)."""

    def dtmf(self, digit: str) -> None:
        """The caller pressed a key."""

    def mark(self, name: str) -> None:
        """Twilio played our audio up to this mark."""

    def stopped(self, reason: str) -> None:
        """The stream is over (stop message, close or drop)."""


StartHandler = Callable[["TwilioMediaStream", dict[str, Any]], "StreamHandler | str"]


# Not "log" on the autobahn classes: autobahn uses that attribute for its own
# (txaio) logger, which drops its per-frame debug events cheaply.
_log = Logger()


class TwilioStreamFactory(WebSocketServerFactory):
    """Accepts Twilio media-stream sockets within the limits."""

    noisy = False

    def __init__(self, clock: IReactorTime, limits: StreamLimits, on_start: StartHandler) -> None:
        super().__init__()
        self.clock = clock
        self.limits = limits
        self.on_start = on_start
        self.open: set[TwilioMediaStream] = set()
        self.pending: dict[str, int] = {}
        self.protocol = TwilioMediaStream
        self.setProtocolOptions(
            maxMessagePayloadSize=limits.max_message_bytes,
            maxFramePayloadSize=limits.max_message_bytes,
            autoPingInterval=0,
            # json.loads rejects invalid UTF-8 itself (closing with 1007), so
            # autobahn need not check every frame a second time.
            utf8validateIncoming=False,
            # Over-size or invalid frames get a close frame with the reason
            # (1009, 1007, 1002) rather than a silent TCP abort.
            failByDrop=False,
        )

    def pending_total(self) -> int:
        """Sockets that have not sent a valid start yet."""
        return sum(self.pending.values())


@implementer(IPushProducer)
class TwilioMediaStream(WebSocketServerProtocol):
    """One Twilio media-stream socket."""

    def __init__(self) -> None:
        super().__init__()
        self.stream_sid: str | None = None
        self.call_sid: str | None = None
        self.handler: StreamHandler | None = None
        self._peer_host = "?"
        self._pending = False
        self._start_timer: IDelayedCall | None = None
        self._media_prefix = b""
        self._paused = False
        self._backlog = 0
        self._closing = False
        self._close_reason: str | None = None

    def onConnect(self, request: Any) -> None:
        factory: TwilioStreamFactory = self.factory
        limits = factory.limits
        self._peer_host = getattr(self.transport.getPeer(), "host", "?")
        if len(factory.open) >= limits.max_connections:
            _log.warn(
                "media socket from {peer} refused: {count} streams are open"
                " (streaming.maxConnections)",
                peer=self._peer_host,
                count=len(factory.open),
                log_code="media.too_many",
            )
            raise ConnectionDeny(503, "too many media streams")
        if factory.pending_total() >= limits.max_pending or (
            factory.pending.get(self._peer_host, 0) >= limits.max_pending_per_peer
        ):
            _log.warn(
                "media socket from {peer} refused: too many sockets waiting for start",
                peer=self._peer_host,
                log_code="media.pending",
            )
            raise ConnectionDeny(429, "too many pending media streams")
        factory.open.add(self)
        factory.pending[self._peer_host] = factory.pending.get(self._peer_host, 0) + 1
        self._pending = True
        return None

    def onOpen(self) -> None:
        factory: TwilioStreamFactory = self.factory
        self._start_timer = factory.clock.callLater(
            factory.limits.pre_start_timeout, self._start_timed_out
        )
        # The HTTP channel that served the upgrade is still registered as the
        # transport's producer; we are its only user now.
        if getattr(self.transport, "producer", None) is not None:
            self.transport.unregisterProducer()
        self.transport.registerProducer(self, True)

    def _start_timed_out(self) -> None:
        self._start_timer = None
        _log.info(
            "media socket from {peer} sent no valid start in time",
            peer=self._peer_host,
            log_code="media.start_timeout",
        )
        self.close(CLOSE_POLICY, "Start timeout")

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self._closing:
            # Whatever follows a refusal or a close is not acted on.
            return
        if isBinary:
            self.close(CLOSE_UNSUPPORTED, "expected JSON text frames")
            return
        try:
            message = json.loads(payload)
            event = message["event"]
        except (ValueError, TypeError, KeyError, RecursionError):
            self.close(CLOSE_BAD_DATA, "malformed message")
            return
        handler = self.handler
        if handler is not None:
            try:
                if event == "media":
                    encoded = message["media"]["payload"]
                    handler.media(binascii.a2b_base64(encoded, strict_mode=True))
                elif event == "mark":
                    handler.mark(str(message["mark"]["name"]))
                elif event == "dtmf":
                    handler.dtmf(str(message["dtmf"]["digit"]))
                elif event == "stop":
                    self.close(CLOSE_NORMAL, "stopped")
            except (KeyError, TypeError, binascii.Error, ValueError):
                self.close(CLOSE_BAD_DATA, f"malformed {event} message")
            return
        if event == "start":
            self._started(message)

    def _started(self, message: dict[str, Any]) -> None:
        start = message.get("start")
        if not isinstance(start, dict):
            self.close(CLOSE_BAD_DATA, "malformed start message")
            return
        stream_sid = message.get("streamSid") or start.get("streamSid")
        call_sid = start.get("callSid")
        parameters = start.get("customParameters", {})
        if (
            not isinstance(stream_sid, str)
            or not isinstance(call_sid, str | None)
            or not isinstance(parameters, dict)
            or not all(isinstance(v, str) for v in parameters.values())
        ):
            self.close(CLOSE_BAD_DATA, "malformed start message")
            return
        self.stream_sid = stream_sid
        self.call_sid = call_sid
        result = self.factory.on_start(self, start)
        if isinstance(result, str):
            _log.warn(
                "media stream {sid} for {call_sid} refused: {why}",
                sid=stream_sid,
                call_sid=self.call_sid,
                why=result,
                log_code="media.refused",
            )
            self.close(CLOSE_POLICY, result)
            return
        self._leave_pending()
        self._media_prefix = (
            b'{"event":"media","streamSid":'
            + json.dumps(stream_sid).encode()
            + b',"media":{"payload":"'
        )
        self.handler = result

    def _leave_pending(self) -> None:
        if self._start_timer is not None and self._start_timer.active():
            self._start_timer.cancel()
        self._start_timer = None
        if self._pending:
            self._pending = False
            pending = self.factory.pending
            pending[self._peer_host] -= 1
            if not pending[self._peer_host]:
                del pending[self._peer_host]

    # -- outbound ------------------------------------------------------------

    def send_frame(self, frame: bytes) -> None:
        """Send one frame of mu-law audio."""
        self._send(self._media_prefix + binascii.b2a_base64(frame, newline=False) + b'"}}')

    def send_mark(self, name: str) -> None:
        """Ask Twilio to echo C{name} once the audio before it has played."""
        self._send(
            json.dumps(
                {"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}}
            ).encode()
        )

    def send_clear(self) -> None:
        """Flush Twilio's playback buffer (barge-in)."""
        self._send(json.dumps({"event": "clear", "streamSid": self.stream_sid}).encode())

    def _send(self, data: bytes) -> None:
        if self._closing or self.state != self.STATE_OPEN:
            return
        if self._paused:
            self._backlog += len(data)
            if self._backlog > self.factory.limits.max_send_backlog:
                _log.warn(
                    "media stream {sid}: Twilio is not reading; {size} bytes waiting, closing",
                    sid=self.stream_sid,
                    size=self._backlog,
                    log_code="media.backpressure",
                )
                self.close(CLOSE_TRY_LATER, "Backpressure: send buffer exceeded")
                return
        self.sendMessage(data, isBinary=False)

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._backlog = 0

    def stopProducing(self) -> None:
        self._paused = True

    def close(self, code: int, reason: str) -> None:
        """Close the socket with a WebSocket status code."""
        if self._closing:
            return
        self._closing = True
        self._close_reason = reason
        if self.state == self.STATE_OPEN:
            # sendClose only takes application codes; protocol codes such as
            # 1008 (policy) go through the frame-level call.
            self.sendCloseFrame(code=code, reasonUtf8=reason.encode()[:120])
        else:
            self.dropConnection(abort=True)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        factory: TwilioStreamFactory = self.factory
        factory.open.discard(self)
        self._leave_pending()
        handler, self.handler = self.handler, None
        if handler is not None:
            # Our own reason when we closed (autobahn reports the peer's reply).
            handler.stopped(self._close_reason or reason or ("closed" if wasClean else "dropped"))
