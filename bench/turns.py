"""
Turns benchmark: the call manager's own share of a conversation turn's latency.

A real L{CallManager} on the real reactor, with the daemon's SQLite store on its worker thread
(WAL, synchronous=FULL, in a temporary directory), drives many turns on a few conversation
calls.  Every vendor is an instant fake: the responder answers with an already-fired Deferred,
the TTS hands over all its audio at once, and the provider plays speech through the real
L{SpeechPlayer} and L{FramePacer} into a socket stub that echoes marks on the next reactor
turn.  So whatever time a turn takes from the final transcript to the first frame of the reply
is ours.

Each turn is: C{SpeechStopped}, then the final C{Speech} event handed to the manager (t0) ->
the responder asked -> its reply -> the provider's C{speak} -> the first speech frame sent.
It is measured twice: from the outside (perf_counter at each of those points) and from the
inside (the C{lastTurnLatency} stages the manager stores on the call record, C{ours} being the
sum of its own stages).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from typing import Any

from bench._common import core_shares, core_times, cpu_seconds, percentile

TARGET_P99_MS = 5.0
TO = "+15551234567"
CALLER_WORDS = "Could you book a table for two at eight tonight?"
REPLY = "Sure, a table for two at eight. Anything else?"
REPLY_AUDIO_BYTES = 1600  # 200 ms of mu-law: ten frames


class Stamps:
    """The outside timestamps of the turn in flight (perf_counter seconds)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.t0: float | None = None
        self.reply_asked: float | None = None
        self.reply_given: float | None = None
        self.speak: float | None = None
        self.first_frame: float | None = None


def build(reactor: Any, state_dir: str, stamps: Stamps) -> Any:
    """The manager, its store, the instant fakes; returns a namespace of them."""
    from twisted.internet.defer import succeed
    from zope.interface import implementer

    from tests.fakes.provider import RecordingProvider
    from voicecalld.calls.hub import NoticeHub
    from voicecalld.calls.manager import CallManager
    from voicecalld.config import parse_config
    from voicecalld.media.pacing import SILENCE_FRAME, FramePacer, PacingClock
    from voicecalld.media.speech import SpeechPlayer
    from voicecalld.store.sqlite import SQLiteCallStore, ThreadRunner
    from voicecalld.voice.replies import IResponder
    from voicecalld.voice.tts import ITTS, Synthesis

    @implementer(ITTS)
    class InstantTTS:
        """All of the utterance's audio at once."""

        name = "instant"

        def synthesize(self, text: str, on_audio: Any) -> Any:
            now = reactor.seconds()
            on_audio(b"\x7e" * REPLY_AUDIO_BYTES)
            return succeed(Synthesis("instant", text, now, now, now, REPLY_AUDIO_BYTES))

    class Stream:
        """One call's media: the real player and pacer, a socket stub that echoes marks."""

        def __init__(self, ticker: PacingClock) -> None:
            # A lead long enough to send a whole (short) reply at once: the turn ends when the
            # first frame is out either way, and the next turn need not wait for playback.
            self.pacer = FramePacer(reactor, ticker, self.send_frame, self.send_mark, lead=5.0)
            self.player = SpeechPlayer(reactor, self.pacer, lambda: None, InstantTTS(), print)

        def send_frame(self, frame: bytes) -> None:
            if stamps.first_frame is None and stamps.speak is not None:
                if frame is not SILENCE_FRAME:
                    stamps.first_frame = time.perf_counter()

        def send_mark(self, name: str) -> None:
            reactor.callLater(0, self.player.mark_echoed, name)

    class InstantProvider(RecordingProvider):
        """The recording provider, speaking through L{Stream}s."""

        def __init__(self) -> None:
            super().__init__("mock")
            self.ticker = PacingClock(reactor)
            self.streams: dict[str, Stream] = {}

        def speak(self, record: Any, text: str) -> Any:
            if stamps.t0 is not None and stamps.speak is None:
                stamps.speak = time.perf_counter()
            stream = self.streams.get(record.call_id)
            if stream is None:
                stream = self.streams[record.call_id] = Stream(self.ticker)
            return stream.player.say(text)

    @implementer(IResponder)
    class InstantResponder:
        """Replies at once."""

        def describe(self) -> str:
            return "the benchmark"

        def generate_reply(self, record: Any) -> Any:
            stamps.reply_asked = time.perf_counter()
            d = succeed(REPLY)
            stamps.reply_given = time.perf_counter()
            return d

    class TrackingStore:
        """The store, counting commits in flight (so a turn is over only once stored)."""

        def __init__(self, inner: Any) -> None:
            self._inner = inner
            self.busy = 0

        def __getattr__(self, name: str) -> Any:
            return getattr(self._inner, name)

        def commit(self, *args: Any) -> Any:
            self.busy += 1
            d = self._inner.commit(*args)

            def done(result: Any) -> Any:
                self.busy -= 1
                return result

            return d.addBoth(done)

    settings = parse_config({"maxConcurrentCalls": 100}, None, {}).settings
    store = SQLiteCallStore(f"{state_dir}/calls.sqlite3", ThreadRunner(reactor))
    tracking = TrackingStore(store)
    provider = InstantProvider()
    hub = NoticeHub()
    manager = CallManager(
        settings=settings, store=tracking, provider=provider, clock=reactor, hub=hub
    )
    provider.start(manager.handle_event, manager.directory)
    manager.replies.register(InstantResponder())

    class Parts:
        pass

    parts = Parts()
    parts.store, parts.tracking, parts.provider = store, tracking, provider
    parts.manager, parts.hub = manager, hub
    return parts


