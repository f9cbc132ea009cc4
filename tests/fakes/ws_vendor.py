"""
What the fake speech vendors share: an autobahn WebSocket server on
127.0.0.1 that records each handshake (headers, path, query), can refuse
handshakes, drop or close the latest socket, and gives
L{FakeVendorServer.when} Deferreds that fire once a condition on the
recorded state holds, so tests wait on events, never on time.  A vendor's
fake subclasses it and says what its protocol does on open and per message.

A plain HTTP GET on the same port (no upgrade) is the vendor's read-only
REST API, as C{voicecall doctor} calls it: L{FakeVendorServer.rest} answers
it (404 unless the vendor's fake knows the path), and L{FakeVendorServer.key}
is the only key it accepts once set.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from twisted.web.http import RESPONSES


class Waitable:
    """Deferreds that fire once a condition holds, re-checked on every change."""

    def __init__(self) -> None:
        self.waiters: list[tuple[Callable[[], bool], Deferred]] = []

    def when(self, condition: Callable[[], bool]) -> Deferred:
        """Fires as soon as C{condition()} is true."""
        if condition():
            return succeed(None)
        d: Deferred = Deferred()
        self.waiters.append((condition, d))
        return d

    def changed(self) -> None:
        """Fire the waiters whose condition now holds."""
        waiting, self.waiters = self.waiters, []
        for condition, d in waiting:
            if condition():
                d.callback(None)
            else:
                self.waiters.append((condition, d))


class FakeVendorServer(Waitable):
    """A vendor's WebSocket side, for tests; subclasses speak the protocol."""

    url_path = "/"
    """The path (and query) of the URL L{start} fires with."""

    def __init__(self, reactor: Any = None) -> None:
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor
        self._reactor = reactor
        self._port: Any = None
        self._live: list[VendorServerProtocol] = []
        self._sockets: set[VendorServerProtocol] = set()
        self.url = ""
        self.requests: list[dict[str, str]] = []
        self.paths: list[str] = []
        self.queries: list[dict[str, str]] = []
        self.opened = 0
        self.closed = 0
        self.refused = 0
        self.refuse_code: int | None = None
        #: The key the REST API accepts (None: any non-empty one).
        self.key: str | None = None
        #: Each REST request: (path, headers, query).
        self.rest_requests: list[tuple[str, dict[str, str], dict[str, str]]] = []

    # Running

    def start(self) -> Deferred:
        """Listen on a free port of 127.0.0.1; fires with the C{ws://} URL to use."""
        factory = WebSocketServerFactory()
        factory.protocol = VendorServerProtocol
        factory.noisy = False
        factory.fake = self
        endpoint = TCP4ServerEndpoint(self._reactor, 0, interface="127.0.0.1")

        def listening(port: Any) -> str:
            self._port = port
            self.url = f"ws://127.0.0.1:{port.getHost().port}{self.url_path}"
            return self.url

        return endpoint.listen(factory).addCallback(listening)

    def stop(self) -> Deferred:
        """Drop every connection and stop listening; fires when all are gone."""
        gone = [self.when(lambda: not self._sockets)]
        for proto in list(self._sockets):
            proto.transport.abortConnection()
        if self._port is not None:
            gone.append(self._port.stopListening())
            self._port = None
        return gatherResults(gone)

    @property
    def connected(self) -> bool:
        """Whether a client socket is open now."""
        return bool(self._live)

    def header(self, name: str) -> str | None:
        """Header C{name} (lower case) of the latest handshake."""
        return self.requests[-1].get(name) if self.requests else None

    @property
    def query(self) -> dict[str, str]:
        """The latest handshake's query parameters."""
        return self.queries[-1] if self.queries else {}

    # The vendor's side

    def send(self, event: dict[str, Any]) -> None:
        """Send a JSON message on the latest connection."""
        self.reply(self._latest(), event)

    def drop(self) -> None:
        """Cut the latest connection without a closing handshake."""
        self._latest().dropConnection(abort=True)

    def close(self, code: int = 1000, reason: str | None = None) -> None:
        """
        Close the latest connection with a closing handshake (as on an idle
        timeout), with any code a vendor uses (1008 and 1011 too).
        """
        close_with(self._latest(), code, reason)

    def refuse(self, code: int = 503) -> None:
        """Answer new handshakes with HTTP C{code} until L{accept}."""
        self.refuse_code = code

    def accept(self) -> None:
        """Accept new connections again."""
        self.refuse_code = None

    # For subclasses

    def rest(self, path: str, headers: dict[str, str], query: dict[str, str]) -> tuple[int, Any]:
        """A REST GET: its HTTP status and JSON body (what the vendor's API answers)."""
        return 404, {"error": f"no such path {path}"}

    def accepts(self, key: str | None) -> bool:
        """Whether the REST API takes C{key}."""
        return bool(key) and (self.key is None or key == self.key)

    def opened_socket(self, proto: VendorServerProtocol) -> None:
        """A handshake completed (the vendor's greeting goes here)."""

    def message(self, proto: VendorServerProtocol, payload: bytes, is_binary: bool) -> None:
        """A client message arrived."""

    def reply(self, proto: VendorServerProtocol, event: dict[str, Any]) -> None:
        """Send C{event} as JSON text on C{proto}."""
        proto.sendMessage(json.dumps(event).encode("utf-8"), isBinary=False)

    # From the protocol

    def _latest(self) -> VendorServerProtocol:
        if not self._live:
            raise RuntimeError("no client is connected to the fake")
        return self._live[-1]

    def _connecting(self, headers: dict[str, str], path: str, params: dict[str, Any]) -> None:
        self.requests.append(headers)
        self.paths.append(path)
        self.queries.append({k: v[-1] for k, v in params.items()})
        if self.refuse_code is not None:
            self.refused += 1
            self.changed()
            raise ConnectionDeny(self.refuse_code, "refused by the fake")

    def _opened(self, proto: VendorServerProtocol) -> None:
        self._live.append(proto)
        self.opened += 1
        self.opened_socket(proto)
        self.changed()

    def _message(self, proto: VendorServerProtocol, payload: bytes, is_binary: bool) -> None:
        self.message(proto, payload, is_binary)
        self.changed()

    def _gone(self, proto: VendorServerProtocol) -> None:
        self._sockets.discard(proto)
        if proto in self._live:
            self._live.remove(proto)
            self.closed += 1
        self.changed()


