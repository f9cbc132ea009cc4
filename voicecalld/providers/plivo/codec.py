"""
Plivo's audio-stream wire format, as an L{IStreamCodec}: JSON text frames
with an C{event} name; audio is base64 mu-law at 8 kHz (we ask for
C{audio/x-mulaw;rate=8000}, and refuse a stream that says otherwise).

Inbound: C{start} (ids nested in C{start}, our credentials in the
C{extra_headers} JSON string), C{media}, C{dtmf}, C{playedStream} (a
checkpoint was reached), C{clearedAudio} (ignored) and a C{stop} if one
comes (Plivo documents only the close).  Outbound: C{playAudio},
C{checkpoint} and C{clearAudio}.
"""

from __future__ import annotations

import binascii
import json
from typing import Any

from zope.interface import implementer

from voicecalld.media.stream import (
    CLOSE_UNSUPPORTED,
    BadMessage,
    IStreamCodec,
    IStreamEncoder,
    StreamDtmf,
    StreamMark,
    StreamMedia,
    StreamStart,
    StreamStop,
)
from voicecalld.providers.common.frames import MEDIA_SUFFIX, audio, media_frame, read_json

CONTENT_TYPE = "audio/x-mulaw;rate=8000"
ENCODING, RATE = "audio/x-mulaw", 8000
_STOP = StreamStop()


def extra_headers(parameters: dict[str, str]) -> str:
    """Parameters as a C{<Stream extraHeaders>} value (C{k=v,k2=v2}; no commas or = inside)."""
    return ",".join(f"{k}={v}" for k, v in parameters.items())


@implementer(IStreamEncoder)
class PlivoEncoder:
    """Outbound messages for one Plivo stream."""

    binary = False

    def __init__(self, stream_id: str) -> None:
        self._id = stream_id
        self._prefix = (
            b'{"event":"playAudio","media":{"contentType":"'
            + ENCODING.encode()
            + b'","sampleRate":'
            + str(RATE).encode()
            + b',"payload":"'
        )
        self.media_parts = (self._prefix, MEDIA_SUFFIX)
        # The bytes json.dumps gives for a checkpoint, around the name.
        self._mark_prefix = (
            b'{"event": "checkpoint", "streamId": ' + json.dumps(stream_id).encode() + b', "name": '
        )
        self._clear = json.dumps({"event": "clearAudio", "streamId": stream_id}).encode()

    def media(self, frame: bytes) -> bytes:
        return media_frame(self._prefix, frame)

    def mark(self, name: str) -> bytes:
        return self._mark_prefix + json.dumps(name).encode() + b"}"

    def clear(self) -> bytes:
        return self._clear


@implementer(IStreamCodec)
class PlivoCodec:
    """Reads Plivo's stream events; ignores those that mean nothing to us."""

    name = "Plivo"

    def parse_start(self, payload: bytes, is_binary: bool) -> StreamStart | None:
        message, event = read_json(payload, is_binary)
        if event != "start":
            return None
        start = message.get("start")
        if not isinstance(start, dict):
            raise BadMessage("malformed start message")
        stream_id, call_uuid = start.get("streamId"), start.get("callId")
        if not isinstance(stream_id, str) or not isinstance(call_uuid, str | None):
            raise BadMessage("malformed start message")
        media = start.get("mediaFormat")
        if isinstance(media, dict) and (
            media.get("encoding") != ENCODING or media.get("sampleRate") != RATE
        ):
            raise BadMessage(
                f"stream audio is {media.get('encoding')!r} at {media.get('sampleRate')!r},"
                f" not {ENCODING} at {RATE}",
                CLOSE_UNSUPPORTED,
            )
        return StreamStart(stream_id, call_uuid, _parameters(message.get("extra_headers")))

    def parse(self, payload: bytes, is_binary: bool) -> Any:
        message, event = read_json(payload, is_binary)
        try:
            if event == "media":
                media = message["media"]
                if media.get("track", "inbound") != "inbound":
                    return None
                chunk = media.get("chunk")
                return StreamMedia(
                    audio(media["payload"]),
                    chunk if isinstance(chunk, int) else None,
                )
            if event == "playedStream":
                return StreamMark(str(message["name"]))
            if event == "dtmf":
                return StreamDtmf(str(message["dtmf"]["digit"]))
            if event == "stop":
                return _STOP
        except (KeyError, TypeError, AttributeError, binascii.Error, ValueError):
            raise BadMessage(f"malformed {event} message") from None
        return None

    def encoder(self, start: StreamStart) -> PlivoEncoder:
        return PlivoEncoder(start.stream_id)


def _parameters(value: Any) -> dict[str, str]:
    """The C{extra_headers} of a start: a JSON object in a string (or, leniently, an object)."""
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else {}
        except ValueError:
            raise BadMessage("malformed extra_headers in start message") from None
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise BadMessage("malformed extra_headers in start message")
    return {str(k): v for k, v in value.items()}
