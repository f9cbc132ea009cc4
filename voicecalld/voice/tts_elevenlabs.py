"""
ElevenLabs streaming speech (C{/v1/text-to-speech/{voice}/stream}) for calls.

The vendor sends mu-law 8 kHz (C{output_format=ulaw_8000}), handed on as it
arrives.  This speaks HTTP through treq directly: the C{elevenlabs} SDK is
httpx/asyncio-based and would block the reactor or need asyncio.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import attrs
import treq
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from voicecalld.config.model import ElevenLabsTtsSettings
from voicecalld.voice.tts import DEFAULT_TIMEOUT_MS, ITTS, Synthesis
from voicecalld.voice.tts_http import Passthrough, stream_speech

DEFAULT_BASE_URL = "https://api.elevenlabs.io"
OUTPUT_FORMAT = "ulaw_8000"


@implementer(ITTS)
class ElevenLabsTTS:
    """Streamed ElevenLabs speech, already 8 kHz mu-law."""

    name = "elevenlabs"

    def __init__(
        self,
        settings: ElevenLabsTtsSettings,
        clock: IReactorTime,
        http: Any = treq,
        timeout: float = DEFAULT_TIMEOUT_MS / 1000,
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._http = http
        self._timeout = timeout
        base = (settings.base_url or DEFAULT_BASE_URL).rstrip("/")
        voice = quote(settings.speaker_voice_id, safe="")
        self.url = f"{base}/v1/text-to-speech/{voice}/stream"

    def synthesize(self, text: str, on_audio: Callable[[bytes], object]) -> Deferred[Synthesis]:
        """See L{ITTS.synthesize}.  Blank text fires at once with no audio."""
        if not text.strip():
            now = self._clock.seconds()
            return succeed(Synthesis(self.name, text, now, None, now, 0))
        s = self._settings
        body: dict[str, Any] = {"text": text, "model_id": s.model_id}
        voice_settings = {k: v for k, v in attrs.asdict(s.voice_settings).items() if v is not None}
        if voice_settings:
            body["voice_settings"] = voice_settings
        for name in ("seed", "language_code", "apply_text_normalization"):
            value = getattr(s, name)
            if value is not None:
                body[name] = value
        key = s.api_key.reveal() if s.api_key is not None else None
        headers = {"xi-api-key": key} if key else {}
        return stream_speech(
            provider=self.name,
            http=self._http,
            clock=self._clock,
            timeout=self._timeout,
            url=self.url,
            headers=headers,
            body=body,
            params={"output_format": OUTPUT_FORMAT},
            text=text,
            transcoder=Passthrough(),
            on_audio=on_audio,
            secret=key,
        )
