"""
The call lifecycle: its states and the one table of moves between them.

Upstream's rule, kept: a call only moves forward through
initiated → ringing → answered → active, then between active, speaking and
listening as it talks, and may end from anywhere; an ended call never moves
again.  Unlike upstream, an idle call returns to C{active} after speaking or
listening, so C{status} says what the call is doing now.
The diagram is C{docs/state-machines/call.dot}.
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
    }
)

LIVE = frozenset(CallState) - TERMINAL

# Answered states: the call is connected and can be spoken to.
CONNECTED = frozenset(
    {CallState.ANSWERED, CallState.ACTIVE, CallState.SPEAKING, CallState.LISTENING}
)

S = CallState

# The whole lifecycle.  Every live state may also move to any terminal state.
TRANSITIONS: dict[CallState, frozenset[CallState]] = {
    S.INITIATED: frozenset({S.RINGING, S.ANSWERED, S.ACTIVE, S.SPEAKING, S.LISTENING}),
    S.RINGING: frozenset({S.ANSWERED, S.ACTIVE, S.SPEAKING, S.LISTENING}),
    S.ANSWERED: frozenset({S.ACTIVE, S.SPEAKING, S.LISTENING}),
    S.ACTIVE: frozenset({S.SPEAKING, S.LISTENING}),
    S.SPEAKING: frozenset({S.ACTIVE, S.LISTENING}),
    S.LISTENING: frozenset({S.ACTIVE, S.SPEAKING}),
    **{end: frozenset() for end in TERMINAL},
}


class Move(enum.Enum):
    """What asking for a state change does."""

    APPLY = "apply"
    STAY = "stay"  # already there: nothing to do
    ILLEGAL = "illegal"  # backwards, or out of an ended call


def judge(current: CallState, target: CallState) -> Move:
    """Decide whether a call in C{current} may move to C{target}."""
    if current == target:
        return Move.STAY
    if current.terminal:
        return Move.ILLEGAL
    if target.terminal or target in TRANSITIONS[current]:
        return Move.APPLY
    return Move.ILLEGAL
