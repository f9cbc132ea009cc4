"""
An autobahn server protocol that reads the common inbound frame cheaply.

A carrier's media socket carries 50 small messages a second, each one
final, masked frame.  Autobahn reads every frame through its general
machinery: a frame header object, a native masker object built per frame,
message and frame hooks, and a Deferred for its "message" signal, plus a
formatted debug event per read.  L{FastServerProtocol} reads such a frame
(text or binary, final, masked, uncompressed, with a 7- or 16-bit length,
wholly buffered, within the size limits) in one step and hands the payload
to C{onMessage} with the same traffic counts; anything else (control
frames, fragments, compression, oversized or invalid frames, timings or
frame logging, signal listeners, a closing socket) goes through autobahn's
own code unchanged.
"""

from __future__ import annotations

from autobahn.twisted.websocket import WebSocketServerProtocol
from autobahn.websocket.protocol import WebSocketProtocol

_OPEN = WebSocketProtocol.STATE_OPEN
_TEXT = 0x81  # FIN, no RSV bits, opcode 1
_BINARY = 0x82  # FIN, no RSV bits, opcode 2


def unmask(key: bytes, body: bytes) -> bytes:
    """C{body} XOR-ed with the repeated 4-byte C{key} (RFC 6455, 5.3)."""
    length = len(body)
    pad = (key * ((length >> 2) + 1))[:length]
    return (int.from_bytes(body, "little") ^ int.from_bytes(pad, "little")).to_bytes(
        length, "little"
    )


class FastServerProtocol(WebSocketServerProtocol):
    """A C{WebSocketServerProtocol} with a one-step read of whole, single-frame messages."""

    def dataReceived(self, data: bytes) -> None:
        # Autobahn's Twisted adapter formats a debug event here for every read;
        # _dataReceived keeps its byte counts and octet logging.
        self._dataReceived(data)

    def processData(self) -> bool:
        data = self.data
        size = len(data)
        if (
            size < 6
            or self.current_frame is not None
            or self.inside_message
            or self.state != _OPEN
            or self.failedByMe
            or self._perMessageCompress is not None
            or self._listeners is not None
            or self.logFrames
            or self.trackedTimings
        ):
            return super().processData()
        first = data[0]
        if not (first == _BINARY or (first == _TEXT and not self.utf8validateIncoming)):
            return super().processData()
        length = data[1] ^ 0x80
        # Unmasked (length byte under 0x80), empty, or a 64-bit length: autobahn's.
        if not 0 < length < 127:
            return super().processData()
        start = 6
        if length == 126:
            length = (data[2] << 8) | data[3]
            start = 8
            if length < 126:
                return super().processData()
        end = start + length
        if (
            size < end
            or 0 < self.maxFramePayloadSize < length
            or 0 < self.maxMessagePayloadSize < length
        ):
            return super().processData()
        payload = unmask(data[start - 4 : start], data[start:end])
        self.data = data[end:]
        stats = self.trafficStats
        stats.incomingOctetsWebSocketLevel += length
        stats.incomingOctetsAppLevel += length
        stats.incomingWebSocketFrames += 1
        stats.incomingWebSocketMessages += 1
        if self.autoPingTimeoutCall and self.autoPingRestartOnAnyTraffic:
            self._cancelAutoPingTimeoutCall()
        self._onMessage(payload, first == _BINARY)
        return len(self.data) > 0
