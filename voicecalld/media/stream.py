"""
A carrier's bidirectional media stream, server side, on autobahn: the socket
protocol every carrier shares, and the codec interface that is each one's
wire format.

A socket is pending until its codec reads a valid start (whose credentials,
in L{StreamStart.parameters}, the provider checks); pending sockets are
capped in total and per peer and closed after C{preStartTimeoutMs}.  Once
started, the hot path is the codec's parse per inbound frame and its
encoding per outbound frame.  A socket whose send buffer keeps growing is
closed (the call ends with a reason) rather than buffered forever.
Caller audio a codec numbers (L{StreamMedia.sequence}) is put back in order
(L{voicecalld.media.reorder}) for carriers that do not promise order.

A codec (L{IStreamCodec}) only translates: inbound messages into the
neutral values below, and (through the L{IStreamEncoder} it makes once per
started stream) outbound audio, marks and clears into the carrier's
messages.  It holds no state of the socket's and never closes it: a
malformed message is a L{BadMessage}, and the protocol closes.
"""

from __future__ import annotations

import binascii
from collections.abc import Callable
from typing import Any, Protocol

from attrs import field, frozen
from autobahn.twisted.websocket import WebSocketServerFactory
from autobahn.websocket.types import ConnectionDeny
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.logger import Logger
from zope.interface import Attribute, Interface, implementer

from voicecalld.media.codec import FRAME_BYTES
from voicecalld.media.fast_frames import FastServerProtocol
from voicecalld.media.reorder import Reorder

CLOSE_NORMAL = 1000
CLOSE_UNSUPPORTED = 1003
CLOSE_BAD_DATA = 1007
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_TRY_LATER = 1013

