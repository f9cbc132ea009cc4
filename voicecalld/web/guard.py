"""
A C{twisted.web} site that enforces L{WebLimits} on every connection.

L{GuardedSite} is a drop-in replacement for C{Site}: same resource tree,
same requests, plus

 - a body cap: a C{Content-Length} over the cap is answered 413 at once,
   before any of the body is read; a chunked body is cut off (413) as soon
   as it passes the cap;
 - a header deadline (from connect, or from the end of the previous
   response, to the end of the headers) and a body deadline: 408, so a
   slowloris client cannot hold a connection; an idle keep-alive connection
   is simply closed at the header deadline;
 - a per-peer token bucket (429 with C{Retry-After}) and a per-peer cap on
   requests in flight, from the end of their headers to the end of their
   answer (429 beyond the cap);
 - a cap on open connections, WebSockets included (503);
 - malformed HTTP answered 400 (431 for an over-long header line).

Every refusal is decided before the resource runs, answered with
C{Connection: close}, and logged as exactly one event carrying a stable
C{log_code}, the peer and the status (never a body, URI or header value).
The refused client's remaining data is read and discarded for a short
linger so that it sees our answer rather than a connection reset.

WebSocket upgrades (Autobahn's C{WebSocketResource}) work as with a plain
site: once the socket is taken over, its request slot is given back and
its deadlines are cancelled; the connection still counts until it closes.
"""

from __future__ import annotations

from collections import Counter
from io import BytesIO
from typing import Any

from twisted.internet.interfaces import ISSLTransport, ITCPTransport
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper
from twisted.web import http, server
from zope.interface import directlyProvides, providedBy

from voicecalld.web.limits import (
    BAD_REQUEST,
    BODY_TIMEOUT,
    BODY_TOO_LARGE,
    HEADER_TIMEOUT,
    HEADER_TOO_LARGE,
    RATE_LIMITED,
    TOO_MANY_CONNECTIONS,
    TOO_MANY_IN_FLIGHT,
    InFlight,
    TokenBucket,
    WebLimits,
    retry_after,
)

_log = Logger(namespace="voicecalld.web.guard")


# RFC 6585's codes, which twisted.web's table of reason phrases lacks.
_PHRASES = {429: b"Too Many Requests", 431: b"Request Header Fields Too Large"}


def reason_phrase(status: int) -> bytes:
    """The reason phrase our refusals carry in their status line for C{status}."""
    return _PHRASES.get(status) or http.RESPONSES.get(status, b"Error")


def _refusal(status: int, headers: dict[str, str] | None = None) -> bytes:
    phrase = reason_phrase(status).decode("ascii")
    body = f"{status} {phrase}\n".encode("ascii")
    lines = [
        f"HTTP/1.1 {status} {phrase}",
        "Content-Type: text/plain; charset=utf-8",
        f"Content-Length: {len(body)}",
        "Connection: close",
    ]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + body


def _peer_of(transport: Any) -> str:
    address = transport.getPeer() if transport is not None else None
    host = getattr(address, "host", None)
    return host if isinstance(host, str) and host else "local"


def _close_after_answer(transport: Any, call_later: Any, linger: float) -> Any:
    """
    Close C{transport} once our answer is out: half-close and drain for up to
    C{linger} seconds (plain TCP), else close.  Returns the drain deadline.
    """
    if ITCPTransport.providedBy(transport) and not ISSLTransport.providedBy(transport):
        resume = getattr(transport, "resumeProducing", None)
        if resume is not None:
            resume()
        transport.loseWriteConnection()
        abort = getattr(transport, "abortConnection", transport.loseConnection)
        return call_later(linger, abort)
    transport.loseConnection()
    return None


class GuardedRequest(server.Request):
    """A request whose body lives in memory and is cut off past the cap."""

    _guard_slot = False
    _body_bytes = 0

    def gotLength(self, length: int | None) -> None:
        # Bodies are capped, so never spool them to a temporary file.
        self.content = BytesIO()

    def handleContentChunk(self, data: bytes) -> None:
        channel = self.channel
        if isinstance(channel, GuardedChannel):
            if channel.refused:
                return
            self._body_bytes += len(data)
            limit = channel.site.limits.max_body_bytes
            if self._body_bytes > limit:
                channel.refuse(
                    BODY_TOO_LARGE,
                    413,
                    f"chunked body passed the {limit}-byte limit",
                    limit=limit,
                )
                return
        self.content.write(data)


