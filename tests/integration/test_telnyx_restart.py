"""
A restart drops no call, on Telnyx: a streamed conversation survives SIGTERM
and a new process on the same state directory and port.

When the daemon's media socket goes away, Telnyx reports C{streaming.stopped}
to the webhook; under socket activation that request waits in the listen
backlog, which the fake models by trying a refused connection again
(C{held_webhooks}).  The next process answers it with C{streaming_start}.
"""

from __future__ import annotations

import signal

import pytest
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import SkipTest

from tests.fakes.tts_servers import openai_script, sine_pcm, split
from tests.integration import test_telnyx_conversation as conversation
from tests.integration.daemon import TWISTD
from tests.waiting import wait_for

pytestmark = pytest.mark.integration

GREETING = "Hello from Luigi's."
REPLY = "A table for two at eight works. Anything else?"
LONG_REPLY = (
    "Let me read you our whole menu, starting with the antipasti, then the pasta,"
    " then the mains and desserts."
)


class TelnyxRestart(conversation.TelnyxConversation):
    """SIGTERM mid-utterance, a new daemon, and the call goes on."""

    timeout = 90

    def _elsewhere(self):
        raise SkipTest("runs in test_telnyx_conversation")

    for _name in [n for n in dir(conversation.TelnyxConversation) if n.startswith("test_")]:
        locals()[_name] = _elsewhere
    del _name

    def setUp(self):
        d = super().setUp()

        def held(_):
            self.telnyx.held_webhooks = True
            self.telnyx.webhook_timeout = 30.0
            # Tear-down stops the daemon for good: nothing holds its requests then.
            self.addCleanup(setattr, self.telnyx, "held_webhooks", False)

        return d.addCallback(held)

    @inlineCallbacks
    def restart(self):
        """SIGTERM the daemon, wait for it to exit 0, start the next one."""
        self.process.signalProcess(signal.SIGTERM)
        code = yield self.daemon.ended
        self.assertEqual(code, 0, self.log.read_text())
        seen = self.log.stat().st_size
        self.daemon = conversation._Daemon(self.log)
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

    @inlineCallbacks
    def record_when(self, call_id, predicate, what, tries=200):
        """The call's record once C{predicate} holds for it (one status request at a time)."""
        for _ in range(tries):
            record = yield self.status(call_id)
            if predicate(record):
                return record
        self.fail(f"{what}: not seen in {tries} status requests; last {record}")

    @inlineCallbacks
    def test_restart_mid_utterance(self):
        out = yield self.cli(
            "call", "--to", conversation.TO, "--mode", "conversation", "--message", GREETING
        )
        call_id = out.strip()
        call = yield self.telnyx.when_call(0)
        yield call.answer()
        stream = yield call.when_stream()
        yield stream.when_mark_echoed("u1:end")
        yield self.record_when(call_id, lambda r: r["state"] == "listening", "the call listening")

        self.chat.replies.append(LONG_REPLY)
        self.tts.openai = openai_script(chunks=split(sine_pcm(4.0), 40), delay=0.05)
        yield stream.send_audio(b"\x55" * 1600)
        self.stt.speech_started("item_1")
        self.stt.completed("item_1", "What's on the menu?")
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
        yield wait_for(
            lambda: [n for _, n in again.marks_echoed if n.endswith(":end")],
            what="the rest of the cut reply played",
        )
        pause = again.frames[0][0] - last_frame
        yield again.send_audio(b"\x55" * 1600)
        self.stt.speech_started("item_2")
        self.stt.completed("item_2", "Thanks, a table for two.")
        record = yield self.record_when(
            call_id, lambda r: r["transcript"][-1]["text"] == REPLY, "the reply in the transcript"
        )
        entries = record["transcript"]
        texts = [(e["speaker"], e["text"]) for e in entries]
        self.assertEqual(texts[:2], [("bot", GREETING), ("user", "What's on the menu?")])
        cut, rest = entries[2], entries[3]
        self.assertTrue(cut.get("interrupted"), entries)
        self.assertFalse(rest.get("interrupted"), entries)
        self.assertEqual(f"{cut['text']} {rest['text']}".strip(), LONG_REPLY, entries)
        self.assertEqual(texts[4:], [("user", "Thanks, a table for two."), ("bot", REPLY)])
        yield self.cli("end", "--call-id", call_id)
        yield call.when_ended()
        print(f"\ntelnyx mid-utterance: {pause:.2f} s from the last frame before the stop")
