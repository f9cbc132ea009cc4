"""
Twilio's signature: the published known answers, the SDK as the oracle, and
the webhook's verdicts over every candidate URL (in memory, with StubTreq).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode, urlparse, urlsplit

from hypothesis import given, settings
from hypothesis import strategies as st
from treq.testing import StubTreq
from twilio.request_validator import RequestValidator, add_port, remove_port
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from tests.fakes.provider import CallBook
from voicecalld.config import parse_config
from voicecalld.providers.twilio.provider import TwilioProvider
from voicecalld.providers.twilio.signature import TwilioSignature, signed_params
from voicecalld.values import events as ev
from voicecalld.values.states import CallState
from voicecalld.web.public_url import RequestView, UrlRules, reconstruct
from voicecalld.web.signatures import IUrlSignature, Verdict, check
from voicecalld.web.site import build_root

# Twilio's published example (its security docs and twilio-python's tests).
DOC_TOKEN = "12345"
DOC_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
DOC_PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+14158675309",
    "Digits": "1234",
    "From": "+14158675309",
    "To": "+18005551212",
}
DOC_SIGNATURE = b"RSOYDt4T1cUTdK1PDd93/VVr8B8="
ACCOUNT = "AC" + "2" * 32
FORM = "application/x-www-form-urlencoded"


class _Multi:
    """Repeated form names, in the shape the SDK's validator reads."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self.pairs = pairs

    def __iter__(self):
        return iter({name for name, _ in self.pairs})

    def getall(self, name: str) -> list[str]:
        return [value for key, value in self.pairs if key == name]


class KnownAnswerTests(TestCase):
    """The signatures Twilio publishes for its example request."""

    def signature(self, header: bytes = DOC_SIGNATURE, pairs: Any = None) -> TwilioSignature:
        return TwilioSignature(DOC_TOKEN, pairs or list(DOC_PARAMS.items()), header)

    def test_published_example(self) -> None:
        signature = self.signature()
        verifyObject(IUrlSignature, signature)
        self.assertEqual(signature.compute(DOC_URL), DOC_SIGNATURE)
        self.assertTrue(signature.matches(DOC_URL))

    def test_published_port_forms(self) -> None:
        signature = self.signature()
        table = [
            ("https://mycompany.com:443/myapp.php?foo=1&bar=2", b"kvajT1Ptam85bY51eRf/AJRuM3w="),
            ("http://mycompany.com:80/myapp.php?foo=1&bar=2", b"0ZXoZLH/DfblKGATFgpif+LLRf4="),
            ("http://mycompany.com:1234/myapp.php?foo=1&bar=2", b"Zmvh+3yNM1Phv2jhDCwEM3q5ebU="),
        ]
        for url, expected in table:
            self.assertEqual(signature.compute(url), expected, url)

    def test_published_repeated_names(self) -> None:
        pairs = [("Sid", "CA123"), ("SidAccount", "AC123"), ("Digits", "5678"), ("Digits", "1234")]
        self.assertEqual(
            self.signature(pairs=pairs).compute(DOC_URL), b"IK+Dwps556ElfBT0I3Rgjkr1wJU="
        )

    def test_what_does_not_match(self) -> None:
        self.assertFalse(self.signature().matches(DOC_URL.replace("foo=1", "foo=2")))
        self.assertFalse(self.signature().matches("https://mycompany.com/myapp.php"))
        for header in (b"", b"RSOYDt4T1cUTdK1PDd93/VVr8B8", DOC_SIGNATURE + b"=", b"\xff"):
            self.assertFalse(self.signature(header).matches(DOC_URL), header)
        tampered = {**DOC_PARAMS, "Digits": "1235"}
        self.assertFalse(self.signature(pairs=list(tampered.items())).matches(DOC_URL))

    def test_repeats_of_one_pair_count_once(self) -> None:
        self.assertEqual(signed_params([("b", "2"), ("a", "1"), ("b", "1"), ("a", "1")]), "a1b1b2")


names = st.sampled_from(["CallSid", "Digits", "digits", "Z", "a", "Ä", ""]) | st.text(max_size=6)
values = st.sampled_from(["1234", "", "+1555", "é", "a b"]) | st.text(max_size=8)
urls = st.builds(
    lambda scheme, host, port, path, query: f"{scheme}://{host}{port}{path}{query}",
    st.sampled_from(["http", "https"]),
    st.sampled_from(["h.example.com", "203.0.113.5", "mycompany.com"]),
    st.sampled_from(["", ":80", ":443", ":3334", ":8443"]),
    st.sampled_from(["/", "/voice/webhook", "/myapp.php", ""]),
    st.sampled_from(["", "?", "?foo=1&bar=2", "?callId=c%201&type=status", "?a=:1"]),
)