class GuardedChannel(http.HTTPChannel):
    """An C{HTTPChannel} that applies its L{GuardedSite}'s limits."""

    site: GuardedSite
    refused = False
    _peer = "local"
    _awaiting_headers = False
    _partial = False
    _slots = 0
    _header_call: Any = None
    _body_call: Any = None
    _linger_call: Any = None

    # Deadlines.

    def connectionMade(self) -> None:
        super().connectionMade()
        self._peer = _peer_of(self.transport)
        self._await_request()

    def _await_request(self) -> None:
        self._awaiting_headers = True
        self._partial = False
        self._cancel("_header_call")
        self._header_call = self.callLater(self.site.limits.header_timeout, self._header_deadline)

    def _cancel(self, name: str) -> None:
        call = getattr(self, name)
        setattr(self, name, None)
        if call is not None and call.active():
            call.cancel()

    def _cancel_deadlines(self) -> None:
        self._cancel("_header_call")
        self._cancel("_body_call")

    def _header_deadline(self) -> None:
        self._header_call = None
        if self._partial:
            timeout = self.site.limits.header_timeout
            self.refuse(HEADER_TIMEOUT, 408, f"headers not complete within {timeout:g} s")
        elif self.transport is not None:
            # An idle keep-alive connection: nothing to answer.
            self.loseConnection()

    def _body_deadline(self) -> None:
        self._body_call = None
        timeout = self.site.limits.body_timeout
        self.refuse(BODY_TIMEOUT, 408, f"body not complete within {timeout:g} s")

    # Parsing hooks.

    def dataReceived(self, data: bytes) -> None:
        if self.refused:
            return
        if self._awaiting_headers and data:
            self._partial = True
        super().dataReceived(data)

    def lineReceived(self, line: bytes) -> None:
        if not self.refused:
            super().lineReceived(line)

    def rawDataReceived(self, data: bytes) -> None:
        if not self.refused:
            super().rawDataReceived(data)

    def lineLengthExceeded(self, line: bytes) -> None:
        self.refuse(HEADER_TOO_LARGE, 431, f"a header line is over {self.MAX_LENGTH} bytes")

    def _respondToBadRequestAndDisconnect(self) -> None:
        self.refuse(BAD_REQUEST, 400, "malformed HTTP request")

    def allHeadersReceived(self) -> None:
        if self.refused:
            return
        self._awaiting_headers = False
        self._cancel("_header_call")
        site = self.site
        limits = site.limits
        wait = site.bucket.take(self._peer)
        if wait:
            seconds = retry_after(wait)
            self.refuse(
                RATE_LIMITED,
                429,
                f"over {limits.rate:g} requests/s (burst {limits.burst})",
                {"Retry-After": str(seconds)},
                retry_after=seconds,
            )
            return
        if self.length is not None and self.length > limits.max_body_bytes:
            self.refuse(
                BODY_TOO_LARGE,
                413,
                f"Content-Length {self.length} is over the {limits.max_body_bytes}-byte limit",
                content_length=self.length,
                limit=limits.max_body_bytes,
            )
            return
        if not site.in_flight.acquire(self._peer):
            limit = limits.max_in_flight_per_peer
            self.refuse(
                TOO_MANY_IN_FLIGHT,
                429,
                f"already {limit} requests in flight",
                {"Retry-After": "1"},
                limit=limit,
            )
            return
        self.requests[-1]._guard_slot = True
        self._slots += 1
        super().allHeadersReceived()
        if self.length != 0 and not self.refused:
            self._body_call = self.callLater(limits.body_timeout, self._body_deadline)

    def allContentReceived(self) -> None:
        if self.refused:
            return
        self._cancel("_body_call")
        super().allContentReceived()

    def requestDone(self, request: Any) -> None:
        if getattr(request, "_guard_slot", False):
            request._guard_slot = False
            self._slots -= 1
            self.site.in_flight.release(self._peer)
        if self.persistent and not self.refused:
            self._await_request()
        super().requestDone(request)

    # Ends.

    def release_all(self) -> None:
        """Give back every request slot this connection holds (idempotent)."""
        for request in self.requests:
            request._guard_slot = False
        while self._slots > 0:
            self._slots -= 1
            self.site.in_flight.release(self._peer)

    def detached(self) -> None:
        """The connection was taken over (a WebSocket upgrade): stop guarding it."""
        self._cancel_deadlines()
        self.release_all()

    def connectionLost(self, reason: Any) -> None:
        self._cancel_deadlines()
        self._cancel("_linger_call")
        self.release_all()
        super().connectionLost(reason)

    def refuse(
        self,
        code: str,
        status: int,
        why: str,
        headers: dict[str, str] | None = None,
        **fields: Any,
    ) -> None:
        """Answer C{status}, log one C{code} event, and close the connection."""
        if self.refused:
            return
        self.refused = True
        self._cancel_deadlines()
        self.release_all()
        self.site.log_refusal(code, self._peer, status, why, **fields)
        transport = self.transport
        if transport is None:
            return
        transport.write(_refusal(status, headers))
        producer = getattr(self, "_networkProducer", None)
        if producer is not None:
            producer.unregisterProducer()
        self._linger_call = _close_after_answer(transport, self.callLater, self.site.limits.linger)


