"""
The audio a realtime vendor's socket carries, to and from the phone's 8 kHz mu-law.

A vendor module picks one L{AudioWire} per session: L{UlawWire} when the
vendor takes G.711 itself (nothing to do), L{Pcm16Wire} when it wants linear
PCM at some rate (decode, resample with soxr, and back).  Conversion happens
per batch of audio, not per 20 ms frame.
"""

from __future__ import annotations

from typing import Protocol

from voicecalld.media.codec import Resampler, ulaw_decode, ulaw_encode

PHONE_RATE = 8000


class AudioWire(Protocol):
    """Converts one session's audio between the phone and the vendor's socket."""

    bytes_per_ms: int
    """Vendor-side bytes per millisecond of audio."""

    def to_vendor(self, ulaw: bytes) -> bytes:
        """Caller audio (8 kHz mu-law) as the vendor takes it."""

    def from_vendor(self, audio: bytes) -> bytes:
        """Model audio from the vendor as 8 kHz mu-law (maybe empty while a filter fills)."""

    def end_output(self) -> bytes:
        """The model's audio is over for now: the rest of it, as mu-law."""

    def drop_output(self) -> None:
        """Forget model audio not yet given out (the caller cut the model off)."""


class UlawWire:
    """The vendor speaks G.711 mu-law at 8 kHz too: bytes pass as they are."""

    bytes_per_ms = PHONE_RATE // 1000

    def to_vendor(self, ulaw: bytes) -> bytes:
        """Unchanged."""
        return ulaw

    def from_vendor(self, audio: bytes) -> bytes:
        """Unchanged."""
        return audio

    def end_output(self) -> bytes:
        """Nothing is held back."""
        return b""

    def drop_output(self) -> None:
        """Nothing is held back."""


class Pcm16Wire:
    """The vendor speaks 16-bit little-endian mono PCM at C{rate}."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.bytes_per_ms = rate * 2 // 1000
        self._up = Resampler(PHONE_RATE, rate)
        self._down = Resampler(rate, PHONE_RATE)

    def to_vendor(self, ulaw: bytes) -> bytes:
        """Decode and upsample (the first call gives a little less: the filter fills)."""
        return self._up.feed(ulaw_decode(ulaw))

    def from_vendor(self, audio: bytes) -> bytes:
        """Downsample and encode."""
        pcm = self._down.feed(audio)
        return ulaw_encode(pcm) if pcm else b""

    def end_output(self) -> bytes:
        """Drain the downsampler's filter."""
        pcm = self._down.flush()
        return ulaw_encode(pcm) if pcm else b""

    def drop_output(self) -> None:
        """Empty the downsampler's filter without giving out what it held."""
        self._down.flush()
