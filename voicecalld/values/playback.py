"""What a provider reports of an utterance it played, and of a call after a restart."""

from __future__ import annotations

import enum

from attrs import frozen

from voicecalld.values.states import CallState


@frozen
class Playback:
    """
    How a spoken utterance went: what the caller heard of it, and (for
    streamed speech) when its first audio arrived from the TTS vendor and
    when its first frame went to the caller.
    """

    text: str
    played: str
    complete: bool = True
    requested_at: float | None = None
    first_audio_at: float | None = None
    first_frame_at: float | None = None


class Liveness(enum.Enum):
    """What the provider says about a call voicecalld restored after a restart."""

    ALIVE = "alive"
    ENDED = "ended"
    UNKNOWN_CALL = "unknown-call"
    UNREACHABLE = "unreachable"


@frozen
class CallStatus:
    """The provider's view of one call."""

    liveness: Liveness
    end_reason: CallState | None = None
    answered: bool | None = None
    detail: str | None = None
