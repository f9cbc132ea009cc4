"""
The client WebSocket plumbing every vendor socket of ours shares.

Speech-to-text (OpenAI, Deepgram, ElevenLabs) and the realtime voices
(OpenAI, Gemini) all dial the same kind of socket: autobahn over Twisted,
the vendor's key in a handshake header, TLS for C{wss}, autoping, and a
connect timeout that runs on the owner's clock.  The socket reports to an
I{owner} (C{_opened}, C{_received}, C{_lost}); what the messages mean is the
owner's job.
"""

from __future__ import annotations

from typing import Any, Protocol
from urllib.parse import urlencode

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from autobahn.websocket.protocol import WebSocketProtocol
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.ssl import optionsForClientTLS

PING_INTERVAL = 15.0
PING_TIMEOUT = 10.0

USER_AGENT = "voicecalld"


class SocketOwner(Protocol):
    """What a socket of L{VendorClientFactory} reports to."""

    def _opened(self, proto: VendorClientProtocol) -> None: ...

    def _received(self, proto: VendorClientProtocol, payload: bytes, is_binary: bool) -> None: ...

    def _lost(self, proto: VendorClientProtocol, detail: str) -> None: ...


class VendorClientProtocol(WebSocketClientProtocol):
    """Hands socket happenings to the owner of its factory."""

    factory: VendorClientFactory

    def onOpen(self) -> None:
        self.factory.owner._opened(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.factory.owner._received(self, payload, isBinary)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        # A server that sent its close frame said why, even when the TCP
        # connection then went before the handshake finished (a busy machine).
        remote = getattr(self, "remoteCloseCode", None)
        if remote is not None:
            code, reason, wasClean = remote, self.remoteCloseReason, True
        if wasClean:
            detail = f"closed by the server (code {code}{': ' + reason if reason else ''})"
        else:
            detail = reason or "connection dropped"
        self.factory.owner._lost(self, detail)


class VendorClientFactory(WebSocketClientFactory):
    """Builds L{VendorClientProtocol}s reporting to one owner."""

    protocol = VendorClientProtocol
    noisy = False

    def __init__(self, owner: SocketOwner, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.owner = owner


def client_factory(
    owner: SocketOwner, url: str, headers: dict[str, str], reactor: Any
) -> VendorClientFactory:
    """A factory for C{owner}'s sockets to C{url}, with C{headers} in the handshake."""
    factory = VendorClientFactory(
        owner, url=url, headers=headers, useragent=USER_AGENT, reactor=reactor
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
    """Close C{proto} with a handshake if it is open, else drop it (unless already closed)."""
    if proto.state == WebSocketProtocol.STATE_OPEN:
        proto.sendClose(code=1000)
    elif proto.state != WebSocketProtocol.STATE_CLOSED:
        proto.dropConnection(abort=True)


def is_open(proto: WebSocketClientProtocol | None) -> bool:
    """Whether C{proto} can take a message now."""
    return proto is not None and proto.state == WebSocketProtocol.STATE_OPEN


def cancel(call: IDelayedCall | None) -> None:
    """Cancel C{call} if it is still pending."""
    if call is not None and call.active():
        call.cancel()


def with_query(url: str, params: list[tuple[str, str]]) -> str:
    """C{url} with C{params} added to its query string."""
    if not params:
        return url
    joiner = "&" if "?" in url else "?"
    return url + joiner + urlencode(params)


class SocketSet:
    """
    The sockets one session has connected and not yet seen go, and the
    Deferreds of L{gone} waiting for the last of them.
    """

    def __init__(self) -> None:
        self._live: set[WebSocketClientProtocol] = set()
        self._waiting: list[Deferred] = []

    def __bool__(self) -> bool:
        return bool(self._live)

    def add(self, proto: WebSocketClientProtocol) -> None:
        """C{proto} connected."""
        self._live.add(proto)

    def discard(self, proto: WebSocketClientProtocol) -> None:
        """C{proto} is gone; once none is left, whoever waits in L{gone} hears so."""
        self._live.discard(proto)
        if not self._live and self._waiting:
            waiting, self._waiting = self._waiting, []
            for d in waiting:
                d.callback(None)

    def close_all(self) -> None:
        """Close every socket (politely where it is open)."""
        for proto in list(self._live):
            close_socket(proto)

    def gone(self) -> Deferred:
        """Fires once no socket is left."""
        if not self._live:
            return succeed(None)
        d: Deferred = Deferred()
        self._waiting.append(d)
        return d
