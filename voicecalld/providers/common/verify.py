"""
Webhook verifiers: the interface every carrier's signature check provides,
and the one for carriers that sign the URL they requested.

A verifier is given everything a carrier may sign (L{SignedRequest}): every
URL the request could have been sent to (from L{voicecalld.web.public_url}),
the headers, the raw body and the parsed parameters, and the time.  Twilio
signs URL and parameters; Plivo V3 signs URL and a nonce; Telnyx signs a
timestamp and the raw body, and refuses old timestamps.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from attrs import field, frozen
from zope.interface import Attribute, Interface, implementer

from voicecalld.web.signatures import IUrlSignature, check


@frozen
class SignedRequest:
    """
    One webhook request, as a verifier sees it.

    @ivar urls: the URLs the carrier could have requested, most likely first.
    @ivar headers: the request headers, lower-case names to (the last) value, as bytes.
    @ivar body: the raw body.
    @ivar params: the parsed parameters, as (name, value) pairs in order.
    @ivar now: the time, in seconds since the epoch (for timestamp windows).
    """

    urls: tuple[str, ...]
    headers: Mapping[bytes, bytes] = field(factory=dict)
    body: bytes = b""
    params: tuple[tuple[str, str], ...] = ()
    now: float = 0.0


@frozen
class Verification:
    """
    A verifier's answer.

    @ivar accepted: whether the request is the carrier's.
    @ivar why: on a refusal, what was wrong, for the log ("invalid signature").
    @ivar tried: the URLs checked, in order.
    @ivar matched: the URL the signature holds for, if it covers one.
    """

    accepted: bool
    why: str = ""
    tried: tuple[str, ...] = ()
    matched: str | None = None


class IWebhookVerifier(Interface):
    """A carrier's check that a webhook request is its own."""

    headers = Attribute(
        "The lower-case names (bytes) of the headers that carry the signature:"
        " a retried delivery repeats them, so they are part of its replay key."
    )

    def verify(request):
        """A L{Verification} of the L{SignedRequest} C{request} (no blocking, constant time)."""


@implementer(IWebhookVerifier)
class UrlSignatureVerifier:
    """
    For carriers that sign the URL they requested (and more): the signature
    header must hold for one of the candidate URLs.
    """

    def __init__(
        self, header: str, signature: Callable[[SignedRequest, bytes], IUrlSignature]
    ) -> None:
        """
        @param header: the signature header's name as carriers spell it
            (C{X-Twilio-Signature}).
        @param signature: makes the request's L{IUrlSignature} from it and the header's value.
        """
        self._name = header
        self._header = header.lower().encode("ascii")
        self._signature = signature
        self.headers = (self._header,)

    def verify(self, request: SignedRequest) -> Verification:
        value = request.headers.get(self._header)
        if not value:
            return Verification(False, f"no {self._name}", request.urls)
        verdict = check(request.urls, self._signature(request, value))
        if verdict.accepted:
            return Verification(True, "", verdict.tried, verdict.matched)
        return Verification(False, "invalid signature", verdict.tried)
