"""
OpenAI Realtime's wire: what every OpenAI Realtime client of ours sends and reads.

Both the transcription client (L{voicecalld.voice.stt_openai}) and the
speech-to-speech session (L{voicecalld.realtime.openai}) speak JSON events,
one a text message, with a bearer key in the handshake; the socket itself is
L{voicecalld.voice.vendor_socket}'s.
"""

from __future__ import annotations

import json
from base64 import b64encode
from typing import Any

from voicecalld.config.secret import Secret

# An append is built by hand: base64 needs no JSON escaping, and this runs per batch.
_APPEND_HEAD = b'{"type":"input_audio_buffer.append","audio":"'
_APPEND_TAIL = b'"}'


def bearer_headers(api_key: Secret | None) -> dict[str, str]:
    """The handshake header that carries C{api_key} as a bearer token."""
    key = api_key.reveal() if api_key is not None else ""
    return {"Authorization": f"Bearer {key}"}


def append_message(audio: bytes | bytearray) -> bytes:
    """The C{input_audio_buffer.append} event carrying C{audio}."""
    return _APPEND_HEAD + b64encode(audio) + _APPEND_TAIL


def encode_event(event: dict[str, Any]) -> bytes:
    """A client event as the bytes of one text message."""
    return json.dumps(event, separators=(",", ":")).encode("utf-8")


def decode_event(payload: bytes, is_binary: bool) -> dict[str, Any] | None:
    """A server event from one message, or None if it is not a JSON object in text."""
    if is_binary:
        return None
    try:
        event = json.loads(payload)
    except ValueError:
        return None
    return event if isinstance(event, dict) else None


def error_message(event: dict[str, Any]) -> str:
    """The most telling text of a vendor C{error} object."""
    error = event.get("error")
    if isinstance(error, dict):
        for key in ("message", "code", "type"):
            value = error.get(key)
            if isinstance(value, str) and value:
                return value
    return "unknown error"


def error_code(event: dict[str, Any]) -> str:
    """The C{code} of a vendor C{error} object (empty if none)."""
    error = event.get("error")
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, str) else ""
