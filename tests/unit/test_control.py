"""The control protocol over AMP's in-memory loopback, and its bytes on the wire."""

from __future__ import annotations

import os
import tracemalloc

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs
from twisted.protocols import amp
from twisted.python.failure import Failure
from twisted.test import iosim
from twisted.trial.unittest import TestCase

from tests.unit.harness import Harness
from voicecalld.control import commands as c
from voicecalld.control.client import ControlClient
from voicecalld.control.guard import GuardedAMP
from voicecalld.control.server import SUBSCRIBER_QUEUE, ControlFactory, PeerPolicy
from voicecalld.errors import InvalidArgument, NotAllowed, UnknownCall, UnknownCommand
from voicecalld.providers.mock import MockProvider
from voicecalld.values import events as ev
from voicecalld.values import notices

ME = (1234, os.geteuid(), os.getegid())
TO = "+15551234567"


def connect(factory: ControlFactory, client: ControlClient | None = None):
    """A server protocol and a client joined in memory, and the pump between them."""
    client = client or ControlClient()
    server = factory.buildProtocol(None)
    pump = iosim.connect(
        server, iosim.makeFakeServer(server), client, iosim.makeFakeClient(client), greet=True
    )
    return server, client, pump


class Fixture:
    """A harness plus a control factory that believes every peer is us."""

    def __init__(self, test: TestCase, config=None, provider=None, clock=None):
        self.h = Harness(test, config, provider=provider, clock=clock)
        self.factory = ControlFactory(
            self.h.manager,
            self.h.provider,
            PeerPolicy(None),
            credentials=lambda transport: ME,
            clock=self.h.clock,
        )

    def call(self, client, pump, command, **kwargs):
        """Send a command; the result is handled before AMP sees it as unhandled."""
        result = Deferred()
        client.callRemote(command, **kwargs).addBoth(
            lambda r: result.errback(r) if isinstance(r, Failure) else result.callback(r)
        )
        pump.flush()
        return result