class OracleTests(TestCase):
    """Twilio's SDK decides; ours must agree on every input."""

    @settings(max_examples=300, deadline=None)
    @given(url=urls, pairs=st.lists(st.tuples(names, values), max_size=6))
    def test_same_signature_as_the_sdk(self, url: str, pairs: list[tuple[str, str]]) -> None:
        expected = RequestValidator("tok").compute_signature(url, _Multi(pairs))
        self.assertEqual(TwilioSignature("tok", pairs, b"").compute(url).decode(), expected)

    @settings(max_examples=300, deadline=None)
    @given(
        url=urls,
        signed=st.sampled_from(["as is", "no port", "port", "other"]),
        pairs=st.lists(st.tuples(names, values), max_size=4),
    )
    def test_accepts_what_the_sdk_accepts(
        self, url: str, signed: str, pairs: list[tuple[str, str]]
    ) -> None:
        sdk = RequestValidator("tok")
        parsed = urlparse(url)
        signed_url = {
            "as is": url,
            "no port": remove_port(parsed),
            "port": add_port(parsed),
            "other": url + "x",
        }[signed]
        header = sdk.compute_signature(signed_url, _Multi(pairs))
        view = RequestView(path_and_query=urlsplit(url)._replace(scheme="", netloc="").geturl())
        candidates = reconstruct(view, UrlRules(public_url=url)).candidates
        ours = check(candidates, TwilioSignature("tok", pairs, header.encode()))
        if sdk.validate(url, _Multi(pairs), header):
            self.assertTrue(ours.accepted, signed_url)
        elif ours.accepted:
            # Beyond the SDK only the URL exactly as requested, which it normalises.
            self.assertEqual(ours.matched, url)


class _Holds:
    """An L{IUrlSignature} that holds for one URL and records what it was asked."""

    def __init__(self, url: str | None) -> None:
        self.url = url
        self.asked: list[str] = []

    def matches(self, url: str) -> bool:
        self.asked.append(url)
        return url == self.url


class CheckTests(TestCase):
    """L{check} tries candidates in order and stops at the first match."""

    def test_first_match_wins(self) -> None:
        holds = _Holds("b")
        self.assertEqual(check(["a", "b", "c"], holds), Verdict("b", ("a", "b")))
        self.assertEqual(holds.asked, ["a", "b"])
        self.assertTrue(check(["a", "b"], _Holds("b")).accepted)

    def test_refusal_tried_everything(self) -> None:
        verdict = check(["a", "b"], _Holds("z"))
        self.assertEqual(verdict, Verdict(None, ("a", "b")))
        self.assertFalse(verdict.accepted)
        self.assertFalse(check([], _Holds(None)).accepted)


class WebhookRig:
    """The Twilio webhook as the daemon mounts it, in memory, on a Clock."""

    def __init__(self, test: TestCase, public_url: str | None, token: str = DOC_TOKEN) -> None:
        config: dict[str, Any] = {
            "provider": "twilio",
            "fromNumber": "+15550001111",
            "twilio": {"accountSid": ACCOUNT, "authToken": token},
        }
        if public_url:
            config["publicUrl"] = public_url
        self.settings = parse_config(config, None, {}).settings
        self.token = token
        self.clock = Clock()
        self.provider = TwilioProvider(
            self.settings,
            self.clock,
            public_url=public_url or "http://127.0.0.1:3334/voice/webhook",
            known_public_url=public_url,
        )
        self.events: list[ev.CallEvent] = []
        self.provider.start(self._sink, CallBook())
        self.root = build_root(self.provider.web_resources())
        self.logged = EventLoggingObserver.createWithCleanup(test, globalLogPublisher)
        self.stub = StubTreq(self.root)

    def _sink(self, event: ev.CallEvent) -> Deferred:
        self.events.append(event)
        return succeed(None)

    def post(self, test: TestCase, url: str, params: dict[str, str], header: str | None) -> Any:
        """POST C{params} to C{url}; the response, with its body read."""
        headers = {"Content-Type": FORM}
        if header is not None:
            headers["X-Twilio-Signature"] = header
        d = self.stub.request("POST", url, data=urlencode(params).encode(), headers=headers)
        self.stub.flush()
        response = test.successResultOf(d)
        response.text = test.successResultOf(self.stub.content(response))
        return response

    def sign(self, url: str, params: dict[str, str]) -> str:
        """What Twilio would send for C{params} at C{url} (the SDK signs)."""
        return RequestValidator(self.token).compute_signature(url, params)

    def refusals(self) -> list[dict[str, Any]]:
        return [e for e in self.logged if e.get("log_code") == "webhook.bad_signature"]


