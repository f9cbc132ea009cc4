"""Single-use, expiring tokens that tie a media stream to the call that asked for it."""

from __future__ import annotations

import secrets

from attrs import frozen
from twisted.internet.interfaces import IReactorTime

TOKEN_LIFETIME = 60.0


@frozen
class Grant:
    """What a token was issued for."""

    call_id: str
    provider_call_id: str | None
    expires_at: float


class StreamTokens:
    """
    Issues a random token per stream request (it travels in a TwiML
    C{<Parameter>}, since Twilio strips query strings from stream URLs) and
    accepts each token once, before it expires, for the call it was made for.
    """

    def __init__(self, clock: IReactorTime, lifetime: float = TOKEN_LIFETIME) -> None:
        self._clock = clock
        self._lifetime = lifetime
        self._grants: dict[str, Grant] = {}

    def issue(self, call_id: str, provider_call_id: str | None) -> str:
        """A new token for one stream of this call."""
        self._expire()
        token = secrets.token_urlsafe(16)
        self._grants[token] = Grant(
            call_id, provider_call_id, self._clock.seconds() + self._lifetime
        )
        return token

    def claim(self, token: str | None, provider_call_id: str | None) -> Grant | None:
        """
        The grant for C{token} if it is known, unused, unexpired and was issued
        for this provider call; the token is spent either way.
        """
        self._expire()
        grant = self._grants.pop(token, None) if token else None
        if grant is None:
            return None
        if grant.provider_call_id is not None and grant.provider_call_id != provider_call_id:
            return None
        return grant

    def revoke(self, call_id: str) -> None:
        """Forget every token of a call (it ended)."""
        for token in [t for t, g in self._grants.items() if g.call_id == call_id]:
            del self._grants[token]

    def _expire(self) -> None:
        now = self._clock.seconds()
        for token in [t for t, g in self._grants.items() if g.expires_at <= now]:
            del self._grants[token]