async def drive(
    reactor: Any, calls: int, turns_per_call: int, warmup_turns: int, log: Any, where: str | None
) -> dict[str, Any]:
    """Open the manager, place the calls, drive the turns; returns the figures."""
    from twisted.internet.defer import Deferred

    from voicecalld.values import events as ev

    stamps = Stamps()
    samples: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="voicecalld-turns-", dir=where) as state_dir:
        parts = build(reactor, state_dir, stamps)
        await parts.store.open()
        await parts.manager.restore()
        parts.manager.start()
        measured: dict[str, Any] = {}

        def on_notice(notice: Any) -> None:
            if notice.kind == "turn.latency":
                measured[notice.call_id] = notice.stages

        parts.hub.listen(on_notice)

        async def settle() -> None:
            # Until every store write of the turn is done (the last one stores its latency).
            while parts.tracking.busy:
                d: Deferred = Deferred()
                reactor.callLater(0.0005, d.callback, None)
                await d

        call_ids = []
        for _ in range(calls):
            record = await parts.manager.initiate(TO, None, "conversation")
            await parts.provider.emit(ev.Answered(call_id=record.call_id))
            call_ids.append(record.call_id)
        await settle()
        total = calls * turns_per_call
        before = (core_times(None), sum(cpu_seconds()), time.perf_counter())
        for n in range(total):
            call_id = call_ids[n % calls]
            await parts.provider.emit(ev.SpeechStopped(call_id=call_id))
            measured.pop(call_id, None)
            stamps.reset()
            stamps.t0 = time.perf_counter()
            await parts.provider.emit(ev.Speech(call_id=call_id, text=CALLER_WORDS))
            while call_id not in measured:
                d = Deferred()
                reactor.callLater(0.0005, d.callback, None)
                await d
            await settle()
            if n < warmup_turns:
                continue
            s = stamps
            if None in (s.reply_asked, s.reply_given, s.speak, s.first_frame):
                raise RuntimeError(f"turn {n} missed a stage: {vars(s)}")
            stages = measured[call_id]
            samples.append(
                {
                    "total": (s.first_frame - s.t0) * 1000,
                    "beforeReply": (s.reply_asked - s.t0) * 1000,
                    "beforeSpeech": (s.speak - s.reply_given) * 1000,
                    "toFirstFrame": (s.first_frame - s.speak) * 1000,
                    "insideOurs": stages.get("ours", float("nan")),
                    "insideBeforeReply": stages.get("oursBeforeReply", float("nan")),
                    "insideBeforeSpeech": stages.get("oursBeforeSpeech", float("nan")),
                    "insideToFirstFrame": stages.get("oursToFirstFrame", float("nan")),
                    "insideStt": stages.get("stt", float("nan")),
                }
            )
            if (n + 1) % 250 == 0:
                log(f"turns: {n + 1}/{total}")
        shares = core_shares(before[0], core_times(None))
        own = (sum(cpu_seconds()) - before[1]) / (time.perf_counter() - before[2])
        busy = 1.0 - shares.get("idle", 0.0) - shares.get("iowait", 0.0)
        # The machine's busy share minus ours: what other processes took meanwhile.
        others = round(max(0.0, busy - own / (os.cpu_count() or 1)), 4)
        record = await parts.manager.get(call_ids[0])
        stored = dict(record.metadata).get("lastTurnLatency")
        parts.manager.stop()
        await parts.store.close()
    result = summarize(samples, calls, turns_per_call, warmup_turns, stored, where)
    result["machineShareUsedByOthers"] = others
    result["iowaitShare"] = shares.get("iowait", 0.0)
    return result


