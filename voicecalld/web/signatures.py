"""
Checking a carrier's signature against every URL it could have signed.

Providers that sign the URL they requested (Twilio, Plivo V3) cannot be
checked against one URL: a proxy or tunnel may have rewritten it, and
Twilio is not consistent about ports.  L{voicecalld.web.public_url} lists
the candidates; each provider gives an L{IUrlSignature} that says whether
its signature holds for one of them; L{check} tries them in order.
Providers that sign only the body (Telnyx) need neither.
"""

from __future__ import annotations

from collections.abc import Iterable

from attrs import frozen
from zope.interface import Interface


class IUrlSignature(Interface):
    """The signature on one request, over the URL the carrier requested and more."""

    def matches(url):
        """Whether the signature holds for this request sent to C{url} (no blocking;
        a constant-time comparison)."""


@frozen
class Verdict:
    """
    The outcome of a signature check.

    @ivar matched: the candidate URL the signature holds for, or None.
    @ivar tried: the candidates checked, in order (all of them on a refusal).
    """

    matched: str | None
    tried: tuple[str, ...]

    @property
    def accepted(self) -> bool:
        """Whether some candidate matched."""
        return self.matched is not None


def check(candidates: Iterable[str], signature: IUrlSignature) -> Verdict:
    """Try C{candidates} in order; the first one C{signature} holds for wins."""
    tried: list[str] = []
    for url in candidates:
        tried.append(url)
        if signature.matches(url):
            return Verdict(url, tuple(tried))
    return Verdict(None, tuple(tried))