class CommandTests(TestCase):
    """Each command reaches the manager and answers or fails with its code."""

    def test_initiate_status_end(self):
        f = Fixture(self)
        f.h.provider.instant_speech = True
        _server, client, pump = connect(f.factory)
        answer = self.successResultOf(
            f.call(client, pump, c.Initiate, to=TO, message="Hi", mode="conversation")
        )
        call_id = answer["callId"]
        self.assertEqual(answer["call"]["state"], "initiated")
        self.successResultOf(f.h.provider.emit(ev.Answered(call_id=call_id)))
        listed = self.successResultOf(f.call(client, pump, c.Status))
        self.assertEqual([r["callId"] for r in listed["calls"]], [call_id])
        self.assertIsNone(listed["call"])
        ended = self.successResultOf(f.call(client, pump, c.End, callId=call_id))
        self.assertEqual(ended["call"]["endReason"], "hangup-bot")
        one = self.successResultOf(f.call(client, pump, c.Status, callId=call_id))
        self.assertEqual(one["call"]["transcript"][0]["text"], "Hi")
        recent = self.successResultOf(f.call(client, pump, c.Status, recent=5))
        self.assertEqual(len(recent["calls"]), 1)

    def test_errors_carry_their_codes(self):
        f = Fixture(self)
        _server, client, pump = connect(f.factory)
        failure = self.failureResultOf(f.call(client, pump, c.Status, callId="nope"), UnknownCall)
        self.assertEqual(str(failure.value), "No call with id nope")
        self.failureResultOf(f.call(client, pump, c.Initiate, message="x"), InvalidArgument)

    def test_transfer(self):
        f = Fixture(self)
        call_id = f.h.answered_call()
        _server, client, pump = connect(f.factory)
        missing = self.failureResultOf(f.call(client, pump, c.Transfer, callId=call_id, to=""))
        self.assertEqual(missing.value.code, "INVALID_ARGUMENT")
        premium = self.failureResultOf(
            f.call(client, pump, c.Transfer, callId=call_id, to="+19005550100"), NotAllowed
        )
        self.assertIn("premium-rate", str(premium.value))
        answer = self.successResultOf(
            f.call(client, pump, c.Transfer, callId=call_id, to="+15558675309", message="Bye.")
        )
        self.assertEqual(answer["call"]["metadata"]["transferredTo"], "+15558675309")
        self.assertEqual(answer["call"]["transcript"][-1]["text"], "Bye.")
        f.h.ok(f.h.provider.emit(ev.Transferred(call_id=call_id)))
        one = self.successResultOf(f.call(client, pump, c.Status, callId=call_id))
        self.assertEqual((one["call"]["state"], one["call"]["endReason"]), ("transferred",) * 2)

    def test_continue_and_speak(self):
        f = Fixture(self)
        call_id = f.h.answered_call()
        _server, client, pump = connect(f.factory)
        d = f.call(client, pump, c.Continue, callId=call_id, message="Name?")
        self.assertNoResult(d)
        f.h.ok(f.h.provider.emit(ev.Speech(call_id=call_id, text="Ann")))
        pump.flush()
        self.assertEqual(self.successResultOf(d), {"callId": call_id, "transcript": "Ann"})
        spoken = self.successResultOf(
            f.call(client, pump, c.Speak, callId=call_id, message="Thanks Ann")
        )
        self.assertEqual(spoken, {"played": "Thanks Ann", "complete": True})
        self.successResultOf(f.call(client, pump, c.SendDtmf, callId=call_id, digits="1"))

    def test_big_values_are_chunked(self):
        f = Fixture(self)
        call_id = f.h.answered_call()
        for n in range(80):
            f.h.ok(f.h.provider.emit(ev.Speech(call_id=call_id, text=f"{n} " + "x" * 2000)))
        _server, client, pump = connect(f.factory)
        answer = self.successResultOf(f.call(client, pump, c.Status, callId=call_id))
        texts = [e["text"] for e in answer["call"]["transcript"] if e["speaker"] == "user"]
        self.assertEqual(len(texts), 80)
        self.assertTrue(texts[-1].startswith("79 "))

    def test_simulate_needs_the_mock(self):
        f = Fixture(self)
        _server, client, pump = connect(f.factory)
        failure = self.failureResultOf(
            f.call(client, pump, c.Simulate, action="inbound", From=TO), NotAllowed
        )
        self.assertIn("only with the mock provider", str(failure.value))

    def test_simulate_with_the_mock(self):
        clock = Clock()
        clock.advance(1_800_000_000)
        f = Fixture(self, {"inboundPolicy": "open"}, provider=MockProvider(clock), clock=clock)
        _server, client, pump = connect(f.factory)
        answer = self.successResultOf(
            f.call(client, pump, c.Simulate, action="inbound", From="+15557654321")
        )
        self.assertTrue(answer["callId"])
        self.failureResultOf(
            f.call(client, pump, c.Simulate, action="dance", callId=answer["callId"]),
            InvalidArgument,
        )
        self.failureResultOf(
            f.call(client, pump, c.Simulate, action="say", callId=answer["callId"]), InvalidArgument
        )

    def test_ping(self):
        f = Fixture(self)
        _server, client, pump = connect(f.factory)
        answer = self.successResultOf(f.call(client, pump, c.Ping))
        self.assertEqual(answer["provider"], "mock")


