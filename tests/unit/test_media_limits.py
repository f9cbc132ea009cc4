"""
The media-socket limits, each hit from a real autobahn WebSocket client on
127.0.0.1: the pre-start deadline, stream tokens, pending and total socket
caps, the message-size cap, malformed frames, and send backpressure.

Sockets against the daemon's own wiring use the Twilio rig of
C{test_twilio}; sockets that need exact timing use a stream factory alone
on 127.0.0.1 whose start deadline runs on a L{Clock}.
"""

from __future__ import annotations

import json
import re
import socket
from typing import Any

from attrs import evolve
from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import TestCase

from tests.unit.test_twilio import Rig
from tests.waiting import autobahn_settled, wait_for
from voicecalld.media.tokens import TOKEN_LIFETIME, StreamTokens
from voicecalld.media.twilio_stream import StreamLimits, TwilioMediaStream, TwilioStreamFactory
from voicecalld.values.states import CallState
from voicecalld.web.guard import GuardedSite
from voicecalld.web.site import build_root

PATH = "/voice/stream"
ACCOUNT = "AC" + "1" * 32
OTHER_SID = "CA" + "f" * 32
CAP = 64 * 1024


def within(d: Deferred, timeout: float = 10.0) -> Deferred:
    """A copy of C{d}'s result that fails if it takes longer than C{timeout}."""
    out: Deferred = Deferred()

    def fire(result: Any) -> Any:
        if not out.called:
            out.callback(result)
        return result

    d.addBoth(fire)
    out.addTimeout(timeout, reactor)
    return out


def start_message(token: Any, call_sid: str = "CA" + "2" * 32) -> dict[str, Any]:
    """A Twilio C{start} message carrying C{token} as its C{<Parameter>}."""
    return {
        "event": "start",
        "sequenceNumber": "1",
        "streamSid": "MZ" + "3" * 32,
        "start": {
            "streamSid": "MZ" + "3" * 32,
            "accountSid": ACCOUNT,
            "callSid": call_sid,
            "tracks": ["inbound"],
            "customParameters": {"token": token},
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        },
    }


class StreamClient(WebSocketClientProtocol):
    """Twilio's end of a media socket, as far as these tests need it."""

    def __init__(self) -> None:
        super().__init__()
        self.handshake: Deferred = Deferred()
        self.closed: Deferred = Deferred()
        self.messages: list[dict[str, Any]] = []
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self._waiting: list[Deferred] = []

    def onOpen(self) -> None:
        self.handshake.callback(True)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.messages.append(json.loads(payload))
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(self.messages[-1])

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.close_code, self.close_reason = code, reason
        if not self.handshake.called:
            self.handshake.callback(False)
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(None)
        self.closed.callback((code, reason))

    def send_json(self, message: Any) -> None:
        """Send one JSON text frame."""
        self.sendMessage(json.dumps(message).encode(), isBinary=False)

    def next_message(self) -> Deferred:
        """Fires with the next message from the server (None if the socket closes first)."""
        d: Deferred = Deferred()
        self._waiting.append(d)
        return within(d)

    @property
    def refused_status(self) -> int | None:
        """The HTTP status of a refused upgrade."""
        found = re.search(r"upgrade failed \[(\d{3})\]", self.close_reason or "")
        return int(found.group(1)) if found else None


class Sockets:
    """Opens client sockets for one test and closes whatever is left at its end."""

    def __init__(self, test: TestCase, port: int) -> None:
        self.port = port
        self.clients: list[StreamClient] = []
        test.addCleanup(self.close_all)

    @inlineCallbacks
    def connect(self, bind: str = "127.0.0.1"):
        """A client socket from C{bind}; fires once its upgrade was answered."""
        factory = WebSocketClientFactory(f"ws://127.0.0.1:{self.port}{PATH}")
        factory.protocol = StreamClient
        factory.setProtocolOptions(openHandshakeTimeout=5, closeHandshakeTimeout=2)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.port, 5, (bind, 0))
        client = yield endpoint.connect(factory)
        self.clients.append(client)
        yield within(client.handshake)
        return client

    @inlineCallbacks
    def open(self, bind: str = "127.0.0.1"):
        """A client socket that must be accepted."""
        client = yield self.connect(bind)
        if not client.handshake.result:
            raise AssertionError(f"upgrade refused: {client.close_reason}")
        return client

    @inlineCallbacks
    def close_all(self):
        for client in self.clients:
            if client.state == client.STATE_OPEN:
                client.sendClose(1000)
        for client in self.clients:
            yield within(client.closed)


