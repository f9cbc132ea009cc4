"""
Speaking into a media stream: TTS audio through the pacer, marks to learn
what the caller actually heard, and barge-in.

One L{SpeechPlayer} per stream plays one utterance at a time (the call
manager queues them).  An utterance has played when the provider echoes its
end mark; after a barge-in only the audio whose marks came back counts as
heard, so the transcript keeps what the caller heard, not what was sent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from voicecalld.errors import ProviderError
from voicecalld.media.codec import FRAME_BYTES
from voicecalld.media.pacing import FramePacer
from voicecalld.values.playback import Playback

BYTES_PER_SECOND = 8000
MARK_EVERY_BYTES = BYTES_PER_SECOND // 2
# A mark that never comes back must not hang the call: give up this long
# after the audio before it should have played.
MARK_GRACE = 3.0
CHARS_PER_SECOND = 15.0
# Synthesized audio held ahead of playback: past the high mark the TTS stream
# is paused (the rest waits at the vendor and in the socket), and resumed at
# the low mark, so a long reply does not sit whole in memory.
LOOKAHEAD_HIGH = 2.0
LOOKAHEAD_LOW = 1.0


class _Utterance:
    def __init__(self, name: str, text: str, started: float) -> None:
        self.name = name
        self.text = text
        self.started = started
        self.sent_bytes = 0
        self.heard_bytes = 0
        self.synthesized = False
        self.failed = False
        self.first_audio_at: float | None = None
        self.first_frame_at: float | None = None
        self.synthesis: Any = None
        self.request: Deferred | None = None
        # Fires when the TTS may send more (while its stream is paused).
        self.hold: Deferred | None = None
        self.done: Deferred[Playback] = Deferred()
        self.fallback: IDelayedCall | None = None


class SpeechPlayer:
    """Plays utterances into one stream through its L{FramePacer}."""

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        pacer: FramePacer,
        send_clear: Callable[[], object],
        tts: Any,
        on_problem: Callable[[str], object],
    ) -> None:
        self._clock = clock
        self._pacer = pacer
        self._send_clear = send_clear
        self._tts = tts
        self._on_problem = on_problem
        self._current: _Utterance | None = None
        self._count = 0

    @property
    def speaking(self) -> bool:
        """Whether an utterance is playing (or being synthesized)."""
        return self._current is not None

    @property
    def current(self) -> _Utterance | None:
        """The utterance playing now, for latency measurements."""
        return self._current

    def say(self, text: str) -> Deferred[Playback]:
        """Synthesize C{text} and play it; fires with what was heard."""
        if self._tts is None:
            raise ProviderError(
                "no telephony TTS is configured (tts.providers.openai or"
                " elevenlabs with an API key)"
            )
        utterance = self._begin(text)
        self._pacer.keepalive = True
        request = self._tts.synthesize(text, lambda ulaw: self._audio(utterance, ulaw))
        utterance.request = request
        request.addCallbacks(
            self._synthesized,
            self._synthesis_failed,
            callbackArgs=(utterance,),
            errbackArgs=(utterance,),
        )
        return utterance.done

    def play(self, label: str, ulaw: bytes) -> Deferred[Playback]:
        """Play ready-made audio (touch tones) as an utterance."""
        utterance = self._begin(label)
        self._audio(utterance, ulaw)
        self._synthesized(None, utterance)
        return utterance.done

    def _begin(self, text: str) -> _Utterance:
        if self._current is not None:
            raise ProviderError("already speaking on this stream")
        self._count += 1
        utterance = _Utterance(f"u{self._count}", text, self._clock.seconds())
        self._current = utterance
        return utterance

    def _audio(self, utterance: _Utterance, ulaw: bytes) -> Deferred | None:
        """Queue TTS audio; a Deferred asks the TTS to hold the rest until it fires."""
        if utterance is not self._current or not ulaw:
            return None
        if utterance.first_audio_at is None:
            utterance.first_audio_at = self._clock.seconds()
            self._pacer.notify(lambda now: setattr(utterance, "first_frame_at", now))
        before = utterance.sent_bytes
        utterance.sent_bytes += len(ulaw)
        self._pacer.audio(ulaw)
        if utterance.sent_bytes // MARK_EVERY_BYTES > before // MARK_EVERY_BYTES:
            whole = utterance.sent_bytes - utterance.sent_bytes % FRAME_BYTES
            self._pacer.mark(f"{utterance.name}:{whole}")
        if utterance.hold is None and self._pacer.backlog() > LOOKAHEAD_HIGH:
            hold = utterance.hold = Deferred()
            self._pacer.when_below(LOOKAHEAD_LOW, lambda: self._go_on(utterance, hold))
            return hold
        return None

    def _go_on(self, utterance: _Utterance, hold: Deferred) -> None:
        if utterance.hold is hold:
            utterance.hold = None
            hold.callback(None)

    def _synthesized(self, synthesis: Any, utterance: _Utterance) -> None:
        if utterance is not self._current:
            return
        utterance.synthesis = synthesis
        utterance.synthesized = True
        self._pacer.keepalive = False
        if utterance.sent_bytes == 0:
            self._finish(utterance, complete=True)
            return
        self._end_mark(utterance)

    def _synthesis_failed(self, failure: Failure, utterance: _Utterance) -> None:
        if utterance is not self._current or failure.check(CancelledError):
            return
        self._pacer.keepalive = False
        message = f"speech synthesis failed: {failure.getErrorMessage()}"
        self._on_problem(message)
        if utterance.sent_bytes == 0:
            self._current = None
            utterance.done.errback(ProviderError(message))
            return
        utterance.failed = True
        utterance.synthesized = True
        self._end_mark(utterance)

    def _end_mark(self, utterance: _Utterance) -> None:
        """Mark the utterance's end, and give up on that mark if it never comes back."""
        self._pacer.end(f"{utterance.name}:end")
        wait = self._pacer.backlog() + self._pacer.lead + MARK_GRACE
        utterance.fallback = self._clock.callLater(wait, self._mark_lost, utterance)

    def mark_echoed(self, name: str) -> None:
        """The provider played the audio up to mark C{name}."""
        utterance = self._current
        if utterance is None:
            return
        prefix, _, point = name.partition(":")
        if prefix != utterance.name:
            return
        if point == "end":
            utterance.heard_bytes = utterance.sent_bytes
            self._finish(utterance, complete=not utterance.failed)
        elif point.isdigit():
            utterance.heard_bytes = max(utterance.heard_bytes, int(point))

    def _mark_lost(self, utterance: _Utterance) -> None:
        utterance.fallback = None
        if utterance is self._current:
            self.log.warn(
                "end mark of {name} never came back; counting it as played",
                name=utterance.name,
                log_code="media.mark_lost",
            )
            utterance.heard_bytes = utterance.sent_bytes
            self._finish(utterance, complete=not utterance.failed)

    def interrupt(self) -> bool:
        """Barge-in: stop synthesis, drop queued audio and flush the provider, now."""
        utterance = self._current
        if utterance is None:
            return False
        self._pacer.clear()
        self._send_clear()
        self._cancel_request(utterance)
        self._finish(utterance, complete=False)
        return True

    def stop(self) -> None:
        """The stream is gone: end the utterance with what was heard so far."""
        utterance = self._current
        if utterance is not None:
            self._cancel_request(utterance)
            self._finish(utterance, complete=False)
        self._pacer.stop()

    def _cancel_request(self, utterance: _Utterance) -> None:
        request, utterance.request = utterance.request, None
        if request is not None and not request.called:
            request.addErrback(lambda f: f.trap(CancelledError))
            request.cancel()

    def _finish(self, utterance: _Utterance, complete: bool) -> None:
        if utterance is not self._current:
            return
        self._current = None
        if utterance.fallback is not None and utterance.fallback.active():
            utterance.fallback.cancel()
        utterance.fallback = None
        heard = utterance.text if complete else self._heard_words(utterance)
        utterance.done.callback(
            Playback(
                utterance.text,
                heard,
                complete=complete,
                requested_at=utterance.started,
                first_audio_at=utterance.first_audio_at,
                first_frame_at=utterance.first_frame_at,
            )
        )

    def _heard_words(self, utterance: _Utterance) -> str:
        if utterance.heard_bytes <= 0:
            return ""
        estimate = len(utterance.text) / CHARS_PER_SECOND * BYTES_PER_SECOND
        total = (
            utterance.sent_bytes if utterance.synthesized else max(utterance.sent_bytes, estimate)
        )
        share = min(1.0, utterance.heard_bytes / total) if total else 0.0
        words = utterance.text.split()
        return " ".join(words[: int(len(words) * share)])