MYAPP = "https://mycompany.com/myapp.php"
SERVED = "https://mycompany.com/voice/webhook?foo=1&bar=2"
DIRECT = "http://203.0.113.5:3334/voice/webhook?x=1"


class WebhookSignatureTests(TestCase):
    """Which signed URLs the webhook accepts, and what a refusal says."""

    def test_proxy_serving_the_published_example(self) -> None:
        rig = WebhookRig(self, MYAPP)
        response = rig.post(self, SERVED, DOC_PARAMS, DOC_SIGNATURE.decode())
        self.assertEqual(response.code, 200)
        self.assertEqual(rig.refusals(), [])

    def test_table(self) -> None:
        # (publicUrl, URL requested from us, URL Twilio signed, accepted)
        table = [
            (MYAPP, SERVED, DOC_URL, True),
            (MYAPP, SERVED, "https://mycompany.com:443/myapp.php?foo=1&bar=2", True),
            (MYAPP, SERVED, SERVED, True),
            (MYAPP, SERVED, "https://mycompany.com:443/voice/webhook?foo=1&bar=2", True),
            (MYAPP, SERVED, "https://mycompany.com/myapp.php?foo=1", False),
            (MYAPP, SERVED, "https://mycompany.com/myapp.php?bar=2&foo=1", False),
            (MYAPP, SERVED, "https://evil.example.net/myapp.php?foo=1&bar=2", False),
            (MYAPP, SERVED, "http://mycompany.com/myapp.php?foo=1&bar=2", False),
            (MYAPP, SERVED, "https://mycompany.com:8443/myapp.php?foo=1&bar=2", False),
            (MYAPP, SERVED.replace("https", "http"), SERVED.replace("https", "http"), False),
            (None, DIRECT, DIRECT, True),
            (None, DIRECT, "http://203.0.113.5/voice/webhook?x=1", True),
            (None, DIRECT, "https://203.0.113.5/voice/webhook?x=1", True),
            (None, DIRECT, "https://203.0.113.5:3334/voice/webhook?x=1", True),
            (None, DIRECT, "http://203.0.113.6:3334/voice/webhook?x=1", False),
            (None, DIRECT, "http://203.0.113.5:3335/voice/webhook?x=1", False),
            (None, DIRECT, "http://203.0.113.5:3334/voice/webhook?x=2", False),
        ]
        for public_url, url, signed_url, accepted in table:
            rig = WebhookRig(self, public_url)
            params = {**DOC_PARAMS, "Signed": signed_url}
            response = rig.post(self, url, params, rig.sign(signed_url, params))
            self.assertEqual(response.code, 200 if accepted else 403, (url, signed_url))
            self.assertEqual(len(rig.refusals()), 0 if accepted else 1, (url, signed_url))

    def test_refusal_names_every_url_tried(self) -> None:
        rig = WebhookRig(self, MYAPP)
        tampered = {**DOC_PARAMS, "Digits": "9"}
        response = rig.post(self, SERVED, tampered, DOC_SIGNATURE.decode())
        self.assertEqual((response.code, response.text), (403, b"invalid signature\n"))
        (event,) = rig.refusals()
        tried = [
            SERVED,
            "https://mycompany.com:443/voice/webhook?foo=1&bar=2",
            DOC_URL,
            "https://mycompany.com:443/myapp.php?foo=1&bar=2",
        ]
        self.assertEqual(event["urls"], tried)
        self.assertEqual(event["log_level"].name, "warn")
        text = event["log_format"].format(**event)
        for url in tried:
            self.assertIn(url, text)
        self.assertNotIn(DOC_TOKEN, text)
        self.assertEqual(rig.events, [])

    def test_missing_signature(self) -> None:
        rig = WebhookRig(self, MYAPP)
        response = rig.post(self, SERVED, DOC_PARAMS, None)
        self.assertEqual(response.code, 403)
        (event,) = rig.refusals()
        self.assertEqual(event["why"], "no X-Twilio-Signature")
        self.assertIn(DOC_URL, event["urls"])

    def test_a_password_in_public_url_is_not_logged(self) -> None:
        rig = WebhookRig(self, "https://twilio:s3cret@mycompany.com/myapp.php")
        rig.post(self, SERVED, DOC_PARAMS, "bad")
        (event,) = rig.refusals()
        text = event["log_format"].format(**event)
        self.assertNotIn("s3cret", text)
        self.assertIn("https://twilio:***@mycompany.com/myapp.php?foo=1&bar=2", text)


