"""
Outbound media, in process: the daemon's CPU per 20 ms frame it speaks, and the memory one
speaking stream holds.

N Twilio media streams, each a real L{MediaStream} (autobahn, after a real opening handshake)
on a byte-counting transport, with the real L{MediaSessions}, L{SpeechPlayer}, L{FramePacer} and
shared L{PacingClock}, speak without pause on a L{Clock} moved 20 ms a step.  The TTS fake
delivers audio at 4x real time in vendor-sized chunks, either C{ulaw} (8 kHz mu-law, as
ElevenLabs sends) or C{pcm} (24 kHz PCM through the OpenAI client's real resampler and mu-law
encoder).  Marks are echoed on the next step, as a carrier does.  No inbound audio, no STT and
no kernel socket: this is the outbound path alone, from TTS chunk to bytes handed to the
transport.

C{python -m bench.outbound [--streams 200] [--steps 500] [--tts ulaw|pcm] [--profile PATH]
[--json]}: µs of CPU (C{process_time}) per outbound frame over the steps after a warm-up, and
the Python heap (C{tracemalloc}) per speaking stream: the heap with N streams speaking, less
the heap before they connected, over N.
"""

from __future__ import annotations

import argparse
import base64
import heapq
import json
import math
import time
import tracemalloc
from typing import Any

import numpy as np
from twisted.internet.defer import Deferred

# 68 characters: 3.4 s of speech at SECONDS_PER_CHAR (--repeat makes longer replies).
UTTERANCE = "Thanks for calling. Your table for two is booked for eight tonight."
SECONDS_PER_CHAR = 0.05
_HANDSHAKE = (
    b"GET /voice/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: "
    + base64.b64encode(b"0123456789abcdef")
    + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


class CountingTransport:
    """A connected TCP transport that keeps nothing: it counts what it is given."""

    disconnecting = False

    def __init__(self) -> None:
        from twisted.internet.address import IPv4Address

        self.written = 0
        self.writes = 0
        self.producer: Any = None
        self._peer = IPv4Address("TCP", "127.0.0.1", 40000)

    def write(self, data: bytes) -> None:
        self.written += len(data)
        self.writes += 1

    def writeSequence(self, seq: list[bytes]) -> None:
        for data in seq:
            self.write(data)

    def getPeer(self) -> Any:
        return self._peer

    def getHost(self) -> Any:
        return self._peer

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def loseConnection(self) -> None:
        self.disconnecting = True

    def abortConnection(self) -> None:
        self.disconnecting = True

    def setTcpNoDelay(self, enabled: bool) -> None:
        """Accepted and ignored."""


class HeapClock:
    """
    An L{IReactorTime} moved by hand, like L{twisted.internet.task.Clock}, but with a heap of
    calls (C{Clock} sorts its whole list on every C{callLater}, which would dwarf the daemon's
    own cost with hundreds of streams).
    """

    def __init__(self) -> None:
        self._now = 0.0
        self._heap: list[tuple[float, int, Any]] = []
        self._seq = 0

    def seconds(self) -> float:
        return self._now

    def callLater(self, delay: float, f: Any, *args: Any, **kw: Any) -> Any:
        from twisted.internet.base import DelayedCall

        call = DelayedCall(
            self._now + delay, f, args, kw, self._cancelled, self._push, seconds=self.seconds
        )
        self._push(call)
        return call

    def _push(self, call: Any) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (call.time, self._seq, call))

    def _cancelled(self, call: Any) -> None:
        """Dropped lazily, when its turn comes."""

    def getDelayedCalls(self) -> list[Any]:
        return [c for t, _, c in self._heap if not (c.cancelled or c.called) and t == c.time]

    def advance(self, amount: float) -> None:
        self._now += amount
        heap = self._heap
        while heap and heap[0][0] <= self._now:
            when, _, call = heapq.heappop(heap)
            if call.cancelled or call.called or when != call.time:
                continue
            if call.delayed_time > 0:
                # Reset to later: its new time is known now (as the reactor does it).
                call.activate_delay()
                self._push(call)
                continue
            call.called = 1
            call.func(*call.args, **call.kw)