class SubscriptionTests(TestCase):
    """Live events, filtering, and what happens to a subscriber that stops reading."""

    def test_events_arrive_in_order_and_can_be_filtered(self):
        f = Fixture(self, {"maxConcurrentCalls": 2})
        received = []
        _server, client, pump = connect(f.factory, ControlClient(on_event=received.append))
        self.successResultOf(f.call(client, pump, c.Subscribe))
        first = f.h.answered_call()
        pump.flush()
        kinds = [e["type"] for e in received]
        self.assertEqual(kinds[:2], ["subscribed", "call.created"])
        self.assertEqual(received[0]["liveCalls"], 0)
        received.pop(0)
        self.assertIn("call.transcript", kinds)
        self.assertTrue(all(e["callId"] == first for e in received))
        received.clear()
        self.successResultOf(f.call(client, pump, c.Subscribe, callId="other"))
        f.h.answered_call()
        pump.flush()
        self.assertEqual([e["type"] for e in received], ["subscribed"])

    def test_a_stuck_subscriber_is_queued_then_dropped(self):
        f = Fixture(self)
        server = f.factory.buildProtocol(None)
        transport = StringTransport()
        server.makeConnection(transport)
        server.subscribe()
        transport.producer.pauseProducing()  # the kernel buffer is full: the client stopped reading
        for n in range(SUBSCRIBER_QUEUE):
            f.h.hub.publish(notices.Problem(at=n, what="test", message=str(n)))
        self.assertFalse(transport.disconnecting)
        written = len(transport.value())
        f.h.hub.publish(notices.Problem(at=0, what="test", message="one too many"))
        self.assertTrue(transport.disconnecting)
        self.assertEqual(len(transport.value()), written)
        self.flushLoggedErrors()

    def test_a_slow_subscriber_catches_up(self):
        f = Fixture(self)
        server = f.factory.buildProtocol(None)
        transport = StringTransport()
        server.makeConnection(transport)
        server.subscribe()
        transport.producer.pauseProducing()
        transport.clear()
        for n in range(5):
            f.h.hub.publish(notices.Problem(at=n, what="test", message=f"m{n}"))
        self.assertEqual(transport.value(), b"")
        transport.producer.resumeProducing()
        self.assertEqual(transport.value().count(b"_command\x00\x05Event"), 5)


class ResponderTests(TestCase):
    """A registered client writes the replies; the daemon falls back when it goes."""

    def test_generate_reply_round_trip(self):
        f = Fixture(self)
        call_id = f.h.answered_call()
        asked = []

        def reply(callId, call, context):
            asked.append((callId, call["transcript"][-1]["text"], context))
            return {"text": "Hello Ann"}

        server, client, pump = connect(f.factory, ControlClient(on_reply_request=reply))
        self.successResultOf(f.call(client, pump, c.RegisterResponder, name="test"))
        f.h.ok(f.h.provider.emit(ev.Speech(call_id=call_id, text="I am Ann")))
        pump.flush()
        self.assertEqual(asked[0][:2], (call_id, "I am Ann"))
        self.assertEqual(asked[0][2]["responseTimeoutMs"], 30000)
        self.assertEqual(f.h.stored(call_id).transcript[-1].text, "Hello Ann")
        server.connectionLost(Failure(ConnectionDone()))
        self.assertFalse(f.h.manager.replies.available)


class PeerPolicyTests(TestCase):
    """Who may connect."""

    def test_own_user_and_root(self):
        policy = PeerPolicy(None, uid=1000)
        self.assertTrue(self.successResultOf(policy.check(1000, 1000)))
        self.assertTrue(self.successResultOf(policy.check(0, 0)))
        self.assertFalse(self.successResultOf(policy.check(1001, 1001)))

    def test_group_access_only_when_the_socket_allows_it(self):
        path = self.mktemp()
        open(path, "w").close()
        gid = os.stat(path).st_gid
        os.chmod(path, 0o600)
        self.assertFalse(self.successResultOf(PeerPolicy(path, uid=1000).check(1001, gid)))
        os.chmod(path, 0o660)
        self.assertTrue(self.successResultOf(PeerPolicy(path, uid=1000).check(1001, gid)))

    def test_refused_peers_are_disconnected_and_logged(self):
        f = Fixture(self)
        f.factory.credentials = lambda transport: (99, 4242, 4242)
        f.factory.policy = PeerPolicy(None, uid=1000)
        server = f.factory.buildProtocol(None)
        transport = StringTransport()
        server.makeConnection(transport)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(f.factory.clients, set())

    def test_unknown_peers_are_refused(self):
        f = Fixture(self)
        f.factory.credentials = lambda transport: None
        server = f.factory.buildProtocol(None)
        transport = StringTransport()
        server.makeConnection(transport)
        self.assertTrue(transport.disconnecting)


