"""
The media-socket limits, each hit from a real autobahn WebSocket client:
the pre-start deadline, stream tokens, pending and total socket caps, the
message-size cap, malformed frames, and send backpressure.

Everything runs in memory: client and server talk over
C{twisted.test.iosim} transports and time is a L{Clock}, so nothing waits on
real time and the test moves the bytes.  L{StreamServer} is our stream
factory alone behind the daemon's guarded site; L{MemoryRig} is the Twilio
provider and the call manager wired as the daemon wires them, against the
fake Twilio.  One test keeps a real socket, because only the kernel's full
buffers show it (L{StalledReader}).
"""

from __future__ import annotations

import json
import socket
from typing import Any

from attrs import evolve
from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketClientFactory
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.task import Clock, cooperate
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import TestCase

from tests.unit.rigs import PATH, MemoryRig, StreamClient, Wire
from tests.waiting import wait_for
from voicecalld.media.stream import MediaStream, MediaStreamFactory, StreamLimits, StreamStart
from voicecalld.media.tokens import TOKEN_LIFETIME, StreamTokens
from voicecalld.providers.twilio.codec import TwilioCodec
from voicecalld.values.states import CallState
from voicecalld.web.guard import GuardedSite
from voicecalld.web.site import build_root

ACCOUNT = "AC" + "1" * 32
OTHER_SID = "CA" + "f" * 32
STREAM_SID = "MZ" + "3" * 32
CAP = 64 * 1024


def within(d: Deferred, timeout: float = 10.0) -> Deferred:
    """A copy of C{d}'s result that fails if it takes longer than C{timeout} (real sockets)."""
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
        "streamSid": STREAM_SID,
        "start": {
            "streamSid": STREAM_SID,
            "accountSid": ACCOUNT,
            "callSid": call_sid,
            "tracks": ["inbound"],
            "customParameters": {"token": token},
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        },
    }


def pong(digit: str) -> dict[str, Any]:
    """The mark a L{Recorder} answers C{digit} with."""
    return {"event": "mark", "streamSid": STREAM_SID, "mark": {"name": f"pong-{digit}"}}


class Recorder:
    """A started stream's handler: records what arrives and answers dtmf with a mark."""

    def __init__(self, stream: MediaStream) -> None:
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


class CountingStream(MediaStream):
    """Our stream protocol, counting the messages it was given (to know it has seen them)."""

    seen = 0

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.seen += 1
        super().onMessage(payload, isBinary)


