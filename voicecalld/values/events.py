"""
Normalized call events: what a provider tells the call manager.

Each provider turns its webhooks, media-stream messages or simulated actions
into these small values; the manager alone decides what they do to a call.
Every event names the call by our id, the provider's id, or both, and may
carry a C{dedupe_key} (a webhook's replay key) so it is applied once, even
across restarts.
"""

from __future__ import annotations

import enum
from typing import Any

from attrs import field, frozen

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


# Who answered an outbound call, as answering-machine detection tells it.
HUMAN = "human"
MACHINE = "machine"
FAX = "fax"
UNKNOWN = "unknown"
ANSWERED_BY = (HUMAN, MACHINE, FAX, UNKNOWN)


@frozen(kw_only=True)
class MachineDetected(CallEvent):
    """
    Answering-machine detection has a result: C{answered_by} is one of
    L{ANSWERED_BY}; C{message_end} says a machine's greeting is over (the
    beep), so a message left now is recorded whole; C{raw} is the carrier's
    own value.
    """

    answered_by: str
    message_end: bool = False
    raw: str = ""


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


@frozen(kw_only=True)
class ModelSpeaking(CallEvent):
    """A realtime model's own response began playing to the caller (a L{ModelSpeech} follows)."""


@frozen(kw_only=True)
class ModelSpeech(CallEvent):
    """
    A realtime model said something of its own accord (not asked by a
    client): C{text} is what the caller heard of it, C{at} when its audio
    started; C{stages} are the turn's latency stages (ms) when it answered
    the caller.
    """

    text: str
    at: float
    interrupted: bool = False
    stages: dict[str, float] | None = None


@frozen(kw_only=True)
class ToolCall(CallEvent):
    """A realtime model called function C{name}; answer with C{IProvider.tool_result}."""

    tool_call_id: str
    name: str
    arguments: dict[str, Any] = field(factory=dict)


@frozen
class Accepted:
    """Outcome: an inbound call was accepted as C{call_id}."""

    call_id: str


class Refusal(enum.Enum):
    """
    What a caller we do not take hears, whatever the carrier: each carrier
    maps it to its own wire form (a TwiML reason, a Telnyx cause, ...).
    """

    REJECTED = "rejected"
    BUSY = "busy"  # a draining daemon: try again later


@frozen
class Refused:
    """Outcome: an inbound call was refused, for C{reason}; the caller hears C{refusal}."""

    reason: str
    refusal: Refusal = Refusal.REJECTED


class Outcome:
    """Outcome of any other event."""

    APPLIED = "applied"
    DUPLICATE = "duplicate"
    IGNORED = "ignored"
