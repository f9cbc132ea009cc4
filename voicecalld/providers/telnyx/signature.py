"""
Telnyx's webhook signature: Ed25519, by the account's public key, over the
C{telnyx-timestamp} header, a C{|}, and the raw body.  The timestamp must be
within L{TOLERANCE} seconds of now, either way, so a captured request cannot
be played back later.

The public key is accepted as Mission Control shows it (Base64 of the 32 raw
bytes), as Base64 of its DER SubjectPublicKeyInfo, or as PEM; signatures as
Base64 or Base64URL, with or without padding.
"""

from __future__ import annotations

import base64
import binascii

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_der_public_key, load_pem_public_key
from zope.interface import implementer

from voicecalld.config.problem import Problem
from voicecalld.config.secret import Secret
from voicecalld.providers.common.verify import IWebhookVerifier, SignedRequest, Verification

SIGNATURE_HEADER = b"telnyx-signature-ed25519"
TIMESTAMP_HEADER = b"telnyx-timestamp"
TOLERANCE = 300


class BadPublicKey(ValueError):
    """The configured public key is not an Ed25519 public key in a form we read."""


def load_public_key(text: str) -> Ed25519PublicKey:
    """The Ed25519 key in C{text} (PEM, raw Base64 or Base64 DER); raises L{BadPublicKey}."""
    text = text.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = load_pem_public_key(text.encode("ascii"))
        else:
            raw = _b64(text)
            if raw is None:
                raise BadPublicKey("not PEM and not Base64")
            key = (
                Ed25519PublicKey.from_public_bytes(raw)
                if len(raw) == 32
                else load_der_public_key(raw)
            )
    except (ValueError, TypeError, UnicodeEncodeError) as e:
        if isinstance(e, BadPublicKey):
            raise
        raise BadPublicKey("not a readable public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise BadPublicKey("not an Ed25519 key")
    return key


def configured_key(secret: Secret | None, at: tuple[str, ...]) -> Ed25519PublicKey | None:
    """C{telnyx.publicKey} (at key path C{at}), read; a L{Problem} naming it if unreadable."""
    if secret is None:
        return None
    try:
        return load_public_key(secret.reveal())
    except BadPublicKey as e:
        raise Problem(
            (*at, "publicKey"), f"{e}: expected an Ed25519 public key as PEM, Base64 or Base64 DER"
        ) from None


def _b64(text: str) -> bytes | None:
    """Base64 or Base64URL, padding optional; None if it is neither."""
    compact = "".join(text.split())
    padded = compact + "=" * (-len(compact) % 4)
    alphabet = b"-_" if ("-" in compact or "_" in compact) else b"+/"
    try:
        return base64.b64decode(padded, altchars=alphabet, validate=True)
    except (binascii.Error, ValueError):
        return None


@implementer(IWebhookVerifier)
class TelnyxVerifier:
    """Checks C{telnyx-signature-ed25519} and the timestamp window; no key refuses all."""

    headers = (SIGNATURE_HEADER, TIMESTAMP_HEADER)

    def __init__(self, public_key: Ed25519PublicKey | None, tolerance: int = TOLERANCE) -> None:
        self._key = public_key
        self._tolerance = tolerance

    def verify(self, request: SignedRequest) -> Verification:
        tried = request.urls[:1]
        if self._key is None:
            return Verification(False, "no telnyx.publicKey configured", tried)
        signature = request.headers.get(SIGNATURE_HEADER)
        stamp = request.headers.get(TIMESTAMP_HEADER)
        if not signature or not stamp:
            return Verification(False, "no telnyx-signature-ed25519 or telnyx-timestamp", tried)
        try:
            when = int(stamp.decode("ascii").strip())
        except (UnicodeDecodeError, ValueError):
            return Verification(False, "unreadable telnyx-timestamp", tried)
        if abs(request.now - when) > self._tolerance:
            return Verification(
                False, f"timestamp outside ±{self._tolerance} s (stale or replayed)", tried
            )
        raw = _b64(signature.decode("latin-1"))
        if raw is None or len(raw) != 64:
            return Verification(False, "unreadable signature", tried)
        try:
            self._key.verify(raw, stamp.strip() + b"|" + request.body)
        except InvalidSignature:
            return Verification(False, "invalid signature", tried)
        return Verification(True, "", tried, tried[0] if tried else None)
