"""
The WebSocket plumbing every OpenAI Realtime client of ours shares.

Both the transcription client (L{voicecalld.voice.stt_openai}) and the
speech-to-speech session (L{voicecalld.realtime.openai}) dial the same kind
of socket: autobahn over Twisted, a bearer key, TLS for C{wss}, autoping, and
JSON events one a text message.  The socket side reports to an I{owner}
(C{_opened}, C{_received}, C{_lost}); what the events mean is the owner's job.
"""

from __future__ import annotations

import json
from base64 import b64encode
from typing import Any, Protocol

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from autobahn.websocket.protocol import WebSocketProtocol
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.ssl import optionsForClientTLS

from voicecalld.config.secret import Secret

PING_INTERVAL = 15.0
PING_TIMEOUT = 10.0

USER_AGENT = "voicecalld"

# An append is built by hand: base64 needs no JSON escaping, and this runs per batch.
_APPEND_HEAD = b'{"type":"input_audio_buffer.append","audio":"'
_APPEND_TAIL = b'"}'


class SocketOwner(Protocol):
    """What a socket of L{OpenAIClientFactory} reports to."""

    def _opened(self, proto: OpenAIClientProtocol) -> None: ...

    def _received(self, proto: OpenAIClientProtocol, payload: bytes, is_binary: bool) -> None: ...

    def _lost(self, proto: OpenAIClientProtocol, detail: str) -> None: ...


class OpenAIClientProtocol(WebSocketClientProtocol):
    """Hands socket happenings to the owner of its factory."""

    factory: OpenAIClientFactory

    def onOpen(self) -> None:
        self.factory.owner._opened(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.factory.owner._received(self, payload, isBinary)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if wasClean:
            detail = f"closed by the server (code {code}{': ' + reason if reason else ''})"
        else:
            detail = reason or "connection dropped"
        self.factory.owner._lost(self, detail)


class OpenAIClientFactory(WebSocketClientFactory):
    """Builds L{OpenAIClientProtocol}s reporting to one owner."""

    protocol = OpenAIClientProtocol
    noisy = False

    def __init__(self, owner: SocketOwner, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.owner = owner


def client_factory(
    owner: SocketOwner, url: str, api_key: Secret | None, reactor: Any
) -> OpenAIClientFactory:
    """A factory for C{owner}'s sockets to C{url}, sending C{api_key} as a bearer token."""
    key = api_key.reveal() if api_key is not None else ""
    factory = OpenAIClientFactory(
        owner,
        url=url,
        headers={"Authorization": f"Bearer {key}"},
        useragent=USER_AGENT,
        reactor=reactor,
    )
    # The owner's own connect timeout runs on its clock and covers the handshake too.
    factory.setProtocolOptions(
        openHandshakeTimeout=0, autoPingInterval=PING_INTERVAL, autoPingTimeout=PING_TIMEOUT
    )
    return factory


def connect(reactor: Any, factory: WebSocketClientFactory, timeout: float) -> Deferred:
    """Open a TCP (TLS for C{wss}) connection for C{factory}; fire with its protocol."""
    endpoint = HostnameEndpoint(reactor, factory.host, factory.port, timeout=timeout)
    if factory.isSecure:
        endpoint = wrapClientTLS(optionsForClientTLS(factory.host), endpoint)
    return endpoint.connect(factory)


def close_socket(proto: WebSocketClientProtocol) -> None:
    """Close C{proto} politely if it is open, else abort it."""
    if proto.state == WebSocketProtocol.STATE_OPEN:
        proto.sendClose(code=1000)
    else:
        proto.dropConnection(abort=True)


def is_open(proto: WebSocketClientProtocol | None) -> bool:
    """Whether C{proto} can take a message now."""
    return proto is not None and proto.state == WebSocketProtocol.STATE_OPEN


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
