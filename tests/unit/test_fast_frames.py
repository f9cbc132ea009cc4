"""
L{FastServerProtocol} reads exactly what autobahn's own server protocol
reads: the same messages, the same answers on the wire, the same state and
traffic counts, for any mix of frames split at any points.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from voicecalld.media.fast_frames import FastServerProtocol, unmask

HANDSHAKE = (
    b"GET /s HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
LIMIT = 4096


class Recording:
    """Records the messages a protocol is given."""

    got: list[tuple[bytes, bool]]

    def onOpen(self) -> None:
        self.got = []

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.got.append((payload, isBinary))


class Fast(Recording, FastServerProtocol):
    """The fast reader."""


class Plain(Recording, WebSocketServerProtocol):
    """Autobahn's own reader."""


class Wire(StringTransport):
    """A string transport that, like TCP's, lets go of a producer it does not hold."""

    def unregisterProducer(self) -> None:
        self.producer = None


def opened(cls: type, utf8: bool) -> tuple[Any, StringTransport]:
    """A server socket of C{cls} past its handshake, on a string transport."""
    factory = WebSocketServerFactory()
    factory.protocol = cls
    factory.setProtocolOptions(
        autoPingInterval=0,
        openHandshakeTimeout=0,
        closeHandshakeTimeout=0,
        maxFramePayloadSize=LIMIT,
        maxMessagePayloadSize=LIMIT,
        utf8validateIncoming=utf8,
        failByDrop=False,
    )
    protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 4000))
    transport = Wire()
    protocol.makeConnection(transport)
    protocol.dataReceived(HANDSHAKE)
    assert transport.value().startswith(b"HTTP/1.1 101"), transport.value()
    transport.clear()
    return protocol, transport


def frame(first: int, payload: bytes, key: bytes | None, wide: bool = False) -> bytes:
    """One frame: C{first} byte (FIN, RSV, opcode), masked with C{key} unless None."""
    size = len(payload)
    bit = 0x80 if key is not None else 0
    if size < 126 and not wide:
        header = bytes((first, bit | size))
    elif size < 65536:
        header = bytes((first, bit | 126)) + size.to_bytes(2, "big")
    else:
        header = bytes((first, bit | 127)) + size.to_bytes(8, "big")
    if key is None:
        return header + payload
    return header + key + unmask(key, payload)


keys = st.binary(min_size=4, max_size=4)
payloads = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=100).map(str.encode),
    st.binary(min_size=LIMIT - 2, max_size=LIMIT + 2),
)
# Mostly frames a carrier sends, some that autobahn must refuse or treat specially.
firsts = st.one_of(
    st.sampled_from([0x81, 0x82]),
    st.sampled_from([0x81, 0x82]),
    st.sampled_from([0x01, 0x02, 0x80, 0x00, 0x89, 0x8A, 0x91, 0xC1, 0x83, 0x09, 0x88]),
)
masks = st.one_of(keys, keys, keys, st.none())
wide = st.sampled_from([False, False, False, False, True])
frames = st.builds(frame, firsts, payloads, masks, wide)


class SameAsAutobahnTests(SynchronousTestCase):
    """The fast reader against autobahn's, byte for byte."""

    def check(self, wire: bytes, cuts: list[int], utf8: bool) -> None:
        results = []
        for cls in (Fast, Plain):
            protocol, transport = opened(cls, utf8)
            edges = sorted({0, len(wire), *(c % (len(wire) + 1) for c in cuts)})
            for a, b in pairwise(edges):
                if protocol.state != protocol.STATE_CLOSED:
                    protocol.dataReceived(wire[a:b])
            stats = protocol.trafficStats
            results.append(
                (
                    protocol.got,
                    transport.value(),
                    protocol.state,
                    protocol.data,
                    stats.incomingOctetsWireLevel,
                    stats.incomingOctetsWebSocketLevel,
                    stats.incomingOctetsAppLevel,
                    stats.incomingWebSocketFrames,
                    stats.incomingWebSocketMessages,
                )
            )
        self.assertEqual(results[0], results[1])

    @settings(max_examples=300, deadline=None)
    @given(st.lists(frames, max_size=6), st.lists(st.integers(0, 10**6), max_size=4), st.booleans())
    def test_any_frames_any_cuts(self, wire: list[bytes], cuts: list[int], utf8: bool) -> None:
        self.check(b"".join(wire), cuts, utf8)

    def test_media_messages_in_one_read(self) -> None:
        key = b"\x11\x22\x33\x44"
        wire = b"".join(frame(0x81, b'{"event":"media","n":%d}' % n, key) for n in range(50))
        self.check(wire, [], False)
        protocol, _ = opened(Fast, False)

        def general(*args: Any) -> None:
            raise AssertionError("went through autobahn's general frame reading")

        protocol.onFrameBegin = general
        protocol.dataReceived(wire)
        self.assertEqual(protocol.got[7], (b'{"event":"media","n":7}', False))
        self.assertEqual(len(protocol.got), 50)

    def test_frame_split_mid_payload(self) -> None:
        payload = bytes(range(256)) * 2
        self.check(frame(0x82, payload, b"\x01\x02\x03\x04"), [3, 7, 100], False)

    def test_minimal_length_violation_and_oversize(self) -> None:
        key = b"\x09\x08\x07\x06"
        self.check(frame(0x81, b"short", key, wide=True), [], False)
        self.check(frame(0x82, b"x" * (LIMIT + 1), key), [], False)

    def test_invalid_utf8_with_validation(self) -> None:
        self.check(frame(0x81, b"\xff\xfe", b"\x00\x00\x00\x01"), [], True)


class UnmaskTests(SynchronousTestCase):
    """The XOR mask, at every length's alignment."""

    def test_unmask_is_its_own_inverse(self) -> None:
        key = b"\xa1\xb2\xc3\xd4"
        for size in range(0, 13):
            body = bytes(range(size))
            masked = unmask(key, body)
            self.assertEqual(masked, bytes(b ^ key[i % 4] for i, b in enumerate(body)))
            self.assertEqual(unmask(key, masked), body)
