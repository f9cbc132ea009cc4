"""
A realtime speech-to-speech session: the caller's audio in, the model's audio out.

A call in realtime mode has no separate STT, reply and TTS: one vendor
session (OpenAI Realtime, Gemini Live) hears the caller, decides when a turn
ends, and answers in its own voice.  The media stream opens one
L{IRealtimeSession} per connected stream through L{IRealtimeVoice} and feeds it
the phone's 8 kHz mu-law audio; the session reports to its
L{IRealtimeListener}.  Audio crosses this interface as 8 kHz mu-law in both
directions, whatever the vendor speaks on its socket: converting (or choosing
the vendor's own G.711 format) is the vendor module's job.

This module is the interface only; the vendors live beside it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from attrs import field, frozen
from zope.interface import Attribute, Interface

# The two tools every realtime call has; C{realtime.tools} cannot override them.
from voicecalld.values.tools import CONSULT_TOOL, END_CALL_TOOL, HOST_CONSULT_PREFIX

__all__ = [
    "CONSULT_TOOL",
    "END_CALL_TOOL",
    "HOST_CONSULT_PREFIX",
    "IRealtimeListener",
    "IRealtimeSession",
    "IRealtimeVoice",
    "RealtimeSetup",
    "RealtimeTool",
]


@frozen
class RealtimeTool:
    """One function the model may call (a JSON-schema object of parameters)."""

    name: str
    description: str
    parameters: Mapping[str, Any] = field(factory=lambda: {"type": "object", "properties": {}})


@frozen
class RealtimeSetup:
    """What one session is opened with."""

    instructions: str
    tools: tuple[RealtimeTool, ...] = ()
    # The call's id, for the vendor module's log lines only.
    call_id: str = ""
    # C{realtime.consultPolicy: always}: when the model answers a caller's turn
    # without consulting the agent, the host consults it on the caller's words.
    host_consult: bool = False


class IRealtimeListener(Interface):
    """
    Hears one realtime session.  Called in the reactor thread; must not block.
    After C{closed} nothing else is called.
    """

    def ready():
        """The session is configured; the model can be asked to speak."""

    def audio(ulaw):
        """Model audio: C{ulaw} is 8 kHz mu-law bytes, any length (play in order)."""

    def speech_started():
        """The model's turn detection heard the caller start: the barge-in signal."""

    def speech_stopped():
        """The model's turn detection heard the caller stop (a turn's end)."""

    def user_transcript(text):
        """What the caller said in one finished turn (never empty)."""

    def response_started(token=None):
        """
        The model began a response (its audio follows).  C{token} is what
        L{IRealtimeSession.speak} or L{IRealtimeSession.relay} returned when the
        response is the one they asked for; C{None} for the model's own.
        """

    def assistant_transcript(text):
        """
        The text of the model's response just finished (never empty), as
        generated: the listener knows how much of it was heard.
        """

    def response_done():
        """The model's response is complete: no more audio for it."""

    def tool_call(call_id, name, arguments):
        """
        The model called function C{name} with C{arguments} (a dict, already
        decoded; C{{}} if the model sent none or bad JSON).  Answer with
        L{IRealtimeSession.tool_result} and the same C{call_id}.
        """

    def problem(message):
        """Vendor trouble worth an event (a rejected request, a bad message); the call goes on."""

    def closed(reason):
        """The session is over (the vendor closed it, it failed, or C{close} was called)."""


class IRealtimeSession(Interface):
    """One call's session with a realtime model."""

    def feed(ulaw):
        """
        Add C{ulaw} (8 kHz mu-law, typically a 20 ms frame) to what the model
        hears.  Cheap; never blocks or raises; audio before C{ready} is kept
        and sent once the session is configured.
        """

    def speak(text):
        """
        Have the model say C{text} now, as its own turn (greeting, C{voicecall
        speak}).  Returns a token (a str, unique in the session) that the
        listener's C{response_started} carries for the response saying it.
        """

    def relay(text):
        """
        Give the model C{text}, the agent's answer to the caller's last turn,
        to tell the caller now in its own voice, as its own turn.  Returns a
        token as L{speak} does.
        """

    def truncate(heard_ms):
        """
        The caller cut the model off: cancel the response in progress and
        tell the model only the first C{heard_ms} milliseconds of its current
        audio were heard.
        """

    def tool_result(call_id, output):
        """
        Answer the function call C{call_id} with C{output} (a JSON-able dict)
        and let the model go on.
        """

    def close():
        """
        Stop for good; C{closed} follows once.  Returns a L{Deferred} that
        fires when the socket is gone (callers need not wait for it).
        """


class IRealtimeVoice(Interface):
    """A realtime speech-to-speech vendor (one per daemon)."""

    name = Attribute("The C{realtime.provider} id, e.g. C{'openai'} or C{'google'}.")

    def open_session(listener, setup):
        """Open a session for C{listener} (an L{IRealtimeListener}); an L{IRealtimeSession}."""
