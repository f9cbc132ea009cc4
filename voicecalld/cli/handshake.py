"""
One WebSocket opening handshake, closed as soon as it completes: does
something at this URL speak WebSocket to us (C{voicecall doctor})?
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.ssl import optionsForClientTLS


class _Probe(WebSocketClientProtocol):
    def onOpen(self) -> None:
        self.factory.outcome(None)
        self.sendClose()

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.factory.outcome(reason or f"closed before the handshake (code {code})")


class _ProbeFactory(WebSocketClientFactory):
    protocol = _Probe

    def __init__(self, url: str, headers: Mapping[str, str]) -> None:
        super().__init__(url, headers=dict(headers))
        self.done: Deferred[str | None] = Deferred()
        self.setProtocolOptions(openHandshakeTimeout=0, closeHandshakeTimeout=0)

    def outcome(self, why: str | None) -> None:
        if not self.done.called:
            self.done.callback(why)


async def opens(
    reactor: Any,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    route: Callable[[str], tuple[str, int]] | None = None,
    timeout: float = 10.0,
) -> str | None:
    """
    None when C{url} completed a WebSocket handshake (then closed at once),
    else why not.  C{route} picks the address dialled (a tunnel in tests).
    """
    parts = urlsplit(url)
    secure = parts.scheme == "wss"
    host = parts.hostname or ""
    port = parts.port or (443 if secure else 80)
    address = route(url) if route is not None else (host, port)
    factory = _ProbeFactory(url, headers or {})
    endpoint: Any = HostnameEndpoint(reactor, address[0], address[1], timeout=timeout)
    if secure:
        endpoint = wrapClientTLS(optionsForClientTLS(host), endpoint)
    try:
        protocol = await endpoint.connect(factory)
    except Exception as e:
        return f"cannot connect: {e}"
    factory.done.addTimeout(timeout, reactor)
    try:
        return await factory.done
    except Exception:
        protocol.transport.abortConnection()
        return f"no handshake within {timeout:g} s"
