"""
A restart drops no call: a streamed Twilio conversation on the real daemon
survives SIGTERM and a new process on the same state directory and port.

The fake Twilio does what the real one does when its media stream goes
away: it posts the C{<Connect action>} URL.  Under socket activation that
request waits in the listen backlog until the next process accepts it; the
fake models the backlog by trying a refused connection again
(C{held_webhooks}) until the new daemon listens.
"""

from __future__ import annotations

import signal

import pytest
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import SkipTest

from tests.fakes.tts_servers import openai_script, sine_pcm, split
from tests.integration import test_twilio_conversation as conversation
from tests.waiting import wait_for

pytestmark = pytest.mark.integration

GREETING = "Hello from Luigi's."
REPLY = "A table for two at eight works. Anything else?"
LONG_REPLY = (
    "Let me read you our whole menu, starting with the antipasti, then the pasta,"
    " then the mains and desserts."
)


class TwilioRestart(conversation.TwilioConversation):
    """SIGTERM mid-call, a new daemon, and the call goes on."""

    timeout = 90

    def _elsewhere(self):
        raise SkipTest("runs in test_twilio_conversation")

    test_outbound_conversation = _elsewhere
    test_kill_9_mid_call_and_restart = _elsewhere
    test_provider_error_and_guard = _elsewhere

    def setUp(self):
        d = super().setUp()

        def held(_):
            self.twilio.held_webhooks = True
            self.twilio.webhook_timeout = 30.0
            # Tear-down stops the daemon for good: nothing holds its requests then.
            self.addCleanup(setattr, self.twilio, "held_webhooks", False)

        return d.addCallback(held)

    @inlineCallbacks
    def restart(self):
        """SIGTERM the daemon, wait for it to exit 0, start the next one."""
        self.process.signalProcess(signal.SIGTERM)
        code = yield self.daemon.ended
        self.assertEqual(code, 0, self.log.read_text())
        yield self.start_daemon()

    @inlineCallbacks
    def call_greeted(self):
        out, _, _ = yield self.cli(
            "call", "--to", conversation.TO, "--mode", "conversation", "--message", GREETING
        )
        call_id = out.strip()
        call = yield self.twilio.when_call(0)
        yield call.answer()
        stream = yield call.when_stream()
        yield stream.when_mark_echoed("u1:end")
        yield self.record_when(call_id, lambda r: r["state"] == "listening", "the call listening")
        return call_id, call, stream

    @inlineCallbacks
    def record_when(self, call_id, predicate, what, tries=200):
        """The call's record once C{predicate} holds for it (one status request at a time)."""
        for _ in range(tries):
            record = yield self.status(call_id)
            if predicate(record):
                return record
        self.fail(f"{what}: not seen in {tries} status requests; last {record}")

    @inlineCallbacks
    def caller_says(self, stream, item, text):
        yield stream.send_audio(b"\x55" * 1600)
        self.stt.speech_started(item)
        self.stt.completed(item, text)

    @inlineCallbacks
    def test_restart_mid_listen(self):
        call_id, call, stream = yield self.call_greeted()
        stopping = reactor.seconds()
        yield self.restart()
        yield stream.when_closed()
        again = yield call.when_stream(1)
        self.assertNotEqual(
            again.parameters["token"], stream.parameters["token"], "a used token was answered"
        )
        record = yield self.status(call_id)
        self.assertIn(record["state"], ("active", "listening"))
        yield self.caller_says(again, "item_1", "A table for two, please.")
        yield again.when_mark_echoed("u1:end")
        deaf = again.started_at - stopping
        record = yield self.record_when(
            call_id,
            lambda r: r["transcript"][-1]["text"] == REPLY,
            "the reply in the transcript",
        )
        texts = [(e["speaker"], e["text"]) for e in record["transcript"]]
        self.assertEqual(
            texts,
            [
                ("bot", "Hello from Luigi's."),
                ("user", "A table for two, please."),
                ("bot", "A table for two at eight works. Anything else?"),
            ],
        )
        self.assertNotIn("ended", record["state"])
        yield self.cli("end", "--call-id", call_id)
        yield call.when_ended()
        print(f"\nmid-listen: {deaf:.2f} s from SIGTERM to the next stream's start")

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
        yield stream.when_closed()
        last_frame = stream.frames[stopped_at - 1][0]
        again = yield call.when_stream(1)
        record = yield self.status(call_id)
        self.assertIn(record["state"], ("active", "listening", "speaking"))
        # The words the caller did not hear yet come first, on the new stream.
        self.tts.openai = openai_script(chunks=split(sine_pcm(0.6), 6), delay=0.02)
        yield wait_for(
            lambda: [n for _, n in again.marks_echoed if n.endswith(":end")],
            what="the rest of the cut reply played",
        )
        pause = again.frames[0][0] - last_frame
        yield self.caller_says(again, "item_2", "Thanks, a table for two.")
        record = yield self.record_when(
            call_id,
            lambda r: r["transcript"][-1]["text"] == REPLY,
            "the reply in the transcript",
        )
        entries = record["transcript"]
        texts = [(e["speaker"], e["text"]) for e in entries]
        self.assertEqual(texts[:2], [("bot", GREETING), ("user", "What's on the menu?")])
        cut, rest = entries[2], entries[3]
        self.assertEqual((cut["speaker"], rest["speaker"]), ("bot", "bot"), entries)
        self.assertTrue(cut.get("interrupted"), entries)
        self.assertFalse(rest.get("interrupted"), entries)
        self.assertEqual(f"{cut['text']} {rest['text']}".strip(), LONG_REPLY, entries)
        self.assertEqual(
            texts[4:],
            [
                ("user", "Thanks, a table for two."),
                ("bot", "A table for two at eight works. Anything else?"),
            ],
        )
        yield self.cli("end", "--call-id", call_id)
        yield call.when_ended()
        print(f"\nmid-utterance: {pause:.2f} s from the last frame before the stop to the next")
