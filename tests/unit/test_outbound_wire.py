"""
The outbound fast path puts the same bytes on the wire as the general one: media frames
framed by the socket around the codec's prebuilt parts, marks and clears around prebuilt
prefixes, against autobahn's own framing and the codecs' old C{json.dumps} messages.
"""

from __future__ import annotations

import base64
import json
import os
import struct
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import TestCase

from voicecalld.media.stream import MediaStream, MediaStreamFactory, StreamLimits, frame_header
from voicecalld.providers.plivo.codec import PlivoCodec
from voicecalld.providers.telnyx.codec import TelnyxCodec
from voicecalld.providers.twilio.codec import TwilioCodec

_HANDSHAKE = (
    b"GET /stream HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: " + base64.b64encode(b"0123456789abcdef") + b"\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)
_STARTS = {
    "Twilio": {
        "event": "start",
        "streamSid": 'MZ"odd\\sid',
        "start": {"streamSid": 'MZ"odd\\sid', "callSid": "CA1", "customParameters": {}},
    },
    "Telnyx": {"event": "start", "stream_id": "s-1", "start": {"call_control_id": "v3:1"}},
    "Plivo": {"event": "start", "start": {"streamId": "st-é", "callId": "c-1"}},
}
_CODECS = (TwilioCodec, TelnyxCodec, PlivoCodec)
_NAMES = ("u1:4000", "u12:end", 'we"ird\\ naмe', "")


class _Handler:
    def media(self, audio: bytes) -> None:
        pass

    def dtmf(self, digit: str) -> None:
        pass

    def mark(self, name: str) -> None:
        pass

    def stopped(self, reason: str) -> None:
        pass


def _started(codec: Any, **options: Any) -> tuple[MediaStream, StringTransport]:
    """A started stream of C{codec} on a transport that keeps what is written after start."""
    factory = MediaStreamFactory(Clock(), StreamLimits(), lambda s, start: _Handler(), codec)
    if options:
        factory.setProtocolOptions(**options)
    stream = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 4000))
    transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 4000))
    stream.makeConnection(transport)
    stream.dataReceived(_HANDSHAKE)
    assert stream.state == stream.STATE_OPEN
    stream.onMessage(json.dumps(_STARTS[codec.name]).encode(), False)
    assert stream.handler is not None
    transport.clear()
    return stream, transport


def _general(stream: MediaStream) -> None:
    """Send through autobahn's C{sendMessage} and the codec's general encoder from now on."""
    stream._direct = False
    stream._media_head = None


def _messages(wire: bytes) -> list[bytes]:
    """The payloads of the unmasked, final text frames in C{wire}, as a carrier reads them."""
    out = []
    while wire:
        first, second = wire[0], wire[1]
        assert first == 0x81 and not second & 0x80, (first, second)
        size, at = second & 0x7F, 2
        if size == 126:
            (size,), at = struct.unpack("!H", wire[2:4]), 4
        elif size == 127:
            (size,), at = struct.unpack("!Q", wire[2:10]), 10
        out.append(wire[at : at + size])
        wire = wire[at + size :]
    return out


def _script(stream: MediaStream, frames: list[bytes]) -> None:
    for n, frame in enumerate(frames):
        stream.send_frame(frame)
        stream.send_mark(_NAMES[n % len(_NAMES)])
    stream.send_clear()
    stream.send_frame(frames[0][:100])  # not a whole frame: the general encoder


class SameBytesTests(TestCase):
    """What the fast path writes is byte for byte what autobahn and json.dumps wrote."""

    def test_each_carrier_writes_what_the_general_path_writes(self) -> None:
        frames = [os.urandom(160) for _ in range(7)] + [b"\xff" * 160]
        for codec in _CODECS:
            fast, fast_wire = _started(codec())
            general, general_wire = _started(codec())
            _general(general)
            self.assertIsNotNone(fast._media_head, codec.name)
            _script(fast, frames)
            _script(general, frames)
            self.assertEqual(fast_wire.value(), general_wire.value(), codec.name)
            self.assertEqual(fast.frames_out, general.frames_out)
            self.assertEqual(len(_messages(fast_wire.value())), 2 * len(frames) + 2)

    def test_the_carrier_reads_the_audio_back(self) -> None:
        frame = os.urandom(160)
        for codec in _CODECS:
            stream, wire = _started(codec())
            stream.send_frame(frame)
            (message,) = _messages(wire.value())
            read = json.loads(message)
            self.assertEqual(base64.b64decode(read["media"]["payload"]), frame, codec.name)

    def test_marks_and_clears_are_what_json_dumps_gave(self) -> None:
        twilio = TwilioCodec().encoder(TwilioCodec().parse_start(_start("Twilio"), False))
        telnyx = TelnyxCodec().encoder(TelnyxCodec().parse_start(_start("Telnyx"), False))
        plivo = PlivoCodec().encoder(PlivoCodec().parse_start(_start("Plivo"), False))
        sid, pid = 'MZ"odd\\sid', "st-é"
        for name in _NAMES:
            self.assertEqual(
                twilio.mark(name),
                json.dumps({"event": "mark", "streamSid": sid, "mark": {"name": name}}).encode(),
            )
            self.assertEqual(
                telnyx.mark(name), json.dumps({"event": "mark", "mark": {"name": name}}).encode()
            )
            self.assertEqual(
                plivo.mark(name),
                json.dumps({"event": "checkpoint", "streamId": pid, "name": name}).encode(),
            )
        self.assertEqual(twilio.clear(), json.dumps({"event": "clear", "streamSid": sid}).encode())
        self.assertEqual(
            plivo.clear(), json.dumps({"event": "clearAudio", "streamId": pid}).encode()
        )

    def test_media_parts_frame_the_audio_as_media_does(self) -> None:
        for codec in _CODECS:
            encoder = codec().encoder(codec().parse_start(_start(codec.name), False))
            prefix, suffix = encoder.media_parts
            for frame in (os.urandom(160), os.urandom(1), b""):
                self.assertEqual(
                    encoder.media(frame),
                    prefix + base64.b64encode(frame) + suffix,
                    codec.name,
                )

    def test_autobahn_frames_what_it_must_shape_itself(self) -> None:
        """With fragmentation asked for, messages go through autobahn (and are fragmented)."""
        stream, wire = _started(TwilioCodec(), autoFragmentSize=64)
        self.assertFalse(stream._direct)
        self.assertIsNone(stream._media_head)
        stream.send_frame(b"\x01" * 160)
        self.assertEqual(wire.value()[0], 0x01)  # a first fragment, not a final frame

    def test_headers_of_every_length_class(self) -> None:
        for size, head in ((0, b"\x81\x00"), (125, b"\x81\x7d"), (126, b"\x81\x7e\x00\x7e")):
            self.assertEqual(frame_header(size, False), head)
        self.assertEqual(frame_header(70000, True), b"\x82\x7f" + (70000).to_bytes(8, "big"))


def _start(name: str) -> bytes:
    return json.dumps(_STARTS[name]).encode()