class StreamServer:
    """
    Our media-stream endpoint alone behind the daemon's guarded site, in
    memory, its start deadline and the site's timers on a L{Clock}; tokens
    starting with "good" are accepted once each.
    """

    def __init__(self, test: TestCase, limits: StreamLimits | None = None) -> None:
        self.test = test
        self.clock = Clock()
        self.factory = MediaStreamFactory(
            self.clock, limits or StreamLimits(), self.on_start, TwilioCodec()
        )
        self.factory.protocol = CountingStream
        self.handlers: list[Recorder] = []
        self.used: set[str] = set()
        self.issued = 0
        site = GuardedSite(build_root({PATH: WebSocketResource(self.factory)}), reactor=self.clock)
        self.wire = Wire(self.clock, site)
        self.clients: list[StreamClient] = []
        test.addCleanup(self.close_all)

    def on_start(self, stream: MediaStream, start: StreamStart) -> Any:
        token = start.parameters.get("token")
        if not isinstance(token, str) or not token.startswith("good") or token in self.used:
            return "Unknown call"
        self.used.add(token)
        handler = Recorder(stream)
        self.handlers.append(handler)
        return handler

    def token(self) -> str:
        """A token this server accepts (once)."""
        self.issued += 1
        return f"good-{self.issued}"

    def connect(self, bind: str = "127.0.0.1") -> StreamClient:
        """A client socket from C{bind} whose upgrade has been answered."""
        factory = WebSocketClientFactory(f"ws://127.0.0.1:3334{PATH}", reactor=self.clock)
        factory.protocol = StreamClient
        # Autobahn's own timers run on the global reactor; the client needs none here.
        factory.setProtocolOptions(openHandshakeTimeout=0, closeHandshakeTimeout=0)
        client = self.wire.connect(factory, bind)
        self.clients.append(client)
        self.test.assertIsNotNone(client.accepted, "the upgrade was not answered")
        return client

    def open(self, bind: str = "127.0.0.1") -> StreamClient:
        """A client socket that must be accepted."""
        client = self.connect(bind)
        if not client.accepted:
            raise AssertionError(f"upgrade refused: {client.close_reason}")
        return client

    def started(self, bind: str = "127.0.0.1") -> tuple[StreamClient, Recorder]:
        """A client socket whose start was accepted, and the server's handler for it."""
        client = self.open(bind)
        client.send_json(start_message(self.token()))
        self.ping(client, "0")
        return client, self.handlers[-1]

    def send(self, client: StreamClient, message: Any) -> None:
        """Send C{message} (JSON) on C{client} and let it all be delivered."""
        client.send_json(message)
        self.wire.pump()

    def ping(self, client: StreamClient, digit: str) -> None:
        """Round trip through a started stream: everything sent before has been handled."""
        self.send(client, {"event": "dtmf", "streamSid": "MZ", "dtmf": {"digit": digit}})
        self.test.assertEqual(client.messages[-1:], [pong(digit)])

    def close_code(self, client: StreamClient) -> tuple[int | None, str | None]:
        """The code and reason C{client} was closed with, once everything was delivered."""
        self.wire.pump()
        self.test.assertTrue(client.closed.called, "the socket is still open")
        return client.close_code, client.close_reason

    def close_all(self) -> None:
        """Close what the test left open; every socket must be gone afterwards."""
        for client in self.clients:
            if client.state == client.STATE_OPEN:
                client.sendClose(1000)
        self.wire.pump()
        self.test.assertEqual([c for c in self.clients if not c.closed.called], [])
        self.test.assertEqual((self.factory.open, self.factory.pending), (set(), {}))


class DaemonWiring(TestCase):
    """The configured limits reach the sockets of the daemon's own wiring."""

    def test_configured_deadline_closes_sockets_of_the_daemon(self):
        rig = MemoryRig(self, {"streaming": {"enabled": True, "preStartTimeoutMs": 200}})
        client = rig.client()
        self.assertTrue(client.accepted)
        rig.reactor.advance(0.199)
        rig.pump()
        self.assertFalse(client.closed.called)
        rig.reactor.advance(0.001)
        self.assertEqual(rig.closed(client), (1008, "Start timeout"))

    def test_configured_caps_refuse_sockets_of_the_daemon(self):
        rig = MemoryRig(
            self,
            {"streaming": {"enabled": True, "maxPendingConnectionsPerIp": 1, "maxConnections": 2}},
        )
        waiting = rig.client("127.0.0.1")
        refused = rig.client("127.0.0.1")
        self.assertEqual(refused.refused_status, 429)
        self.assertTrue(rig.client("127.0.0.2").accepted)
        refused = rig.client("127.0.0.3")
        self.assertEqual(refused.refused_status, 503)
        self.assertEqual(waiting.state, waiting.STATE_OPEN)


