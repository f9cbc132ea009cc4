"""
The system benchmark's load generator: plays N calls against the real daemon, as a carrier.

C{python -m bench.system.generator --carrier twilio|telnyx|plivo [--cpu 1]} runs the
carrier's fake (C{tests.fakes}) in this process: it signs the inbound webhooks, answers the
daemon's REST commands, follows the TwiML / XML / commands to the stream URL and dials it.
Once a stream is open, L{bench.system.streams} takes its socket over: 50 frames/s of caller
audio per stream on an absolute schedule (ten phases 2 ms apart), the daemon's frames counted
by header and their gaps timed, its marks and checkpoints echoed by the fake once played.

C{--direct ws://HOST:PORT/PATH} plays Twilio's stream protocol straight at a WebSocket
server (no carrier, no webhook; for the pipecat peer and the bare relay), marks echoed at once.

It talks to the runner in JSON lines.  It prints C{{"ready": {...}}} with what the daemon's
config needs (the fake's REST base URL, keys), then reads commands on stdin:

- C{{"cmd": "calls", "count": N, "webhook": URL}}: place N inbound calls; prints
  C{{"up": {...}}} once every stream is open (or failed).
- C{{"cmd": "begin"}}: start a measuring window; prints C{{"begun": {...}}}.
- C{{"cmd": "end"}}: prints C{{"window": {...}}}: frames sent and received, outbound gaps,
  C{clear} arrival times (C{time.monotonic}) since C{begin}.
- C{{"cmd": "until", "frames": K}}: prints C{{"reached": {...}}} (frames each stream sent
  and received) once every stream has received at least K frames from the daemon.
- C{{"cmd": "quit"}}: stop.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from bench._common import emit, pin
from bench.system.streams import FRAME, LeanStream, Window, media_payload, twilio_media

PHASES = 10
NO_TIMERS = {"openHandshakeTimeout": 0, "closeHandshakeTimeout": 0}
#: Inbound calls started per second (the daemon allows 100 webhooks/s per peer).
CALL_RATE = {"twilio": 60.0, "plivo": 40.0, "telnyx": 25.0, "direct": 200.0}
#: Calls placed but not yet streaming, at most (the daemon serves 32 webhooks at once per peer).
IN_FLIGHT = 16
CALLER = "+15557650000"
DIALLED = "+15550001111"
SECRETS = {
    "twilioAccountSid": "AC" + "5" * 32,
    "twilioAuthToken": "bench-twilio-token",
    "telnyxApiKey": "KEYBENCH" + "0" * 32,
    "plivoAuthId": "MA" + "5" * 18,
    "plivoAuthToken": "bench-plivo-token",
}


class Generator:
    """The carrier's fake plus the taken-over media sockets."""

    def __init__(self, reactor: Any, carrier: str, direct: str | None = None) -> None:
        self.reactor = reactor
        self.carrier = carrier
        self.direct = direct
        self.fake: Any = None
        self.streams: list[LeanStream] = []
        self.phases: list[list[LeanStream]] = [[] for _ in range(PHASES)]
        self.window = Window()
        self.window_began = time.monotonic()
        self.wanted = 0
        self.placed = 0
        self.failed = 0
        self.waiting_up = False
        self.tick_number = 0
        self.t0: float | None = None
        self.lateness: list[float] = []

    # -- the fake carrier ------------------------------------------------------------------

    def listen(self) -> Any:
        """Start the carrier's fake; fires with the C{ready} facts: the daemon's config block
        for the carrier (its REST base URL and credentials), key for key."""
        from twisted.internet.defer import succeed

        self._hook_streams()
        if self.direct:
            return succeed({"carrier": "direct"})
        if self.carrier == "twilio":
            from tests.fakes.twilio import FakeTwilio

            self.fake = FakeTwilio(
                SECRETS["twilioAccountSid"],
                SECRETS["twilioAuthToken"],
                insecure_ws=True,
                ws_options=NO_TIMERS,
            )
            return self.fake.listen().addCallback(
                lambda api: {
                    "apiBaseUrl": api,
                    "accountSid": SECRETS["twilioAccountSid"],
                    "authToken": SECRETS["twilioAuthToken"],
                }
            )
        if self.carrier == "telnyx":
            from tests.fakes.telnyx import FakeTelnyx

            self.fake = FakeTelnyx(SECRETS["telnyxApiKey"], insecure_ws=True, ws_options=NO_TIMERS)
            return self.fake.listen().addCallback(
                lambda _: {
                    "apiBaseUrl": self.fake.api_url,
                    "apiKey": SECRETS["telnyxApiKey"],
                    "connectionId": self.fake.connection_id,
                    "publicKey": self.fake.public_key_pem,
                }
            )
        if self.carrier == "plivo":
            from tests.fakes.plivo import FakePlivo

            self.fake = FakePlivo(
                SECRETS["plivoAuthId"],
                SECRETS["plivoAuthToken"],
                insecure_ws=True,
                ws_options=NO_TIMERS,
            )
            return self.fake.listen().addCallback(
                lambda api: {
                    "apiBaseUrl": api,
                    "authId": SECRETS["plivoAuthId"],
                    "authToken": SECRETS["plivoAuthToken"],
                }
            )
        raise ValueError(f"unknown carrier {self.carrier!r}")

    def _hook_streams(self) -> None:
        """Every stream the fake opens is taken over right after its opening messages."""
        from tests.fakes.media_stream import MediaStreamClient

        generator = self
        opened = MediaStreamClient._on_open

        def on_open(stream: Any, protocol: Any) -> None:
            opened(stream, protocol)
            generator.attach(stream, protocol, media_payload(stream.dialect, stream))

        MediaStreamClient._on_open = on_open

    def attach(self, stream: Any, protocol: Any, payload: bytes) -> None:
        """A stream is open: take its socket over and put it on the schedule."""
        lean = LeanStream(stream, protocol, payload, lambda: self.window, self.reactor.seconds)
        self.phases[len(self.streams) % PHASES].append(lean)
        self.streams.append(lean)
        self._check_up()

    # -- placing calls -----------------------------------------------------------------------

    def calls(self, count: int, webhook: str, timeout: float = 120.0) -> None:
        """
        Place C{count} more inbound calls, paced under the daemon's webhook limits (a rate,
        and at most L{IN_FLIGHT} calls between their webhook and their open stream).  Prints
        C{up} once every stream is open, or after C{timeout} seconds with what there is.
        """
        self.wanted += count
        self.waiting_up = True
        self.webhook = webhook
        self._pump()
        self._start_pacing()
        wanted = self.wanted
        self.reactor.callLater(timeout, self._up_timeout, wanted)

    def _pump(self) -> None:
        in_flight = self.placed - len(self.streams) - self.failed
        if self.placed < self.wanted and in_flight < IN_FLIGHT:
            self._place(self.webhook)
        if self.placed % 50 == 0:
            live = sum(1 for lean in self.streams if lean.live)
            sys.stderr.write(
                f"generator: {self.placed} placed, {len(self.streams)} streams ({live} live),"
                f" {self.failed} failed\n"
            )
        if self.placed < self.wanted:
            rate = CALL_RATE["direct" if self.direct else self.carrier]
            self.reactor.callLater(1.0 / rate, self._pump)

    def _up_timeout(self, wanted: int) -> None:
        if self.waiting_up and self.wanted == wanted:
            self.waiting_up = False
            emit({"up": {"streams": len(self.streams), "failed": self.failed, "timedOut": True}})

    def _place(self, webhook: str) -> None:
        self.placed += 1
        number = self.placed
        caller = f"+1555{number:07d}"
        if self.direct:
            d = _dial_direct(self, self.direct, number)
        elif self.carrier == "twilio":
            d = self.fake.inbound_call(caller, DIALLED, webhook)
        elif self.carrier == "telnyx":
            d = self.fake.inbound_call(caller, DIALLED, webhook_url=webhook)
        else:
            d = self.fake.inbound_call(caller, DIALLED, webhook)
        d.addCallbacks(self._placed, self._place_failed)

    def _placed(self, call: Any) -> None:
        # Twilio's fires once the stream is open; Telnyx's and Plivo's once the first webhook
        # is answered.  A call that ended by then will never stream.
        errors = getattr(call, "errors", None)
        ended = getattr(call, "status", getattr(call, "state", "")) in (
            "completed",
            "failed",
            "busy",
            "no-answer",
            "canceled",
            "hangup",
        )
        if ended or (errors and not getattr(call, "streams", None)):
            self.failed += 1
            sys.stderr.write(f"generator: a call ended before streaming: {errors}\n")
            self._check_up()

    def _place_failed(self, failure: Any) -> None:
        self.failed += 1
        sys.stderr.write(f"generator: a call failed: {failure.getErrorMessage()}\n")
        self._check_up()

    def _check_up(self) -> None:
        if self.waiting_up and len(self.streams) + self.failed >= self.wanted:
            self.waiting_up = False
            emit({"up": {"streams": len(self.streams), "failed": self.failed}})

    # -- pacing ------------------------------------------------------------------------------

    def _start_pacing(self) -> None:
        if self.t0 is None:
            self.t0 = self.reactor.seconds()
            self.reactor.callLater(0, self._tick)

    def _tick(self) -> None:
        step = FRAME / PHASES
        now = self.reactor.seconds()
        due = self.t0 + self.tick_number * step
        while due <= now:
            self.lateness.append(now - due)
            for lean in self.phases[self.tick_number % PHASES]:
                if lean.live:
                    lean.send_frame()
            self.tick_number += 1
            due = self.t0 + self.tick_number * step
        self.reactor.callLater(max(0.0, due - self.reactor.seconds()), self._tick)

    def until(self, frames: int) -> None:
        """Print C{reached} once every stream has heard C{frames} frames from the daemon."""
        if self.streams and all(lean.inbound >= frames for lean in self.streams):
            emit(
                {
                    "reached": {
                        "received": [lean.inbound for lean in self.streams],
                        "sent": [lean.number for lean in self.streams],
                    }
                }
            )
            return
        self.reactor.callLater(0.05, self.until, frames)

    # -- windows -----------------------------------------------------------------------------

    def begin(self) -> dict[str, Any]:
        """Start a measuring window."""
        self.window = Window()
        self.window_began = time.monotonic()
        self.lateness = []
        return {"at": self.window_began, "live": sum(1 for s in self.streams if s.live)}

    def end(self) -> dict[str, Any]:
        """The window's figures."""
        w = self.window
        late = sorted(self.lateness)
        return {
            "seconds": round(time.monotonic() - self.window_began, 3),
            "live": sum(1 for s in self.streams if s.live),
            "sent": w.sent,
            "received": w.media,
            "other": w.other,
            "gapMs": _histogram_percentiles(w.gaps, (50, 99, 99.9)),
            "gapMsMax": max((i for i, n in enumerate(w.gaps) if n), default=0),
            "speakingRate": round(w.gap_count * FRAME / w.gap_seconds, 4)
            if w.gap_seconds
            else None,
            "clears": w.clears,
            "generatorTickLateMsP99": round(late[int(len(late) * 0.99)] * 1000, 2)
            if late
            else None,
        }


