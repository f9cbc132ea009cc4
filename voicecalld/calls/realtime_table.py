"""
The realtime session's machine: one call's session with a speech-to-speech
model, as L{voicecalld.realtime.bridge.RealtimeBridge} runs it.

It lives here, beside the lifecycle and turn tables, so that the diagrams
(L{voicecalld.calls.diagrams}) are drawn from it without the call core
importing the media layer; it imports nothing but the table primitives.
Drawn in C{docs/state-machines/realtime.dot}.
"""

from __future__ import annotations

import enum

from voicecalld.calls.machine import Transition, table


class SessionState(enum.Enum):
    """Where one realtime session is."""

    CONNECTING = enum.auto()  # opened; the vendor is not configured yet
    LISTENING = enum.auto()  # ready; no response of the model in progress
    RESPONDING = enum.auto()  # the model is answering (its audio streams to the caller)
    CLOSED = enum.auto()  # over, for good


class SessionInput(enum.Enum):
    """What the session reacts to, grouped by who sends it."""

    # the vendor (through IRealtimeListener)
    READY = enum.auto()
    RESPONSE_STARTED = enum.auto()
    RESPONSE_DONE = enum.auto()
    CALLER_STARTED = enum.auto()  # the model heard the caller start: barge-in
    VENDOR_CLOSED = enum.auto()
    # the call (speech asked for by the core, through the media session)
    SPEAK = enum.auto()
    # our side
    NO_MEDIA = enum.auto()  # no caller audio for the backstop's time, and its grace
    NOT_READY = enum.auto()  # the vendor did not get ready in time
    CLOSE = enum.auto()  # the stream or the call is over


class SessionOutput(enum.Enum):
    """What the session does."""

    SEND_SPEECH = enum.auto()  # ask the model to say the oldest queued text
    BEGIN_RESPONSE = enum.auto()
    END_RESPONSE = enum.auto()  # no more audio: mark its end in the outbound audio
    BARGE_IN = enum.auto()  # stop playing, clear the carrier, truncate the model's item
    HANG_UP = enum.auto()  # the call cannot go on without its session
    CLOSE_SESSION = enum.auto()
    DROP_SPEECH = enum.auto()  # what was still to be said fails


S = SessionState
I = SessionInput  # noqa: E741
O = SessionOutput  # noqa: E741
T = Transition
STAY = None
OPEN = (S.CONNECTING, S.LISTENING, S.RESPONDING)

SESSION_TABLE = table(
    [
        ((S.CONNECTING,), I.READY, T(S.LISTENING, (O.SEND_SPEECH,))),
        ((S.LISTENING, S.RESPONDING), I.READY, None),
        # the client's words wait until the model is free
        ((S.CONNECTING, S.RESPONDING), I.SPEAK, None),
        ((S.LISTENING,), I.SPEAK, T(STAY, (O.SEND_SPEECH,))),
        # the model's responses
        ((S.LISTENING, S.CONNECTING), I.RESPONSE_STARTED, T(S.RESPONDING, (O.BEGIN_RESPONSE,))),
        ((S.RESPONDING,), I.RESPONSE_STARTED, T(STAY, (O.END_RESPONSE, O.BEGIN_RESPONSE))),
        ((S.RESPONDING,), I.RESPONSE_DONE, T(S.LISTENING, (O.END_RESPONSE, O.SEND_SPEECH))),
        ((S.LISTENING,), I.RESPONSE_DONE, T(STAY, (O.END_RESPONSE, O.SEND_SPEECH))),
        ((S.CONNECTING,), I.RESPONSE_DONE, None),
        # barge-in: cut what is playing (also audio still playing out after its response)
        ((S.RESPONDING,), I.CALLER_STARTED, T(S.LISTENING, (O.BARGE_IN,))),
        ((S.LISTENING,), I.CALLER_STARTED, T(STAY, (O.BARGE_IN,))),
        ((S.CONNECTING,), I.CALLER_STARTED, None),
        # the end: the vendor's close hangs the call up; ours does not
        (OPEN, I.VENDOR_CLOSED, T(S.CLOSED, (O.DROP_SPEECH, O.HANG_UP))),
        (OPEN, I.NO_MEDIA, T(S.CLOSED, (O.DROP_SPEECH, O.CLOSE_SESSION, O.HANG_UP))),
        ((S.CONNECTING,), I.NOT_READY, T(S.CLOSED, (O.DROP_SPEECH, O.CLOSE_SESSION, O.HANG_UP))),
        ((S.LISTENING, S.RESPONDING), I.NOT_READY, None),
        (OPEN, I.CLOSE, T(S.CLOSED, (O.DROP_SPEECH, O.CLOSE_SESSION))),
        # a closed session never moves again
        *(((S.CLOSED,), symbol, None) for symbol in SessionInput),
    ]
)