class StartTokens(TestCase):
    """Unknown, reused, expired and misdirected tokens close with 1008 and change nothing."""

    def live_call(self):
        """A conversation call with its stream up and its greeting played."""
        rig = MemoryRig(self, {})
        record = rig.initiate("Hello.", "conversation")
        call = rig.run(rig.fake.when_call(0))
        rig.run(call.answer())
        stream = rig.run(call.when_stream())
        rig.run(stream.when_mark_echoed("u1:end"))
        rig.until(lambda: rig.manager.live_calls()[0].state == CallState.LISTENING)
        return rig, record, stream

    def assert_refused(self, rig, record, stream, message, code=1008, reason="Unknown call"):
        """Present C{message} on a new socket: closed with C{code}, no change to the call."""
        before = rig.record(record.call_id)
        notices = len(rig.notices)
        client = rig.client()
        client.send_json({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        client.send_json(message)
        self.assertEqual(rig.closed(client), (code, reason))
        self.assertEqual(rig.record(record.call_id), before)
        self.assertEqual(rig.manager.live_calls()[0].state, CallState.LISTENING)
        self.assertEqual(len(rig.notices), notices)
        self.assertIsNone(stream.closed_by)
        self.assertEqual(rig.provider.media.factory.pending, {})
        self.assertEqual(self.flushLoggedErrors(), [])

    def assert_call_still_speaks(self, rig, record, stream, turn):
        """The call's own stream still carries what the call says."""
        speaking = Deferred.fromCoroutine(rig.manager.speak(record.call_id, "Still here."))
        rig.run(stream.when_mark_echoed(f"u{turn}:end"))
        rig.run(speaking)

    def test_unknown_token(self):
        rig, record, stream = self.live_call()
        self.assert_refused(rig, record, stream, start_message("made-up", record.provider_call_id))
        self.assert_call_still_speaks(rig, record, stream, 2)

    def test_missing_token(self):
        rig, record, stream = self.live_call()
        message = start_message(None, record.provider_call_id)
        del message["start"]["customParameters"]
        self.assert_refused(rig, record, stream, message)
        self.assert_call_still_speaks(rig, record, stream, 2)

    def test_reused_token(self):
        rig, record, stream = self.live_call()
        token = stream.parameters["token"]
        self.assert_refused(rig, record, stream, start_message(token, record.provider_call_id))
        self.assert_call_still_speaks(rig, record, stream, 2)

    def test_expired_token(self):
        rig, record, stream = self.live_call()
        clock = Clock()
        tokens = rig.provider.media.tokens = StreamTokens(clock)
        token = tokens.issue(record.call_id, record.provider_call_id)
        clock.advance(TOKEN_LIFETIME - 1)
        fresh = tokens.issue(record.call_id, record.provider_call_id)
        clock.advance(1)
        self.assert_refused(rig, record, stream, start_message(token, record.provider_call_id))
        # Only its age was wrong: one issued a second later is still good.
        self.assertIsNotNone(tokens.claim(fresh, record.provider_call_id))
        self.assert_call_still_speaks(rig, record, stream, 2)

    def test_token_of_another_call_sid(self):
        rig, record, stream = self.live_call()
        token = rig.provider.media.tokens.issue(record.call_id, record.provider_call_id)
        self.assert_refused(rig, record, stream, start_message(token, OTHER_SID))
        # The token was spent by the attempt: its own call cannot use it now.
        self.assert_refused(rig, record, stream, start_message(token, record.provider_call_id))
        self.assert_call_still_speaks(rig, record, stream, 2)

    def test_token_of_the_wrong_type(self):
        rig, record, stream = self.live_call()
        token = rig.provider.media.tokens.issue(record.call_id, record.provider_call_id)
        for wrong in ([token], {"token": token}, 7):
            self.assert_refused(
                rig,
                record,
                stream,
                start_message(wrong, record.provider_call_id),
                1007,
                "malformed start message",
            )
        self.assert_call_still_speaks(rig, record, stream, 2)

    def test_a_start_pipelined_after_a_refused_one_is_ignored(self):
        rig, record, stream = self.live_call()
        token = rig.provider.media.tokens.issue(record.call_id, record.provider_call_id)
        client = rig.client()
        client.send_json(start_message("made-up", record.provider_call_id))
        client.send_json(start_message(token, record.provider_call_id))
        self.assertEqual(rig.closed(client), (1008, "Unknown call"))
        self.assertIsNone(stream.closed_by)
        # The good token was never presented to the provider, so it is still unspent.
        self.assertIsNotNone(rig.provider.media.tokens.claim(token, record.provider_call_id))
        self.assert_call_still_speaks(rig, record, stream, 2)


class PreStartTimeout(TestCase):
    """A socket that sends no valid start within the deadline is closed with 1008."""

    def test_silent_socket_is_closed_at_the_deadline(self):
        server = StreamServer(self, StreamLimits(pre_start_timeout=5.0))
        client = server.open()
        (stream,) = server.factory.open
        server.clock.advance(4.999)
        self.assertEqual(stream.state, stream.STATE_OPEN)
        server.clock.advance(0.001)
        self.assertEqual(stream.localCloseCode, 1008)
        self.assertEqual(server.close_code(client), (1008, "Start timeout"))
        self.assertEqual(server.factory.open, set())
        self.assertEqual(server.factory.pending, {})

    def test_connected_and_early_media_do_not_count_as_a_start(self):
        server = StreamServer(self)
        client = server.open()
        server.send(client, {"event": "connected", "protocol": "Call", "version": "1.0.0"})
        server.send(client, {"event": "media", "media": {"payload": "fw=="}})
        server.send(client, {"event": "dtmf", "dtmf": {"digit": "1"}})
        (stream,) = server.factory.open
        self.assertEqual(stream.seen, 3)
        server.clock.advance(4.999)
        self.assertEqual(stream.state, stream.STATE_OPEN)
        server.clock.advance(0.001)
        self.assertEqual(server.close_code(client), (1008, "Start timeout"))
        self.assertEqual(server.handlers, [])

    def test_a_valid_start_cancels_the_deadline(self):
        server = StreamServer(self)
        client, handler = server.started()
        self.assertEqual(server.clock.getDelayedCalls(), [])
        server.clock.advance(60)
        server.ping(client, "5")
        self.assertEqual(client.state, client.STATE_OPEN)
        self.assertEqual(server.factory.pending, {})
        self.assertEqual(handler.dtmf_digits, ["0", "5"])


class SocketCaps(TestCase):
    """Too many pending or open sockets are refused at the handshake; the others carry on."""

    def test_pending_sockets_per_peer_and_in_total(self):
        limits = StreamLimits(max_pending=3, max_pending_per_peer=2, max_connections=10)
        server = StreamServer(self, limits)
        first = server.open("127.0.0.1")
        second = server.open("127.0.0.1")
        refused = server.connect("127.0.0.1")
        self.assertFalse(refused.accepted)
        self.assertEqual(refused.refused_status, 429)
        self.assertIn("too many pending media streams", refused.close_reason)
        other = server.open("127.0.0.2")
        self.assertEqual(server.factory.pending, {"127.0.0.1": 2, "127.0.0.2": 1})
        refused = server.connect("127.0.0.3")
        self.assertEqual(refused.refused_status, 429)
        # The waiting sockets were not disturbed and can still start.
        for client in (first, second, other):
            self.assertEqual(client.state, client.STATE_OPEN)
            client.send_json(start_message(server.token()))
            server.ping(client, "1")
        self.assertEqual(server.factory.pending, {})
        server.open("127.0.0.1")
        server.open("127.0.0.3")
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_open_sockets_over_max_connections(self):
        limits = StreamLimits(max_pending=10, max_pending_per_peer=10, max_connections=3)
        server = StreamServer(self, limits)
        streams = [server.started() for _ in range(3)]
        refused = server.connect("127.0.0.2")
        self.assertEqual(refused.refused_status, 503)
        self.assertIn("too many media streams", refused.close_reason)
        for n, (client, handler) in enumerate(streams):
            client.send_json({"event": "media", "media": {"payload": "fn5+"}})
            server.ping(client, str(n))
            self.assertEqual(bytes(handler.audio), b"\x7e\x7e\x7e")
        first, _handler = streams[0]
        first.sendClose(1000)
        self.assertEqual(server.close_code(first), (1000, None))
        self.assertEqual(len(server.factory.open), 2)
        server.started()


class MessageLimits(TestCase):
    """Over-size, binary and malformed messages close with 1009, 1003 and 1007, quietly."""

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

    def closing(self, server: StreamServer, started: bool, send) -> int:
        """Open a socket (started or not), C{send} on it, and return the close code."""
        already = len(server.factory.open)
        if started:
            client, handler = server.started()
        else:
            client, handler = server.open(), None
        send(client)
        code, _reason = server.close_code(client)
        self.assertEqual(len(server.factory.open), already)
        if handler is not None:
            self.assertEqual(len(handler.stops), 1)
        self.assertEqual(server.factory.pending, {})
        self.assertEqual(self.flushLoggedErrors(), [])
        return code

    def test_message_size_cap(self):
        server = StreamServer(self)
        client, handler = server.started()
        client.sendMessage(self.exactly(CAP), isBinary=False)
        server.ping(client, "1")
        self.assertEqual(len(handler.audio), (CAP - 200) // 4 * 3)
        for started in (True, False):
            code = self.closing(
                server, started, lambda c: c.sendMessage(self.exactly(CAP + 1), isBinary=False)
            )
            self.assertEqual(code, 1009)
            fragmented = json.dumps(self.media("A" * (CAP + 4))).encode()
            code = self.closing(
                server,
                started,
                lambda c, data=fragmented: c.sendMessage(data, isBinary=False, fragmentSize=4096),
            )
            self.assertEqual(code, 1009)

    def test_binary_frames(self):
        server = StreamServer(self)
        for started in (True, False):
            code = self.closing(
                server, started, lambda c: c.sendMessage(b'{"event":"media"}', isBinary=True)
            )
            self.assertEqual(code, 1003)

    def test_malformed_json(self):
        server = StreamServer(self)
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
                code = self.closing(
                    server, started, lambda c, data=data: c.sendMessage(data, isBinary=False)
                )
                self.assertEqual(code, 1007, data[:40])

    def test_malformed_start(self):
        server = StreamServer(self)
        for start in ([1], "x", None, 7):
            code = self.closing(
                server, False, lambda c, s=start: c.send_json({"event": "start", "start": s})
            )
            self.assertEqual(code, 1007, start)
        for parameters in ([1], "token", {"token": ["good-x"]}, {"token": {"a": 1}}):
            message = start_message("good")
            message["start"]["customParameters"] = parameters
            code = self.closing(server, False, lambda c, m=message: c.send_json(m))
            self.assertEqual(code, 1007, parameters)
        self.assertEqual(server.handlers, [])

    def test_malformed_media_dtmf_and_mark(self):
        server = StreamServer(self)
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
            code = self.closing(server, True, lambda c, m=message: c.send_json(m))
            self.assertEqual(code, 1007, message)
            self.assertEqual(bytes(server.handlers[-1].audio), b"")


class Backpressure(TestCase):
    """A Twilio side that stops reading: we close with 1013 and the call ends, memory bounded."""

    def test_a_stalled_reader_ends_the_call(self):
        cap = 16 * 1024
        rig = MemoryRig(self, {})
        factory = rig.provider.media.factory
        factory.limits = evolve(factory.limits, max_send_backlog=cap)
        # Send audio as fast as the TTS makes it (no 60 ms lead), so the test is quick.
        rig.provider.media.frame_lead = 3600.0
        record = rig.initiate("Hi.", "conversation")
        call = rig.run(rig.fake.when_call(0))
        rig.run(call.answer())
        stream = rig.run(call.when_stream())
        rig.run(stream.when_mark_echoed("u1:end"))
        (server,) = factory.open
        # What the transport does when the kernel's buffers are full (see
        # StalledReader for the real thing): it pauses our stream.
        server.pauseProducing()
        logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        rig.tts.bytes_per_char = 8000
        speaking = Deferred.fromCoroutine(rig.manager.speak(record.call_id, "x" * 60))
        speaking.addErrback(lambda failure: None)
        rig.until(lambda: not rig.manager.live_calls())
        (backlog,) = [e["size"] for e in logged if e.get("log_code") == "media.backpressure"]
        self.assertGreater(backlog, cap)
        self.assertLessEqual(backlog, cap + 400)
        self.assertEqual(server.localCloseCode, 1013)
        self.assertEqual(server.localCloseReason, b"Backpressure: send buffer exceeded")
        final = rig.record(record.call_id)
        self.assertEqual(final.state, CallState.ERROR)
        self.assertIn("Backpressure", final.end_detail)
        rig.run(stream.when_closed())
        rig.run(call.when_ended())
        self.assertEqual(self.flushLoggedErrors(), [])


class StalledReader(TestCase):
    """
    On a real socket, a reader that stops reading fills the kernel's buffers;
    Twisted then pauses our stream, and what we go on sending is capped.
    Only a real socket shows this: in memory nothing ever fills up.
    """

    timeout = 60

    @inlineCallbacks
    def test_a_full_kernel_buffer_pauses_the_stream_and_caps_what_is_held(self):
        cap = 16 * 1024
        server = RealStreamServer(self, StreamLimits(max_send_backlog=cap))
        yield server.listen()
        client = yield server.open()
        client.send_json(start_message("good-1"))
        yield wait_for(lambda: server.handlers)
        (stream,) = server.factory.open
        # Small kernel buffers on both ends, so they fill in a moment.
        stream.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
        client.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        client.transport.pauseProducing()
        # Count what our stream hands the transport once the transport paused it.
        paused = []
        held = [0]
        pause = stream.pauseProducing

        def pausing() -> None:
            paused.append(True)
            pause()

        stream.pauseProducing = pausing
        tcp = stream.transport
        write = tcp.write

        def measured(data: bytes) -> None:
            if paused:
                held[0] += len(data)
            write(data)

        tcp.write = measured
        logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

        def frames():
            while stream.state == stream.STATE_OPEN and not stream.localCloseCode:
                stream.send_frame(b"\x7f" * 160)
                yield None

        yield within(cooperate(frames()).whenDone(), 20)
        self.assertTrue(paused)
        (backlog,) = [e["size"] for e in logged if e.get("log_code") == "media.backpressure"]
        self.assertLessEqual(backlog, cap + 400)
        # After the pause: at most the cap in frames, and the close frame.
        self.assertLessEqual(held[0], cap + 1024)
        self.assertEqual(stream.localCloseCode, 1013)
        # Whether the reader, once it reads again, still sees our close frame
        # before autobahn's close-handshake timeout drops it is up to the
        # machine's speed; the call is told our reason either way.
        client.transport.resumeProducing()
        yield within(client.closed)
        self.assertEqual(server.handlers[0].stops, ["Backpressure: send buffer exceeded"])


class RealStreamServer:
    """Our stream factory behind the guarded site on 127.0.0.1, for L{StalledReader}."""

    def __init__(self, test: TestCase, limits: StreamLimits) -> None:
        self.test = test
        self.factory = MediaStreamFactory(reactor, limits, self.on_start, TwilioCodec())
        self.handlers: list[Recorder] = []
        self.clients: list[StreamClient] = []

    def on_start(self, stream: MediaStream, start: StreamStart) -> Any:
        handler = Recorder(stream)
        self.handlers.append(handler)
        return handler

    @inlineCallbacks
    def listen(self):
        site = GuardedSite(build_root({PATH: WebSocketResource(self.factory)}), reactor=reactor)
        self.port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(site)
        self.test.addCleanup(self.quiesce)

    @inlineCallbacks
    def open(self):
        """A client socket whose upgrade was accepted."""
        port = self.port.getHost().port
        factory = WebSocketClientFactory(f"ws://127.0.0.1:{port}{PATH}")
        factory.protocol = StreamClient
        factory.setProtocolOptions(openHandshakeTimeout=5, closeHandshakeTimeout=2)
        client = yield TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(factory)
        self.clients.append(client)
        accepted = yield within(client.handshake)
        self.test.assertTrue(accepted)
        return client

    @inlineCallbacks
    def quiesce(self):
        for client in self.clients:
            if client.state == client.STATE_OPEN:
                client.sendClose(1000)
            yield within(client.closed)
        yield self.port.stopListening()
        yield wait_for(lambda: not self.factory.open)
