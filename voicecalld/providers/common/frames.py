"""
What the carriers' JSON media-stream codecs share: reading one text frame
into its message and C{event} name, and base64 audio in and out.
"""

from __future__ import annotations

import binascii
import json
from typing import Any

from voicecalld.media.stream import CLOSE_UNSUPPORTED, BadMessage

# The scanner json.loads itself ends in, without the wrappers it runs per call
# (encoding detection, decode, whitespace checks).
_scan = json.JSONDecoder().scan_once
_MISSED = object()


def read_json(payload: bytes, is_binary: bool) -> tuple[dict[str, Any], Any]:
    """A JSON text frame: its message and C{event}; anything else is a L{BadMessage}."""
    if is_binary:
        raise BadMessage("expected JSON text frames", CLOSE_UNSUPPORTED)
    message = _quick_loads(payload)
    try:
        if message is _MISSED:
            message = json.loads(payload)
        return message, message["event"]
    except (ValueError, TypeError, KeyError, RecursionError):
        raise BadMessage("malformed message") from None


def _quick_loads(payload: bytes) -> Any:
    """
    What C{json.loads(payload)} gives for UTF-8 JSON that starts at the first
    byte and runs to the last; C{_MISSED} for anything else (json.loads decides).
    """
    try:
        text = payload.decode()
        value, end = _scan(text, 0)
    except (ValueError, StopIteration, RecursionError, AttributeError):
        return _MISSED
    return value if end == len(text) else _MISSED


def audio(payload: str) -> bytes:
    """Base64 audio from a frame (strictly: bad padding or characters raise)."""
    return binascii.a2b_base64(payload, strict_mode=True)


MEDIA_SUFFIX = b'"}}'
"""What closes an outbound media message after its base64 audio."""


def media_frame(prefix: bytes, frame: bytes) -> bytes:
    """An outbound media frame: C{prefix}, the audio in base64, and L{MEDIA_SUFFIX}."""
    return prefix + binascii.b2a_base64(frame, newline=False) + MEDIA_SUFFIX
