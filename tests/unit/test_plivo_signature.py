"""
Plivo's callback signatures: our verifier against the plivo SDK's own V3
validator (the oracle), several comma-separated signatures, V2 where V3 is
absent, and every refusal.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from plivo.utils.signature_v3 import validate_v3_signature
from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from voicecalld.providers.common.verify import IWebhookVerifier, SignedRequest
from voicecalld.providers.plivo.signature import (
    V2,
    V2_NONCE,
    V3,
    V3_NONCE,
    PlivoVerifier,
    v3_base,
    v3_signature,
)

TOKEN = "MjAxNi1hdXRoLXRva2VuLWZvci10ZXN0cw"
NONCE = "05429567804466091622"
PARAMS = (
    ("CallUUID", "97ceeb52-58b6-11e1-86da-77300b68f8bb"),
    ("Direction", "outbound"),
    ("From", "15551112222"),
    ("To", "15553334444"),
    ("Speech", "one two & three"),
    ("BillRate", "0.00850"),
    ("SIP-H-To", "<sip:x@y>"),
)
URLS = (
    "https://voice.example.com/voice/webhook",
    "https://voice.example.com/voice/webhook?callId=c1&type=input&turn=t%201",
    "https://voice.example.com:8443/voice/webhook?type=answer&callId=c1&callId=b0",
)


def request(url: str, headers: dict[bytes, bytes], params=PARAMS, urls=None) -> SignedRequest:
    return SignedRequest(urls=urls or (url,), headers=headers, params=tuple(params))


class SignatureV3(TestCase):
    """V3 as the SDK computes it, over URL, query, POST parameters and nonce."""

    def setUp(self) -> None:
        self.verifier = PlivoVerifier(TOKEN)

    def test_provides_the_interface(self):
        self.assertTrue(verifyObject(IWebhookVerifier, self.verifier))

    def test_the_sdk_accepts_what_we_compute_and_we_accept_it(self):
        for url in URLS:
            for params in (PARAMS, ()):
                ours = v3_signature(TOKEN, url, NONCE, params).decode()
                self.assertTrue(
                    validate_v3_signature("POST", url, NONCE, TOKEN, ours, dict(params)),
                    (url, params, v3_base(url, params)),
                )
                headers = {V3: ours.encode(), V3_NONCE: NONCE.encode()}
                self.assertTrue(self.verifier.verify(request(url, headers, params)).accepted)

    def test_any_one_of_several_signatures_will_do(self):
        url = URLS[1]
        good = v3_signature(TOKEN, url, NONCE, PARAMS)
        other = v3_signature("an-older-token", url, NONCE, PARAMS)
        for header in (other + b"," + good, good + b", " + other, b" " + good):
            headers = {V3: header, V3_NONCE: NONCE.encode()}
            self.assertTrue(self.verifier.verify(request(url, headers)).accepted, header)

    def test_a_later_candidate_url_matches(self):
        public = "https://voice.example.com/voice/webhook?callId=c1&type=input"
        headers = {V3: v3_signature(TOKEN, public, NONCE, PARAMS), V3_NONCE: NONCE.encode()}
        seen = request(public, headers, urls=("http://127.0.0.1:3334/voice/webhook?x=1", public))
        verdict = self.verifier.verify(seen)
        self.assertTrue(verdict.accepted)
        self.assertEqual(verdict.matched, public)
        self.assertEqual(len(verdict.tried), 2)

    def test_refusals(self):
        url = URLS[1]
        good = v3_signature(TOKEN, url, NONCE, PARAMS)
        cases = {
            "wrong token": {V3: v3_signature("x", url, NONCE, PARAMS), V3_NONCE: NONCE.encode()},
            "other nonce": {V3: good, V3_NONCE: b"1" + NONCE.encode()},
            "no nonce": {V3: good},
            "nothing": {},
            "empty": {V3: b"", V3_NONCE: NONCE.encode()},
        }
        for why, headers in cases.items():
            self.assertFalse(self.verifier.verify(request(url, headers)).accepted, why)
        tampered = (*PARAMS[:-1], ("SIP-H-To", "<sip:z@y>"))
        headers = {V3: good, V3_NONCE: NONCE.encode()}
        self.assertFalse(self.verifier.verify(request(url, headers, tampered)).accepted)
        other_query = url.replace("turn=t%201", "turn=t%202")
        self.assertFalse(self.verifier.verify(request(other_query, headers)).accepted)


class V2Signature(TestCase):
    """The deprecated V2 counts only when no V3 pair came."""

    def v2(self, url: str, token: str = TOKEN) -> bytes:
        base = url.split("?", 1)[0]
        return base64.b64encode(
            hmac.new(token.encode(), (base + NONCE).encode(), hashlib.sha256).digest()
        )

    def test_v2_alone_is_accepted_and_checked(self):
        verifier = PlivoVerifier(TOKEN)
        url = URLS[1]
        ok = {V2: self.v2(url), V2_NONCE: NONCE.encode()}
        self.assertTrue(verifier.verify(request(url, ok)).accepted)
        bad = {V2: self.v2(url, "x"), V2_NONCE: NONCE.encode()}
        self.assertFalse(verifier.verify(request(url, bad)).accepted)

    def test_a_bad_v3_is_not_rescued_by_a_good_v2(self):
        verifier = PlivoVerifier(TOKEN)
        url = URLS[1]
        headers = {
            V3: b"bm90IGl0",
            V3_NONCE: NONCE.encode(),
            V2: self.v2(url),
            V2_NONCE: NONCE.encode(),
        }
        self.assertFalse(verifier.verify(request(url, headers)).accepted)
