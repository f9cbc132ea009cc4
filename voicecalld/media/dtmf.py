"""Touch tones as audio, for sending DTMF through a media stream without interrupting it."""

from __future__ import annotations

import numpy as np

from voicecalld.media.codec import ulaw_encode

RATE = 8000
TONE_SECONDS = 0.1
GAP_SECONDS = 0.1
WAITS = {"w": 0.5, "W": 1.0}
_ROWS = (697, 770, 852, 941)
_COLUMNS = (1209, 1336, 1477, 1633)
_KEYPAD = ("123A", "456B", "789C", "*0#D")
# Each tone about -9 dBFS, the pair about -3 dBFS: loud enough, never clipping.
_AMPLITUDE = 0.35 * 32767


def _frequencies(digit: str) -> tuple[int, int]:
    for row, keys in enumerate(_KEYPAD):
        column = keys.find(digit.upper())
        if column >= 0:
            return _ROWS[row], _COLUMNS[column]
    raise ValueError(f"{digit!r} is not a DTMF digit")


def _silence(seconds: float) -> np.ndarray:
    return np.zeros(round(seconds * RATE), dtype=np.float64)


def dtmf_audio(digits: str) -> bytes:
    """Mu-law 8 kHz audio of C{digits}: 100 ms tones, 100 ms gaps, C{w}/C{W} waits."""
    parts = []
    t = np.arange(round(TONE_SECONDS * RATE)) / RATE
    for digit in digits:
        if digit in WAITS:
            parts.append(_silence(WAITS[digit]))
            continue
        low, high = _frequencies(digit)
        parts.append(_AMPLITUDE * (np.sin(2 * np.pi * low * t) + np.sin(2 * np.pi * high * t)))
        parts.append(_silence(GAP_SECONDS))
    if not parts:
        return b""
    pcm = np.concatenate(parts).round().astype("<i2").tobytes()
    return ulaw_encode(pcm)
