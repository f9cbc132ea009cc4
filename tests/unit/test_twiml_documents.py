"""
Every TwiML document voicecalld answers with, by the call's situation: never
empty.  Each is what Twilio gets back from a signed webhook to the
provider's own webhook resource (in memory, through C{StubTreq}).
"""

from __future__ import annotations

from urllib.parse import urlencode
from xml.etree import ElementTree

from treq.testing import StubTreq
from twilio.request_validator import RequestValidator
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
AUTH_TOKEN = "t"


def provider(streaming: bool) -> TwilioProvider:
    settings = parse_config(
        {
            "provider": "twilio",
            "fromNumber": "+15550001111",
            "twilio": {"accountSid": "AC1", "authToken": AUTH_TOKEN},
            "publicUrl": PUBLIC,
            "streaming": {"enabled": streaming},
        },
        None,
        {},
    ).settings
    clock = Clock()
    p = TwilioProvider(
        settings,
        clock,
        public_url=PUBLIC,
        known_public_url=PUBLIC,
        tts=ToneTTS(clock) if streaming else None,
        stt=object() if streaming else None,
    )
    p.start(lambda event: succeed(None), CallBook())
    return p


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

    def setUp(self) -> None:
        self.sites: dict[TwilioProvider, StubTreq] = {}

    def post(self, p, kind: str, **query: str) -> str:
        """The TwiML Twilio gets for a signed webhook of C{kind} about call c1."""
        return self.fetch(p, f"{PUBLIC}?{urlencode({'callId': 'c1', 'type': kind, **query})}")

    def fetch(self, p, url: str) -> str:
        """The TwiML Twilio gets for its signed POST to C{url}."""
        form = {"CallSid": "CA1", "CallStatus": "in-progress", "Direction": "outbound-api"}
        signature = RequestValidator(AUTH_TOKEN).compute_signature(url, form)
        if p not in self.sites:
            # Built once per provider, as the daemon's site does.
            self.sites[p] = StubTreq(p.web_resources()[p.settings.serve.path])
        stub = self.sites[p]
        response = self.successResultOf(
            stub.post(
                url,
                data=urlencode(form).encode(),
                headers={
                    "Content-Type": "application/x-www-form-urlencoded",
                    "X-Twilio-Signature": signature,
                },
            )
        )
        self.assertEqual(response.code, 200)
        return self.successResultOf(response.text())

    def answer(self, p, r) -> str:
        """The document Twilio gets when the call of C{r} is answered."""
        p.answer(r)
        return self.post(p, "answer")

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
                self.assertEqual(verbs(self.answer(p, r)), expected)

    def test_after_speaking_a_conversation_listens_and_a_notify_call_holds(self):
        for mode, expected in (
            ("conversation", ["Gather", "Redirect"]),
            ("notify", ["Pause", "Redirect"]),
        ):
            p = provider(False)
            said = ElementTree.fromstring(self.answer(p, record(mode)))
            # Twilio follows the <Redirect> once it has said the <Say>s.
            self.assertEqual(verbs(self.fetch(p, said.find("Redirect").text)), expected)

    def test_an_ended_call_hangs_up(self):
        p = provider(False)
        p.answer(record())
        p.forget(record())
        self.assertEqual(verbs(self.post(p, "idle")), ["Hangup"])
        self.assertEqual(verbs(self.post(p, "answer")), ["Hangup"])
        self.assertEqual(verbs(self.post(p, "stream-ended")), ["Hangup"])

    def test_stream_restarts_are_bounded(self):
        p = provider(True)
        document = self.answer(p, record())
        # As Twilio does: each time the stream ends, POST to the <Connect> action.
        for _ in range(5):
            document = self.fetch(p, ElementTree.fromstring(document).find("Connect").get("action"))
            self.assertEqual(verbs(document), ["Connect"])
        document = self.fetch(p, ElementTree.fromstring(document).find("Connect").get("action"))
        self.assertEqual(verbs(document), ["Hangup"])

    def test_the_stream_url_has_no_query_and_carries_a_token(self):
        p = provider(True)
        document = self.answer(p, record())
        stream = ElementTree.fromstring(document).find("Connect/Stream")
        self.assertEqual(stream.get("url"), "wss://voice.example.com/voice/stream")
        names = [parameter.get("name") for parameter in stream.findall("Parameter")]
        self.assertEqual(names, ["token", "callId"])

    def test_refusals(self):
        self.assertEqual(verbs(twiml.reject()), ["Reject"])
        self.assertEqual(twiml.native_voice("nova"), "Polly.Salli")
        self.assertEqual(twiml.native_voice("Google.en-US-Neural2-F"), "Google.en-US-Neural2-F")
        self.assertEqual(twiml.native_voice("marin"), "Polly.Joanna")


class TransferDocumentTests(TestCase):
    """The cold transfer's TwiML, built with the SDK: one <Dial> and nothing after it."""

    def test_dial_the_person_from_our_number(self):
        url = PUBLIC + "?callId=c&type=transfer"
        document = twiml.transfer("+15558675309", "+15550001111", url)
        self.assertEqual(
            document,
            '<?xml version="1.0" encoding="UTF-8"?><Response><Dial callerId="+15550001111">'
            '<Number statusCallback="https://voice.example.com/voice/webhook?callId=c&amp;'
            'type=transfer" statusCallbackEvent="answered" statusCallbackMethod="POST">'
            "+15558675309</Number></Dial></Response>",
        )
