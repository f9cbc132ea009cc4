"""
Twilio Media Streams' wire format, as an L{IStreamCodec}: JSON text frames
with an C{event} name; audio is base64 mu-law at 8 kHz in C{media.payload}.

Inbound, one JSON parse and one base64 decode per media frame; outbound,
one byte concatenation per frame around a prefix built once per stream.
Twilio's stream runs over one socket in order, so no sequence number is
read.
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
    StreamDtmf,
    StreamMark,
    StreamMedia,
    StreamStart,
    StreamStop,
)
from voicecalld.providers.common.frames import MEDIA_SUFFIX, audio, media_frame, read_json

_STOP = StreamStop()


@implementer(IStreamEncoder)
class TwilioEncoder:
    """Outbound messages for one Twilio stream (its C{streamSid} in each)."""

    binary = False

    def __init__(self, stream_sid: str) -> None:
        self._sid = stream_sid
        sid = json.dumps(stream_sid).encode()
        self._prefix = b'{"event":"media","streamSid":' + sid + b',"media":{"payload":"'
        self.media_parts = (self._prefix, MEDIA_SUFFIX)
        # The bytes json.dumps gives for a mark, around the name.
        self._mark_prefix = b'{"event": "mark", "streamSid": ' + sid + b', "mark": {"name": '
        self._clear = json.dumps({"event": "clear", "streamSid": stream_sid}).encode()

    def media(self, frame: bytes) -> bytes:
        return media_frame(self._prefix, frame)

    def mark(self, name: str) -> bytes:
        return self._mark_prefix + json.dumps(name).encode() + b"}}"

    def clear(self) -> bytes:
        return self._clear


@implementer(IStreamCodec)
class TwilioCodec:
    """Reads Twilio's C{start}, C{media}, C{mark}, C{dtmf} and C{stop}; ignores the rest."""

    name = "Twilio"

    def parse_start(self, payload: bytes, is_binary: bool) -> StreamStart | None:
        message, event = read_json(payload, is_binary)
        if event != "start":
            return None
        start = message.get("start")
        if not isinstance(start, dict):
            raise BadMessage("malformed start message")
        stream_sid = message.get("streamSid") or start.get("streamSid")
        call_sid = start.get("callSid")
        parameters = start.get("customParameters", {})
        if (
            not isinstance(stream_sid, str)
            or not isinstance(call_sid, str | None)
            or not isinstance(parameters, dict)
            or not all(isinstance(v, str) for v in parameters.values())
        ):
            raise BadMessage("malformed start message")
        return StreamStart(stream_sid, call_sid, parameters)

    def parse(self, payload: bytes, is_binary: bool) -> Any:
        message, event = read_json(payload, is_binary)
        try:
            if event == "media":
                return StreamMedia(audio(message["media"]["payload"]))
            if event == "mark":
                return StreamMark(str(message["mark"]["name"]))
            if event == "dtmf":
                return StreamDtmf(str(message["dtmf"]["digit"]))
            if event == "stop":
                return _STOP
        except (KeyError, TypeError, binascii.Error, ValueError):
            raise BadMessage(f"malformed {event} message") from None
        return None

    def encoder(self, start: StreamStart) -> TwilioEncoder:
        return TwilioEncoder(start.stream_id)
