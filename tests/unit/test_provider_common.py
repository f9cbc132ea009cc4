"""
The provider-neutral layer alone: the URL-signature verifier, the replay
cache, the REST client and its errors, and Twilio's stream codec read and
written through the neutral values.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from voicecalld.media.stream import (
    BadMessage,
    StreamDtmf,
    StreamMark,
    StreamMedia,
    StreamStart,
    StreamStop,
)
from voicecalld.providers.common.replay import REPLAY_MEMORY, Answer, ReplayCache
from voicecalld.providers.common.rest import RestClient, RestError
from voicecalld.providers.common.verify import SignedRequest
from voicecalld.providers.twilio.codec import TwilioCodec
from voicecalld.providers.twilio.signature import TwilioSignature, twilio_verifier

TOKEN = "secret-token"
URLS = ("https://a.example/voice", "https://b.example/voice")
PARAMS = (("CallSid", "CA1"), ("CallStatus", "ringing"))


class UrlSignatures(TestCase):
    """A URL signature is checked against every candidate; a refusal says why."""

    def verify(self, header: bytes | None) -> Any:
        headers = {b"x-twilio-signature": header} if header is not None else {}
        request = SignedRequest(urls=URLS, headers=headers, params=PARAMS)
        return twilio_verifier(TOKEN).verify(request)

    def test_the_second_candidate_matches(self) -> None:
        signed = TwilioSignature(TOKEN, PARAMS, b"").compute(URLS[1])
        verification = self.verify(signed)
        self.assertTrue(verification.accepted)
        self.assertEqual((verification.matched, verification.tried), (URLS[1], URLS))

    def test_a_missing_header_and_a_wrong_one(self) -> None:
        missing = self.verify(None)
        self.assertEqual((missing.accepted, missing.why), (False, "no X-Twilio-Signature"))
        wrong = self.verify(b"bm90IGl0")
        self.assertEqual(
            (wrong.accepted, wrong.why, wrong.tried), (False, "invalid signature", URLS)
        )


class Replays(TestCase):
    """An answer is given again for the replay memory, then forgotten."""

    def test_remembered_then_forgotten(self) -> None:
        clock = Clock()
        cache = ReplayCache(clock)
        cache.remember("k", Answer(200, b"<Response/>", b"application/xml"))
        clock.advance(REPLAY_MEMORY - 1)
        self.assertEqual(cache.remembered("k").body, b"<Response/>")
        clock.advance(1)
        self.assertIsNone(cache.remembered("k"))

    def test_only_the_newest_entries_are_kept(self) -> None:
        cache = ReplayCache(Clock(), entries=2)
        for key in "abc":
            cache.remember(key, Answer(200))
        self.assertEqual([cache.remembered(k) is not None for k in "abc"], [False, True, True])


class _Response:
    def __init__(self, code: int, body: bytes) -> None:
        self.code = code
        self._body = body

    def content(self) -> Deferred:
        return succeed(self._body)


class _Http:
    """Answers every request with one status and body, recording what was asked."""

    def __init__(self, code: int, body: bytes) -> None:
        self.answer = _Response(code, body)
        self.asked: list[tuple[str, str, dict[str, Any]]] = []

    def request(self, method: str, url: str, **options: Any) -> Deferred:
        self.asked.append((method, url, options))
        return succeed(self.answer)


class Rest(TestCase):
    """Answers decoded, errors as one RestError saying what the carrier said."""

    def client(self, code: int, body: bytes) -> tuple[RestClient, _Http]:
        http = _Http(code, body)
        client = RestClient(
            carrier="Acme",
            base_url="https://api.acme.test/v1/",
            auth=("id", "pw"),
            clock=Clock(),
            http=http,
        )
        return client, http

    def done(self, coroutine: Any) -> Any:
        return self.successResultOf(Deferred.fromCoroutine(coroutine))

    def failed(self, coroutine: Any) -> RestError:
        return self.failureResultOf(Deferred.fromCoroutine(coroutine), RestError).value

    def test_a_form_post(self) -> None:
        client, http = self.client(201, b'{"sid": "CA1"}')
        self.assertEqual(
            self.done(client.request("POST", "/Calls", "creating", form=[("To", "+1")])),
            {"sid": "CA1"},
        )
        method, url, options = http.asked[0]
        self.assertEqual((method, url), ("POST", "https://api.acme.test/v1/Calls"))
        self.assertEqual(options["data"], [("To", "+1")])
        self.assertEqual(options["auth"], ("id", "pw"))

    def test_the_carriers_error(self) -> None:
        client, _ = self.client(400, b'{"code": 21211, "message": "Invalid To"}')
        error = self.failed(client.request("POST", "/Calls", "creating the call", form=[]))
        self.assertEqual(str(error), "Acme 21211: Invalid To (creating the call, HTTP 400)")
        self.assertEqual(
            (error.status, error.provider_code, error.retryable, error.gone),
            (400, 21211, False, False),
        )

    def test_gone_and_retryable(self) -> None:
        client, _ = self.client(404, b"not here")
        self.assertIsNone(self.done(client.fetch("/Calls/CA9", "fetching")))
        self.assertTrue(self.failed(client.request("GET", "/x", "fetching")).gone)
        client, _ = self.client(503, b"")
        error = self.failed(client.request("GET", "/x", "fetching"))
        self.assertTrue(error.retryable)
        self.assertEqual(str(error), "Acme 503: no detail (fetching, HTTP 503)")


class TwilioStreamCodec(TestCase):
    """Twilio's stream messages read into the neutral values, and written back."""

    codec = TwilioCodec()

    def parse(self, message: Any, started: bool = True) -> Any:
        payload = json.dumps(message).encode()
        return (self.codec.parse if started else self.codec.parse_start)(payload, False)

    def test_start(self) -> None:
        start = self.parse(
            {
                "event": "start",
                "streamSid": "MZ1",
                "start": {"callSid": "CA1", "customParameters": {"token": "t"}},
            },
            started=False,
        )
        self.assertEqual(start, StreamStart("MZ1", "CA1", {"token": "t"}))
        self.assertIsNone(self.parse({"event": "connected"}, started=False))

    def test_messages_of_a_started_stream(self) -> None:
        audio = base64.b64encode(b"\x7f\x00").decode()
        media = {"event": "media", "media": {"payload": audio}}
        self.assertEqual(self.parse(media), StreamMedia(b"\x7f\x00"))
        self.assertEqual(self.parse({"event": "mark", "mark": {"name": "u1"}}), StreamMark("u1"))
        self.assertEqual(self.parse({"event": "dtmf", "dtmf": {"digit": "5"}}), StreamDtmf("5"))
        self.assertEqual(self.parse({"event": "stop"}), StreamStop())
        self.assertIsNone(self.parse({"event": "start"}))

    def test_unreadable_messages(self) -> None:
        cases = ((b"\x00", True, 1003), (b"{", False, 1007), (b'{"event":"media"}', False, 1007))
        for payload, binary, code in cases:
            with self.assertRaises(BadMessage) as caught:
                self.codec.parse(payload, binary)
            self.assertEqual(caught.exception.code, code, payload)

    def test_outbound(self) -> None:
        encoder = self.codec.encoder(StreamStart("MZ1", "CA1"))
        media = json.loads(encoder.media(b"\x7f\x00"))
        self.assertEqual(
            media, {"event": "media", "streamSid": "MZ1", "media": {"payload": "fwA="}}
        )
        self.assertEqual(json.loads(encoder.mark("u1"))["mark"], {"name": "u1"})
        self.assertEqual(json.loads(encoder.clear()), {"event": "clear", "streamSid": "MZ1"})
