"""Every TwiML document voicecalld answers with, by the call's situation: never empty."""

from __future__ import annotations

from xml.etree import ElementTree

from twisted.internet.defer import succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from tests.fakes.provider import CallBook
from tests.fakes.tts import ToneTTS
from voicecalld.config import parse_config
from voicecalld.providers.twilio import twiml
from voicecalld.providers.twilio.provider import TwilioProvider
from voicecalld.values.record import CallRecord
from voicecalld.values.states import CallState

PUBLIC = "https://voice.example.com/voice/webhook"


def provider(streaming: bool) -> TwilioProvider:
    settings = parse_config(
        {
            "provider": "twilio",
            "fromNumber": "+15550001111",
            "twilio": {"accountSid": "AC1", "authToken": "t"},
            "publicUrl": PUBLIC,
            "streaming": {"enabled": streaming},
        },
        None,
        {},
    ).settings
    clock = Clock()
    return TwilioProvider(
        settings,
        clock,
        public_url=PUBLIC,
        known_public_url=PUBLIC,
        tts=ToneTTS(clock) if streaming else None,
        stt=object() if streaming else None,
    )


def record(mode="conversation", direction="outbound", message="Hello") -> CallRecord:
    return CallRecord(
        call_id="c1",
        provider="twilio",
        direction=direction,
        mode=mode,
        from_number="+15550001111",
        to_number="+15551234567",
        state=CallState.RINGING,
        started_at=0.0,
        provider_call_id="CA1",
        initial_message=message,
    )


def verbs(document: str) -> list[str]:
    root = ElementTree.fromstring(document)
    assert root.tag == "Response"
    names = [child.tag for child in root]
    assert names, f"empty TwiML: {document}"
    return names


class DocumentTableTests(TestCase):
    """The decision table, one row per situation."""

    def answer(self, p, r):
        """The document Twilio gets when C{r} is answered, and the call it is about."""
        p.answer(r)
        call = p.call_for(r.call_id, r.provider_call_id)
        return p.answer_document(call, r.provider_call_id), call

    def test_rows(self):
        rows = [
            ("streaming, any mode", provider(True), record(), ["Connect"]),
            ("notify with a message", provider(False), record("notify"), ["Say", "Redirect"]),
            ("conversation with a message", provider(False), record(), ["Say", "Redirect"]),
            (
                "conversation, no message",
                provider(False),
                record(message=None),
                ["Gather", "Redirect"],
            ),
            (
                "notify, no message",
                provider(False),
                record("notify", message=None),
                ["Pause", "Redirect"],
            ),
            (
                "inbound with a greeting",
                provider(False),
                record(direction="inbound", message="Hi"),
                ["Say", "Redirect"],
            ),
        ]
        for name, p, r, expected in rows:
            with self.subTest(name):
                document, _ = self.answer(p, r)
                self.assertEqual(verbs(document), expected)

    def test_after_speaking_a_conversation_listens_and_a_notify_call_holds(self):
        for mode, expected in (
            ("conversation", ["Gather", "Redirect"]),
            ("notify", ["Pause", "Redirect"]),
        ):
            p = provider(False)
            _, call = self.answer(p, record(mode))
            p.played(call, 1)
            self.assertEqual(verbs(p.document(call)), expected)

    def test_an_ended_call_hangs_up(self):
        p = provider(False)
        _, call = self.answer(p, record())
        p.forget(record())
        self.assertEqual(verbs(p.document(call)), ["Hangup"])
        self.assertEqual(verbs(p.answer_document(call, "CA1")), ["Hangup"])
        self.assertEqual(verbs(p.restart_stream(call, "CA1")), ["Hangup"])

    def test_stream_restarts_are_bounded(self):
        p = provider(True)
        _, call = self.answer(p, record())
        p.start(lambda event: succeed(None), CallBook())
        for _ in range(5):
            self.assertEqual(verbs(p.restart_stream(call, "CA1")), ["Connect"])
        self.assertEqual(verbs(p.restart_stream(call, "CA1")), ["Hangup"])

    def test_the_stream_url_has_no_query_and_carries_a_token(self):
        p = provider(True)
        document, _ = self.answer(p, record())
        stream = ElementTree.fromstring(document).find("Connect/Stream")
        self.assertEqual(stream.get("url"), "wss://voice.example.com/voice/stream")
        names = [parameter.get("name") for parameter in stream.findall("Parameter")]
        self.assertEqual(names, ["token", "callId"])

    def test_refusals(self):
        self.assertEqual(verbs(twiml.reject()), ["Reject"])
        self.assertEqual(twiml.native_voice("nova"), "Polly.Salli")
        self.assertEqual(twiml.native_voice("Google.en-US-Neural2-F"), "Google.en-US-Neural2-F")
        self.assertEqual(twiml.native_voice("marin"), "Polly.Joanna")
