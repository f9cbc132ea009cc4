"""
Text to speech for calls: the L{ITTS} interface and what it produces.

L{voicecalld.voice.tts_factory} chooses and builds the providers.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
from twisted.internet.defer import Deferred
from zope.interface import Attribute, Interface

DEFAULT_TIMEOUT_MS = 30000


class TtsError(Exception):
    """Speech synthesis failed.  The message is safe to show users: it never holds a key."""

    def __init__(self, message: str, *, provider: str | None = None, status: int | None = None):
        super().__init__(message)
        self.message = message
        self.provider = provider
        self.status = status

    def __str__(self) -> str:
        return self.message


@attrs.frozen
class Synthesis:
    """
    How one utterance was synthesized.

    Times are the clock's seconds; C{first_byte_at} is when the vendor's first audio
    byte arrived (None when none did); C{audio_bytes} counts the mu-law bytes given
    to C{on_audio} (8000 a second).
    """

    provider: str
    text: str
    requested_at: float
    first_byte_at: float | None
    finished_at: float
    audio_bytes: int


class ITTS(Interface):
    """
    A streaming text-to-speech provider.  It must never block the reactor.
    """

    name = Attribute("The provider id: 'openai' or 'elevenlabs'.")

    def synthesize(text: str, on_audio: Callable[[bytes], object]) -> Deferred[Synthesis]:
        """
        Say C{text}: start the request at once, call C{on_audio(ulaw)} with 8 kHz
        mu-law chunks (any length) as soon as each arrives, and fire with a
        L{Synthesis} once all audio was delivered.

        Fails with L{TtsError} (HTTP error with the vendor's message, no
        connection, timeout, malformed stream); a failure after some audio ends
        the utterance there, with no more calls to C{on_audio}.  Cancelling the
        Deferred aborts the request and guarantees no more calls to C{on_audio}.

        C{on_audio} may return a Deferred: the listener holds enough audio, and the
        provider should stop reading the vendor's stream (and its timeout) until it
        fires.  A provider may ignore this; audio already read is still delivered.
        """
