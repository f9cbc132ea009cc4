"""
A call's states, as records, clients and the store name them.

Upstream's rule, kept: a call only moves forward through
initiated → ringing → answered → active, then between active, speaking and
listening as it talks, and may end from anywhere; an ended call never moves
again.  Ours, beyond upstream: C{transferred}, a call handed to a person, and
C{shutdown}, a call still live when a draining daemon's time ran out.
Unlike upstream, an idle call returns to C{active} after speaking or
listening, so C{status} says what the call is doing now.  The moves are
decided by the lifecycle and turn tables (L{voicecalld.calls.lifecycle},
L{voicecalld.calls.turns}), drawn in C{docs/state-machines/}.
"""

from __future__ import annotations

import enum


class CallState(enum.StrEnum):
    """Where a call is.  The terminal states double as end reasons."""

    INITIATED = "initiated"
    RINGING = "ringing"
    ANSWERED = "answered"
    ACTIVE = "active"
    SPEAKING = "speaking"
    LISTENING = "listening"
    COMPLETED = "completed"
    HANGUP_USER = "hangup-user"
    HANGUP_BOT = "hangup-bot"
    TIMEOUT = "timeout"
    ERROR = "error"
    FAILED = "failed"
    NO_ANSWER = "no-answer"
    BUSY = "busy"
    VOICEMAIL = "voicemail"
    TRANSFERRED = "transferred"
    SHUTDOWN = "shutdown"

    @property
    def terminal(self) -> bool:
        """Whether the call has ended in this state."""
        return self in TERMINAL


TERMINAL = frozenset(
    {
        CallState.COMPLETED,
        CallState.HANGUP_USER,
        CallState.HANGUP_BOT,
        CallState.TIMEOUT,
        CallState.ERROR,
        CallState.FAILED,
        CallState.NO_ANSWER,
        CallState.BUSY,
        CallState.VOICEMAIL,
        CallState.TRANSFERRED,
        CallState.SHUTDOWN,
    }
)

LIVE = frozenset(CallState) - TERMINAL

# Answered states: the call is connected and can be spoken to.
CONNECTED = frozenset(
    {CallState.ANSWERED, CallState.ACTIVE, CallState.SPEAKING, CallState.LISTENING}
)