# Base64 of one whole frame, in bytes.
_B64_FRAME = 4 * -(-FRAME_BYTES // 3)


# -- what a codec reads -----------------------------------------------------------


@frozen
class StreamStart:
    """
    A stream began: the carrier's id of it, its id of the call (None if it
    sends none), and the custom parameters we asked it to pass on.
    """

    stream_id: str
    call_ref: str | None
    parameters: dict[str, str] = field(factory=dict)


@frozen
class StreamMedia:
    """Caller audio (mu-law bytes), with the carrier's sequence number where it sends one."""

    audio: bytes
    sequence: int | None = None


@frozen
class StreamMark:
    """The carrier played our audio up to the mark (or checkpoint) C{name}."""

    name: str


@frozen
class StreamDtmf:
    """The caller pressed a key."""

    digit: str


@frozen
class StreamStop:
    """The carrier ended the stream."""


StreamMessage = StreamMedia | StreamMark | StreamDtmf | StreamStop


class BadMessage(Exception):
    """A message the codec cannot read; the socket is closed with C{code} and C{reason}."""

    def __init__(self, reason: str, code: int = CLOSE_BAD_DATA) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


class IStreamEncoder(Interface):
    """One started stream's outbound messages, in its carrier's format."""

    binary = Attribute("Whether the messages go in binary frames (else text).")

    media_parts = Attribute(
        "Optional: C{(prefix, suffix)} when C{media(frame)} is always C{prefix}, the"
        " frame in base64 (no newline), then C{suffix}; None (or absent) otherwise."
        " The socket then builds each media message's WebSocket frame around them itself."
    )

    def media(frame):
        """The message carrying one frame of mu-law audio (bytes)."""

    def mark(name):
        """The message asking the carrier to echo C{name} once what precedes it has played."""

    def clear():
        """The message flushing the carrier's playback buffer (barge-in)."""


class IStreamCodec(Interface):
    """A carrier's media-stream wire format: pure parsing and encoding, no socket state."""

    name = Attribute("The carrier's name, for logs ('Twilio').")

    def parse_start(payload, is_binary):
        """
        Read a message on a socket that has not started: a L{StreamStart},
        or None for any other message (it is ignored); raises L{BadMessage}.
        """

    def parse(payload, is_binary):
        """
        Read a message on a started socket: a L{StreamMedia}, L{StreamMark},
        L{StreamDtmf} or L{StreamStop}, or None for one that means nothing to
        us; raises L{BadMessage}.
        """

    def encoder(start):
        """The L{IStreamEncoder} for the stream that L{StreamStart} C{start} began."""


def frame_header(size: int, binary: bool) -> bytes:
    """The header of one final, unmasked server WebSocket frame of C{size} payload bytes."""
    first = 0x82 if binary else 0x81
    if size <= 125:
        return bytes((first, size))
    if size <= 0xFFFF:
        return bytes((first, 126)) + size.to_bytes(2, "big")
    return bytes((first, 127)) + size.to_bytes(8, "big")


# -- what a started socket reports to --------------------------------------------


class StreamHandler(Protocol):
    """What a started stream reports to (the call's media session)."""

    def media(self, audio: bytes) -> None:
        """Inbound caller audio (mu-law)."""

    def dtmf(self, digit: str) -> None:
        """The caller pressed a key."""

    def mark(self, name: str) -> None:
        """The carrier played our audio up to this mark."""

    def stopped(self, reason: str) -> None:
        """The stream is over (stop message, close or drop)."""


StartHandler = Callable[["MediaStream", StreamStart], "StreamHandler | str"]


@frozen
class StreamLimits:
    """The media-socket limits (C{streaming.*} in the config)."""

    pre_start_timeout: float = 5.0
    max_pending: int = 32
    max_pending_per_peer: int = 4
    max_connections: int = 128
    max_message_bytes: int = 64 * 1024
    max_send_backlog: int = 1024 * 1024


# Not "log" on the autobahn classes: autobahn uses that attribute for its own
# (txaio) logger, which drops its per-frame debug events cheaply.
_log = Logger()


class MediaStreamFactory(WebSocketServerFactory):
    """
    Accepts one carrier's media-stream sockets within the limits; C{on_start}
    is asked about each valid start and answers with the stream's handler,
    or with the reason it is refused.
    """

    noisy = False

    def __init__(
        self,
        clock: IReactorTime,
        limits: StreamLimits,
        on_start: StartHandler,
        codec: Any,
    ) -> None:
        super().__init__()
        self.clock = clock
        self.limits = limits
        self.on_start = on_start
        self.codec = codec
        self.open: set[MediaStream] = set()
        self.pending: dict[str, int] = {}
        # Frames of the streams already closed (open ones keep their own count).
        self.closed_frames_in = 0
        self.closed_frames_out = 0
        self.protocol = MediaStream
        self.setProtocolOptions(
            maxMessagePayloadSize=limits.max_message_bytes,
            maxFramePayloadSize=limits.max_message_bytes,
            autoPingInterval=0,
            # The codecs' parsers reject invalid UTF-8 themselves (closing
            # with 1007), so autobahn need not check every frame a second time.
            utf8validateIncoming=False,
            # Over-size or invalid frames get a close frame with the reason
            # (1009, 1007, 1002) rather than a silent TCP abort.
            failByDrop=False,
        )

    def pending_total(self) -> int:
        """Sockets that have not sent a valid start yet."""
        return sum(self.pending.values())

    def frames_in_total(self) -> int:
        """Media frames received on every stream so far."""
        return self.closed_frames_in + sum(s.frames_in for s in self.open)

    def frames_out_total(self) -> int:
        """Media frames sent on every stream so far."""
        return self.closed_frames_out + sum(s.frames_out for s in self.open)


@implementer(IPushProducer)
class MediaStream(FastServerProtocol):
    """One media-stream socket, speaking its factory's codec."""

    def __init__(self) -> None:
        super().__init__()
        self.stream_id: str | None = None
        self.call_ref: str | None = None
        self.handler: StreamHandler | None = None
        self._codec: Any = None
        self._peer_host = "?"
        self._pending = False
        self._start_timer: IDelayedCall | None = None
        self._encode_media: Callable[[bytes], bytes] | None = None
        self._encoder: Any = None
        self._binary = False
        # Set once started when frames may go straight to the transport (see _direct_ok).
        self._direct = False
        # The WebSocket frame header and the codec's prefix of a whole-frame media
        # message, and its suffix: the base64 frame goes in between.
        self._media_head: bytes | None = None
        self._media_tail = b""
        self._paused = False
        self._backlog = 0
        self._closing = False
        self._close_reason: str | None = None
        self._reorder: Reorder | None = None
        self.frames_in = 0
        self.frames_out = 0

    def onConnect(self, request: Any) -> None:
        factory: MediaStreamFactory = self.factory
        limits = factory.limits
        self._codec = factory.codec
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
        factory: MediaStreamFactory = self.factory
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
        _log.warn(
            "media socket from {peer} refused: no valid start in time",
            peer=self._peer_host,
            log_code="media.start_timeout",
        )
        self.close(CLOSE_POLICY, "Start timeout")

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self._closing:
            # Whatever follows a refusal or a close is not acted on.
            return
        handler = self.handler
        try:
            if handler is None:
                start = self._codec.parse_start(payload, isBinary)
                if start is not None:
                    self._started(start)
                return
            message = self._codec.parse(payload, isBinary)
        except BadMessage as e:
            _log.warn(
                "media socket from {peer} closed: {why}",
                peer=self._peer_host,
                why=e.reason,
                log_code="media.bad_message",
            )
            self.close(e.code, e.reason)
            return
        kind = type(message)
        if kind is StreamMedia:
            self.frames_in += 1
            if message.sequence is None:
                handler.media(message.audio)
                return
            if self._reorder is None:
                self._reorder = Reorder(handler.media)
            self._reorder.frame(message.sequence, message.audio)
        elif kind is StreamMark:
            handler.mark(message.name)
        elif kind is StreamDtmf:
            handler.dtmf(message.digit)
        elif kind is StreamStop:
            if self._reorder is not None:
                self._reorder.flush()
            self.close(CLOSE_NORMAL, "stopped")

    def _started(self, start: StreamStart) -> None:
        self.stream_id = start.stream_id
        self.call_ref = start.call_ref
        result = self.factory.on_start(self, start)
        if isinstance(result, str):
            _log.warn(
                "media stream {sid} for {call_sid} from {peer} refused: {why}",
                peer=self._peer_host,
                sid=start.stream_id,
                call_sid=start.call_ref,
                why=result,
                log_code="media.refused",
            )
            self.close(CLOSE_POLICY, result)
            return
        self._leave_pending()
        self._encoder = self._codec.encoder(start)
        self._encode_media = self._encoder.media
        self._binary = bool(self._encoder.binary)
        self._direct = self._direct_ok()
        parts = getattr(self._encoder, "media_parts", None)
        if self._direct and parts is not None:
            prefix, self._media_tail = parts
            size = len(prefix) + _B64_FRAME + len(self._media_tail)
            self._media_head = frame_header(size, self._binary) + prefix
        self.handler = result

    def _direct_ok(self) -> bool:
        """
        Whether our messages may be framed here and written to the transport, bypassing
        autobahn's C{sendMessage}: only when it would write the same bytes (one
        unmasked, uncompressed, unfragmented frame) and keeps no log or timing of them.
        """
        return (
            self._perMessageCompress is None
            and not self.maskServerFrames
            and not self.autoFragmentSize
            and not self.logFrames
            and not self.logOctets
            and not self.trackedTimings
        )

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
        head = self._media_head
        if head is not None and len(frame) == FRAME_BYTES:
            # The hot path: one base64 and one join per frame, no JSON, no autobahn.
            self.frames_out += 1
            self._write(
                b"".join((head, binascii.b2a_base64(frame, newline=False), self._media_tail))
            )
        elif self._encode_media is not None:
            self.frames_out += 1
            self._send(self._encode_media(frame))

    def send_mark(self, name: str) -> None:
        """Ask the carrier to echo C{name} once the audio before it has played."""
        if self._encoder is not None:
            self._send(self._encoder.mark(name))

    def send_clear(self) -> None:
        """Flush the carrier's playback buffer (barge-in)."""
        if self._encoder is not None:
            self._send(self._encoder.clear())

    def _send(self, data: bytes) -> None:
        if self._direct and len(data) <= self.maxMessagePayloadSize:
            self._write(frame_header(len(data), self._binary) + data)
        elif self._accept(len(data)):
            self.sendMessage(data, isBinary=self._binary)

    def _write(self, frame: bytes) -> None:
        """Write one whole WebSocket frame (framed by us) to the transport."""
        if self._accept(len(frame)):
            if self.send_queue:
                # Behind autobahn's own queued writes, in order.
                self.sendData(frame)
            else:
                self.transport.write(frame)

    def _accept(self, size: int) -> bool:
        """Whether C{size} more bytes may be sent (False also when the backlog closed us)."""
        if self._closing or self.state != self.STATE_OPEN:
            return False
        if self._paused:
            self._backlog += size
            if self._backlog > self.factory.limits.max_send_backlog:
                _log.warn(
                    "media stream {sid}: {carrier} is not reading; {size} bytes waiting, closing",
                    peer=self._peer_host,
                    sid=self.stream_id,
                    carrier=self._codec.name,
                    size=self._backlog,
                    log_code="media.backpressure",
                )
                self.close(CLOSE_TRY_LATER, "Backpressure: send buffer exceeded")
                return False
        return True

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
        factory: MediaStreamFactory = self.factory
        if self in factory.open:
            factory.open.discard(self)
            factory.closed_frames_in += self.frames_in
            factory.closed_frames_out += self.frames_out
        self._leave_pending()
        handler, self.handler = self.handler, None
        if handler is not None:
            # Our own reason when we closed (autobahn reports the peer's reply).
            handler.stopped(self._close_reason or reason or ("closed" if wasClean else "dropped"))
