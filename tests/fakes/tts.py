"""TTS doubles: one the test drives by hand, one that speaks tones at a steady rate."""

from __future__ import annotations

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from voicecalld.voice.tts import ITTS, Synthesis, TtsError


class _Request:
    def __init__(self, text: str, on_audio, done: Deferred) -> None:
        self.text = text
        self.on_audio = on_audio
        self.done = done
        self.cancelled = False


@implementer(ITTS)
class ScriptedTTS:
    """Each C{synthesize} waits for the test: L{deliver}, L{finish}, L{fail}."""

    name = "scripted"

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self.requests: list[_Request] = []

    def synthesize(self, text, on_audio):
        def cancel(d: Deferred) -> None:
            request.cancelled = True

        done = Deferred(cancel)
        request = _Request(text, on_audio, done)
        self.requests.append(request)
        return done

    @property
    def last(self) -> _Request:
        return self.requests[-1]

    def deliver(self, audio: bytes) -> None:
        """The vendor sent some audio."""
        if not self.last.cancelled:
            self.last.on_audio(audio)

    def finish(self) -> None:
        """The vendor finished."""
        now = self.clock.seconds()
        self.last.done.callback(Synthesis("scripted", self.last.text, now, now, now, 0))

    def fail(self, message: str = "vendor down") -> None:
        """The vendor failed."""
        self.last.done.errback(TtsError(message, provider="scripted"))


@implementer(ITTS)
class ToneTTS:
    """Speaks C{bytes_per_char} of mu-law per character, in 100 ms chunks, at 4x real time."""

    name = "tone"

    def __init__(self, clock: IReactorTime, bytes_per_char: int = 400) -> None:
        self.clock = clock
        self.bytes_per_char = bytes_per_char
        self.texts: list[str] = []

    def synthesize(self, text, on_audio):
        self.texts.append(text)
        total = len(text) * self.bytes_per_char
        requested = self.clock.seconds()
        state = {"sent": 0, "first": None, "timer": None}

        def chunk() -> None:
            size = min(800, total - state["sent"])
            if state["first"] is None:
                state["first"] = self.clock.seconds()
            on_audio(b"\x7e" * size)
            state["sent"] += size
            if state["sent"] >= total:
                now = self.clock.seconds()
                done.callback(Synthesis("tone", text, requested, state["first"], now, total))
            else:
                state["timer"] = self.clock.callLater(0.025, chunk)

        def cancel(d: Deferred) -> None:
            if state["timer"] is not None and state["timer"].active():
                state["timer"].cancel()

        done: Deferred = Deferred(cancel)
        state["timer"] = self.clock.callLater(0.05, chunk)
        return done


__all__ = ["CancelledError", "ScriptedTTS", "ToneTTS"]