def summarize(
    samples: list[dict[str, float]],
    calls: int,
    per_call: int,
    warmup: int,
    stored: Any,
    where: str | None,
) -> dict[str, Any]:
    """p50/p95/p99 (ms) of each measure, and the verdict against the target."""

    def stats(key: str) -> dict[str, float]:
        values = [s[key] for s in samples]
        return {
            "p50": round(percentile(values, 50), 3),
            "p95": round(percentile(values, 95), 3),
            "p99": round(percentile(values, 99), 3),
            "max": round(max(values), 3),
            "mean": round(sum(values) / len(values), 3),
        }

    keys = samples[0].keys() if samples else ()
    figures = {key: stats(key) for key in keys}
    p99 = figures["total"]["p99"] if samples else None
    return {
        "turns": len(samples),
        "calls": calls,
        "turnsPerCall": per_call,
        "warmupTurns": warmup,
        "clock": "the real reactor (epoll); outside times from time.perf_counter",
        "store": "SQLiteCallStore on its ThreadRunner (WAL, synchronous=FULL)",
        "storeDir": where or tempfile.gettempdir(),
        "ms": figures,
        "lastTurnLatencyExample": stored,
        "targetP99Ms": TARGET_P99_MS,
        "pass": p99 is not None and p99 < TARGET_P99_MS,
    }


def run(
    calls: int = 10,
    turns_per_call: int = 100,
    warmup_turns: int = 50,
    log=print,
    where: str | None = None,
) -> dict[str, Any]:
    """Run the turns benchmark in this process (it needs a fresh reactor)."""
    from twisted.internet import reactor
    from twisted.internet.defer import Deferred

    outcome: dict[str, Any] = {}

    def go() -> None:
        d = Deferred.fromCoroutine(drive(reactor, calls, turns_per_call, warmup_turns, log, where))

        def done(result: Any) -> None:
            outcome["result"] = result

        def failed(failure: Any) -> None:
            outcome["error"] = failure

        d.addCallbacks(done, failed).addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(go)
    reactor.run()
    if "error" in outcome:
        outcome["error"].raiseException()
    return outcome["result"]


def rows(result: dict[str, Any], where: str = "") -> list[tuple[str, str, str, str, str]]:
    """Table rows: (benchmark, metric, value, target, verdict); C{where} labels the store."""
    ms = result["ms"]
    total, inside = ms["total"], ms["insideOurs"]
    label = f" ({where})" if where else ""
    if where:
        return [
            ("turns", f"ours p50/p95/p99 ms{label}", _three(total), "", ""),
        ]
    verdict = "pass" if result["pass"] else "FAIL"
    out = [
        ("turns", "ours p50 ms", f"{total['p50']:.2f}", "", ""),
        ("turns", "ours p95 ms", f"{total['p95']:.2f}", "", ""),
        ("turns", "ours p99 ms", f"{total['p99']:.2f}", f"< {TARGET_P99_MS:g}", verdict),
        ("turns", "lastTurnLatency.ours p50/p95/p99", _three(inside), "", ""),
    ]
    for key in ("beforeReply", "beforeSpeech", "toFirstFrame"):
        out.append(("turns", f"{key} p50/p95/p99 ms", _three(ms[key]), "", ""))
    return out


def _three(figures: dict[str, float]) -> str:
    return f"{figures['p50']:.2f}/{figures['p95']:.2f}/{figures['p99']:.2f}"


def main(argv: list[str] | None = None) -> None:
    """Run the turns benchmark alone and print its rows (and JSON with --json)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--turns-per-call", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--store-dir", help="where the SQLite file goes (default: the temp dir)")
    parser.add_argument("--json", action="store_true", help="print only the figures, as JSON")
    args = parser.parse_args(argv)
    result = run(
        args.calls,
        args.turns_per_call,
        args.warmup,
        log=lambda m: print(m, file=sys.stderr),
        where=args.store_dir,
    )
    if args.json:
        print(json.dumps(result, indent=2))
        return
    from bench.run import table

    print(table(rows(result)))


if __name__ == "__main__":
    main()
