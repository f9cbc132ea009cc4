"""
The cheap end of a carrier's media stream, for the system benchmark's generator.

A fake carrier (C{tests.fakes}) dials the daemon's stream URL with autobahn and sends its
opening messages; then L{attach} takes the socket over.  From there on caller audio goes out
as pre-masked frames whose only changing bytes (the frame number) are patched in per frame,
and what the daemon sends is split into frames by header: media is counted and timed without
a JSON parse, anything else (marks, checkpoints, clears) goes to the fake carrier, which
echoes marks once the audio before them has played, as the carrier would.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Callable
from typing import Any

FRAME = 0.020
#: Caller audio: 160 bytes of mu-law that are not all one value.
AUDIO = bytes((i * 37 + 11) % 256 for i in range(160))
#: Frame numbers are written as ten digits from here, so every frame has the same length.
FIRST_CHUNK = 1_000_000_000
GAP_BINS = 2000


def header(size: int) -> bytes:
    """The header of one final, masked text frame of C{size} bytes (key not included)."""
    if size < 126:
        return bytes((0x81, 0x80 | size))
    if size < 65536:
        return bytes((0x81, 0x80 | 126)) + size.to_bytes(2, "big")
    return bytes((0x81, 0x80 | 127)) + size.to_bytes(8, "big")


def masked(payload: bytes, key: bytes, opcode: int = 1) -> bytes:
    """One final masked frame carrying C{payload}."""
    head = bytearray(header(len(payload)))
    head[0] = 0x80 | opcode
    body = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return bytes(head) + key + body


class MediaTemplate:
    """A stream's media message, masked once; L{frame} patches in the frame number."""

    def __init__(self, payload: bytes) -> None:
        digits = str(FIRST_CHUNK).encode()
        offset = payload.find(digits)
        if offset < 0 or payload.find(digits, offset + 1) >= 0:
            raise ValueError("the media message must carry the frame number exactly once")
        key = os.urandom(4)
        whole = masked(payload, key)
        start = len(whole) - len(payload) + offset
        self._head = whole[:start]
        self._tail = whole[start + len(digits) :]
        self._key = int.from_bytes(bytes(key[(offset + i) % 4] for i in range(10)), "big")

    def frame(self, number: int) -> bytes:
        """The frame carrying frame number C{number} (0, 1, ...)."""
        digits = int.from_bytes(b"%d" % (FIRST_CHUNK + number), "big") ^ self._key
        return self._head + digits.to_bytes(10, "big") + self._tail


class Window:
    """What all streams saw since the window began."""

    def __init__(self) -> None:
        self.sent = 0
        self.media = 0
        self.other = 0
        self.clears: list[float] = []
        self.gaps = [0] * GAP_BINS
        self.gap_count = 0
        self.gap_seconds = 0.0


class LeanStream:
    """
    One taken-over media socket.

    @param stream: the fake carrier's stream object (its C{_on_message} handles what is not
        media, and its C{_play_end} is kept up to date so marks are echoed on time).
    @param protocol: the autobahn client protocol, already open.
    @param media_payload: the JSON text of one media message carrying L{FIRST_CHUNK}.
    @param outbound_media: the C{event} names of the daemon's audio messages.
    @param now: the clock the fake carrier plays audio on.
    """

    def __init__(
        self,
        stream: Any,
        protocol: Any,
        media_payload: bytes,
        window: Callable[[], Window],
        now: Callable[[], float],
        outbound_media: tuple[bytes, ...] = (b'"media"', b'"playAudio"'),
    ) -> None:
        self.stream = stream
        self.protocol = protocol
        self.template = MediaTemplate(media_payload)
        self.number = 0
        self.live = True
        self.window = window
        self.now = now
        self.outbound_media = outbound_media
        self.last_media: float | None = None
        self.inbound = 0
        self.buffer = bytearray()
        self._autobahn_data = protocol.dataReceived
        protocol.dataReceived = self.dataReceived

    def send_frame(self) -> None:
        """Write the next frame of caller audio."""
        self.protocol.transport.write(self.template.frame(self.number))
        self.number += 1
        self.window().sent += 1

    def dataReceived(self, data: bytes) -> None:
        """Split what the daemon sent into frames and account for each."""
        buf = self.buffer
        buf += data
        pos, size_of_data = 0, len(buf)
        now = self.now()
        window = self.window()
        while size_of_data - pos >= 2:
            first, second = buf[pos], buf[pos + 1]
            size = second & 0x7F
            head = 2
            if size == 126:
                if size_of_data - pos < 4:
                    break
                size = (buf[pos + 2] << 8) | buf[pos + 3]
                head = 4
            elif size == 127:
                if size_of_data - pos < 10:
                    break
                size = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                head = 10
            if second & 0x80:
                head += 4
            end = pos + head + size
            if end > size_of_data:
                break
            opcode = first & 0x0F
            start = pos + head
            if opcode == 1 and first & 0x80 and not second & 0x80:
                if self._is_media(buf, start):
                    self._media(now, window)
                else:
                    self._other(bytes(buf[start:end]), now, window)
            elif opcode == 9:
                pong = masked(bytes(buf[start:end]), os.urandom(4), opcode=10)
                self.protocol.transport.write(pong)
            elif opcode != 10:
                # Close (or anything unusual): autobahn takes the socket back.
                self.live = False
                rest = bytes(buf[pos:])
                buf.clear()
                self.protocol.dataReceived = self._autobahn_data
                self._autobahn_data(rest)
                return
            pos = end
        del buf[:pos]

    def _is_media(self, buf: bytearray, start: int) -> bool:
        for name in self.outbound_media:
            if buf.find(name, start, start + 40) >= 0:
                return True
        return False

    def _media(self, now: float, window: Window) -> None:
        self.inbound += 1
        window.media += 1
        stream = self.stream
        stream._play_end = max(now, stream._play_end) + FRAME
        last = self.last_media
        self.last_media = now
        if last is not None:
            gap = now - last
            window.gap_count += 1
            window.gap_seconds += gap
            window.gaps[min(GAP_BINS - 1, int(gap * 1000))] += 1

    def _other(self, payload: bytes, now: float, window: Window) -> None:
        window.other += 1
        if b'"clear' in payload[:40]:
            # On the system-wide monotonic clock, as the vendor fakes time barge-ins.
            window.clears.append(time.monotonic())
            self.last_media = None
        elif b':end"' in payload:
            self.last_media = None
        self.stream._on_message(payload, False)


def media_payload(dialect: Any, stream: Any) -> bytes:
    """The JSON of one media message of C{stream} in C{dialect}, carrying L{FIRST_CHUNK}."""
    return json.dumps(dialect.media(stream, AUDIO, FIRST_CHUNK, 20)).encode()


def twilio_media(stream_sid: str) -> bytes:
    """A Twilio media message for a stream the generator dialled itself (direct mode)."""
    message = {
        "event": "media",
        "sequenceNumber": "2",
        "media": {
            "track": "inbound",
            "chunk": str(FIRST_CHUNK),
            "timestamp": "20",
            "payload": base64.b64encode(AUDIO).decode("ascii"),
        },
        "streamSid": stream_sid,
    }
    return json.dumps(message).encode()