class Recorder:
    """A started stream's handler: records what arrives and answers dtmf with a mark."""

    def __init__(self, stream: TwilioMediaStream) -> None:
        self.stream = stream
        self.audio = bytearray()
        self.dtmf_digits: list[str] = []
        self.marks: list[str] = []
        self.stops: list[str] = []

    def media(self, audio: bytes) -> None:
        self.audio += audio

    def dtmf(self, digit: str) -> None:
        self.dtmf_digits.append(digit)
        self.stream.send_mark(f"pong-{digit}")

    def mark(self, name: str) -> None:
        self.marks.append(name)

    def stopped(self, reason: str) -> None:
        self.stops.append(reason)


class CountingStream(TwilioMediaStream):
    """Our stream protocol, counting the messages it was given (to know it has seen them)."""

    seen = 0

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.seen += 1
        super().onMessage(payload, isBinary)


class StreamServer:
    """
    Our media-stream endpoint alone on 127.0.0.1 behind the daemon's guarded
    site, its start deadline on a L{Clock}; tokens starting with "good" are
    accepted once each.
    """

    def __init__(self, test: TestCase, limits: StreamLimits | None = None) -> None:
        self.test = test
        self.clock = Clock()
        self.factory = TwilioStreamFactory(self.clock, limits or StreamLimits(), self._on_start)
        self.factory.protocol = CountingStream
        self.handlers: list[Recorder] = []
        self.used: set[str] = set()
        self._tokens = 0

    def _on_start(self, stream: TwilioMediaStream, start: dict[str, Any]) -> Any:
        token = (start.get("customParameters") or {}).get("token")
        if not isinstance(token, str) or not token.startswith("good") or token in self.used:
            return "Unknown call"
        self.used.add(token)
        handler = Recorder(stream)
        self.handlers.append(handler)
        return handler

    def token(self) -> str:
        """A token this server accepts (once)."""
        self._tokens += 1
        return f"good-{self._tokens}"

    @inlineCallbacks
    def listen(self):
        site = GuardedSite(build_root({PATH: WebSocketResource(self.factory)}), reactor=reactor)
        self.port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(site)
        self.test.addCleanup(self._quiesce)
        self.sockets = Sockets(self.test, self.port.getHost().port)
        return self

    @inlineCallbacks
    def _quiesce(self):
        yield self.port.stopListening()
        yield wait_for(lambda: not self.factory.open and not self.factory.pending)
        yield autobahn_settled()

    @inlineCallbacks
    def started(self, bind: str = "127.0.0.1"):
        """A client socket whose start was accepted, and the server's handler for it."""
        client = yield self.sockets.open(bind)
        client.send_json(start_message(self.token()))
        yield self.ping(client, "0")
        return client, self.handlers[-1]

    @inlineCallbacks
    def ping(self, client: StreamClient, digit: str):
        """Round trip through a started stream: everything sent before has been handled."""
        client.send_json({"event": "dtmf", "streamSid": "MZ", "dtmf": {"digit": digit}})
        message = yield client.next_message()
        if message != {
            "event": "mark",
            "streamSid": "MZ" + "3" * 32,
            "mark": {"name": f"pong-{digit}"},
        }:
            raise AssertionError(f"expected the pong for {digit}, got {message!r}")


