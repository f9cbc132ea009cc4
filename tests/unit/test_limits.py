"""
Input limits of the webhook server, each hit from a real socket on 127.0.0.1.

Sockets use the real reactor; the site's deadlines and rate limiter run on a
C{Clock}, so time only moves when a test says so.
"""

from __future__ import annotations

import re
from typing import Any

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import StringTransport
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.trial import unittest
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from voicecalld.web import limits as codes
from voicecalld.web.guard import GuardedSite, reason_phrase
from voicecalld.web.limits import InFlight, TokenBucket, WebLimits, retry_after
from voicecalld.web.site import build_root

# What each refusal's status line says after its code.
PHRASES = {
    400: b"Bad Request",
    408: b"Request Time-out",
    413: b"Request Entity Too Large",
    429: b"Too Many Requests",
    431: b"Request Header Fields Too Large",
    503: b"Service Unavailable",
}
OK_REQUEST = (
    b"POST /voice/webhook HTTP/1.1\r\nHost: h\r\n"
    b"Content-Type: application/x-www-form-urlencoded\r\n"
    b"Content-Length: 7\r\nConnection: close\r\n\r\nCallSid"
)


async def eventually(predicate: Any, what: str = "condition") -> None:
    """Let the reactor run until C{predicate()} holds (bounded; no sleeping)."""
    for _ in range(2000):
        if predicate():
            return
        await deferLater(reactor, 0.001, lambda: None)
    raise AssertionError(f"timed out waiting for {what}")


class Recorder(Resource):
    """The wrapped resource: records what reached it; may hold requests open."""

    isLeaf = True

    def __init__(self, hold: bool = False) -> None:
        super().__init__()
        self.calls: list[bytes] = []
        self.held: list[Any] = []
        #: Held requests that are over: answered, or their client gone.
        self.over: list[Any] = []
        self.hold = hold

    def render(self, request: Any) -> Any:
        self.calls.append(request.content.read())
        if self.hold:
            self.held.append(request)
            request.notifyFinish().addBoth(lambda _: self.over.append(request))
            return NOT_DONE_YET
        return b"ok"


class RawClient(Protocol):
    """A bare TCP client: sends what it is told, keeps what it gets."""

    def __init__(self) -> None:
        self.received = b""
        self.done: Deferred[bytes] = Deferred()
        self.open = False

    def connectionMade(self) -> None:
        self.open = True

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Any) -> None:
        self.open = False
        self.done.callback(self.received)

    @property
    def status_line(self) -> bytes:
        """The first line of the answer."""
        return self.received.split(b"\r\n", 1)[0]

    @property
    def status(self) -> int | None:
        if not self.received.startswith(b"HTTP/1.1 "):
            return None
        return int(self.received[9:12])


class GuardTestCase(unittest.TestCase):
    """A guarded site on a real socket, with a Clock for its deadlines."""

    def start(self, limits: WebLimits | None = None, hold: bool = False, resource: Any = None):
        self.clock = Clock()
        self.events: list[dict[str, Any]] = []
        self.resource = Recorder(hold)
        root = resource if resource is not None else build_root({"/voice/webhook": self.resource})
        self.site = GuardedSite(
            root,
            limits=limits or WebLimits(),
            reactor=self.clock,
            logger=Logger(observer=self.events.append),
        )
        self.connections: list[Any] = []
        #: How many bytes each connection's server side has been given (and handled).
        self.handled: list[int] = []
        build = self.site.buildProtocol

        def tracking(addr: Any) -> Any:
            connection = build(addr)
            index = len(self.connections)
            self.connections.append(connection)
            self.handled.append(0)
            receive = connection.dataReceived

            def counting(data: bytes) -> None:
                receive(data)
                self.handled[index] += len(data)

            connection.dataReceived = counting
            return connection

        self.site.buildProtocol = tracking
        self.port = reactor.listenTCP(0, self.site, interface="127.0.0.1")
        self.addCleanup(self._stop)

    async def _stop(self) -> None:
        for request in self.resource.held:
            if request not in self.resource.over:
                request.finish()
        for connection in self.connections:
            if connection.transport is not None and not connection.transport.disconnected:
                connection.transport.abortConnection()
        await eventually(
            lambda: all(c.transport.disconnected for c in self.connections), "server sockets"
        )
        await self.port.stopListening()

    async def connect(self) -> RawClient:
        client = RawClient()
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.port.getHost().port)
        await connectProtocol(endpoint, client)
        self.addCleanup(self._close_client, client)
        count = len(self.connections)
        await eventually(lambda: len(self.connections) >= count, "server side of the connection")
        return client

    async def _close_client(self, client: RawClient) -> None:
        if client.open:
            client.transport.loseConnection()
        await client.done

    async def exchange(self, data: bytes) -> RawClient:
        """Connect, send C{data}, wait until the server has closed the connection."""
        client = await self.connect()
        client.transport.write(data)
        await client.done
        return client

    def codes(self) -> list[str]:
        return [e["log_code"] for e in self.events if "log_code" in e]

    async def arrived(self, count: int, what: str) -> None:
        """Wait until the last connection's server side has handled C{count} bytes."""
        await eventually(lambda: self.handled[-1] >= count, what)


