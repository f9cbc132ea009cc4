"""
Twilio's C{X-Twilio-Signature}: Base64 of HMAC-SHA1, keyed with the Auth
Token, over the URL Twilio requested followed by the POST parameters
(sorted by name, then value; repeated identical pairs count once), each
name directly followed by its value.  L{twilio_verifier} checks it against
every candidate URL, for the webhook pipeline.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable

from zope.interface import implementer

from voicecalld.providers.common.verify import SignedRequest, UrlSignatureVerifier
from voicecalld.web.signatures import IUrlSignature

HEADER = b"x-twilio-signature"


def signed_params(pairs: Iterable[tuple[str, str]]) -> str:
    """The part of the signed text that follows the URL, for form C{pairs}."""
    values: dict[str, set[str]] = {}
    for name, value in pairs:
        values.setdefault(name, set()).add(value)
    return "".join(name + value for name in sorted(values) for value in sorted(values[name]))


@implementer(IUrlSignature)
class TwilioSignature:
    """One request's C{X-Twilio-Signature}, checkable against any candidate URL."""

    def __init__(self, auth_token: str, pairs: Iterable[tuple[str, str]], header: bytes) -> None:
        self._key = auth_token.encode("utf-8")
        self._params = signed_params(pairs)
        self._header = header

    def compute(self, url: str) -> bytes:
        """The signature Twilio would send for this request's parameters at C{url}."""
        digest = hmac.new(self._key, (url + self._params).encode("utf-8"), hashlib.sha1)
        return base64.b64encode(digest.digest())

    def matches(self, url: str) -> bool:
        """Whether the header is Twilio's signature for C{url} (constant time)."""
        return hmac.compare_digest(self.compute(url), self._header)


def twilio_verifier(auth_token: str) -> UrlSignatureVerifier:
    """The webhook verifier for an account's Auth Token."""

    def signature(request: SignedRequest, header: bytes) -> TwilioSignature:
        return TwilioSignature(auth_token, request.params, header)

    return UrlSignatureVerifier("X-Twilio-Signature", signature)