class PreStartTimeout(TestCase):
    """A socket that sends no valid start within the deadline is closed with 1008."""

    timeout = 30

    @inlineCallbacks
    def test_silent_socket_is_closed_at_the_deadline(self):
        server = yield StreamServer(self, StreamLimits(pre_start_timeout=5.0)).listen()
        client = yield server.sockets.open()
        (stream,) = server.factory.open
        server.clock.advance(4.999)
        self.assertEqual(stream.state, stream.STATE_OPEN)
        server.clock.advance(0.001)
        self.assertEqual(stream.localCloseCode, 1008)
        code, reason = yield within(client.closed)
        self.assertEqual((code, reason), (1008, "Start timeout"))
        yield wait_for(lambda: not server.factory.open)
        self.assertEqual(server.factory.pending, {})

    @inlineCallbacks
    def test_connected_and_early_media_do_not_count_as_a_start(self):
        server = yield StreamServer(self).listen()
        client = yield server.sockets.open()
        client.send_json({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        client.send_json({"event": "media", "media": {"payload": "fw=="}})
        client.send_json({"event": "dtmf", "dtmf": {"digit": "1"}})
        (stream,) = server.factory.open
        yield wait_for(lambda: stream.seen == 3)
        server.clock.advance(4.999)
        self.assertEqual(stream.state, stream.STATE_OPEN)
        server.clock.advance(0.001)
        self.assertEqual((yield within(client.closed)), (1008, "Start timeout"))
        self.assertEqual(server.handlers, [])

    @inlineCallbacks
    def test_a_valid_start_cancels_the_deadline(self):
        server = yield StreamServer(self).listen()
        client, handler = yield server.started()
        self.assertEqual(server.clock.getDelayedCalls(), [])
        server.clock.advance(60)
        yield server.ping(client, "5")
        self.assertEqual(client.state, client.STATE_OPEN)
        self.assertEqual(server.factory.pending, {})
        self.assertEqual(handler.dtmf_digits, ["0", "5"])

    @inlineCallbacks
    def test_configured_deadline_closes_sockets_of_the_daemon(self):
        rig = yield Rig(
            self, {"streaming": {"enabled": True, "preStartTimeoutMs": 200}}, True
        ).start()
        self.assertEqual(rig.provider.stream_factory.limits.pre_start_timeout, 0.2)
        sockets = Sockets(self, rig.port.getHost().port)
        client = yield sockets.open()
        opened = reactor.seconds()
        self.assertEqual((yield within(client.closed)), (1008, "Start timeout"))
        self.assertGreaterEqual(reactor.seconds() - opened, 0.15)


class StartTokens(TestCase):
    """Unknown, reused, expired and misdirected tokens close with 1008 and change nothing."""

    timeout = 30

    @inlineCallbacks
    def live_call(self):
        """A conversation call with its stream up and its greeting played."""
        rig = yield Rig(self, {}, True).start()
        record = yield rig.initiate("Hello.", "conversation")
        call = yield rig.fake.when_call(0)
        yield call.answer()
        stream = yield call.when_stream()
        yield stream.when_mark_echoed("u1:end")
        yield wait_for(lambda: rig.manager.live_calls()[0].state == CallState.LISTENING)
        self.sockets = Sockets(self, rig.port.getHost().port)
        return rig, record, stream

    @inlineCallbacks
    def assert_refused(self, rig, record, stream, message, code=1008, reason="Unknown call"):
        """Present C{message} on a new socket: closed with C{code}, no change to the call."""
        before = yield rig.record(record.call_id)
        notices = len(rig.notices)
        media = rig.provider._calls[record.call_id].media
        client = yield self.sockets.open()
        client.send_json({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        client.send_json(message)
        self.assertEqual((yield within(client.closed)), (code, reason))
        self.assertEqual((yield rig.record(record.call_id)), before)
        self.assertEqual(rig.manager.live_calls()[0].state, CallState.LISTENING)
        self.assertEqual(len(rig.notices), notices)
        self.assertIs(rig.provider._calls[record.call_id].media, media)
        self.assertIsNone(stream.closed_by)
        self.assertEqual(rig.provider.stream_factory.pending, {})
        self.assertEqual(self.flushLoggedErrors(), [])

    @inlineCallbacks
    def test_unknown_token(self):
        rig, record, stream = yield self.live_call()
        yield self.assert_refused(
            rig, record, stream, start_message("made-up", record.provider_call_id)
        )

    @inlineCallbacks
    def test_missing_token(self):
        rig, record, stream = yield self.live_call()
        message = start_message(None, record.provider_call_id)
        del message["start"]["customParameters"]
        yield self.assert_refused(rig, record, stream, message)

    @inlineCallbacks
    def test_reused_token(self):
        rig, record, stream = yield self.live_call()
        token = stream.parameters["token"]
        yield self.assert_refused(
            rig, record, stream, start_message(token, record.provider_call_id)
        )

    @inlineCallbacks
    def test_expired_token(self):
        rig, record, stream = yield self.live_call()
        clock = Clock()
        tokens = rig.provider.tokens = StreamTokens(clock)
        token = tokens.issue(record.call_id, record.provider_call_id)
        clock.advance(TOKEN_LIFETIME - 1)
        fresh = tokens.issue(record.call_id, record.provider_call_id)
        clock.advance(1)
        yield self.assert_refused(
            rig, record, stream, start_message(token, record.provider_call_id)
        )
        # Only its age was wrong: one issued a second later is still good.
        self.assertIsNotNone(tokens.claim(fresh, record.provider_call_id))

    @inlineCallbacks
    def test_token_of_another_call_sid(self):
        rig, record, stream = yield self.live_call()
        token = rig.provider.tokens.issue(record.call_id, record.provider_call_id)
        yield self.assert_refused(rig, record, stream, start_message(token, OTHER_SID))
        # The token was spent by the attempt: its own call cannot use it now.
        yield self.assert_refused(
            rig, record, stream, start_message(token, record.provider_call_id)
        )

    @inlineCallbacks
    def test_token_of_the_wrong_type(self):
        rig, record, stream = yield self.live_call()
        token = rig.provider.tokens.issue(record.call_id, record.provider_call_id)
        for wrong in ([token], {"token": token}, 7):
            yield self.assert_refused(
                rig,
                record,
                stream,
                start_message(wrong, record.provider_call_id),
                1007,
                "malformed start message",
            )

    @inlineCallbacks
    def test_a_start_pipelined_after_a_refused_one_is_ignored(self):
        rig, record, stream = yield self.live_call()
        token = rig.provider.tokens.issue(record.call_id, record.provider_call_id)
        client = yield self.sockets.open()
        client.send_json(start_message("made-up", record.provider_call_id))
        client.send_json(start_message(token, record.provider_call_id))
        self.assertEqual((yield within(client.closed)), (1008, "Unknown call"))
        self.assertIsNone(stream.closed_by)
        # The good token was never presented to the provider, so it is still unspent.
        self.assertIsNotNone(rig.provider.tokens.claim(token, record.provider_call_id))


class SocketCaps(TestCase):
    """Too many pending or open sockets are refused at the handshake; the others carry on."""

    timeout = 30

    @inlineCallbacks
    def test_pending_sockets_per_peer_and_in_total(self):
        limits = StreamLimits(max_pending=3, max_pending_per_peer=2, max_connections=10)
        server = yield StreamServer(self, limits).listen()
        sockets = server.sockets
        first = yield sockets.open("127.0.0.1")
        second = yield sockets.open("127.0.0.1")
        refused = yield sockets.connect("127.0.0.1")
        self.assertFalse(refused.handshake.result)
        self.assertEqual(refused.refused_status, 429)
        self.assertIn("too many pending media streams", refused.close_reason)
        other = yield sockets.open("127.0.0.2")
        self.assertEqual(server.factory.pending, {"127.0.0.1": 2, "127.0.0.2": 1})
        refused = yield sockets.connect("127.0.0.3")
        self.assertEqual(refused.refused_status, 429)
        # The waiting sockets were not disturbed and can still start.
        for client in (first, second, other):
            self.assertEqual(client.state, client.STATE_OPEN)
            client.send_json(start_message(server.token()))
            yield server.ping(client, "1")
        self.assertEqual(server.factory.pending, {})
        yield sockets.open("127.0.0.1")
        yield sockets.open("127.0.0.3")
        self.assertEqual(self.flushLoggedErrors(), [])

    @inlineCallbacks
    def test_open_sockets_over_max_connections(self):
        limits = StreamLimits(max_pending=10, max_pending_per_peer=10, max_connections=3)
        server = yield StreamServer(self, limits).listen()
        streams = []
        for _ in range(3):
            streams.append((yield server.started()))
        refused = yield server.sockets.connect("127.0.0.2")
        self.assertEqual(refused.refused_status, 503)
        self.assertIn("too many media streams", refused.close_reason)
        for n, (client, handler) in enumerate(streams):
            client.send_json({"event": "media", "media": {"payload": "fn5+"}})
            yield server.ping(client, str(n))
            self.assertEqual(bytes(handler.audio), b"\x7e\x7e\x7e")
        first, _handler = streams[0]
        first.sendClose(1000)
        yield within(first.closed)
        yield wait_for(lambda: len(server.factory.open) == 2)
        yield server.started()

    @inlineCallbacks
    def test_configured_caps_refuse_sockets_of_the_daemon(self):
        rig = yield Rig(
            self,
            {"streaming": {"enabled": True, "maxPendingConnectionsPerIp": 1, "maxConnections": 2}},
            True,
        ).start()
        sockets = Sockets(self, rig.port.getHost().port)
        waiting = yield sockets.open("127.0.0.1")
        refused = yield sockets.connect("127.0.0.1")
        self.assertEqual(refused.refused_status, 429)
        yield sockets.open("127.0.0.2")
        refused = yield sockets.connect("127.0.0.3")
        self.assertEqual(refused.refused_status, 503)
        self.assertEqual(waiting.state, waiting.STATE_OPEN)


class MessageLimits(TestCase):
    """Over-size, binary and malformed messages close with 1009, 1003 and 1007, quietly."""

    timeout = 60

    def media(self, payload: Any) -> dict[str, Any]:
        return {"event": "media", "streamSid": "MZ", "media": {"payload": payload}}

    def exactly(self, size: int) -> bytes:
        """A valid media message of exactly C{size} bytes (audio plus padding)."""
        message = self.media("fn5+" * ((size - 200) // 4))
        message["pad"] = ""
        message["pad"] = "x" * (size - len(json.dumps(message)))
        data = json.dumps(message).encode()
        self.assertEqual(len(data), size)
        return data

    @inlineCallbacks
    def closing(self, server: StreamServer, started: bool, send):
        """Open a socket (started or not), C{send} on it, and return the close code."""
        already = len(server.factory.open)
        if started:
            client, handler = yield server.started()
        else:
            client, handler = (yield server.sockets.open()), None
        send(client)
        code, _reason = yield within(client.closed)
        yield wait_for(lambda: len(server.factory.open) == already)
        if handler is not None:
            self.assertEqual(len(handler.stops), 1)
        self.assertEqual(server.factory.pending, {})
        self.assertEqual(self.flushLoggedErrors(), [])
        return code

    @inlineCallbacks
    def test_message_size_cap(self):
        server = yield StreamServer(self).listen()
        client, handler = yield server.started()
        client.sendMessage(self.exactly(CAP), isBinary=False)
        yield server.ping(client, "1")
        self.assertEqual(len(handler.audio), (CAP - 200) // 4 * 3)
        for started in (True, False):
            code = yield self.closing(
                server, started, lambda c: c.sendMessage(self.exactly(CAP + 1), isBinary=False)
            )
            self.assertEqual(code, 1009)
            fragmented = json.dumps(self.media("A" * (CAP + 4))).encode()
            code = yield self.closing(
                server,
                started,
                lambda c, data=fragmented: c.sendMessage(data, isBinary=False, fragmentSize=4096),
            )
            self.assertEqual(code, 1009)

    @inlineCallbacks
    def test_binary_frames(self):
        server = yield StreamServer(self).listen()
        for started in (True, False):
            code = yield self.closing(
                server, started, lambda c: c.sendMessage(b'{"event":"media"}', isBinary=True)
            )
            self.assertEqual(code, 1003)

    @inlineCallbacks
    def test_malformed_json(self):
        server = yield StreamServer(self).listen()
        for started in (True, False):
            for data in (
                b'{"event": "media", ',
                b"[1, 2, 3]",
                b'"start"',
                b"42",
                b"null",
                b'{"no event": true}',
                b'{"event": "\xff\xfe"}',
                b"[" * 40_000,
                b'{"event": "x", "n": ' + b"9" * 5000 + b"}",
            ):
                code = yield self.closing(
                    server, started, lambda c, data=data: c.sendMessage(data, isBinary=False)
                )
                self.assertEqual(code, 1007, data[:40])

    @inlineCallbacks
    def test_malformed_start(self):
        server = yield StreamServer(self).listen()
        for start in ([1], "x", None, 7):
            code = yield self.closing(
                server, False, lambda c, s=start: c.send_json({"event": "start", "start": s})
            )
            self.assertEqual(code, 1007, start)
        for parameters in ([1], "token", {"token": ["good-x"]}, {"token": {"a": 1}}):
            message = start_message("good")
            message["start"]["customParameters"] = parameters
            code = yield self.closing(server, False, lambda c, m=message: c.send_json(m))
            self.assertEqual(code, 1007, parameters)
        self.assertEqual(server.handlers, [])

    @inlineCallbacks
    def test_malformed_media_dtmf_and_mark(self):
        server = yield StreamServer(self).listen()
        for message in (
            self.media("abc"),
            self.media("!!!!"),
            self.media("fn5+!"),
            self.media("fn 5+"),
            self.media("=fn5+"),
            self.media("fn5+\n"),
            self.media("é"),
            self.media(12345),
            self.media(None),
            self.media(["fn5+"]),
            {"event": "media", "media": "fn5+"},
            {"event": "media"},
            {"event": "mark", "mark": {}},
            {"event": "mark", "mark": "u1"},
            {"event": "dtmf", "dtmf": None},
            {"event": "dtmf"},
        ):
            code = yield self.closing(server, True, lambda c, m=message: c.send_json(m))
            self.assertEqual(code, 1007, message)
            self.assertEqual(bytes(server.handlers[-1].audio), b"")


class Backpressure(TestCase):
    """A Twilio side that stops reading: we close with 1013 and the call ends, memory bounded."""

    timeout = 60

    @inlineCallbacks
    def test_a_stalled_reader_ends_the_call(self):
        cap = 16 * 1024
        rig = yield Rig(self, {}, True).start()
        factory = rig.provider.stream_factory
        factory.limits = evolve(factory.limits, max_send_backlog=cap)
        # Send audio as fast as the TTS makes it (no 60 ms lead), so the test is quick.
        rig.provider.frame_lead = 3600.0
        record = yield rig.initiate("Hi.", "conversation")
        call = yield rig.fake.when_call(0)
        yield call.answer()
        stream = yield call.when_stream()
        yield stream.when_mark_echoed("u1:end")
        (server,) = factory.open
        client = stream._protocol.transport
        # Small kernel buffers on both ends, so they fill in a moment.
        server.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
        client.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        client.pauseProducing()
        # What our side holds in memory for the socket, at its peak.
        tcp = server.transport.transport
        peak = [0]
        write = tcp.write

        def measured(data: bytes) -> None:
            write(data)
            peak[0] = max(peak[0], _buffered(tcp))

        tcp.write = measured
        hit: Deferred = Deferred()
        backlog: list[int] = []

        def observe(event: dict[str, Any]) -> None:
            if event.get("log_code") == "media.backpressure" and not hit.called:
                backlog.append(event["size"])
                hit.callback(None)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        rig.tts.bytes_per_char = 8000
        speaking = Deferred.fromCoroutine(rig.manager.speak(record.call_id, "x" * 60))
        speaking.addErrback(lambda failure: None)
        yield within(hit, 20)
        # The pacer goes on until the close handshake times out; none of it is kept.
        yield wait_for(lambda: server.state == server.STATE_CLOSED)
        client.resumeProducing()
        self.assertLessEqual(backlog[0], cap + 400)
        # Twisted's 64 KiB write buffer, then at most our cap (and the close frame).
        self.assertLessEqual(peak[0], 64 * 1024 + cap + 1024)
        self.assertEqual(server.localCloseCode, 1013)
        self.assertEqual(server.localCloseReason, b"Backpressure: send buffer exceeded")
        yield wait_for(lambda: not rig.manager.live_calls())
        final = yield rig.record(record.call_id)
        self.assertEqual(final.state, CallState.ERROR)
        self.assertIn("Backpressure", final.end_detail)
        yield stream.when_closed()
        yield call.when_ended()
        self.assertEqual(self.flushLoggedErrors(), [])


def _buffered(transport: Any) -> int:
    """Bytes a Twisted TCP transport holds that the kernel has not taken yet."""
    return len(transport.dataBuffer) - transport.offset + transport._tempDataLen