class AcceptedTests(GuardTestCase):
    """Ordinary requests go through untouched."""

    async def test_ordinary_request(self) -> None:
        self.start()
        client = await self.exchange(OK_REQUEST)
        self.assertEqual(client.status, 200)
        self.assertTrue(client.received.endswith(b"ok"))
        self.assertEqual(self.resource.calls, [b"CallSid"])
        self.assertEqual(self.codes(), [])
        self.assertEqual((self.site.open_connections, self.site.in_flight.total()), (0, 0))

    async def test_keep_alive_then_idle_close(self) -> None:
        self.start()
        client = await self.connect()
        one = b"POST /voice/webhook HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\nx"
        client.transport.write(one + one)
        await eventually(lambda: client.received.count(b"HTTP/1.1 200") == 2, "two answers")
        self.assertEqual(self.resource.calls, [b"x", b"x"])
        self.clock.advance(5)
        await client.done
        self.assertEqual(client.received.count(b"HTTP/1.1"), 2)
        self.assertEqual(self.codes(), [])

    async def test_chunked_body_under_the_cap(self) -> None:
        self.start()
        client = await self.exchange(
            b"POST /voice/webhook HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
            b"Connection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        )
        self.assertEqual(client.status, 200)
        self.assertEqual(self.resource.calls, [b"hello"])


class BodyLimitTests(GuardTestCase):
    """Bodies over the cap get 413 and never reach the resource."""

    def assertRefused(self, client: RawClient, status: int, code: str) -> None:
        self.assertEqual(client.status, status, client.received)
        self.assertIn(b"Connection: close", client.received)
        self.assertEqual(self.resource.calls, [])
        self.assertEqual(self.codes(), [code])
        (event,) = [e for e in self.events if "log_code" in e]
        self.assertEqual((event["peer"], event["status"]), ("127.0.0.1", status))

    async def test_content_length_over_the_cap_answered_at_once(self) -> None:
        self.start()
        client = await self.connect()
        client.transport.write(
            b"POST /voice/webhook HTTP/1.1\r\nHost: h\r\nContent-Length: 1048576\r\n\r\n"
        )
        await eventually(lambda: client.status is not None, "an answer before the body")
        self.assertRefused(client, 413, codes.BODY_TOO_LARGE)
        self.assertEqual(self.codes(), [codes.BODY_TOO_LARGE])
        await client.done

    async def test_content_length_over_the_cap_with_the_body_sent(self) -> None:
        self.start()
        body = b"a" * (200 * 1024)
        client = await self.exchange(
            b"POST /voice/webhook HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % len(body)
            + body
        )
        self.assertRefused(client, 413, codes.BODY_TOO_LARGE)

    async def test_exactly_the_cap_is_accepted(self) -> None:
        self.start(WebLimits(max_body_bytes=10))
        client = await self.exchange(
            b"POST /voice/webhook HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n"
            b"Connection: close\r\n\r\n0123456789"
        )
        self.assertEqual(client.status, 200)

    async def test_chunked_body_over_the_cap(self) -> None:
        self.start(WebLimits(max_body_bytes=100))
        chunk = b"64\r\n" + b"b" * 100 + b"\r\n"
        client = await self.exchange(
            b"POST /voice/webhook HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
            + chunk * 3
            + b"0\r\n\r\n"
        )
        self.assertRefused(client, 413, codes.BODY_TOO_LARGE)


class DeadlineTests(GuardTestCase):
    """Slow clients cannot hold a connection."""

    async def test_slow_headers_get_408(self) -> None:
        self.start()
        client = await self.connect()
        partial = b"POST /voice/webhook HTTP/1.1\r\nHost: h\r\n"
        client.transport.write(partial)
        await self.arrived(len(partial), "partial headers at the server")
        self.clock.advance(4.9)
        self.assertTrue(client.open)
        self.clock.advance(0.1)
        await client.done
        self.assertEqual(client.status, 408)
        self.assertEqual(self.codes(), [codes.HEADER_TIMEOUT])
        self.assertEqual(self.resource.calls, [])

    async def test_slowloris_dribbling_is_cut_at_the_deadline(self) -> None:
        self.start()
        client = await self.connect()
        request = b"POST /voice/webhook HTTP/1.1\r\nHost: h\r\nX-Pad: aaaaaaaaaaaaaaaaaa"
        sent = 0
        for second in range(5):
            client.transport.write(request[sent : sent + 8])
            sent += 8
            await self.arrived(sent, f"byte {sent} at the server ({second})")
            self.clock.advance(1)
        await client.done
        self.assertEqual(client.status, 408)
        self.assertEqual(self.codes(), [codes.HEADER_TIMEOUT])

    async def test_idle_connection_closed_quietly(self) -> None:
        self.start()
        client = await self.connect()
        self.clock.advance(5)
        await client.done
        self.assertEqual(client.received, b"")
        self.assertEqual(self.codes(), [])

    async def test_slow_body_gets_408(self) -> None:
        self.start()
        client = await self.connect()
        headers = b"POST /voice/webhook HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\n"
        client.transport.write(headers + b"0123456789")
        await self.arrived(len(headers) + 10, "headers at the server")
        self.clock.advance(4.9)
        self.assertTrue(client.open)
        self.clock.advance(0.1)
        await client.done
        self.assertEqual(client.status, 408)
        self.assertEqual(self.codes(), [codes.BODY_TIMEOUT])
        self.assertEqual(self.resource.calls, [])
        self.assertEqual(self.site.in_flight.total(), 0)

    async def test_refused_client_dropped_after_the_linger(self) -> None:
        self.start()
        client = await self.connect()
        client.transport.write(
            b"POST /voice/webhook HTTP/1.1\r\nHost: h\r\nContent-Length: 999999\r\n\r\n"
        )
        await eventually(lambda: client.status == 413, "the 413")
        # A client that ignores our half-close cannot keep the socket either.
        client.transport.write(b"x" * 1000)
        self.clock.advance(2)
        await client.done
        self.assertEqual(self.codes(), [codes.BODY_TOO_LARGE])


class RateTests(GuardTestCase):
    """The per-peer token bucket."""

    async def test_burst_then_429_then_refill(self) -> None:
        self.start(WebLimits(rate=2, burst=3))
        for _ in range(3):
            self.assertEqual((await self.exchange(OK_REQUEST)).status, 200)
        refused = await self.exchange(OK_REQUEST)
        self.assertEqual(refused.status_line, b"HTTP/1.1 429 Too Many Requests")
        self.assertTrue(refused.received.endswith(b"\r\n\r\n429 Too Many Requests\n"))
        self.assertIn(b"Retry-After: 1\r\n", refused.received)
        self.assertEqual(self.codes(), [codes.RATE_LIMITED])
        self.assertEqual(len(self.resource.calls), 3)
        self.clock.advance(0.5)
        self.assertEqual((await self.exchange(OK_REQUEST)).status, 200)
        self.assertEqual(len(self.resource.calls), 4)

    async def test_a_burst_of_40_is_allowed(self) -> None:
        self.start(WebLimits(rate=20, burst=40))
        client = await self.connect()
        one = b"POST /voice/webhook HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\nx"
        client.transport.write(one * 41)
        await client.done
        self.assertEqual(client.received.count(b"HTTP/1.1 200"), 40)
        self.assertEqual(client.received.count(b"HTTP/1.1 429"), 1)
        self.assertEqual(len(self.resource.calls), 40)
        self.assertEqual(self.codes(), [codes.RATE_LIMITED])


class InFlightTests(GuardTestCase):
    """
    At most N requests per peer in flight: from the end of their headers to
    the end of their answer.  N are served, the next is refused.
    """

    async def hold(self, count: int) -> list[RawClient]:
        """C{count} requests held open by the resource, each on its own connection."""
        clients = []
        for _ in range(count):
            client = await self.connect()
            client.transport.write(OK_REQUEST)
            clients.append(client)
        await eventually(lambda: len(self.resource.held) == count, f"{count} held requests")
        return clients

    async def hold_one_more(self, held: int) -> None:
        """One more request, which must be admitted (C{held} are then held)."""
        client = await self.connect()
        client.transport.write(OK_REQUEST)
        await eventually(lambda: len(self.resource.held) == held, "one more request admitted")

    async def test_the_default_cap_at_its_boundary(self) -> None:
        self.start(hold=True)
        limit = WebLimits().max_in_flight_per_peer
        clients = await self.hold(limit)
        self.assertEqual(self.site.in_flight.count("127.0.0.1"), limit)
        refused = await self.exchange(OK_REQUEST)
        self.assertEqual(refused.status_line, b"HTTP/1.1 429 Too Many Requests")
        self.assertIn(b"Retry-After: 1\r\n", refused.received)
        (event,) = [e for e in self.events if "log_code" in e]
        self.assertEqual(
            (event["log_code"], event["status"], event["limit"], event["peer"]),
            (codes.TOO_MANY_IN_FLIGHT, 429, limit, "127.0.0.1"),
        )
        self.assertEqual(len(self.resource.calls), limit)
        self.assertEqual(self.site.in_flight.count("127.0.0.1"), limit)

        # One answer finished: exactly one more is let in, then the cap holds again.
        self.resource.held[0].write(b"done")
        self.resource.held[0].finish()
        await clients[0].done
        self.assertEqual(self.site.in_flight.count("127.0.0.1"), limit - 1)
        await self.hold_one_more(limit + 1)
        self.assertEqual((await self.exchange(OK_REQUEST)).status, 429)
        self.assertEqual(self.codes(), [codes.TOO_MANY_IN_FLIGHT] * 2)

    async def test_a_request_counts_from_its_headers_to_its_answer(self) -> None:
        self.start(WebLimits(max_in_flight_per_peer=1), hold=True)
        client = await self.connect()
        client.transport.write(OK_REQUEST[:30])
        await self.arrived(30, "part of the headers")
        self.assertEqual(self.site.in_flight.total(), 0)
        client.transport.write(OK_REQUEST[30:-3])
        await eventually(lambda: self.site.in_flight.total() == 1, "the headers counted")
        self.assertEqual(self.resource.calls, [])
        refused = await self.exchange(OK_REQUEST)
        self.assertEqual(refused.status, 429)
        client.transport.write(OK_REQUEST[-3:])
        await eventually(lambda: len(self.resource.held) == 1, "the body read")
        self.assertEqual(self.site.in_flight.total(), 1)
        self.resource.held[0].finish()
        await client.done
        self.assertEqual(self.site.in_flight.total(), 0)

    def test_defaults_fit_a_carriers_burst(self) -> None:
        limits = WebLimits()
        self.assertEqual(
            (limits.rate, limits.burst, limits.max_in_flight_per_peer), (100.0, 300, 32)
        )

    async def test_ninth_concurrent_request_is_refused(self) -> None:
        self.start(WebLimits(max_in_flight_per_peer=8), hold=True)
        clients = []
        for _ in range(8):
            client = await self.connect()
            client.transport.write(OK_REQUEST)
            clients.append(client)
        await eventually(lambda: len(self.resource.held) == 8, "eight held requests")
        ninth = await self.exchange(OK_REQUEST)
        self.assertEqual(ninth.status, 429)
        self.assertEqual(self.codes(), [codes.TOO_MANY_IN_FLIGHT])
        self.assertEqual(len(self.resource.calls), 8)

        self.resource.held[0].write(b"done")
        self.resource.held[0].finish()
        await clients[0].done
        tenth = await self.connect()
        tenth.transport.write(OK_REQUEST)
        await eventually(lambda: len(self.resource.held) == 9, "the tenth request admitted")

    async def test_dropped_client_gives_its_slot_back(self) -> None:
        self.start(WebLimits(max_in_flight_per_peer=1), hold=True)
        first = await self.connect()
        first.transport.write(OK_REQUEST)
        await eventually(lambda: len(self.resource.held) == 1, "the held request")
        self.assertEqual(self.site.in_flight.total(), 1)
        first.transport.loseConnection()
        await first.done
        await eventually(lambda: self.site.in_flight.total() == 0, "the slot given back")
        second = await self.connect()
        second.transport.write(OK_REQUEST)
        await eventually(lambda: len(self.resource.held) == 2, "a new request admitted")


class ConnectionCapTests(GuardTestCase):
    """A cap on open connections."""

    async def test_over_the_cap_gets_503(self) -> None:
        self.start(WebLimits(max_connections=2))
        first = await self.connect()
        await self.connect()
        await eventually(lambda: self.site.open_connections == 2, "two open connections")
        third = await self.exchange(OK_REQUEST)
        self.assertEqual(third.status, 503)
        self.assertEqual(self.codes(), [codes.TOO_MANY_CONNECTIONS])
        self.assertEqual(self.resource.calls, [])
        self.assertEqual(self.site.open_connections, 2)

        first.transport.loseConnection()
        await first.done
        await eventually(lambda: self.site.open_connections == 1, "one connection closed")
        self.assertEqual((await self.exchange(OK_REQUEST)).status, 200)


class MalformedTests(GuardTestCase):
    """Malformed HTTP is answered 4xx, never 5xx, and never reaches the resource."""

    async def test_table(self) -> None:
        self.start()
        long_line = b"X-Long: " + b"a" * 20000 + b"\r\n"
        table = [
            (b"GARBAGE\r\n\r\n", 400, codes.BAD_REQUEST),
            (b"POST /voice/webhook HTTP/1.1\r\nno colon here\r\n\r\n", 400, codes.BAD_REQUEST),
            (
                b"POST /voice/webhook HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
                400,
                codes.BAD_REQUEST,
            ),
            (
                b"POST /voice/webhook HTTP/1.1\r\nContent-Length: 1\r\n"
                b"Transfer-Encoding: chunked\r\n\r\nx",
                400,
                codes.BAD_REQUEST,
            ),
            (
                b"POST /voice/webhook HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
                400,
                codes.BAD_REQUEST,
            ),
            (
                b"POST /voice/webhook HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                400,
                codes.BAD_REQUEST,
            ),
            (b"POST /voice/webhook HTTP/1.1\r\nBad Name: x\r\n\r\n", 400, codes.BAD_REQUEST),
            (
                b"POST /voice/webhook HTTP/1.1\r\n" + long_line + b"\r\n",
                431,
                codes.HEADER_TOO_LARGE,
            ),
            (
                b"POST /voice/webhook HTTP/1.1\r\n" + b"X-A: b\r\n" * 600 + b"\r\n",
                400,
                codes.BAD_REQUEST,
            ),
        ]
        for number, (data, status, code) in enumerate(table):
            client = await self.exchange(data)
            self.assertEqual(client.status, status, data[:60])
            self.assertEqual(client.status_line, b"HTTP/1.1 %d %s" % (status, PHRASES[status]))
            self.assertEqual(self.codes()[number:], [code], data[:60])
        self.assertEqual(self.resource.calls, [])
        self.assertEqual(self.site.in_flight.total(), 0)

    async def test_odd_but_parsable_requests_are_4xx(self) -> None:
        self.start()
        for data in [
            b"POST /nowhere HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"POST /voice/webhook/../../x HTTP/1.1\r\nConnection: close\r\n\r\n",
        ]:
            client = await self.exchange(data)
            self.assertTrue(400 <= (client.status or 0) < 500, (data, client.received[:40]))


class EchoProtocol(WebSocketServerProtocol):
    """Echoes WebSocket messages; counts how often it was told the connection is gone."""

    lost = 0

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.sendMessage(payload, isBinary)

    def connectionLost(self, reason: Any) -> None:
        self.lost += 1
        super().connectionLost(reason)


class WebSocketTests(GuardTestCase):
    """A WebSocket upgrade takes the connection over cleanly."""

    async def test_upgrade_gives_back_its_slot_and_deadlines(self) -> None:
        factory = WebSocketServerFactory()
        factory.protocol = EchoProtocol
        self.start(resource=build_root({"/voice/stream": WebSocketResource(factory)}))
        client = await self.connect()
        client.transport.write(
            b"GET /voice/stream HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
        )
        await eventually(lambda: b"\r\n\r\n" in client.received, "the handshake answer")
        self.assertEqual(client.status, 101)
        self.assertEqual(self.site.in_flight.total(), 0)
        self.assertEqual(self.site.open_connections, 1)
        self.clock.advance(60)
        self.assertTrue(client.open)
        # A masked text frame "hi" comes back unmasked.
        mask = b"\x01\x02\x03\x04"
        payload = bytes(c ^ mask[i % 4] for i, c in enumerate(b"hi"))
        client.transport.write(b"\x81\x82" + mask + payload)
        await eventually(lambda: client.received.endswith(b"\x81\x02hi"), "the echo")
        client.transport.loseConnection()
        await client.done
        await eventually(lambda: self.site.open_connections == 0, "the connection counted out")
        self.assertEqual(self.codes(), [])

    async def upgraded(self, limits: WebLimits | None = None) -> tuple[RawClient, Any]:
        """A client whose upgrade was answered, and the server side's transport."""
        factory = WebSocketServerFactory()
        factory.protocol = EchoProtocol
        resource = build_root({"/voice/stream": WebSocketResource(factory)})
        self.start(limits, resource=resource)
        client = await self.connect()
        client.transport.write(
            b"GET /voice/stream HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
        )
        await eventually(lambda: b"\r\n\r\n" in client.received, "the handshake answer")
        return client, self.connections[-1].transport

    async def test_upgraded_socket_is_read_without_the_guard(self) -> None:
        client, transport = await self.upgraded()
        socket = transport.protocol
        self.assertIsInstance(socket, EchoProtocol)
        self.assertIs(socket.transport, transport)
        self.assertEqual(self.site.open_connections, 1)
        mask = b"\x01\x02\x03\x04"
        payload = bytes(c ^ mask[i % 4] for i, c in enumerate(b"hi"))
        client.transport.write(b"\x81\x82" + mask + payload)
        await eventually(lambda: client.received.endswith(b"\x81\x02hi"), "the echo")
        # The server ends it: still counted out, and the protocol is told once.
        socket.dropConnection(abort=True)
        await client.done
        await eventually(lambda: self.site.open_connections == 0, "the connection counted out")
        self.assertEqual(socket.lost, 1)

    async def test_upgraded_socket_counts_toward_the_cap(self) -> None:
        client, _ = await self.upgraded(WebLimits(max_connections=1))
        self.assertEqual((await self.exchange(OK_REQUEST)).status, 503)
        self.assertEqual(self.codes(), [codes.TOO_MANY_CONNECTIONS])
        client.transport.loseConnection()
        await client.done
        await eventually(lambda: self.site.open_connections == 0, "the connection counted out")
        self.assertEqual((await self.exchange(OK_REQUEST)).status, 404)


class BookkeepingTests(unittest.TestCase):
    """The token bucket and in-flight table on their own."""

    def test_bucket(self) -> None:
        clock = Clock()
        bucket = TokenBucket(rate=20, burst=40, clock=clock)
        self.assertEqual([bucket.take("a") for _ in range(40)], [0.0] * 40)
        self.assertAlmostEqual(bucket.take("a"), 0.05)
        self.assertEqual(bucket.take("b"), 0.0)
        clock.advance(0.05)
        self.assertEqual(bucket.take("a"), 0.0)
        clock.advance(100)
        self.assertEqual([bucket.take("a") for _ in range(40)], [0.0] * 40)
        self.assertGreater(bucket.take("a"), 0)

    def test_bucket_forgets_least_recent_keys(self) -> None:
        bucket = TokenBucket(rate=1, burst=1, clock=Clock(), max_keys=2)
        for key in "abc":
            bucket.take(key)
        self.assertEqual(len(bucket), 2)
        self.assertEqual(bucket.take("a"), 0.0)

    def test_every_refusal_has_its_reason_phrase(self) -> None:
        for status, phrase in PHRASES.items():
            self.assertEqual(reason_phrase(status), phrase, status)

    def test_retry_after(self) -> None:
        self.assertEqual([retry_after(w) for w in (0.01, 1.0, 1.2)], [1, 1, 2])

    def test_in_flight(self) -> None:
        table = InFlight(limit=2)
        self.assertEqual([table.acquire("p") for _ in range(3)], [True, True, False])
        table.release("p")
        self.assertTrue(table.acquire("p"))
        self.assertTrue(table.acquire("q"))
        self.assertEqual((table.count("p"), table.total()), (2, 3))
        for _ in range(5):
            table.release("p")
        self.assertEqual(table.count("p"), 0)

    def test_limits_must_be_positive(self) -> None:
        self.assertRaises(ValueError, WebLimits, rate=0)
        self.assertRaises(ValueError, WebLimits, max_body_bytes=-1)


class FuzzTests(unittest.TestCase):
    """Arbitrary bytes never get a 5xx from the guarded site, and never hang it."""

    @settings(max_examples=300, deadline=None)
    @given(
        head=st.sampled_from(
            [
                b"",
                b"POST /voice/webhook HTTP/1.1\r\n",
                b"GET / HTTP/1.0\r\n",
                b"POST * HTTP/1.1\r\n",
            ]
        ),
        junk=st.lists(
            st.one_of(
                st.binary(max_size=40),
                st.sampled_from(
                    [
                        b"\r\n",
                        b"Content-Length: 5\r\n",
                        b"Content-Length: 99999999\r\n",
                        b"Transfer-Encoding: chunked\r\n",
                        b"Host: h\r\n",
                        b"\r\n\r\n",
                        b"ffffffff\r\n",
                        b"0\r\n\r\n",
                    ]
                ),
            ),
            max_size=12,
        ),
    )
    def test_no_5xx(self, head: bytes, junk: list[bytes]) -> None:
        clock = Clock()
        site = GuardedSite(
            build_root({"/voice/webhook": Recorder()}),
            limits=WebLimits(max_body_bytes=1000),
            reactor=clock,
            logger=Logger(observer=lambda event: None),
        )
        transport = StringTransport(peerAddress=IPv4Address("TCP", "192.0.2.1", 1234))
        protocol = site.buildProtocol(None)
        protocol.makeConnection(transport)
        for piece in [head, *junk]:
            protocol.dataReceived(piece)
        clock.advance(10)
        for status in re.findall(rb"HTTP/1\.[01] (\d{3})", transport.value()):
            self.assertLess(int(status), 500, transport.value()[:200])
        if not transport.disconnecting:
            protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(site.in_flight.total(), 0)