class WireTests(TestCase):
    """Captured bytes, as the docs show them (the TypeScript shim tests the same)."""

    def test_status_request_and_answer(self):
        f = Fixture(self)
        server = f.factory.buildProtocol(None)
        transport = StringTransport()
        server.makeConnection(transport)
        request = bytes.fromhex("0008") + b"_command" + bytes.fromhex("0006") + b"Status"
        request += bytes.fromhex("0004") + b"_ask" + bytes.fromhex("0001") + b"1"
        request += b"\x00\x00"
        server.dataReceived(request)
        expected = bytes.fromhex("0007") + b"_answer" + bytes.fromhex("0001") + b"1"
        expected += bytes.fromhex("0005") + b"calls" + bytes.fromhex("0002") + b"[]"
        expected += b"\x00\x00"
        self.assertEqual(transport.value(), expected)

    def test_error_answer(self):
        f = Fixture(self)
        server = f.factory.buildProtocol(None)
        transport = StringTransport()
        server.makeConnection(transport)
        box = [(b"_command", b"End"), (b"_ask", b"2"), (b"callId", b"nope")]
        server.dataReceived(
            b"".join(len(k).to_bytes(2, "big") + k + len(v).to_bytes(2, "big") + v for k, v in box)
            + b"\x00\x00"
        )
        value = transport.value()
        self.assertIn(b"\x00\x06_error\x00\x012", value)
        self.assertIn(b"\x00\x0b_error_code\x00\x0cUNKNOWN_CALL", value)
        self.assertIn(b"_error_description\x00\x14No call with id nope", value)


class ClientTests(TestCase):
    """The client side, as the CLI uses it."""

    def test_lost_fires_when_the_connection_ends(self):
        client = ControlClient()
        client.makeConnection(StringTransport())
        client.connectionLost(Failure(ConnectionDone()))
        self.assertIsNone(self.successResultOf(client.lost))
        self.assertIsInstance(client.lost, Deferred)


def box_bytes(*pairs: tuple[bytes, bytes]) -> bytes:
    """The wire form of one AMP box."""
    return (
        b"".join(len(k).to_bytes(2, "big") + k + len(v).to_bytes(2, "big") + v for k, v in pairs)
        + b"\x00\x00"
    )


def answers(transport: StringTransport) -> list[amp.AmpBox]:
    """Every box the daemon wrote, parsed."""
    return amp.parseString(transport.value())


class Probe(amp.Command):
    """A test command with the argument types no client→daemon command has yet."""

    arguments = [(b"data", c.JSON()), (b"flag", amp.Boolean(optional=True))]
    response = [(b"size", amp.Integer())]
    errors = c.ERRORS


class ProbeProtocol(GuardedAMP):
    """A guarded server that knows only L{Probe} and L{c.Ping}."""

    requests = {b"Probe": Probe, b"Ping": c.Ping}

    @Probe.responder
    def probe(self, data, flag=None):
        if flag is False:
            raise RuntimeError("a bug in a responder")
        return {"size": len(data)}

    @c.Ping.responder
    def ping(self):
        return {"version": "test", "provider": "none"}