def close_with(proto: WebSocketServerProtocol, code: int, reason: str | None = None) -> None:
    """Start a closing handshake on C{proto} with C{code}, which autobahn's public call limits."""
    proto.sendCloseFrame(code=code, reasonUtf8=reason.encode("utf-8") if reason else None)


class VendorServerProtocol(WebSocketServerProtocol):
    """One client socket; everything goes to the fake server."""

    def connectionMade(self) -> None:
        super().connectionMade()
        self.factory.fake._sockets.add(self)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        self.factory.fake._gone(self)

    def sendServerStatus(self, redirectUrl: str | None = None, redirectAfter: int = 0) -> None:
        # autobahn's answer to a GET without an upgrade: here, the vendor's REST API.
        fake = self.factory.fake
        headers = dict(self.http_headers)
        query = {k: v[-1] for k, v in self.http_request_params.items()}
        fake.rest_requests.append((self.http_request_path, headers, query))
        code, body = fake.rest(self.http_request_path, headers, query)
        data = json.dumps(body).encode("utf-8")
        reason = RESPONSES.get(code, b"").decode("ascii")
        head = (
            f"HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
        )
        self.sendData(head.encode("ascii") + data)
        fake.changed()

    def onConnect(self, request: Any) -> None:
        self.factory.fake._connecting(dict(request.headers), request.path, request.params)

    def onOpen(self) -> None:
        self.factory.fake._opened(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.factory.fake._message(self, payload, isBinary)