CALL_SID = "CA" + "7" * 32
STATUS_URL = "https://voice.example.com/voice/webhook?callId=call-1&type=status"


class StatusTests(TestCase):
    """Twilio's enumerated values are matched whatever their case."""

    def events_for(self, params: dict[str, str], url: str = STATUS_URL) -> tuple[int, list]:
        rig = WebhookRig(self, "https://voice.example.com/voice/webhook", token="status-token")
        params = {"CallSid": CALL_SID, "AccountSid": ACCOUNT, **params}
        response = rig.post(self, url, params, rig.sign(url, params))
        return response.code, rig.events

    def test_call_status_table(self) -> None:
        table = [
            ("completed", ev.Ended, CallState.COMPLETED),
            ("Completed", ev.Ended, CallState.COMPLETED),
            ("COMPLETED", ev.Ended, CallState.COMPLETED),
            ("canceled", ev.Ended, CallState.HANGUP_BOT),
            ("CANCELED", ev.Ended, CallState.HANGUP_BOT),
            ("no-answer", ev.Ended, CallState.NO_ANSWER),
            ("No-Answer", ev.Ended, CallState.NO_ANSWER),
            ("BUSY", ev.Ended, CallState.BUSY),
            ("Failed", ev.Ended, CallState.FAILED),
            (" failed ", ev.Ended, CallState.FAILED),
            ("Ringing", ev.Ringing, None),
            ("IN-PROGRESS", ev.Answered, None),
            ("In-Progress", ev.Answered, None),
            ("queued", None, None),
            ("Initiated", None, None),
            ("no_answer", None, None),
            ("", None, None),
        ]
        for status, kind, reason in table:
            code, events = self.events_for({"CallStatus": status})
            self.assertEqual(code, 204, status)
            self.assertEqual([type(e) for e in events], [kind] if kind else [], status)
            if reason is not None:
                self.assertEqual(events[0].reason, reason, status)
                self.assertEqual(events[0].call_id, "call-1", status)

    def test_cased_statuses_share_a_dedupe_key(self) -> None:
        keys = {
            self.events_for({"CallStatus": s, "SequenceNumber": "3"})[1][0].dedupe_key
            for s in ("no-answer", "No-Answer", "NO-ANSWER")
        }
        self.assertEqual(len(keys), 1)

    def test_answered_by_a_machine(self) -> None:
        for answered_by in ("machine_start", "Machine_End_Beep", "MACHINE_END_OTHER"):
            _, events = self.events_for({"CallStatus": "Completed", "AnsweredBy": answered_by})
            self.assertEqual(events[0].reason, CallState.VOICEMAIL, answered_by)
        _, events = self.events_for({"CallStatus": "completed", "AnsweredBy": "Human"})
        self.assertEqual(events[0].reason, CallState.COMPLETED)

    def test_end_status_on_the_voice_url(self) -> None:
        url = "https://voice.example.com/voice/webhook"
        code, events = self.events_for({"CallStatus": "Canceled"}, url)
        self.assertEqual(code, 204)
        self.assertEqual([(type(e), e.reason) for e in events], [(ev.Ended, CallState.HANGUP_BOT)])

    def test_direction(self) -> None:
        url = "https://voice.example.com/voice/webhook"
        for direction in ("inbound", "Inbound", "INBOUND"):
            _, events = self.events_for({"Direction": direction, "From": "+1555", "To": "+1"}, url)
            self.assertEqual([type(e) for e in events], [ev.InboundCall], direction)
        _, events = self.events_for({"Direction": "outbound-api"}, url)
        self.assertEqual(events, [])
