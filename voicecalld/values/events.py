"""
Normalized call events: what a provider tells the call manager.

Each provider turns its webhooks, media-stream messages or simulated actions
into these small values; the manager alone decides what they do to a call.
Every event names the call by our id, the provider's id, or both, and may
carry a C{dedupe_key} (a webhook's replay key) so it is applied once, even
across restarts.
"""

from __future__ import annotations

from attrs import frozen

from voicecalld.values.states import CallState


@frozen(kw_only=True)
class CallEvent:
    """Fields every event carries."""

    call_id: str | None = None
    provider_call_id: str | None = None
    dedupe_key: str | None = None


@frozen(kw_only=True)
class InboundCall(CallEvent):
    """Someone is calling one of our numbers (not yet answered)."""

    from_number: str
    to_number: str


@frozen(kw_only=True)
class Ringing(CallEvent):
    """The far end is ringing."""


@frozen(kw_only=True)
class Answered(CallEvent):
    """The call was answered."""


@frozen(kw_only=True)
class MediaConnected(CallEvent):
    """A media stream for the call is up: audio can flow both ways."""

    stream_id: str


@frozen(kw_only=True)
class MediaDisconnected(CallEvent):
    """The call's media stream went away (the call itself may live on)."""

    stream_id: str
    reason: str


@frozen(kw_only=True)
class SpeechStarted(CallEvent):
    """The caller started speaking (the barge-in signal)."""


@frozen(kw_only=True)
class SpeechStopped(CallEvent):
    """The caller stopped speaking (a transcript may follow)."""


@frozen(kw_only=True)
class Speech(CallEvent):
    """The caller said something; C{final} transcripts complete a turn."""

    text: str
    final: bool = True
    confidence: float | None = None
    turn_token: str | None = None


@frozen(kw_only=True)
class Dtmf(CallEvent):
    """The caller pressed keys."""

    digits: str


@frozen(kw_only=True)
class Ended(CallEvent):
    """The call is over at the provider, for C{reason}."""

    reason: CallState
    detail: str | None = None


@frozen(kw_only=True)
class Transferred(CallEvent):
    """The carrier has taken the transfer we asked for: the call is no longer ours."""

    detail: str | None = None


@frozen(kw_only=True)
class Failed(CallEvent):
    """The provider reported an error on the call; fatal unless C{retryable}."""

    message: str
    retryable: bool = False


@frozen
class Accepted:
    """Outcome: an inbound call was accepted as C{call_id}."""

    call_id: str


@frozen
class Refused:
    """Outcome: an inbound call was refused, for C{reason}."""

    reason: str


class Outcome:
    """Outcome of any other event."""

    APPLIED = "applied"
    DUPLICATE = "duplicate"
    IGNORED = "ignored"
