"""
The audio a realtime vendor's socket carries, to and from the phone's 8 kHz mu-law.

A vendor module picks one L{AudioWire} per session: L{UlawWire} when the
vendor takes G.711 itself (nothing to do), L{Pcm16Wire} when it wants linear
PCM at some rate (decode, resample with soxr, and back).  A vendor whose two
directions differ in rate uses the one-way converters L{PhoneToPcm} and
L{PcmToPhone} themselves.  Conversion happens
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


class PhoneToPcm:
    """Caller audio for a vendor: 8 kHz mu-law in, s16le PCM at C{rate} out (streaming)."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._resampler = Resampler(PHONE_RATE, rate)

    def convert(self, ulaw: bytes | bytearray) -> bytes:
        """Decode and upsample one piece (the first gives a little less: the filter fills)."""
        return self._resampler.feed(ulaw_decode(bytes(ulaw)))


class PcmToPhone:
    """Vendor audio for the phone: s16le PCM at C{rate} in, 8 kHz mu-law out (streaming)."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._resampler = Resampler(rate, PHONE_RATE)

    def convert(self, pcm: bytes) -> bytes:
        """Downsample and encode one piece (an odd byte waits for the next)."""
        out = self._resampler.feed(pcm)
        return ulaw_encode(out) if out else b""

    def finish(self) -> bytes:
        """The audio is over for now: what the filter still holds, and a fresh start."""
        out = self._resampler.flush()
        return ulaw_encode(out) if out else b""

    def discard(self) -> None:
        """Forget what the filter holds without giving it out."""
        self._resampler.flush()


class Pcm16Wire:
    """The vendor speaks 16-bit little-endian mono PCM at C{rate}."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.bytes_per_ms = rate * 2 // 1000
        self._up = PhoneToPcm(rate)
        self._down = PcmToPhone(rate)

    def to_vendor(self, ulaw: bytes) -> bytes:
        """Decode and upsample (the first call gives a little less: the filter fills)."""
        return self._up.convert(ulaw)

    def from_vendor(self, audio: bytes) -> bytes:
        """Downsample and encode."""
        return self._down.convert(audio)

    def end_output(self) -> bytes:
        """Drain the downsampler's filter."""
        return self._down.finish()

    def drop_output(self) -> None:
        """Empty the downsampler's filter without giving out what it held."""
        self._down.discard()
