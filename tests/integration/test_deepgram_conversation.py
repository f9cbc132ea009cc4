"""
A whole streamed Twilio conversation with Deepgram as the speech-to-text:
the real daemon, the fake Twilio, a fake Deepgram listen endpoint, fake TTS
and chat on 127.0.0.1.  The caller's words, as Deepgram hears them, reach
the call's transcript and get a reply.
"""

from __future__ import annotations

import json

import pytest
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks

from tests.fakes.deepgram import FakeDeepgramServer
from tests.integration import test_twilio_conversation as twilio_rig

pytestmark = pytest.mark.integration

# The rig is reached through its module so that its own tests are not collected here too.
DEEPGRAM_KEY = "dg-stt-key-do-not-log"


class DeepgramConversation(twilio_rig.TwilioConversation):
    """The Twilio conversation rig with C{streaming.provider} set to deepgram."""

    # Only the Deepgram conversation runs here; the rest belong to the Twilio suite.
    test_outbound_conversation = None  # type: ignore[assignment]
    test_kill_9_mid_call_and_restart = None  # type: ignore[assignment]
    test_provider_error_and_guard = None  # type: ignore[assignment]

    @inlineCallbacks
    def start_daemon(self):
        if not hasattr(self, "deepgram"):
            self.deepgram = FakeDeepgramServer(reactor)
            url = yield self.deepgram.start()
            self.addCleanup(self.deepgram.stop)
            config = json.loads(self.config.read_text())
            plugin = config["plugins"]["entries"]["voice-call"]["config"]
            plugin["streaming"]["provider"] = "deepgram"
            plugin["streaming"]["providers"] = {
                "deepgram": {"apiKey": DEEPGRAM_KEY, "baseUrl": url, "language": "en-US"}
            }
            self.config.write_text(json.dumps(config))
        yield super().start_daemon()

    @inlineCallbacks
    def test_caller_words_reach_the_transcript(self):
        out, _, _ = yield self.cli(
            "call",
            "--to",
            twilio_rig.TO,
            "--mode",
            "conversation",
            "--message",
            "Hello from Luigi's.",
        )
        call_id = out.strip()
        call = yield self.twilio.when_call(0)
        yield call.answer()
        stream = yield call.when_stream()
        yield stream.when_mark_echoed("u1:end")

        yield stream.send_audio(b"\x55" * 3200)
        yield self.deepgram.audio_at_least(3200)
        self.assertEqual(self.deepgram.authorization, f"Token {DEEPGRAM_KEY}")
        query = self.deepgram.query
        self.assertEqual(
            (query["model"], query["encoding"], query["sample_rate"], query["endpointing"]),
            ("nova-3", "mulaw", "8000", "800"),
        )
        self.assertEqual(query["language"], "en-US")
        self.assertEqual(bytes(self.deepgram.audio[:3200]), b"\x55" * 3200)

        self.deepgram.speech_started()
        self.deepgram.interim("I'd like a table")
        self.deepgram.final_segment("I'd like a table")
        self.deepgram.final_segment("for two at eight.", speech_final=True)
        yield stream.when_mark_echoed("u2:end")
        record = yield self.status(call_id)
        texts = [(e["speaker"], e["text"]) for e in record["transcript"]]
        self.assertIn(("user", "I'd like a table for two at eight."), texts)
        self.assertEqual(texts[-1], ("bot", "A table for two at eight works. Anything else?"))
        self.assertEqual(
            self.chat.requests[-1]["body"]["messages"][-1]["content"],
            "I'd like a table for two at eight.",
        )

        yield self.cli("end", "--call-id", call_id)
        yield call.when_ended()
        yield self.deepgram.control_count("CloseStream", 1)
        self.assertEqual(self.deepgram.bad_messages, [])
        log = self.log.read_text()
        for secret in (DEEPGRAM_KEY, *twilio_rig.SECRETS.values()):
            self.assertNotIn(secret, log)
