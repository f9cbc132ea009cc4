"""
OpenAI speech (C{POST /audio/speech}) for calls, or any OpenAI-compatible server.

The answer is asked for as raw 24 kHz PCM, so it streams with no container;
each chunk is resampled to 8 kHz and mu-law encoded as it arrives.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import treq
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from voicecalld.config.model import OpenAITtsSettings
from voicecalld.media.codec import Resampler, ulaw_encode_samples
from voicecalld.voice.tts import DEFAULT_TIMEOUT_MS, ITTS, Synthesis
from voicecalld.voice.tts_http import stream_speech

DEFAULT_BASE_URL = "https://api.openai.com/v1"
PCM_RATE = 24000
TELEPHONY_RATE = 8000


class PcmToUlaw:
    """24 kHz s16le PCM in, 8 kHz mu-law out, chunk by chunk."""

    def __init__(self, rate: int = PCM_RATE) -> None:
        self._resampler = Resampler(rate, TELEPHONY_RATE)

    def feed(self, data: bytes) -> bytes:
        """Encode what the resampler can give for C{data} so far (one copy: the mu-law)."""
        return ulaw_encode_samples(self._resampler.feed_samples(data))

    def flush(self) -> bytes:
        """Encode the resampler's tail."""
        return ulaw_encode_samples(self._resampler.flush_samples())


def _takes_instructions(model: str) -> bool:
    """C{tts-1} and C{tts-1-hd} (and their dated versions) refuse C{instructions}."""
    return not (model == "tts-1" or model.startswith("tts-1-"))


@implementer(ITTS)
class OpenAITTS:
    """Streamed OpenAI speech as 8 kHz mu-law."""

    name = "openai"

    def __init__(
        self,
        settings: OpenAITtsSettings,
        clock: IReactorTime,
        http: Any = treq,
        timeout: float = DEFAULT_TIMEOUT_MS / 1000,
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._http = http
        self._timeout = timeout
        self.url = (settings.base_url or DEFAULT_BASE_URL).rstrip("/") + "/audio/speech"

    def synthesize(self, text: str, on_audio: Callable[[bytes], object]) -> Deferred[Synthesis]:
        """See L{ITTS.synthesize}.  Blank text fires at once with no audio."""
        if not text.strip():
            now = self._clock.seconds()
            return succeed(Synthesis(self.name, text, now, None, now, 0))
        s = self._settings
        body: dict[str, Any] = {
            "model": s.model,
            "input": text,
            "voice": s.speaker_voice,
            "response_format": "pcm",
        }
        if s.speed is not None:
            body["speed"] = s.speed
        if s.instructions and _takes_instructions(s.model):
            body["instructions"] = s.instructions
        key = s.api_key.reveal() if s.api_key is not None else None
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return stream_speech(
            provider=self.name,
            http=self._http,
            clock=self._clock,
            timeout=self._timeout,
            url=self.url,
            headers=headers,
            body=body,
            text=text,
            transcoder=PcmToUlaw(),
            on_audio=on_audio,
            secret=key,
        )