class _Connection(ProtocolWrapper):
    """
    Counts one open connection and stands between the transport and the
    channel, so that it notices when a WebSocket takes the connection over.
    """

    factory: GuardedSite
    _refused = False
    _counted = False
    _linger_call: Any = None

    def __init__(self, site: GuardedSite, channel: GuardedChannel) -> None:
        self._channel = channel
        self._wrapped: Any = None
        super().__init__(site, channel)

    @property
    def wrappedProtocol(self) -> Any:
        return self._wrapped

    @wrappedProtocol.setter
    def wrappedProtocol(self, value: Any) -> None:
        previous, self._wrapped = self._wrapped, value
        if previous is self._channel and value is not None and value is not previous:
            self._channel.detached()

    def makeConnection(self, transport: Any) -> None:
        directlyProvides(self, providedBy(transport))
        Protocol.makeConnection(self, transport)
        site = self.factory
        limit = site.limits.max_connections
        if site.open_connections >= limit:
            self._refused = True
            site.log_refusal(
                TOO_MANY_CONNECTIONS,
                _peer_of(transport),
                503,
                f"already {limit} open connections",
                limit=limit,
            )
            transport.write(_refusal(503, {"Retry-After": "1"}))
            self._linger_call = _close_after_answer(
                self, site.reactor.callLater, site.limits.linger
            )
            return
        site.open_connections += 1
        self._counted = True
        self._channel.makeConnection(self)

    def dataReceived(self, data: bytes) -> None:
        if not self._refused:
            self._wrapped.dataReceived(data)

    def connectionLost(self, reason: Any) -> None:
        if self._linger_call is not None and self._linger_call.active():
            self._linger_call.cancel()
        if self._counted:
            self._counted = False
            self.factory.open_connections -= 1
        wrapped, self._wrapped = self._wrapped, None
        if not self._refused:
            self._channel.release_all()
            if wrapped is not None:
                wrapped.connectionLost(reason)


class GuardedSite(server.Site):
    """
    A C{Site} with input limits; use it wherever a plain C{Site} would go.

    @param reactor: provides C{callLater} and C{seconds} for the deadlines and
        the rate limiter (a C{Clock} in tests); the global reactor by default.
    @param logger: where refusals are logged (tests pass their own).
    """

    protocol = GuardedChannel  # type: ignore[assignment]
    requestFactory = GuardedRequest
    displayTracebacks = False

    def __init__(
        self,
        resource: Any,
        *,
        limits: WebLimits | None = None,
        reactor: Any = None,
        logger: Logger | None = None,
        **kwargs: Any,
    ) -> None:
        # Each carrier's dialect parses its own body: Twisted's parse into
        # request.args (a MIME parse of Content-Type, a second form parse) is waste.
        kwargs.setdefault("parsePOSTFormSubmission", False)
        super().__init__(resource, reactor=reactor, **kwargs)
        self.limits = limits if limits is not None else WebLimits()
        self.bucket = TokenBucket(
            self.limits.rate, self.limits.burst, self.reactor, self.limits.max_tracked_peers
        )
        self.in_flight = InFlight(self.limits.max_in_flight_per_peer)
        self.open_connections = 0
        # Refusals by log code, for metrics.
        self.refusals: Counter[str] = Counter()
        self.guard_log = logger if logger is not None else _log

    def buildProtocol(self, addr: Any) -> Any:
        return _Connection(self, super().buildProtocol(addr))

    def acceptableProtocols(self) -> list[bytes]:
        return [b"http/1.1"]

    def log(self, request: Any) -> None:
        """No access log: voicecalld logs its own events."""

    def log_refusal(self, code: str, peer: str, status: int, why: str, **fields: Any) -> None:
        """Log one refusal: its stable C{log_code}, the peer and the status."""
        self.refusals[code] += 1
        self.guard_log.warn(
            "refused a webhook request from {peer}: {why} (HTTP {status})",
            log_code=code,
            peer=peer,
            status=status,
            why=why,
            **fields,
        )