class ChunkedTTS:
    """Speaks tones at 4x real time: mu-law chunks, or 24 kHz PCM through the real transcoder."""

    name = "bench"

    def __init__(self, clock: Any, kind: str) -> None:
        from voicecalld.media.codec import ulaw_encode

        self.clock = clock
        self.kind = kind
        t = np.arange(2400) / 24000
        tone = (6000 * np.sin(2 * math.pi * 440.0 * t)).astype("<i2")
        # 100 ms a chunk: 4800 bytes of 24 kHz PCM, or 800 bytes of mu-law.
        self.pcm_chunk = tone.tobytes()
        self.ulaw_chunk = ulaw_encode(tone[::3].tobytes())

    def synthesize(self, text: str, on_audio: Any) -> Any:
        from voicecalld.voice.tts import Synthesis
        from voicecalld.voice.tts_openai import PcmToUlaw

        chunks = max(1, round(len(text) * SECONDS_PER_CHAR / 0.1))
        requested = self.clock.seconds()
        transcoder = PcmToUlaw() if self.kind == "pcm" else None
        state = {"n": 0, "timer": None}

        def chunk() -> None:
            if transcoder is not None:
                hold = on_audio(transcoder.feed(self.pcm_chunk))
            else:
                hold = on_audio(self.ulaw_chunk)
            state["n"] += 1
            if state["n"] < chunks:
                if isinstance(hold, Deferred):
                    # The listener has enough: the vendor's next chunk waits (flow control).
                    hold.addCallback(lambda _: go_on())
                else:
                    go_on()
                return
            if transcoder is not None:
                tail = transcoder.flush()
                if tail:
                    on_audio(tail)
            now = self.clock.seconds()
            done.callback(Synthesis(self.name, text, requested, requested, now, 0))

        def go_on() -> None:
            if not done.called:
                state["timer"] = self.clock.callLater(0.025, chunk)

        def cancel(d: Any) -> None:
            if state["timer"] is not None and state["timer"].active():
                state["timer"].cancel()

        done = Deferred(cancel)
        state["timer"] = self.clock.callLater(0.05, chunk)
        return done


class Rig:
    """N speaking Twilio streams on one clock."""

    def __init__(self, streams: int, tts_kind: str, repeat: int = 1) -> None:
        from voicecalld.media.session import MediaSessions
        from voicecalld.media.stream import StreamLimits
        from voicecalld.providers.twilio.codec import TwilioCodec

        self.clock = HeapClock()
        room = streams + 8
        limits = StreamLimits(max_pending=room, max_pending_per_peer=room, max_connections=room)
        self.tts = ChunkedTTS(self.clock, tts_kind)
        self.sessions = MediaSessions(
            self.clock, limits, TwilioCodec(), lambda event: None, tts=self.tts
        )
        self.transports: list[CountingTransport] = []
        self.utterances = 0
        self.failures = 0
        self._count = streams
        self._text = " ".join([UTTERANCE] * repeat)

    def connect(self) -> None:
        """Open every stream (handshake, start) and start it speaking."""
        from twisted.internet.address import IPv4Address

        for n in range(self._count):
            call_id = f"bench-{n}"
            call_ref = f"CA{n:032x}"
            self.sessions.track(call_id)
            token = self.sessions.issue(call_id, call_ref)
            proto = self.sessions.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
            transport = CountingTransport()
            self.transports.append(transport)
            proto.makeConnection(transport)
            proto.dataReceived(_HANDSHAKE)
            start = {
                "event": "start",
                "streamSid": f"MZ{n:032x}",
                "start": {
                    "streamSid": f"MZ{n:032x}",
                    "callSid": call_ref,
                    "customParameters": {"token": token},
                },
            }
            proto.onMessage(json.dumps(start).encode(), False)
            session = self.sessions.session(call_id)
            if session is None:
                raise RuntimeError(f"stream {n} did not start")
            self._echo_marks(session)
            self._speak(session)

    def _echo_marks(self, session: Any) -> None:
        pacer = session.pacer
        send = pacer._send_mark
        clock = self.clock

        def send_and_echo(name: str) -> None:
            send(name)
            clock.callLater(0.02, session.mark, name)

        pacer._send_mark = send_and_echo

    def _speak(self, session: Any) -> None:
        def again(_: Any) -> None:
            self.utterances += 1
            self._speak(session)

        def failed(_: Any) -> None:
            self.failures += 1

        session.say(self._text).addCallbacks(again, failed)

    def step(self, count: int) -> None:
        """Move the clock 20 ms, C{count} times."""
        advance = self.clock.advance
        for _ in range(count):
            advance(0.02)

    def frames_sent(self) -> int:
        """Media frames sent over all streams."""
        return sum(s.pacer.frames_sent for s in self.sessions.sessions())


