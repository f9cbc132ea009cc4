"""
What the carriers' JSON media-stream codecs share: reading one text frame
into its message and C{event} name, and base64 audio in and out.
"""

from __future__ import annotations

import binascii
import json
from typing import Any

from voicecalld.media.stream import CLOSE_UNSUPPORTED, BadMessage


def read_json(payload: bytes, is_binary: bool) -> tuple[dict[str, Any], Any]:
    """A JSON text frame: its message and C{event}; anything else is a L{BadMessage}."""
    if is_binary:
        raise BadMessage("expected JSON text frames", CLOSE_UNSUPPORTED)
    try:
        message = json.loads(payload)
        return message, message["event"]
    except (ValueError, TypeError, KeyError, RecursionError):
        raise BadMessage("malformed message") from None


def audio(payload: str) -> bytes:
    """Base64 audio from a frame (strictly: bad padding or characters raise)."""
    return binascii.a2b_base64(payload, strict_mode=True)


MEDIA_SUFFIX = b'"}}'
"""What closes an outbound media message after its base64 audio."""


def media_frame(prefix: bytes, frame: bytes) -> bytes:
    """An outbound media frame: C{prefix}, the audio in base64, and L{MEDIA_SUFFIX}."""
    return prefix + binascii.b2a_base64(frame, newline=False) + MEDIA_SUFFIX