class BadInputTests(TestCase):
    """What a client that sends bad boxes gets back, as bytes on the wire."""

    def server(self, protocol=None):
        if protocol is None:
            protocol = Fixture(self).factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        return protocol, transport

    def test_unknown_command(self):
        server, transport = self.server()
        server.dataReceived(box_bytes((b"_command", b"Dance"), (b"_ask", b"1")))
        server.dataReceived(box_bytes((b"_command", b"StartTLS"), (b"_ask", b"2")))
        first, second = answers(transport)
        self.assertEqual(first[b"_error"], b"1")
        self.assertEqual(first[b"_error_code"], b"UNKNOWN_COMMAND")
        self.assertIn(
            b"no command 'Dance' here (known: Continue, End, Expose,", first[b"_error_description"]
        )
        self.assertEqual(second[b"_error_code"], b"UNKNOWN_COMMAND")
        self.assertFalse(transport.disconnecting)

    def test_unknown_command_reaches_the_client_as_its_code(self):
        _server, client, pump = connect_probe()
        failure = self.failureResultOf(call(client, pump, c.Status), UnknownCommand)
        self.assertEqual(str(failure.value), "no command 'Status' here (known: Ping, Probe)")

    def test_missing_and_malformed_arguments(self):
        server, transport = self.server()
        server.dataReceived(box_bytes((b"_command", b"End"), (b"_ask", b"1")))
        server.dataReceived(box_bytes((b"_command", b"Status"), (b"_ask", b"2"), (b"recent", b"x")))
        server.dataReceived(box_bytes((b"_command", b"End"), (b"_ask", b"3"), (b"callId", b"\xff")))
        server.dataReceived(box_bytes((b"_ask", b"4"), (b"callId", b"x")))
        boxes = answers(transport)
        self.assertEqual([b[b"_error_code"] for b in boxes], [b"INVALID_ARGUMENT"] * 4)
        self.assertEqual(
            [b[b"_error_description"].decode() for b in boxes],
            [
                "End: argument callId is required",
                "Status: argument recent must be an integer in ASCII decimal",
                "End: argument callId must be UTF-8 text",
                "a request needs _command",
            ],
        )
        self.assertFalse(transport.disconnecting)

    def test_bad_json_and_booleans(self):
        server, transport = self.server(ProbeProtocol())
        server.dataReceived(box_bytes((b"_command", b"Probe"), (b"_ask", b"1"), (b"data", b"{")))
        server.dataReceived(
            box_bytes(
                (b"_command", b"Probe"), (b"_ask", b"2"), (b"data", b"[1,"), (b"data.1", b"2]")
            )
        )
        server.dataReceived(
            box_bytes((b"_command", b"Probe"), (b"_ask", b"3"), (b"data", b"1"), (b"flag", b"yes"))
        )
        bad_json, chunked, bad_flag = answers(transport)
        self.assertEqual(bad_json[b"_error_code"], b"INVALID_ARGUMENT")
        self.assertEqual(
            bad_json[b"_error_description"], b"Probe: argument data must be UTF-8 JSON text"
        )
        self.assertEqual(chunked[b"size"], b"2")
        self.assertEqual(
            bad_flag[b"_error_description"], b"Probe: argument flag must be True or False"
        )

    def test_a_bug_is_internal_and_the_connection_goes_on(self):
        server, transport = self.server(ProbeProtocol())
        server.dataReceived(
            box_bytes(
                (b"_command", b"Probe"), (b"_ask", b"1"), (b"data", b"[]"), (b"flag", b"False")
            )
        )
        server.dataReceived(box_bytes((b"_command", b"Ping"), (b"_ask", b"2")))
        bug, ping = answers(transport)
        self.assertEqual(bug[b"_error_code"], b"INTERNAL")
        self.assertEqual(
            bug[b"_error_description"], b"voicecalld failed on this request (its log says why)"
        )
        self.assertEqual(ping[b"provider"], b"none")
        self.assertFalse(transport.disconnecting)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_boxes_that_are_neither_requests_nor_answers_end_the_connection(self):
        for box in (
            box_bytes((b"callId", b"x")),
            box_bytes((b"_answer", b"99"), (b"text", b"hi")),
            box_bytes((b"_command", b"Status")),
            b"\x00\x00",
            (300).to_bytes(2, "big") + b"k" * 300,
        ):
            server, transport = self.server()
            with capturedLogs() as events:
                server.dataReceived(box)
            self.assertTrue(transport.disconnecting)
            self.assertEqual([e.get("log_code") for e in events], ["control.bad_box"])
            self.assertEqual(transport.value(), b"")


