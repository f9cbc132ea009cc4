"""
Telnyx media streaming's wire format, as an L{IStreamCodec}: JSON text
frames with an C{event} name and the C{stream_id} at the top level; caller
audio is base64 PCMU at 8 kHz in C{media.payload}, numbered by
C{media.chunk} (Telnyx does not promise order, so the socket reorders by
it).  Outbound frames need no C{stream_id}: the socket names the stream.

Key presses are read from the C{call.dtmf.received} webhooks, which Telnyx
sends whether or not a stream runs, so the stream's C{dtmf} messages are
ignored rather than counted twice.
"""

from __future__ import annotations

import binascii
import json
from typing import Any

from zope.interface import implementer

from voicecalld.media.stream import (
    BadMessage,
    IStreamCodec,
    IStreamEncoder,
    StreamMark,
    StreamMedia,
    StreamStart,
    StreamStop,
)
from voicecalld.providers.common.frames import MEDIA_SUFFIX, audio, media_frame, read_json

_STOP = StreamStop()
_PREFIX = b'{"event":"media","media":{"payload":"'
_CLEAR = b'{"event":"clear"}'
# The bytes json.dumps gives for a mark, around the name.
_MARK_PREFIX = b'{"event": "mark", "mark": {"name": '


@implementer(IStreamEncoder)
class TelnyxEncoder:
    """Outbound media, marks and clears for one Telnyx stream."""

    binary = False
    media_parts = (_PREFIX, MEDIA_SUFFIX)

    def media(self, frame: bytes) -> bytes:
        return media_frame(_PREFIX, frame)

    def mark(self, name: str) -> bytes:
        return _MARK_PREFIX + json.dumps(name).encode() + b"}}"

    def clear(self) -> bytes:
        return _CLEAR


@implementer(IStreamCodec)
class TelnyxCodec:
    """Reads Telnyx's C{start}, C{media}, C{mark} and C{stop}; ignores the rest."""

    name = "Telnyx"

    def parse_start(self, payload: bytes, is_binary: bool) -> StreamStart | None:
        message, event = read_json(payload, is_binary)
        if event != "start":
            return None
        start = message.get("start")
        if not isinstance(start, dict):
            raise BadMessage("malformed start message")
        stream_id = message.get("stream_id") or start.get("stream_id")
        call_ref = start.get("call_control_id")
        parameters = start.get("custom_parameters") or {}
        if isinstance(parameters, list):
            parameters = {p.get("name"): p.get("value") for p in parameters if isinstance(p, dict)}
        if (
            not isinstance(stream_id, str)
            or not isinstance(call_ref, str | None)
            or not isinstance(parameters, dict)
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in parameters.items())
        ):
            raise BadMessage("malformed start message")
        return StreamStart(stream_id, call_ref, parameters)

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
                    int(chunk) if chunk is not None else None,
                )
            if event == "mark":
                return StreamMark(str(message["mark"]["name"]))
            if event == "stop":
                return _STOP
        except (KeyError, TypeError, AttributeError, binascii.Error, ValueError):
            raise BadMessage(f"malformed {event} message") from None
        return None

    def encoder(self, start: StreamStart) -> TelnyxEncoder:
        return TelnyxEncoder()
