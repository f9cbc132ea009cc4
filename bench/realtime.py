"""
Realtime frames: the daemon's CPU per 20 ms frame of a realtime call, in process, for OpenAI's
C{g711_ulaw} and C{pcm16} audio formats.

One Twilio call through the real provider, media stream, bridge and L{OpenAIRealtimeVoice}
(its socket a null object that counts the appends), on a L{MemoryReactorClock}.  Only the
daemon's own work is timed (C{time.process_time}): each carrier C{media} message is handed to
our stream protocol's C{onMessage} (autobahn's frame parsing is not counted), and each vendor
C{response.output_audio.delta} (100 ms, every fifth frame) to the session's C{_received};
the clock then moves 20 ms, so the pacer sends the frame out to the carrier.

  - C{in}: carrier frame in → resample/encode → C{input_audio_buffer.append} (batched);
  - C{out}: vendor delta → decode/resample → bridge → pacer → carrier C{media} frame out;
  - C{both}: the two together, as in a call where both sides talk.

C{python -m bench.realtime [--frames 1000] [--rounds 3] [--json]}: the median of the rounds.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from twisted.internet.defer import succeed
from twisted.trial.unittest import TestCase

FORMATS = ("g711_ulaw", "pcm16")


class _Host(TestCase):
    """Lends the rig what it asks of a test (temp dirs, results of Deferreds)."""

    def runTest(self) -> None:
        """Not run."""

    made: list[str] = []

    def mktemp(self) -> str:
        """A fresh path under the system's temp directory (not the working directory)."""
        self.made.append(tempfile.mkdtemp(prefix="vc-bench-"))
        return str(Path(self.made[-1]) / "store")


class NullSocket:
    """The vendor's socket: open, counting the caller audio it is sent."""

    def __init__(self, totals: dict[str, int]) -> None:
        from autobahn.websocket.protocol import WebSocketProtocol

        self.state = WebSocketProtocol.STATE_OPEN
        self._closed = WebSocketProtocol.STATE_CLOSED
        self.totals = totals

    def sendMessage(self, payload: bytes, isBinary: bool = False) -> None:
        if payload.startswith(b'{"type":"input_audio_buffer.append"') or (
            b"input_audio_buffer.append" in payload[:60]
        ):
            self.totals["appends"] += 1

    def sendClose(self, code: int | None = None, reason: str | None = None) -> None:
        self.state = self._closed

    def dropConnection(self, abort: bool = False) -> None:
        self.state = self._closed


def _tone(rate: int, seconds: float) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    return (8000 * np.sin(2 * math.pi * 440.0 * t)).astype("<i2").tobytes()


def measure(audio_format: str, frames: int) -> dict[str, float]:
    """µs of CPU per 20 ms frame, inbound, outbound and both, for one audio format."""
    from tests.unit.rigs import MemoryRig
    from voicecalld.config import parse_config
    from voicecalld.media.codec import ulaw_encode
    from voicecalld.realtime.openai import OpenAIRealtimeVoice

    totals = {"appends": 0}
    sockets: list[tuple[Any, NullSocket]] = []
    realtime = {
        "provider": "openai",
        "providers": {
            "openai": {
                "apiKey": "bench-key",
                "baseUrl": "ws://127.0.0.1:9/v1/realtime",
                "audioFormat": audio_format,
            }
        },
    }
    block = parse_config(
        {"provider": "mock", "fromNumber": "+15550001111", "realtime": realtime}, None, {}
    ).settings.realtime.providers["openai"]
    host = _Host()
    holder: dict[str, Any] = {}

    class NullVoice(OpenAIRealtimeVoice):
        def connect(self, factory: Any) -> Any:
            socket = NullSocket(totals)
            session = factory.owner
            sockets.append((session, socket))
            clock = holder["rig"].reactor
            clock.callLater(0, session._opened, socket)
            clock.callLater(0, session._received, socket, b'{"type":"session.updated"}', False)
            return succeed(socket)

    voice = NullVoice(block, None)
    rig = MemoryRig(host, {"realtime": realtime}, realtime=voice)
    voice.reactor = voice.clock = rig.reactor
    holder["rig"] = rig
    rig.initiate("Hello.", "conversation")
    call = rig.run(rig.fake.when_call(0))
    rig.run(call.answer())
    stream = rig.run(call.when_stream())
    rig.until(lambda: sockets)
    session, socket = sockets[0]
    server = rig.wire.pumps[0].server.wrappedProtocol  # the guard's wrapper → MediaStream

    if audio_format == "pcm16":
        chunk = _tone(24000, 0.1)
    else:
        chunk = ulaw_encode(_tone(8000, 0.1))
    delta = json.dumps(
        {
            "type": "response.output_audio.delta",
            "response_id": "resp_1",
            "item_id": "item_1",
            "output_index": 0,
            "content_index": 0,
            "delta": base64.b64encode(chunk).decode(),
        }
    ).encode()
    caller = ulaw_encode(_tone(8000, 0.02))
    media = [
        json.dumps(stream.dialect.media(stream, caller, n, n * 20)).encode()
        for n in range(frames * 3 + 1)
    ]
    created = json.dumps({"type": "response.created", "response": {"id": "resp_1"}}).encode()
    session._received(socket, created, False)
    rig.pump()

    results: dict[str, float] = {}
    sequence = iter(media)

    def loop(inbound: bool, outbound: bool) -> float:
        start = time.process_time()
        for n in range(frames):
            if inbound:
                server.onMessage(next(sequence), False)
            if outbound and n % 5 == 0:
                session._received(socket, delta, False)
            rig.reactor.advance(0.02)
        spent = time.process_time() - start
        # Deliver what piled up (outside the timed loop), so the carrier echoes marks.
        rig.pump()
        return spent * 1e6 / frames

    appends_before = totals["appends"]
    results["in"] = loop(True, False)
    results["inAppends"] = totals["appends"] - appends_before
    results["both"] = loop(True, True)
    sent_before = len(stream.frames)
    # Last, and shorter than the 30 s no-media backstop, which would end the call.
    results["out"] = loop(False, True)
    results["outFrames"] = len(stream.frames) - sent_before
    rig.quiesce()
    for path in host.made:
        shutil.rmtree(path, ignore_errors=True)
    return results


def main(argv: list[str] | None = None) -> None:
    """Print the figures (µs of CPU per 20 ms frame) for each audio format."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=1000, help="per phase, at most 1400")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    figures = {}
    for fmt in FORMATS:
        rounds = [measure(fmt, min(args.frames, 1400)) for _ in range(args.rounds)]
        figures[fmt] = {k: sorted(r[k] for r in rounds)[len(rounds) // 2] for k in rounds[0]}
    if args.json:
        print(json.dumps(figures))
        return
    for fmt, f in figures.items():
        print(
            f"{fmt:10} in {f['in']:6.1f} µs/frame ({f['inAppends']} appends)"
            f"  out {f['out']:6.1f} µs/frame ({f['outFrames']} frames)"
            f"  both {f['both']:6.1f} µs/frame"
        )


if __name__ == "__main__":
    main()
