"""
The load generator of the frames benchmark: it plays Twilio for N media streams.

It opens N autobahn client WebSockets to the server under test (a few dozen handshakes at a
time), sends each one Twilio's C{connected} and C{start} messages through autobahn, then sends
one 160-byte mu-law C{media} message per stream every 20 ms on the reactor's clock (absolute
schedule; a late tick catches up).  The streams are spread over ten phases 2 ms apart, as calls
that started at different times would be.  It reads everything the server sends and echoes
C{mark} messages back, as Twilio does once the audio before them has played.

To keep up with 400 streams on one core it takes two shortcuts, neither of which changes what
the server receives: each stream's media message is masked and framed once, up front (every
frame carries the same audio, and its sequence fields do not change), and inbound frames are
counted by reading their headers instead of by a full autobahn parse.

It reads the streams' credentials as one JSON line on stdin, prints a C{load} line with its own
figures once the server closes the sockets, and exits.  With C{--duration} it measures a window
of its own instead, for servers that never close (the peers of L{bench.peers}): C{--warmup}
seconds after pacing begins it prints a C{window} line, then counts media sent and received and
the gaps between successive media frames received on each stream (1 ms buckets) for
C{--duration} seconds, prints the C{load} line with a C{window} part, and exits.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import sys
import time
from typing import Any

from bench._common import cpu_seconds, emit, percentile, pin

FRAME = 0.020
# Gaps between received media frames are counted in 1 ms buckets; the last holds longer ones.
GAP_BUCKETS = 1000
PHASES = 10
CONNECTING_AT_ONCE = 48
# 160 bytes of mu-law that are not all one value (the payload is opaque to the server anyway).
AUDIO = bytes((i * 37 + 11) % 256 for i in range(160))


def masked_frame(payload: bytes, key: bytes) -> bytes:
    """One final, masked WebSocket text frame carrying C{payload}."""
    size = len(payload)
    if size < 126:
        header = bytes((0x81, 0x80 | size))
    elif size < 65536:
        header = bytes((0x81, 0x80 | 126)) + size.to_bytes(2, "big")
    else:
        header = bytes((0x81, 0x80 | 127)) + size.to_bytes(8, "big")
    body = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return header + key + body


def gap_percentile(buckets: list[int], q: float) -> int | None:
    """The C{q}-th percentile (0-100) of gaps counted in 1 ms C{buckets}, in ms (nearest rank)."""
    total = sum(buckets)
    if not total:
        return None
    rank = max(1, math.ceil(q / 100 * total))
    seen = 0
    for ms, n in enumerate(buckets):
        seen += n
        if seen >= rank:
            return ms
    return len(buckets) - 1


class Generator:
    """Connects the streams, paces their audio and counts what comes back."""

    def __init__(self, reactor: Any, port: int, path: str, credentials: list[dict]) -> None:
        self.reactor = reactor
        self.port = port
        self.path = path
        self.credentials = credentials
        self.count = len(credentials)
        self.next_index = 0
        self.connecting = 0
        self.open: list[Any] = []
        self.failed = 0
        self.closed = 0
        self.phases: list[list[Any]] = [[] for _ in range(PHASES)]
        self.sent = 0
        self.received = {"media": 0, "mark": 0, "other": 0, "close": 0}
        self.marks_echoed = 0
        self.lateness: list[float] = []
        self.tick_number = 0
        self.t0 = 0.0
        self.pacing_began: tuple[float, float] | None = None
        self.pacing_ended: tuple[float, float] | None = None
        self.reported = False
        self.window_figures: dict[str, Any] | None = None
        self.window: tuple[float, float] | None = None
        self.measuring = False
        self.gaps = [0] * (GAP_BUCKETS + 1)
        self._window_begin: tuple[float, float, int, int] = (0.0, 0.0, 0, 0)

    # -- connecting ----------------------------------------------------------------------

    def start(self) -> None:
        from autobahn.twisted.websocket import WebSocketClientFactory

        self.factory = WebSocketClientFactory(f"ws://127.0.0.1:{self.port}{self.path}")
        self.factory.protocol = _client_class(self)
        self.factory.setProtocolOptions(autoPingInterval=0, openHandshakeTimeout=30)
        self._connect_more()

    def _connect_more(self) -> None:
        while self.connecting < CONNECTING_AT_ONCE and self.next_index < self.count:
            self.next_index += 1
            self.connecting += 1
            self.reactor.connectTCP("127.0.0.1", self.port, self.factory, timeout=30)

    def opened(self, client: Any) -> None:
        self.connecting -= 1
        index = len(self.open)
        self.open.append(client)
        self.phases[index % PHASES].append(client)
        client.begin(self.credentials[index], index)
        self._connect_more()
        if len(self.open) == self.count:
            self._start_pacing()

    def lost(self, client: Any, was_open: bool) -> None:
        if not was_open:
            self.connecting -= 1
            self.failed += 1
            self._connect_more()
            if self.failed + len(self.open) == self.count and self.open:
                self._start_pacing()
            return
        self.closed += 1
        if self.pacing_ended is None:
            self.pacing_ended = (time.perf_counter(), sum(cpu_seconds()))
        if self.closed >= len(self.open):
            self.report()

    # -- pacing ----------------------------------------------------------------------------

    def _start_pacing(self) -> None:
        if self.pacing_began is not None:
            return
        self.pacing_began = (time.perf_counter(), sum(cpu_seconds()))
        self.t0 = self.reactor.seconds()
        self.reactor.callLater(0, self._tick)
        if self.window is not None:
            self.reactor.callLater(self.window[0], self._open_window)

    # -- the measured window (--duration) ------------------------------------------------

    def _open_window(self) -> None:
        self._window_begin = (
            time.perf_counter(),
            sum(cpu_seconds()),
            self.sent,
            self.received["media"],
        )
        self.lateness = []
        self.measuring = True
        # Gaps are counted from the window's start, so a stream that stays silent counts too.
        opened_at = time.monotonic()
        for client in self.open:
            client.last_media = opened_at
        emit({"window": "open", "opened": len(self.open), "failed": self.failed})
        self.reactor.callLater(self.window[1], self._close_window)

    def _close_window(self) -> None:
        self.measuring = False
        closed_at = time.monotonic()
        for client in self.open:
            # A stream still waiting for its next frame at the end: a gap longer than 60 ms
            # already is a late frame, whenever that frame comes.
            gap = int((closed_at - client.last_media) * 1000)
            if client.live and gap > 60:
                self.gaps[min(gap, GAP_BUCKETS)] += 1
        began_wall, began_cpu, sent, received = self._window_begin
        wall = max(1e-9, time.perf_counter() - began_wall)
        sent = self.sent - sent
        received = self.received["media"] - received
        self.window_figures = {
            "seconds": round(wall, 3),
            "mediaSent": sent,
            "mediaReceived": received,
            "outInRatio": round(received / sent, 4) if sent else None,
            "gapMsP50": gap_percentile(self.gaps, 50),
            "gapMsP99": gap_percentile(self.gaps, 99),
            "gapMsMax": max((ms for ms, n in enumerate(self.gaps) if n), default=None),
            "gapsOver60ms": sum(self.gaps[61:]),
            "cpuUtilization": round((sum(cpu_seconds()) - began_cpu) / wall, 4),
        }
        self.report()

    def _tick(self) -> None:
        if self.pacing_ended is not None:
            return
        step = FRAME / PHASES
        now = self.reactor.seconds()
        due = self.t0 + self.tick_number * step
        while due <= now:
            self.lateness.append(now - due)
            for client in self.phases[self.tick_number % PHASES]:
                if client.live:
                    client.transport.write(client.frame)
                    self.sent += 1
            self.tick_number += 1
            due = self.t0 + self.tick_number * step
        self.reactor.callLater(max(0.0, due - self.reactor.seconds()), self._tick)

    # -- the end ----------------------------------------------------------------------------

    def report(self) -> None:
        if self.reported:
            return
        self.reported = True
        began = self.pacing_began or (time.perf_counter(), sum(cpu_seconds()))
        ended = self.pacing_ended or (time.perf_counter(), sum(cpu_seconds()))
        wall = max(1e-9, ended[0] - began[0])
        late = self.lateness
        emit(
            {
                "load": {
                    "streams": self.count,
                    "opened": len(self.open),
                    "failed": self.failed,
                    "pacedSeconds": round(wall, 3),
                    "mediaSent": self.sent,
                    "received": self.received,
                    "marksEchoed": self.marks_echoed,
                    "cpuUtilization": round((ended[1] - began[1]) / wall, 4),
                    "tickLatenessMsP99": round(percentile(late, 99) * 1000, 2) if late else None,
                    "tickLatenessMsMax": round(max(late, default=0.0) * 1000, 2),
                    "ticksLaterThan20ms": sum(1 for x in late if x > FRAME),
                    **({"window": self.window_figures} if self.window_figures else {}),
                }
            }
        )
        self.reactor.callLater(0, self.reactor.stop)


def _client_class(gen: Generator) -> type:
    from autobahn.twisted.websocket import WebSocketClientProtocol

    class TwilioClient(WebSocketClientProtocol):
        """One media stream, as Twilio's side of it."""

        raw = False
        live = False
        frame = b""
        was_open = False
        last_media = 0.0

        def onOpen(self) -> None:
            self.was_open = True
            gen.opened(self)

        def begin(self, credentials: dict, index: int) -> None:
            call_sid = credentials.get("callSid") or f"CA{index:032x}"
            self.stream_sid = f"MZ{index:032x}"
            self.sendMessage(
                json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}).encode()
            )
            parameters = {k: credentials[k] for k in ("token", "callId") if k in credentials}
            start = {
                "event": "start",
                "sequenceNumber": "1",
                "start": {
                    "accountSid": "AC" + "1" * 32,
                    "streamSid": self.stream_sid,
                    "callSid": call_sid,
                    "tracks": ["inbound"],
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                    "customParameters": parameters,
                },
                "streamSid": self.stream_sid,
            }
            self.sendMessage(json.dumps(start).encode())
            media = {
                "event": "media",
                "sequenceNumber": "2",
                "media": {
                    "track": "inbound",
                    "chunk": "1",
                    "timestamp": "20",
                    "payload": base64.b64encode(AUDIO).decode("ascii"),
                },
                "streamSid": self.stream_sid,
            }
            self.frame = masked_frame(json.dumps(media).encode(), os.urandom(4))
            self.buffer = bytearray()
            self.raw = True
            self.live = True

        def dataReceived(self, data: bytes) -> None:
            if not self.raw:
                super().dataReceived(data)
                return
            buf = self.buffer
            buf += data
            pos, end_of_data = 0, len(buf)
            received = gen.received
            now = time.monotonic() if gen.measuring else 0.0
            while end_of_data - pos >= 2:
                size = buf[pos + 1] & 0x7F
                head = 2
                if size == 126:
                    if end_of_data - pos < 4:
                        break
                    size = (buf[pos + 2] << 8) | buf[pos + 3]
                    head = 4
                elif size == 127:
                    if end_of_data - pos < 10:
                        break
                    size = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                    head = 10
                end = pos + head + size
                if end > end_of_data:
                    break
                start = pos + head
                opcode = buf[pos] & 0x0F
                if opcode == 1:
                    if buf.find(b'"media"', start, start + 24) >= 0:
                        received["media"] += 1
                        if now:
                            gap = int((now - self.last_media) * 1000)
                            gen.gaps[gap if gap < GAP_BUCKETS else GAP_BUCKETS] += 1
                            self.last_media = now
                    elif buf.find(b'"mark"', start, start + 24) >= 0:
                        received["mark"] += 1
                        self._echo_mark(bytes(buf[start:end]))
                    else:
                        received["other"] += 1
                elif opcode == 8:
                    received["close"] += 1
                    self.live = False
                pos = end
            del buf[:pos]

        def _echo_mark(self, payload: bytes) -> None:
            message = json.loads(payload)
            echo = {
                "event": "mark",
                "sequenceNumber": "3",
                "streamSid": self.stream_sid,
                "mark": {"name": message["mark"]["name"]},
            }
            self.sendMessage(json.dumps(echo).encode())
            gen.marks_echoed += 1

        def connectionLost(self, reason: Any) -> None:
            self.live = False
            self.raw = False
            super().connectionLost(reason)
            gen.lost(self, self.was_open)

    return TwilioClient


def main(argv: list[str] | None = None) -> None:
    """Play Twilio against the server on C{--port} until it closes the sockets."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/voice/stream")
    parser.add_argument("--cpu", type=int, default=None)
    parser.add_argument("--max-seconds", type=float, default=120.0)
    parser.add_argument(
        "--duration", type=float, default=None, help="measure a window of this many seconds"
    )
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before the window")
    args = parser.parse_args(argv)
    pin(args.cpu)
    credentials = json.loads(sys.stdin.readline())["streams"]

    from twisted.internet import reactor

    gen = Generator(reactor, args.port, args.path, credentials)
    if args.duration is not None:
        gen.window = (args.warmup, args.duration)
    reactor.callWhenRunning(gen.start)
    reactor.callLater(args.max_seconds, gen.report)
    reactor.run()


if __name__ == "__main__":
    main()
