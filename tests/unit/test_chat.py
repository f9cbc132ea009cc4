"""Replies from an OpenAI-compatible chat endpoint (the fallback responder)."""

from __future__ import annotations

from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from tests.fakes.openai_chat import FakeChat
from voicecalld.config import parse_config
from voicecalld.errors import ProviderError
from voicecalld.values.record import CallRecord, TranscriptEntry
from voicecalld.values.states import CallState
from voicecalld.voice.chat import DEFAULT_MODEL, make_chat_responder, spoken_text


def record(direction: str = "outbound") -> CallRecord:
    entries = (
        TranscriptEntry(1.0, "bot", "Hi, I'm calling about your order."),
        TranscriptEntry(2.0, "user", "Which order?"),
        TranscriptEntry(3.0, "user", "12", kind="dtmf"),
    )
    return CallRecord(
        call_id="c1",
        provider="mock",
        direction=direction,
        mode="conversation",
        from_number="+15550000000",
        to_number="+15551234567",
        state=CallState.LISTENING,
        started_at=0.0,
        transcript=entries,
    )


class ChatTests(TestCase):
    """The request carries the transcript; the answer is the words to say."""

    def responder(self, config=None, environ=None):
        self.fake = FakeChat()
        settings = parse_config(config or {}, None, {}).settings
        return make_chat_responder(
            settings, environ or {"OPENAI_API_KEY": "sk-test"}, Clock(), http=StubTreq(self.fake)
        )

    def test_the_transcript_is_the_context(self):
        responder = self.responder(
            {
                "responseModel": "openai/gpt-4.1-mini",
                "responseSystemPrompt": "Be Acme's receptionist.",
            }
        )
        self.fake.replies.append("Order 4217, the blue kettle.")
        text = self.successResultOf(responder.generate_reply(record()))
        self.assertEqual(text, "Order 4217, the blue kettle.")
        (request,) = self.fake.requests
        body = request["body"]
        self.assertEqual(body["model"], "gpt-4.1-mini")
        self.assertEqual(request["authorization"], b"Bearer sk-test")
        roles = [(m["role"], m["content"]) for m in body["messages"][1:]]
        self.assertEqual(
            roles,
            [
                ("assistant", "Hi, I'm calling about your order."),
                ("user", "Which order?"),
                ("user", "[pressed keys 12]"),
            ],
        )
        self.assertTrue(body["messages"][0]["content"].startswith("Be Acme's receptionist."))
        self.assertIn("You called +15551234567", body["messages"][0]["content"])

    def test_errors_are_provider_errors(self):
        responder = self.responder()
        self.fake.fail_with = (429, "Rate limit reached")
        failure = self.failureResultOf(responder.generate_reply(record()), ProviderError)
        self.assertIn("HTTP 429: Rate limit reached", str(failure.value))

    def test_only_when_configured(self):
        settings = parse_config({}, None, {}).settings
        self.assertIsNone(make_chat_responder(settings, {}, Clock()))
        local = parse_config({"responseBaseUrl": "http://127.0.0.1:8080/v1"}, None, {}).settings
        responder = make_chat_responder(local, {}, Clock())
        self.assertEqual(
            responder.describe(), f"{DEFAULT_MODEL} at http://127.0.0.1:8080/v1/chat/completions"
        )

    def test_spoken_text(self):
        self.assertEqual(spoken_text('```json\n{"spoken": "Hello  there"}\n```'), "Hello there")
        self.assertEqual(spoken_text('{"spoken": ""}'), "")
        self.assertEqual(spoken_text("  Plain\n answer. "), "Plain answer.")
        self.assertEqual(spoken_text("```\nfenced words\n```"), "fenced words")
