"""
Audio math: G.711 mu-law and A-law, and streaming resampling.

Audio elsewhere in voicecalld is bytes: signed 16-bit little-endian mono PCM
(C{s16le}) or G.711 at 8 kHz, one byte a sample.  The G.711 coders are lookup
tables built once at import from the reference (Sun C{g711.c}) algorithm, so
they are bit-exact with the old stdlib C{audioop}; the tables are applied with
numpy, never a Python loop per sample.
"""

from __future__ import annotations

import numpy as np
import soxr

ULAW_SILENCE = b"\xff"
ALAW_SILENCE = b"\xd5"
FRAME_BYTES = 160
"""One 20 ms frame of 8 kHz G.711."""

_S16 = np.dtype("<i2")
_ALL_S16 = np.arange(-32768, 32768, dtype=np.int32)
_ALL_BYTES = np.arange(256, dtype=np.int32)
_NO_SAMPLES = np.zeros(0, dtype=_S16)


def _segment(value: np.ndarray, ends: list[int]) -> np.ndarray:
    """The index of the first segment end that is >= value (8 when none is)."""
    return np.searchsorted(np.array(ends), value, side="left")


def _ulaw_encoder() -> np.ndarray:
    pcm = _ALL_S16 >> 2
    mask = np.where(pcm < 0, 0x7F, 0xFF)
    value = np.minimum(np.abs(pcm), 8159) + 0x21
    seg = _segment(value, [0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF])
    code = (np.minimum(seg, 7) << 4) | ((value >> (seg + 1)) & 0x0F)
    code = np.where(seg >= 8, 0x7F, code) ^ mask
    return _by_unsigned_index(code)


def _ulaw_decoder() -> np.ndarray:
    u = ~_ALL_BYTES & 0xFF
    exp = (u >> 4) & 7
    mag = (((u & 0x0F) << 3) + 0x84 << exp) - 0x84
    return np.where(u & 0x80, -mag, mag).astype(_S16)


def _alaw_encoder() -> np.ndarray:
    pcm = _ALL_S16 >> 3
    mask = np.where(pcm >= 0, 0xD5, 0x55)
    value = np.where(pcm >= 0, pcm, -pcm - 1)
    seg = _segment(value, [0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF])
    shift = np.where(seg < 2, 1, seg)
    code = (np.minimum(seg, 7) << 4) | ((value >> shift) & 0x0F)
    code = np.where(seg >= 8, 0x7F, code) ^ mask
    return _by_unsigned_index(code)


def _alaw_decoder() -> np.ndarray:
    a = _ALL_BYTES ^ 0x55
    seg = (a & 0x70) >> 4
    t = (a & 0x0F) << 4
    t = np.where(seg == 0, t + 8, (t + 0x108) << np.maximum(seg - 1, 0))
    return np.where(a & 0x80, t, -t).astype(_S16)


def _by_unsigned_index(codes: np.ndarray) -> np.ndarray:
    """Reorder codes for samples -32768..32767 so the table is indexed by their uint16 view."""
    table = np.empty(65536, dtype=np.uint8)
    table[_ALL_S16.astype(np.uint16)] = codes
    return table


_ULAW_ENCODE = _ulaw_encoder()
_ULAW_DECODE = _ulaw_decoder()
_ALAW_ENCODE = _alaw_encoder()
_ALAW_DECODE = _alaw_decoder()


def _encode(table: np.ndarray, pcm: bytes) -> bytes:
    if len(pcm) % 2:
        raise ValueError("16-bit PCM must have an even number of bytes")
    return table.take(np.frombuffer(pcm, dtype=np.uint16)).tobytes()


def _decode(table: np.ndarray, data: bytes) -> bytes:
    return table[np.frombuffer(data, dtype=np.uint8)].tobytes()


def ulaw_encode(pcm: bytes) -> bytes:
    """s16le mono PCM -> G.711 mu-law, one byte a sample."""
    return _encode(_ULAW_ENCODE, pcm)


def ulaw_encode_samples(samples: np.ndarray) -> bytes:
    """Native-order C{int16} samples -> G.711 mu-law, with no intermediate bytes."""
    return _ULAW_ENCODE.take(samples.astype(_S16, copy=False).view(np.uint16)).tobytes()


def ulaw_decode(data: bytes) -> bytes:
    """G.711 mu-law -> s16le mono PCM."""
    return _decode(_ULAW_DECODE, data)


def alaw_encode(pcm: bytes) -> bytes:
    """s16le mono PCM -> G.711 A-law, one byte a sample."""
    return _encode(_ALAW_ENCODE, pcm)


def alaw_decode(data: bytes) -> bytes:
    """G.711 A-law -> s16le mono PCM."""
    return _decode(_ALAW_DECODE, data)


class Resampler:
    """
    Streaming s16le mono resampling (soxr: a real low-pass, not sample dropping).

    The default quality is soxr's C{LQ}: it starts giving audio after about 40 ms of
    input (C{HQ} needs about 75 ms) and still rejects everything above the new
    Nyquist by more than 80 dB; its passband ends near 3.2 kHz at 8 kHz out, the
    telephone band anyway.
    """

    def __init__(self, in_rate: int, out_rate: int, quality: str = "LQ") -> None:
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._stream = soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality=quality)
        self._odd = b""

    def feed(self, pcm: bytes) -> bytes:
        """Take any number of input bytes; return the output ready so far (maybe none)."""
        return self.feed_samples(pcm).tobytes()

    def flush(self) -> bytes:
        """The input is over: return the rest of the output and start afresh."""
        return self.flush_samples().tobytes()

    def feed_samples(self, pcm: bytes) -> np.ndarray:
        """As L{feed}, the output as an C{int16} array (for encoding it without a copy)."""
        if self._odd:
            pcm = self._odd + pcm
        if len(pcm) % 2:
            pcm, self._odd = pcm[:-1], pcm[-1:]
        else:
            self._odd = b""
        if not pcm:
            return _NO_SAMPLES
        return self._run(np.frombuffer(pcm, dtype=_S16), last=False)

    def flush_samples(self) -> np.ndarray:
        """As L{flush}, the output as an C{int16} array."""
        self._odd = b""
        tail = self._run(_NO_SAMPLES, last=True)
        self._stream.clear()
        return tail

    def _run(self, samples: np.ndarray, last: bool) -> np.ndarray:
        return self._stream.resample_chunk(samples, last=last).astype(_S16, copy=False)
