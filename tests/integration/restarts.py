"""
The restart scenarios every carrier's conversation test runs (mixed into
its conversation test case): a streamed call, SIGTERM mid-listen or
mid-utterance, a new daemon on the same state directory and port, and the
call goes on with its transcript whole.

A real carrier's request after the media socket went away (Twilio's
C{<Connect action>}, Telnyx's C{streaming.stopped}, Plivo's C{<Redirect>}
after C{<Stream>}) waits in a socket-activated daemon's listen backlog; the
fakes model that by trying a refused connection again until the next
process listens.
"""

from __future__ import annotations

import datetime
import signal
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import SkipTest

from tests.fakes.tts_servers import openai_script, sine_pcm, split
from tests.integration.daemon import TWISTD
from tests.waiting import wait_for

TO = "+15551234567"
GREETING = "Hello from Luigi's."
REPLY = "A table for two at eight works. Anything else?"
LONG_REPLY = (
    "Let me read you our whole menu, starting with the antipasti, then the pasta,"
    " then the mains and desserts."
)


def elsewhere(self: Any) -> None:
    """A conversation test inherited by a restart case: it runs in its own module."""
    raise SkipTest("runs in the conversation test module")


class RestartScenarios:
    """Mixed into a carrier's conversation TestCase; see the module docstring."""

    timeout = 90
    #: The test's fake carrier attribute, its holding flag and its request timeout.
    carrier = ""
    held_flag = "held_webhooks"
    timeout_attr = "webhook_timeout"

    def hold(self, _: Any = None) -> None:
        """Have the fake carrier wait for the next process, as a listen backlog does."""
        fake = getattr(self, self.carrier)
        setattr(fake, self.held_flag, True)
        setattr(fake, self.timeout_attr, 30.0)
        # Tear-down stops the daemon for good: nothing holds its requests then.
        self.addCleanup(setattr, fake, self.held_flag, False)

    @inlineCallbacks
    def restart(self):
        """SIGTERM the daemon, wait for it to exit 0, start the next one."""
        self.process.signalProcess(signal.SIGTERM)
        code = yield self.daemon.ended
        self.assertEqual(code, 0, self.log.read_text())
        yield self.next_daemon()

    @inlineCallbacks
    def next_daemon(self):
        """Start a daemon like the first, on the same state directory and port."""
        seen = self.log.stat().st_size
        self.daemon = type(self.daemon)(self.log)
        self.process = reactor.spawnProcess(
            self.daemon,
            TWISTD,
            [
                TWISTD,
                "-n",
                "--pidfile=",
                "voicecalld",
                "--state-dir",
                str(self.root / "state"),
                "--config",
                str(self.config),
            ],
            env=self.env,
        )
        yield wait_for(
            lambda: self.daemon.ended.called or b"voicecalld ready" in self.log.read_bytes()[seen:],
            what="the next daemon ready",
        )
        self.assertFalse(self.daemon.ended.called, self.log.read_text())

    def timeline(self) -> str:
        """Where a restart's time went, from the daemon log's timestamps."""
        marks = {}
        for line in self.log.read_text(errors="replace").splitlines():
            for key, text in (
                ("sigterm", "received SIGTERM"),
                ("stopped", "Server Shut Down"),
                ("starting", "starting up"),
                ("ready", "voicecalld ready"),
            ):
                if text in line:
                    marks[key] = datetime.datetime.fromisoformat(line.split()[0].rstrip("Z"))
        if len(marks) < 4:
            return "(timeline incomplete)"

        def gap(a: str, b: str) -> float:
            return (marks[b] - marks[a]).total_seconds()

        return (
            f"stop {gap('sigterm', 'stopped'):.2f} s, exec {gap('stopped', 'starting'):.2f} s,"
            f" start-up {gap('starting', 'ready'):.2f} s"
        )

    @inlineCallbacks
    def record_when(self, call_id, predicate, what, tries=200):
        """The call's record once C{predicate} holds for it (one status request at a time)."""
        for _ in range(tries):
            record = yield self.status(call_id)
            if predicate(record):
                return record
        self.fail(f"{what}: not seen in {tries} status requests; last {record}")

    @inlineCallbacks
    def call_greeted(self):
        """A conversation call, answered, greeted and listening; (call id, fake call, stream)."""
        out = yield self.cli("call", "--to", TO, "--mode", "conversation", "--message", GREETING)
        call_id = (out[0] if isinstance(out, tuple) else out).strip()
        call = yield getattr(self, self.carrier).when_call(0)
        yield call.answer()
        stream = yield call.when_stream()
        yield stream.when_mark_echoed("u1:end")
        yield self.record_when(call_id, lambda r: r["state"] == "listening", "the call listening")
        return call_id, call, stream

    @inlineCallbacks
    def caller_says(self, stream, item, text):
        """The caller speaks on C{stream}; the STT hears C{text}."""
        yield stream.send_audio(b"\x55" * 1600)
        self.stt.speech_started(item)
        self.stt.completed(item, text)

    @inlineCallbacks
    def test_restart_mid_listen(self):
        call_id, call, _ = yield self.call_greeted()
        stopping = reactor.seconds()
        yield self.restart()
        again = yield call.when_stream(1)
        deaf = again.started_at - stopping
        timeline = self.timeline()
        record = yield self.status(call_id)
        self.assertIn(record["state"], ("active", "listening"))
        yield self.caller_says(again, "item_1", "A table for two, please.")
        record = yield self.record_when(
            call_id, lambda r: r["transcript"][-1]["text"] == REPLY, "the reply in the transcript"
        )
        texts = [(e["speaker"], e["text"]) for e in record["transcript"]]
        self.assertEqual(
            texts, [("bot", GREETING), ("user", "A table for two, please."), ("bot", REPLY)]
        )
        yield self.cli("end", "--call-id", call_id)
        yield call.when_ended()
        print(f"\n{self.carrier} mid-listen: {deaf:.2f} s, SIGTERM to next stream ({timeline})")

    @inlineCallbacks
    def test_restart_mid_utterance(self):
        call_id, call, stream = yield self.call_greeted()
        self.chat.replies.append(LONG_REPLY)
        self.tts.openai = openai_script(chunks=split(sine_pcm(4.0), 40), delay=0.05)
        yield self.caller_says(stream, "item_1", "What's on the menu?")
        yield wait_for(
            lambda: any(
                name.startswith("u2:") and name != "u2:end" for _, name in stream.marks_echoed
            ),
            what="part of the long reply played",
        )
        stopped_at = len(stream.frames)
        yield self.restart()
        last_frame = stream.frames[stopped_at - 1][0]
        self.tts.openai = openai_script(chunks=split(sine_pcm(0.6), 6), delay=0.02)
        again = yield call.when_stream(1)
        self.assertNotEqual(again.start_message, None)
        # The words the caller did not hear yet come first, on the new stream.
        yield wait_for(
            lambda: [n for _, n in again.marks_echoed if n.endswith(":end")],
            what="the rest of the cut reply played",
        )
        pause = again.frames[0][0] - last_frame
        timeline = self.timeline()
        yield self.record_when(
            call_id, lambda r: len(r["transcript"]) == 4, "the rest of the reply in the transcript"
        )
        yield self.caller_says(again, "item_2", "Thanks, a table for two.")
        record = yield self.record_when(
            call_id, lambda r: r["transcript"][-1]["text"] == REPLY, "the reply in the transcript"
        )
        entries = record["transcript"]
        texts = [(e["speaker"], e["text"]) for e in entries]
        self.assertEqual(texts[:2], [("bot", GREETING), ("user", "What's on the menu?")])
        cut, rest = entries[2], entries[3]
        self.assertEqual((cut["speaker"], rest["speaker"]), ("bot", "bot"), entries)
        self.assertTrue(cut.get("interrupted"), entries)
        self.assertFalse(rest.get("interrupted"), entries)
        self.assertEqual(f"{cut['text']} {rest['text']}".strip(), LONG_REPLY, entries)
        self.assertEqual(texts[4:], [("user", "Thanks, a table for two."), ("bot", REPLY)])
        yield self.cli("end", "--call-id", call_id)
        yield call.when_ended()
        print(f"\n{self.carrier} mid-utterance: {pause:.2f} s of silence ({timeline})")