def _histogram_percentiles(bins: list[int], qs: tuple[float, ...]) -> dict[str, int | None]:
    total = sum(bins)
    out: dict[str, int | None] = {}
    for q in qs:
        if not total:
            out[f"p{q:g}"] = None
            continue
        rank, seen = q / 100 * total, 0
        for ms, n in enumerate(bins):
            seen += n
            if seen >= rank:
                out[f"p{q:g}"] = ms
                break
    return out


def _dial_direct(gen: Generator, url: str, number: int) -> Any:
    """Open one Twilio media stream straight to C{url} (no carrier in front)."""
    from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
    from twisted.internet.defer import Deferred

    done: Deferred = Deferred()
    stream_sid = f"MZ{number:032x}"
    call_sid = f"CA{number:032x}"

    class Direct:
        """The little of a fake carrier's stream that L{LeanStream} needs."""

        _play_end = 0.0

        def __init__(self, protocol: Any) -> None:
            self.protocol = protocol

        def _on_message(self, payload: bytes, is_binary: bool) -> None:
            message = json.loads(payload)
            if message.get("event") == "mark":
                echo = {
                    "event": "mark",
                    "sequenceNumber": "3",
                    "streamSid": stream_sid,
                    "mark": {"name": message["mark"]["name"]},
                }
                self.protocol.sendMessage(json.dumps(echo).encode())

    class Client(WebSocketClientProtocol):
        def onOpen(self) -> None:
            self.sendMessage(
                json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}).encode()
            )
            start = {
                "event": "start",
                "sequenceNumber": "1",
                "start": {
                    "accountSid": SECRETS["twilioAccountSid"],
                    "streamSid": stream_sid,
                    "callSid": call_sid,
                    "tracks": ["inbound"],
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                    "customParameters": {},
                },
                "streamSid": stream_sid,
            }
            self.sendMessage(json.dumps(start).encode())
            gen.attach(Direct(self), self, twilio_media(stream_sid))
            done.callback(None)

        def onClose(self, wasClean: bool, code: Any, reason: Any) -> None:
            if not done.called:
                done.errback(RuntimeError(f"the stream closed: {reason}"))

    from urllib.parse import urlsplit

    parts = urlsplit(url)
    factory = WebSocketClientFactory(url)
    factory.protocol = Client
    factory.setProtocolOptions(autoPingInterval=0, **NO_TIMERS)
    gen.reactor.connectTCP(parts.hostname, parts.port or 80, factory, timeout=30)
    return done


