"""
Per-number routes through the real daemon process and the fake Twilio: two
dialled numbers greet with their own words in their own TTS voice, and an
outbound call to a routed number keeps the plugin's greeting and voice.
"""

from __future__ import annotations

import json

import pytest
from twisted.internet.defer import inlineCallbacks

from tests.integration import test_twilio_conversation as twilio
from tests.waiting import wait_for

pytestmark = pytest.mark.integration

SALES = "+15550002222"
SUPPORT = "+15550003333"
CALLER = "+15557654321"
ROUTES = {
    SALES: {
        "inboundGreeting": "Sales, this is Ada.",
        "agentId": "sales",
        "tts": {"providers": {"openai": {"speakerVoice": "nova"}}},
    },
    SUPPORT: {
        "inboundGreeting": "Support, this is Bo.",
        "tts": {"providers": {"openai": {"speakerVoice": "onyx", "model": "tts-1"}}},
    },
}


class NumberRoutes(twilio.TwilioConversation):
    """The dialled number picks the greeting and the voice; outbound calls use the plugin's."""

    # Only this class's own scenario runs here.
    test_outbound_conversation = None
    test_kill_9_mid_call_and_restart = None
    test_provider_error_and_guard = None

    def start_daemon(self):
        config = json.loads(self.config.read_text())
        plugin = config["plugins"]["entries"]["voice-call"]["config"]
        if "numbers" not in plugin:
            plugin["numbers"] = ROUTES
            plugin["tts"]["providers"]["openai"]["speakerVoice"] = "alloy"
            self.config.write_text(json.dumps(config))
        return super().start_daemon()

    @inlineCallbacks
    def greeted(self, to: str):
        """An inbound call to C{to}: fires with its record once its greeting has played."""
        call = yield self.twilio.inbound_call(
            CALLER, to, self.webhook, status_callback=self.webhook
        )
        stream = yield call.when_stream()
        yield stream.when_mark_echoed("u1:end")
        calls = yield self.cli("--json", "status")
        (live,) = [c for c in json.loads(calls[0])["calls"] if c["to"] == to]
        record = yield wait_for(
            self._status_with(live["callId"], lambda r: r["transcript"]),
            what=f"the greeting of the call to {to}",
        )
        return call, record

    @inlineCallbacks
    def hang_up(self, call, record):
        """The caller hangs up; fires once voicecalld has ended the call."""
        yield call.caller_hangup()
        yield wait_for(
            self._status_with(record["callId"], lambda r: r["state"] == "completed"),
            what="the call ended",
        )

    def voices_since(self, seen: int):
        return [(r.body["voice"], r.body["input"]) for r in self.tts.requests[seen:]]

    @inlineCallbacks
    def test_two_numbers_two_greetings_two_voices(self):
        seen = len(self.tts.requests)
        call, record = yield self.greeted(SALES)
        self.assertEqual(record["transcript"][0]["text"], "Sales, this is Ada.")
        self.assertEqual(record["metadata"]["route"]["agentId"], "sales")
        self.assertEqual(self.voices_since(seen), [("nova", "Sales, this is Ada.")])
        # The next caller rings as soon as the first hangs up (a race once lost the greeting).
        yield call.caller_hangup()

        seen = len(self.tts.requests)
        second, second_record = yield self.greeted(SUPPORT)
        self.assertEqual(second_record["transcript"][0]["text"], "Support, this is Bo.")
        self.assertEqual(self.voices_since(seen), [("onyx", "Support, this is Bo.")])
        self.assertEqual(self.tts.requests[-1].body["model"], "tts-1")
        yield wait_for(
            self._status_with(record["callId"], lambda r: r["state"] == "completed"),
            what="the first call ended",
        )
        yield self.hang_up(second, second_record)

        # Outbound to a routed number: the plugin's voice and the caller's own words.
        seen = len(self.tts.requests)
        out, _, _ = yield self.cli(
            "call", "--to", SALES, "--mode", "conversation", "--message", "Hello from Acme."
        )
        call_id = out.strip()
        call = yield wait_for(
            lambda: next((c for c in self.twilio.calls if c.direction != "inbound"), None),
            what="the outbound call",
        )
        yield call.answer()
        stream = yield call.when_stream()
        yield stream.when_mark_echoed("u1:end")
        self.assertEqual(self.voices_since(seen), [("alloy", "Hello from Acme.")])
        record = yield self.status(call_id)
        self.assertNotIn("route", record["metadata"])
        yield self.cli("end", "--call-id", call_id)
        self.assertIn("TTS for calls to +15550002222: openai", self.log.read_text())
