"""
Admission: whether a call may begin, before anything is stored or dialled.

Client arguments are checked and cleaned here, outbound destinations pass
the toll-fraud guard, inbound callers the inbound policy, and both share one
concurrency budget (C{maxConcurrentCalls}).  A refusal is published on the
tail and logged once, and changes nothing.
"""

from __future__ import annotations

import re

import attrs
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from voicecalld.calls.hub import NoticeHub
from voicecalld.calls.policy import Decision, OutboundGuard, inbound_decision
from voicecalld.config.model import VoiceCallSettings
from voicecalld.config.schema import E164_PATTERN
from voicecalld.errors import InvalidArgument, NotAllowed
from voicecalld.values import notices
from voicecalld.values.record import CONVERSATION, INBOUND, MODES, NOTIFY, OUTBOUND, CallRecord

MAX_TEXT = 4000
DTMF_PATTERN = r"[0-9A-Da-d#*wW]{1,64}"


@attrs.frozen
class Outbound:
    """A checked request to place a call."""

    to: str
    mode: str
    message: str | None
    session_key: str | None
    dtmf_sequence: str | None


def clean(value: str | None) -> str | None:
    """Trim a client string; an empty one counts as missing (as upstream)."""
    if value is None:
        return None
    value = value.strip()
    return value or None


def text(value: str | None) -> str:
    """A required message for the caller."""
    value = clean(value)
    if value is None:
        raise InvalidArgument("message required")
    check_length(value)
    return value


def check_length(value: str | None) -> None:
    """Refuse a message longer than L{MAX_TEXT} characters."""
    if value is not None and len(value) > MAX_TEXT:
        raise InvalidArgument(f"message too long ({len(value)} characters; at most {MAX_TEXT})")


def digits(value: str | None) -> str:
    """Touch tones to send (C{w} is a half-second pause)."""
    value = clean(value)
    if value is None or re.fullmatch(DTMF_PATTERN, value) is None:
        raise InvalidArgument("digits must be 1-64 of 0-9, A-D, #, * and w (a pause)")
    return value


class Admission:
    """Decides whether calls may begin; see the module docstring."""

    log = Logger()

    def __init__(self, settings: VoiceCallSettings, hub: NoticeHub, clock: IReactorTime) -> None:
        self._settings = settings
        self._hub = hub
        self._clock = clock
        self.guard = OutboundGuard(settings)

    def seed(self, recent: list[CallRecord]) -> None:
        """Count the outbound calls of the last hour (found in the store) against the cap."""
        now = self._clock.seconds()
        self.guard.seed(
            [r.started_at for r in recent if r.direction == OUTBOUND and r.started_at > now - 3600]
        )

    def outbound(
        self,
        to: str | None,
        message: str | None,
        mode: str | None,
        session_key: str | None,
        dtmf_sequence: str | None,
        live_calls: int,
    ) -> Outbound:
        """Check a request to place a call; raises what the client should see."""
        settings = self._settings
        to = clean(to) or settings.to_number
        if to is None:
            raise InvalidArgument("to required (no --to given and no toNumber configured)")
        mode = clean(mode) or settings.outbound.default_mode
        if mode not in MODES:
            raise InvalidArgument(f"mode must be notify or conversation, got {mode!r}")
        message = clean(message)
        if message is None and mode == NOTIFY:
            raise InvalidArgument("message required")
        check_length(message)
        dtmf_sequence = clean(dtmf_sequence)
        if dtmf_sequence is not None:
            if mode != CONVERSATION:
                raise InvalidArgument('dtmfSequence is valid only with mode "conversation"')
            if re.fullmatch(DTMF_PATTERN, dtmf_sequence) is None or len(dtmf_sequence) > 32:
                raise InvalidArgument("dtmfSequence must be 1-32 of 0-9, A-D, #, * and w")
        now = self._clock.seconds()
        decision = self._budget(self.guard.check(to, now), live_calls)
        if not decision.allowed:
            self._refused(OUTBOUND, None, to, decision.reason)
            raise NotAllowed(decision.reason)
        self.guard.placed(now)
        return Outbound(to, mode, message, clean(session_key), dtmf_sequence)

    def transfer(self, call_id: str, to: str | None) -> str:
        """
        Check where a call may be handed: an E.164 number the toll-fraud guard
        allows, as for an outbound call (the carrier dials it on our account).
        """
        to = clean(to)
        if to is None:
            raise InvalidArgument("to required")
        if re.fullmatch(E164_PATTERN, to) is None:
            raise InvalidArgument(f"to must be an E.164 number such as +15550001234, got {to!r}")
        now = self._clock.seconds()
        decision = self.guard.check(to, now)
        if not decision.allowed:
            self._refused(OUTBOUND, None, to, decision.reason, what="transfer of " + call_id)
            raise NotAllowed(decision.reason)
        self.guard.placed(now)
        return to

    def inbound(
        self,
        from_number: str | None,
        to_number: str | None,
        live_calls: int,
        accepting: bool,
        stopping: str = "voicecalld is stopping",
    ) -> Decision:
        """Whether to answer a caller; a refusal is published and logged."""
        decision = inbound_decision(self._settings, from_number)
        if decision.allowed and not accepting:
            decision = Decision(False, stopping)
        decision = self._budget(decision, live_calls)
        if not decision.allowed:
            self._refused(INBOUND, from_number, to_number, decision.reason)
        return decision

    def _budget(self, decision: Decision, live_calls: int) -> Decision:
        limit = self._settings.max_concurrent_calls
        if decision.allowed and live_calls >= limit:
            return Decision(False, f"Maximum concurrent calls ({limit}) reached")
        return decision

    def _refused(
        self,
        direction: str,
        from_number: str | None,
        to_number: str | None,
        reason: str,
        what: str | None = None,
    ) -> None:
        self._hub.publish(
            notices.CallRefused(
                at=self._clock.seconds(),
                direction=direction,
                from_number=from_number,
                to_number=to_number,
                reason=reason,
            )
        )
        self.log.warn(
            "refused {what} {party}: {reason}",
            what=what or f"{direction} call",
            direction=direction,
            party=f"to {to_number}" if direction == OUTBOUND else f"from {from_number}",
            peer=to_number if direction == OUTBOUND else from_number,
            reason=reason,
            log_code=f"guard.{direction}_refused",
        )