class RequestSizeTests(TestCase):
    """One request is at most MAX_REQUEST bytes; more is refused and not kept."""

    def server(self):
        server = Fixture(self).factory.buildProtocol(None)
        transport = StringTransport()
        server.makeConnection(transport)
        return server, transport

    def test_a_request_of_exactly_the_limit_is_read(self):
        server, transport = self.server()
        pairs = [(b"_command", b"Status"), (b"_ask", b"1")]
        size = len(box_bytes(*pairs))
        while size < c.MAX_REQUEST:
            key = b"pad.%d" % len(pairs)
            value = b"p" * min(c.MAX_VALUE, c.MAX_REQUEST - size - 4 - len(key))
            pairs.append((key, value))
            size += 4 + len(key) + len(value)
        request = box_bytes(*pairs)
        self.assertEqual(len(request), c.MAX_REQUEST)
        server.dataReceived(request)
        self.assertEqual(answers(transport)[0][b"calls"], b"[]")
        transport.clear()
        pairs[-1] = (pairs[-1][0], pairs[-1][1] + b"p")
        server.dataReceived(box_bytes(*pairs))
        self.assertEqual(answers(transport)[0][b"_error_code"], b"TOO_LARGE")

    def test_chunked_values_over_the_limit_are_too_large(self):
        server, transport = self.server()
        value = b"x" * c.MAX_VALUE
        chunks = 4 * c.MAX_REQUEST // c.MAX_VALUE
        tracemalloc.start()
        self.addCleanup(tracemalloc.stop)
        with capturedLogs() as events:
            server.dataReceived(box_bytes((b"_command", b"Status"), (b"_ask", b"7"))[:-2])
            for n in range(1, chunks):
                server.dataReceived(box_bytes((b"calls.%d" % n, value))[:-2])
            server.dataReceived(b"\x00\x00")
        _current, peak = tracemalloc.get_traced_memory()
        self.assertLess(peak, 2 * c.MAX_REQUEST)
        (refused,) = answers(transport)
        self.assertEqual(refused[b"_error"], b"7")
        self.assertEqual(refused[b"_error_code"], b"TOO_LARGE")
        self.assertIn(b"at most 1048576 bytes per request", refused[b"_error_description"])
        self.assertEqual([e.get("log_code") for e in events], ["control.too_large"])
        transport.clear()
        server.dataReceived(box_bytes((b"_command", b"Status"), (b"_ask", b"8")))
        self.assertEqual(answers(transport)[0][b"_answer"], b"8")
        self.assertFalse(transport.disconnecting)

    def test_a_huge_key_count_is_too_large(self):
        server, transport = self.server()
        keys = b"".join(box_bytes((b"k%06d" % n, b""))[:-2] for n in range(120_000))
        server.dataReceived(box_bytes((b"_ask", b"1"))[:-2] + keys)
        server.dataReceived(box_bytes((b"_command", b"End"), (b"callId", b"x")))
        (refused,) = answers(transport)
        self.assertEqual(refused[b"_error_code"], b"TOO_LARGE")

    def test_too_large_without_an_ask_ends_the_connection(self):
        server, transport = self.server()
        with capturedLogs() as events:
            server.dataReceived(
                box_bytes((b"_command", b"Status"), (b"pad", b"x" * c.MAX_VALUE)) * 0
            )
            for n in range(20):
                server.dataReceived(box_bytes((b"pad.%d" % n, b"x" * c.MAX_VALUE))[:-2])
            server.dataReceived(b"\x00\x00")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport.value(), b"")
        self.assertEqual([e.get("log_code") for e in events], ["control.bad_box"])


def connect_probe():
    """A L{ProbeProtocol} server and a client joined in memory."""
    server = ProbeProtocol()
    client = ControlClient()
    pump = iosim.connect(
        server, iosim.makeFakeServer(server), client, iosim.makeFakeClient(client), greet=True
    )
    return server, client, pump


def call(client, pump, command, **kwargs):
    """Send a command and pump; failures are kept for the test (not unhandled)."""
    result = Deferred()
    client.callRemote(command, **kwargs).addBoth(
        lambda r: result.errback(r) if isinstance(r, Failure) else result.callback(r)
    )
    pump.flush()
    return result
