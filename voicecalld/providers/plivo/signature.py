"""
Plivo's callback signatures, as an L{IWebhookVerifier}.

Signature V3 (C{X-Plivo-Signature-V3} with C{X-Plivo-Signature-V3-Nonce}):
Base64 of HMAC-SHA256, keyed with the Auth Token, over a base string and
the nonce.  The base string is the requested URL without its query, then
C{?} and the query's pairs sorted (C{name=value} joined by C{&}); for a
POST with parameters, a C{.} after a non-empty query, then every parameter
sorted, each name directly followed by its value.  The header may hold
several signatures separated by commas (one per active token): any one
will do.

The deprecated V2 (C{X-Plivo-Signature-V2} with its nonce) signs only the
URL without its query, followed by the nonce; as upstream does, it is
checked only when the V3 pair is absent.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable, Iterable
from urllib.parse import parse_qsl, urlsplit

from zope.interface import implementer

from voicecalld.providers.common.verify import IWebhookVerifier, SignedRequest, Verification
from voicecalld.web.signatures import IUrlSignature, check

V3 = b"x-plivo-signature-v3"
V3_NONCE = b"x-plivo-signature-v3-nonce"
V2 = b"x-plivo-signature-v2"
V2_NONCE = b"x-plivo-signature-v2-nonce"


def _sorted_pairs(pairs: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    grouped: dict[str, list[str]] = {}
    for name, value in pairs:
        grouped.setdefault(name, []).append(value)
    return [(name, value) for name in sorted(grouped) for value in sorted(grouped[name])]


def v3_base(url: str, params: Iterable[tuple[str, str]] = ()) -> str:
    """The V3 base string of a POST to C{url} with form C{params}."""
    parts = urlsplit(url)
    base = f"{parts.scheme}://{parts.netloc}{parts.path}"
    query = parse_qsl(parts.query, keep_blank_values=True)
    posted = list(params)
    if not posted:
        joined = "&".join(f"{k}={v}" for k, v in _sorted_pairs(query))
        return base + ("?" + joined if joined else "")
    joined = "&".join(f"{k}={v}" for k, v in _sorted_pairs(query))
    body = "".join(k + v for k, v in _sorted_pairs(posted))
    return base + "?" + joined + ("." if joined else "") + body


def _mac(token: bytes, message: str) -> bytes:
    return base64.b64encode(hmac.new(token, message.encode("utf-8"), hashlib.sha256).digest())


def v3_signature(
    auth_token: str, url: str, nonce: str, params: Iterable[tuple[str, str]] = ()
) -> bytes:
    """The V3 signature Plivo sends for a POST of C{params} to C{url}."""
    return _mac(auth_token.encode("utf-8"), f"{v3_base(url, params)}.{nonce}")


def v2_signature(auth_token: str, url: str, nonce: str) -> bytes:
    """The V2 signature: the URL without its query, then the nonce."""
    parts = urlsplit(url)
    return _mac(auth_token.encode("utf-8"), f"{parts.scheme}://{parts.netloc}{parts.path}{nonce}")


def _any(expected: bytes, header: bytes) -> bool:
    """Whether one of the comma-separated signatures in C{header} is C{expected} (constant time)."""
    found = False
    for candidate in header.split(b","):
        found |= hmac.compare_digest(expected, candidate.strip())
    return found


@implementer(IUrlSignature)
class PlivoSignature:
    """One request's signature header, checkable against any candidate URL."""

    def __init__(self, compute: Callable[[str], bytes], header: bytes) -> None:
        self._compute = compute
        self._header = header

    def matches(self, url: str) -> bool:
        return _any(self._compute(url), self._header)


@implementer(IWebhookVerifier)
class PlivoVerifier:
    """Checks V3 (or, without it, V2) against every URL Plivo could have requested."""

    headers = (V3, V3_NONCE, V2, V2_NONCE)

    def __init__(self, auth_token: str) -> None:
        self._token = auth_token

    def verify(self, request: SignedRequest) -> Verification:
        h, token = request.headers, self._token
        if h.get(V3) and h.get(V3_NONCE):
            nonce = h[V3_NONCE].decode("latin-1")
            pairs = request.params
            signature = PlivoSignature(lambda url: v3_signature(token, url, nonce, pairs), h[V3])
        elif h.get(V2) and h.get(V2_NONCE):
            nonce = h[V2_NONCE].decode("latin-1")
            signature = PlivoSignature(lambda url: v2_signature(token, url, nonce), h[V2])
        else:
            return Verification(False, "no X-Plivo-Signature-V3 and nonce", request.urls)
        verdict = check(request.urls, signature)
        if verdict.accepted:
            return Verification(True, "", verdict.tried, verdict.matched)
        return Verification(False, "invalid signature", verdict.tried)