def main(argv: list[str] | None = None) -> None:
    """Run the generator until C{quit} (or stdin closes)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--carrier", choices=("twilio", "telnyx", "plivo"), default="twilio")
    parser.add_argument("--direct", default=None, metavar="WS_URL")
    parser.add_argument("--cpu", type=int, default=None)
    args = parser.parse_args(argv)
    pin(args.cpu)

    from twisted.internet import reactor, stdio
    from twisted.logger import (
        FilteringLogObserver,
        LogLevel,
        LogLevelFilterPredicate,
        globalLogBeginner,
        textFileLogObserver,
    )
    from twisted.protocols.basic import LineReceiver

    # Errors (a fake's, a stream's) go to stderr, which the runner keeps in a file.
    errors = FilteringLogObserver(
        textFileLogObserver(sys.stderr),
        [LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)],
    )
    globalLogBeginner.beginLoggingTo([errors], redirectStandardIO=False)

    gen = Generator(reactor, args.carrier, args.direct)

    class Commands(LineReceiver):
        delimiter = b"\n"

        def lineReceived(self, line: bytes) -> None:
            # A bad command is reported and the generator goes on.
            try:
                self._command(json.loads(line))
            except Exception as e:
                sys.stderr.write(f"generator: bad command {line[:200]!r}: {e!r}\n")

        def _command(self, command: dict[str, Any]) -> None:
            name = command.get("cmd")
            if name == "calls":
                gen.calls(
                    int(command["count"]),
                    command.get("webhook", ""),
                    float(command.get("timeout", 120.0)),
                )
            elif name == "until":
                gen.until(int(command["frames"]))
            elif name == "begin":
                emit({"begun": gen.begin()})
            elif name == "end":
                emit({"window": gen.end()})
            elif name == "quit":
                reactor.stop()

        def connectionLost(self, reason: Any = None) -> None:
            if reactor.running:
                reactor.stop()

    def ready(facts: dict[str, Any]) -> None:
        emit({"ready": facts})
        stdio.StandardIO(Commands())

    def failed(failure: Any) -> None:
        sys.stderr.write(f"generator: {failure.getTraceback()}\n")
        reactor.stop()

    reactor.callWhenRunning(lambda: gen.listen().addCallbacks(ready, failed))
    reactor.run()


if __name__ == "__main__":
    main()
