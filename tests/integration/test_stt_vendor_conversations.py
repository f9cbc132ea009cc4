"""
Whole streamed Twilio conversations with Deepgram and with ElevenLabs as
the speech-to-text: the real daemon, the fake Twilio, a fake vendor endpoint
speaking its real protocol, fake TTS and chat on 127.0.0.1.  The caller's
words, as the vendor hears them, reach the call's transcript and get a reply.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks

from tests.fakes.deepgram import FakeDeepgramServer
from tests.fakes.elevenlabs_stt import FakeElevenLabsSTTServer

# The rig is reached through its module so that its own tests are not collected here too.
from tests.integration import test_twilio_conversation as twilio_rig

pytestmark = pytest.mark.integration

DEEPGRAM_KEY = "dg-stt-key-do-not-log"
ELEVENLABS_KEY = "xi-stt-key-do-not-log"
SAID = "I'd like a table for two at eight."


class _VendorConversation(twilio_rig.TwilioConversation):
    """The Twilio conversation rig with C{streaming.provider} set to another vendor."""

    # Only the conversation below runs here; the rest belong to the Twilio suite.
    test_outbound_conversation = None  # type: ignore[assignment]
    test_kill_9_mid_call_and_restart = None  # type: ignore[assignment]
    test_provider_error_and_guard = None  # type: ignore[assignment]

    provider = ""
    key = ""

    def make_fake(self) -> Any:
        raise NotImplementedError

    def block(self, url: str) -> dict[str, Any]:
        """The vendor's C{streaming.providers} block for the fake at C{url}."""
        raise NotImplementedError

    def caller_says(self) -> None:
        """Script the vendor hearing L{SAID}."""
        raise NotImplementedError

    @inlineCallbacks
    def start_daemon(self):
        if not hasattr(self, "vendor"):
            self.vendor = self.make_fake()
            url = yield self.vendor.start()
            self.addCleanup(self.vendor.stop)
            config = json.loads(self.config.read_text())
            plugin = config["plugins"]["entries"]["voice-call"]["config"]
            plugin["streaming"]["provider"] = self.provider
            plugin["streaming"]["providers"] = {self.provider: self.block(url)}
            self.config.write_text(json.dumps(config))
        yield super().start_daemon()

    @inlineCallbacks
    def converse(self):
        """Call out, let the caller speak through the vendor, hear the reply, hang up."""
        out, _, _ = yield self.cli(
            "call", "--to", twilio_rig.TO, "--mode", "conversation", "--message", "Hello."
        )
        call_id = out.strip()
        call = yield self.twilio.when_call(0)
        yield call.answer()
        stream = yield call.when_stream()
        yield stream.when_mark_echoed("u1:end")

        yield stream.send_audio(b"\x55" * 3200)
        yield self.vendor.audio_at_least(3200)
        self.assertEqual(bytes(self.vendor.audio[:3200]), b"\x55" * 3200)
        self.caller_says()
        yield stream.when_mark_echoed("u2:end")
        record = yield self.status(call_id)
        texts = [(e["speaker"], e["text"]) for e in record["transcript"]]
        self.assertIn(("user", SAID), texts)
        self.assertEqual(texts[-1], ("bot", "A table for two at eight works. Anything else?"))
        self.assertEqual(self.chat.requests[-1]["body"]["messages"][-1]["content"], SAID)

        yield self.cli("end", "--call-id", call_id)
        yield call.when_ended()
        yield self.vendor.when(lambda: not self.vendor.connected)
        log = self.log.read_text()
        for secret in (self.key, *twilio_rig.SECRETS.values()):
            self.assertNotIn(secret, log)


class DeepgramConversation(_VendorConversation):
    """Deepgram listen v1 as the call's STT."""

    provider = "deepgram"
    key = DEEPGRAM_KEY

    def make_fake(self) -> FakeDeepgramServer:
        return FakeDeepgramServer(reactor)

    def block(self, url: str) -> dict[str, Any]:
        return {"apiKey": DEEPGRAM_KEY, "baseUrl": url, "language": "en-US"}

    def caller_says(self) -> None:
        self.assertEqual(self.vendor.authorization, f"Token {DEEPGRAM_KEY}")
        query = self.vendor.query
        self.assertEqual(
            (query["model"], query["encoding"], query["sample_rate"], query["endpointing"]),
            ("nova-3", "mulaw", "8000", "800"),
        )
        self.assertEqual(query["language"], "en-US")
        self.vendor.speech_started()
        self.vendor.interim("I'd like a table")
        self.vendor.final_segment("I'd like a table")
        self.vendor.final_segment("for two at eight.", speech_final=True)

    @inlineCallbacks
    def test_caller_words_reach_the_transcript(self):
        yield self.converse()
        self.assertEqual(self.vendor.controls[-1:], ["CloseStream"])
        self.assertEqual(self.vendor.bad_messages, [])


class ElevenLabsConversation(_VendorConversation):
    """ElevenLabs Scribe realtime as the call's STT."""

    provider = "elevenlabs"
    key = ELEVENLABS_KEY

    def make_fake(self) -> FakeElevenLabsSTTServer:
        return FakeElevenLabsSTTServer(reactor)

    def block(self, url: str) -> dict[str, Any]:
        return {"apiKey": ELEVENLABS_KEY, "baseUrl": url, "languageCode": "en"}

    def caller_says(self) -> None:
        self.assertEqual(self.vendor.api_key, ELEVENLABS_KEY)
        self.assertEqual(self.vendor.paths[-1], "/v1/speech-to-text/realtime")
        query = self.vendor.query
        self.assertEqual(
            (query["model_id"], query["audio_format"], query["commit_strategy"]),
            ("scribe_v2_realtime", "ulaw_8000", "vad"),
        )
        self.vendor.partial("I'd like a table")
        self.vendor.committed(SAID, with_timestamps=True)

    @inlineCallbacks
    def test_caller_words_reach_the_transcript(self):
        yield self.converse()
        self.assertEqual({c["sample_rate"] for c in self.vendor.chunks}, {8000})
