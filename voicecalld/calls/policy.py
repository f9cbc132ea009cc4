"""Who may call in, and where we may call out: inbound policy and the toll-fraud guard."""

from __future__ import annotations

import re
from collections import deque

from attrs import frozen

from voicecalld.config.model import VoiceCallSettings
from voicecalld.config.schema import E164_PATTERN

HOUR = 3600.0


@frozen
class Decision:
    """Allowed or not, and why (the why is shown to users)."""

    allowed: bool
    reason: str


def digits(number: str | None) -> str:
    """Only the digits of a number, as upstream compares allowlist entries."""
    return re.sub(r"\D", "", number or "")


def inbound_decision(settings: VoiceCallSettings, caller: str | None) -> Decision:
    """Apply C{inboundPolicy} and C{allowFrom} to a caller's number."""
    policy = settings.inbound_policy
    if policy == "disabled":
        return Decision(False, "inbound calls are disabled (inboundPolicy: disabled)")
    if policy == "open":
        return Decision(True, "inboundPolicy: open")
    caller_digits = digits(caller)
    if caller_digits and caller_digits in {digits(n) for n in settings.allow_from}:
        return Decision(True, f"{caller} is in allowFrom")
    shown = caller or "an anonymous caller"
    if policy == "pairing":
        return Decision(
            False,
            f"{shown} is not in allowFrom, and pairing new callers is not"
            " built yet (inboundPolicy: pairing acts as allowlist)",
        )
    return Decision(False, f"{shown} is not in allowFrom (inboundPolicy: allowlist)")


class OutboundGuard:
    """
    The toll-fraud guard: where outbound calls may go and how many an hour.

    C{outbound.allowedPrefixes} (when set) lists the only destinations;
    C{outbound.deniedPrefixes} refuses destinations unless an allowed prefix
    is at least as specific; C{outbound.maxCallsPerHour} caps placements over
    a sliding hour that survives restarts (seeded from the store).
    """

    def __init__(self, settings: VoiceCallSettings) -> None:
        self._outbound = settings.outbound
        self._placed: deque[float] = deque()

    def seed(self, placed_times: list[float]) -> None:
        """Remember calls placed before a restart."""
        self._placed.extend(sorted(placed_times))

    def check(self, destination: str, now: float) -> Decision:
        """Whether a call to C{destination} may be placed at C{now}."""
        if re.fullmatch(E164_PATTERN, destination) is None:
            return Decision(False, f"{destination!r} is not an E.164 number")
        allowed = _longest_match(destination, self._outbound.allowed_prefixes)
        if self._outbound.allowed_prefixes and allowed is None:
            return Decision(False, f"{destination} matches no outbound.allowedPrefixes entry")
        denied = _longest_match(destination, self._outbound.denied_prefixes)
        if denied is not None and (allowed is None or len(allowed) < len(denied)):
            return Decision(
                False,
                f"{destination} is a premium-rate or high-cost destination"
                f" (outbound.deniedPrefixes: {denied})",
            )
        limit = self._outbound.max_calls_per_hour
        if limit is not None:
            while self._placed and self._placed[0] <= now - HOUR:
                self._placed.popleft()
            if len(self._placed) >= limit:
                return Decision(False, f"outbound.maxCallsPerHour ({limit}) reached")
        return Decision(True, "allowed")

    def placed(self, now: float) -> None:
        """Count a call placed at C{now} against the hourly cap."""
        self._placed.append(now)


def _longest_match(number: str, prefixes: tuple[str, ...]) -> str | None:
    matches = [p for p in prefixes if number.startswith(p)]
    return max(matches, key=len) if matches else None
