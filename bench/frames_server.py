"""
The server side of the frames benchmark: one contender per process.

C{relay}: a bare autobahn server that parses each Twilio message (json.loads), decodes its
payload (base64) and answers each inbound media frame with one outbound media frame
(json.dumps + base64).  The baseline of issue 5.

C{voicecalld}: the daemon's own media path.  A real L{TwilioProvider} behind the daemon's
L{GuardedSite} (its WebSocket resource, stream tokens, L{MediaStream} with the Twilio codec, one
L{MediaSession} per call); inbound audio goes to a real L{OpenAIRealtimeSession} whose socket is
a null object (it batches and base64-encodes appends exactly as on a call, and the append is
dropped where autobahn would frame and write it); outbound, every stream speaks without pause
through L{SpeechPlayer}, L{FramePacer} and the shared L{PacingClock} from L{ToneTTS}, so it
sends 50 frames a second too.

The process pins itself to a core, listens on 127.0.0.1, prints a C{ready} line (port, path and
per-stream call SIDs and tokens), waits until every stream has started, lets C{--warmup} seconds
pass, then measures its own CPU time (getrusage) and frame counts over C{--duration} seconds,
prints a C{result} line and exits.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from bench._common import core_shares, core_times, cpu_seconds, emit, percentile, pin

STREAM_PATH = "/voice/stream"
# BENCH_DEBUG=1: a line on stderr every 100 ms of the window (lag, counts, CPU).
_DEBUG = bool(os.environ.get("BENCH_DEBUG"))
# A few seconds of speech per utterance, so that marks and utterance turnover are exercised.
# ToneTTS makes 400 bytes (50 ms) of audio per character: this is 3.4 s of speech.
UTTERANCE = "Thanks for calling. Your table for two is booked for eight tonight."


class Window:
    """Counts over the measured window: CPU, wall time, frames, reactor lag."""

    def __init__(
        self, reactor: Any, streams: int, warmup: float, duration: float, core: int | None
    ) -> None:
        self.reactor = reactor
        self.core = core
        self.streams = streams
        self.warmup = warmup
        self.duration = duration
        self.started = 0
        self.lags: list[float] = []
        self._probe_due = 0.0
        self._measuring = False
        self._begin: dict[str, float] = {}
        self.read_counts: Any = None  # () -> dict of counters, set by the contender
        self.extra: Any = None  # () -> dict of facts for the result, set by the contender
        self.profile: Any = None
        self.profile_path = ""

    def stream_started(self) -> None:
        """One more stream sent a valid start; the window opens once all have."""
        self.started += 1
        if self.started == self.streams:
            self.reactor.callLater(self.warmup, self._open)

    def _snapshot(self) -> dict[str, float]:
        user, system = cpu_seconds()
        return {"wall": time.perf_counter(), "user": user, "system": system, **self.read_counts()}

    def _open(self) -> None:
        if self.profile is not None:
            self.profile.enable()
        self._core_begin = core_times(self.core)
        self._begin = self._snapshot()
        self._measuring = True
        self._probe_due = self.reactor.seconds() + 0.1
        self.reactor.callLater(0.1, self._probe)
        self.reactor.callLater(self.duration, self._close)

    def _probe(self) -> None:
        if not self._measuring:
            return
        now = self.reactor.seconds()
        self.lags.append(max(0.0, now - self._probe_due))
        if _DEBUG:
            c = self.read_counts()
            sys.stderr.write(
                f"{now:.3f} lag={now - self._probe_due:.3f} in={c['inbound']:.0f}"
                f" out={c['outbound']:.0f} cpu={sum(cpu_seconds()):.3f}\n"
            )
        self._probe_due += 0.1
        self.reactor.callLater(max(0.0, self._probe_due - now), self._probe)

    def _close(self) -> None:
        end = self._snapshot()
        core = core_shares(self._core_begin, core_times(self.core))
        if self.profile is not None:
            self.profile.disable()
            self.profile.dump_stats(self.profile_path)
        self._measuring = False
        delta = {k: end[k] - self._begin[k] for k in end}
        cpu = delta["user"] + delta["system"]
        inbound = delta["inbound"]
        outbound = delta["outbound"]
        expected = self.streams * delta["wall"] / 0.020
        result = {
            "streams": self.streams,
            "started": self.started,
            "seconds": round(delta["wall"], 3),
            "cpuSeconds": round(cpu, 4),
            "userSeconds": round(delta["user"], 4),
            "systemSeconds": round(delta["system"], 4),
            "cpuUtilization": round(cpu / delta["wall"], 4),
            "inboundFrames": int(inbound),
            "outboundFrames": int(outbound),
            "expectedFramesEachWay": round(expected),
            "inboundShortfall": round(max(0.0, 1 - inbound / expected), 4),
            "outboundShortfall": round(max(0.0, 1 - outbound / expected), 4),
            "usPerInboundFrame": round(cpu / inbound * 1e6, 2) if inbound else None,
            "usUserPerInboundFrame": round(delta["user"] / inbound * 1e6, 2) if inbound else None,
            "usSystemPerInboundFrame": (
                round(delta["system"] / inbound * 1e6, 2) if inbound else None
            ),
            "reactorLagMsMax": round(max(self.lags, default=0.0) * 1000, 2),
            "reactorLagMsP99": round(percentile(self.lags, 99) * 1000, 2) if self.lags else None,
            **{k: int(v) for k, v in delta.items() if k not in _BASE_KEYS},
            "coreTimeShares": core,
        }
        if self.extra is not None:
            result.update(self.extra())
        emit({"result": result})
        # Give the line time to leave, then go: the load generator sees its sockets close.
        self.reactor.callLater(0.2, self.reactor.stop)


_BASE_KEYS = {"wall", "user", "system", "inbound", "outbound"}


# -- the bare relay -------------------------------------------------------------------------


def serve_relay(reactor: Any, window: Window, max_message_bytes: int) -> Any:
    """Listen with the bare relay (L{bench.peers.relay}); returns the listening port."""
    from bench.peers.relay import relay_factory

    counts = {"inbound": 0, "outbound": 0}
    factory = relay_factory(counts, window.stream_started, max_message_bytes)
    window.read_counts = lambda: dict(counts)
    return reactor.listenTCP(0, factory, interface="127.0.0.1", backlog=1024), []


# -- voicecalld --------------------------------------------------------------------------------


class NullSocket:
    """
    Where an STT session's WebSocket would be: open, and counting what it is sent.

    The session sends C{session.update} once, then one C{input_audio_buffer.append} per batch;
    the audio bytes in the appends are counted so that inbound frames can be counted without
    touching the hot path.
    """

    head = len(b'{"type":"input_audio_buffer.append","audio":"')
    tail = len(b'"}')

    def __init__(self, factory: Any, totals: dict[str, int]) -> None:
        from autobahn.websocket.protocol import WebSocketProtocol

        self.factory = factory
        self.state = WebSocketProtocol.STATE_OPEN
        self._closed_state = WebSocketProtocol.STATE_CLOSED
        self.totals = totals

    def sendMessage(self, payload: bytes, isBinary: bool = False) -> None:
        if payload.startswith(b'{"type":"input_audio_buffer.append"'):
            encoded = len(payload) - self.head - self.tail
            padding = payload.count(b"=", len(payload) - self.tail - 2)
            self.totals["sttAudioBytes"] += encoded // 4 * 3 - padding
            self.totals["sttAppends"] += 1

    def sendClose(self, code: int | None = None, reason: str | None = None) -> None:
        self.state = self._closed_state

    def dropConnection(self, abort: bool = False) -> None:
        self.state = self._closed_state


def serve_voicecalld(reactor: Any, window: Window, streams: int, max_message_bytes: int) -> Any:
    """Listen with voicecalld's media path; returns the port and the streams' credentials."""
    from twisted.internet.defer import succeed

    from tests.fakes.provider import CallBook
    from tests.fakes.tts import ToneTTS
    from voicecalld.config import parse_config
    from voicecalld.providers.twilio.provider import TwilioProvider
    from voicecalld.values import events as ev
    from voicecalld.values.record import CONVERSATION, OUTBOUND, CallRecord
    from voicecalld.values.states import CallState
    from voicecalld.voice.stt_openai import OpenAIRealtimeSTT
    from voicecalld.web.guard import GuardedSite
    from voicecalld.web.limits import WebLimits
    from voicecalld.web.site import build_root

    totals = {"sttAudioBytes": 0, "sttAppends": 0}
    room = streams + 64
    config = {
        "provider": "twilio",
        "fromNumber": "+15550001111",
        "maxConcurrentCalls": room,
        "twilio": {"accountSid": "AC" + "1" * 32, "authToken": "bench-token"},
        "streaming": {
            "enabled": True,
            "streamPath": STREAM_PATH,
            "maxConnections": room,
            "maxPendingConnections": room,
            "maxPendingConnectionsPerIp": room,
            "providers": {"openai": {"apiKey": "bench-key"}},
            # Pointed at nothing: the socket is a NullSocket (see connect below).
            "sttUrl": "ws://127.0.0.1:9/v1/realtime",
        },
    }
    settings = parse_config(config, None, {}).settings

    class NullSocketSTT(OpenAIRealtimeSTT):
        """OpenAI realtime STT whose sockets are L{NullSocket}s that configure at once."""

        def connect(self, factory: Any) -> Any:
            socket = NullSocket(factory, totals)
            session = factory.session
            # What the real protocol does: on open the session sends session.update, and the
            # server answers session.updated.
            reactor.callLater(0, session._opened, socket)
            reactor.callLater(0, session._received, socket, b'{"type":"session.updated"}', False)
            return succeed(socket)

    stt = NullSocketSTT(settings.streaming.providers["openai"], settings.streaming.stt_url, reactor)
    tts = ToneTTS(reactor)
    provider = TwilioProvider(
        settings,
        reactor,
        public_url="http://127.0.0.1:1/voice/webhook",
        tts=tts,
        stt=stt,
        frame_lead=settings.streaming.frame_lead_ms / 1000.0,
    )
    records: dict[str, CallRecord] = {}
    spoken = {"utterances": 0, "failures": 0}

    def speak(record: CallRecord) -> None:
        if record.call_id not in records:
            return
        d = provider.speak(record, UTTERANCE)

        def again(playback: Any) -> None:
            spoken["utterances"] += 1
            speak(record)

        def failed(failure: Any) -> None:
            spoken["failures"] += 1

        d.addCallbacks(again, failed)

    def sink(event: ev.CallEvent) -> Any:
        # What the call manager would do with a connected stream: start talking (the manager's
        # own cost per frame is nil; it is measured per turn by bench.turns).
        if isinstance(event, ev.MediaConnected):
            record = records.get(event.call_id)
            if record is not None:
                window.stream_started()
                reactor.callLater(0, speak, record)
        return succeed(None)

    provider.start(sink, CallBook())
    now = reactor.seconds()
    credentials = []
    for n in range(streams):
        record = CallRecord(
            call_id=f"bench-{n}",
            provider="twilio",
            direction=OUTBOUND,
            mode=CONVERSATION,
            from_number="+15550001111",
            to_number="+15551234567",
            state=CallState.ANSWERED,
            started_at=now,
            provider_call_id=f"CA{n:032x}",
            answered_at=now,
        )
        records[record.call_id] = record
        provider.answer(record)
        token = provider.media.tokens.issue(record.call_id, record.provider_call_id)
        credentials.append(
            {"callSid": record.provider_call_id, "callId": record.call_id, "token": token}
        )

    def media_sessions() -> list[Any]:
        return provider.media.sessions()

    def read_counts() -> dict[str, float]:
        sessions = media_sessions()
        # Audio still waiting in a session's batch has been handled too.
        pending = sum(len(m.stt._pending) for m in sessions if m.stt is not None)
        return {
            "inbound": (totals["sttAudioBytes"] + pending) / 160,
            "outbound": sum(m.pacer.frames_sent for m in sessions),
            "sttAppends": totals["sttAppends"],
            "utterances": spoken["utterances"],
        }

    def extra() -> dict[str, Any]:
        return {
            "liveStreams": len(media_sessions()),
            "speechFailures": spoken["failures"],
            "stt": "real OpenAIRealtimeSession over a null socket (no autobahn framing/write)",
        }

    window.read_counts = read_counts
    window.extra = extra
    site = GuardedSite(
        build_root(provider.web_resources()),
        limits=WebLimits(
            max_connections=room,
            rate=1e6,
            burst=1_000_000,
            max_in_flight_per_peer=room,
        ),
        reactor=reactor,
    )
    site.noisy = False
    return reactor.listenTCP(0, site, interface="127.0.0.1", backlog=1024), credentials


def main(argv: list[str] | None = None) -> None:
    """Run one contender until its window is measured."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=("relay", "voicecalld"))
    parser.add_argument("--streams", type=int, default=400)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--cpu", type=int, default=None)
    parser.add_argument("--max-message-bytes", type=int, default=64 * 1024)
    parser.add_argument("--profile", metavar="PATH", help="cProfile the window into PATH")
    args = parser.parse_args(argv)
    core = pin(args.cpu)

    from twisted.internet import reactor
    from twisted.logger import (
        FilteringLogObserver,
        LogLevel,
        LogLevelFilterPredicate,
        globalLogBeginner,
        textFileLogObserver,
    )

    predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)
    globalLogBeginner.beginLoggingTo(
        [FilteringLogObserver(textFileLogObserver(sys.stderr), [predicate])],
        redirectStandardIO=False,
    )
    window = Window(reactor, args.streams, args.warmup, args.duration, core)
    if args.profile:
        import cProfile

        window.profile, window.profile_path = cProfile.Profile(), args.profile
    if args.kind == "relay":
        port, credentials = serve_relay(reactor, window, args.max_message_bytes)
    else:
        port, credentials = serve_voicecalld(reactor, window, args.streams, args.max_message_bytes)
    emit(
        {
            "ready": True,
            "kind": args.kind,
            "core": core,
            "port": port.getHost().port,
            "path": STREAM_PATH,
            "streams": credentials,
        }
    )
    reactor.run()


if __name__ == "__main__":
    main()
