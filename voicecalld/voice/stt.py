"""
Streaming speech-to-text: the caller's audio in, what the caller said out.

A media stream opens one L{ISTTSession} per call and feeds it the phone's
8 kHz mu-law audio as it arrives; the session tells its
L{ITranscriptListener} when the caller starts speaking, what they have said
so far, and each finished turn.  This module is the interface only;
L{voicecalld.voice.stt_factory} picks the configured provider.
"""

from __future__ import annotations

from zope.interface import Interface

# G.711 mu-law from the phone: 8000 samples a second, one byte each.
ULAW_BYTES_PER_SECOND = 8000


class ITranscriptListener(Interface):
    """
    Hears what the caller says on one call.  Called in the reactor thread;
    must not block.
    """

    def speech_started():
        """The caller started speaking (the barge-in signal)."""

    def speech_stopped():
        """The caller stopped speaking (the end of a turn, before its transcript)."""

    def partial(text):
        """The current turn's words so far (C{text} replaces any earlier partial)."""

    def final(text):
        """One completed caller turn (never empty)."""

    def problem(message):
        """Speech-to-text trouble worth an event; the call goes on."""


class ISTTSession(Interface):
    """One call's transcription: audio in, listener calls out."""

    def feed(ulaw):
        """
        Add C{ulaw} (bytes of 8 kHz mu-law, typically a 20 ms frame) to the
        stream.  Cheap and never blocks or raises: it runs once per frame.
        """

    def close():
        """
        Stop for good: no more listener calls, no reconnects, no timers.
        Returns a L{Deferred} that fires once the socket is gone (callers need
        not wait for it).
        """


class ISTT(Interface):
    """A streaming speech-to-text provider."""

    def open_session(listener):
        """Start transcribing for C{listener} (an L{ITranscriptListener}); an L{ISTTSession}."""