def measure_cpu(
    streams: int,
    steps: int,
    tts: str,
    warmup: int = 100,
    profile: str | None = None,
    repeat: int = 1,
) -> dict[str, Any]:
    """µs of CPU per outbound frame with C{streams} speaking."""
    rig = Rig(streams, tts, repeat)
    rig.connect()
    rig.step(warmup)
    frames_before = rig.frames_sent()
    bytes_before = sum(t.written for t in rig.transports)
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    start = time.process_time()
    rig.step(steps)
    spent = time.process_time() - start
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(profile)
    frames = rig.frames_sent() - frames_before
    return {
        "streams": streams,
        "tts": tts,
        "steps": steps,
        "frames": frames,
        "expectedFrames": streams * steps,
        "bytesWritten": sum(t.written for t in rig.transports) - bytes_before,
        "usPerFrame": round(spent * 1e6 / frames, 2) if frames else None,
        "utterances": rig.utterances,
        "failures": rig.failures,
    }


def measure_memory(streams: int, tts: str, warmup: int = 150, repeat: int = 1) -> dict[str, Any]:
    """Python heap per speaking stream: N streams speaking less none, over N."""
    import gc

    tracemalloc.start(1)
    rig = Rig(streams, tts, repeat)
    gc.collect()
    before = tracemalloc.get_traced_memory()[0]
    snapshot_before = tracemalloc.take_snapshot()
    rig.connect()
    rig.step(warmup)
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    snapshot_after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    top = snapshot_after.compare_to(snapshot_before, "lineno")[:12]
    return {
        "streams": streams,
        "tts": tts,
        "kibPerStream": round((after - before) / streams / 1024, 2),
        "top": [
            {
                "where": f"{s.traceback[0].filename.split('site-packages/')[-1]}:"
                f"{s.traceback[0].lineno}",
                "kibPerStream": round(s.size_diff / streams / 1024, 2),
            }
            for s in top
        ],
    }


def main(argv: list[str] | None = None) -> None:
    """Print µs per outbound frame and KiB per speaking stream."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tts", choices=("ulaw", "pcm"), default=None, help="default: both")
    parser.add_argument("--profile", metavar="PATH", help="cProfile one round into PATH")
    parser.add_argument(
        "--repeat", type=int, default=1, help="utterance length in 3.4 s units (default 1)"
    )
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    kinds = (args.tts,) if args.tts else ("ulaw", "pcm")
    figures: dict[str, Any] = {}
    for kind in kinds:
        rounds = [
            measure_cpu(args.streams, args.steps, kind, repeat=args.repeat)
            for _ in range(args.rounds)
        ]
        best = min(rounds, key=lambda r: r["usPerFrame"] or math.inf)
        best["usPerFrameRounds"] = [r["usPerFrame"] for r in rounds]
        figures[kind] = {"cpu": best}
        if args.profile:
            measure_cpu(
                args.streams, args.steps, kind, profile=f"{args.profile}.{kind}", repeat=args.repeat
            )
        if not args.no_memory:
            figures[kind]["memory"] = measure_memory(args.streams, kind, repeat=args.repeat)
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    for kind, f in figures.items():
        cpu = f["cpu"]
        print(
            f"{kind:5} {cpu['usPerFrame']:6.2f} µs/frame (best of {cpu['usPerFrameRounds']})"
            f"  {cpu['frames']} of {cpu['expectedFrames']} frames, {cpu['failures']} failures"
        )
        if "memory" in f:
            memory = f["memory"]
            print(f"      {memory['kibPerStream']:6.2f} KiB/stream (tracemalloc); top:")
            for item in memory["top"][:8]:
                print(f"        {item['kibPerStream']:7.2f}  {item['where']}")


if __name__ == "__main__":
    main()
