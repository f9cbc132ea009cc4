"""The control protocol over AMP's in-memory loopback, and its bytes on the wire."""

from __future__ import annotations

import os

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.test import iosim
from twisted.trial.unittest import TestCase

from tests.unit.harness import Harness
from voicecalld.control import commands as c
from voicecalld.control.client import ControlClient
from voicecalld.control.server import SUBSCRIBER_QUEUE, ControlFactory, PeerPolicy
from voicecalld.errors import InvalidArgument, NotAllowed, UnknownCall
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
        subscription = server._subscription
        subscription.pauseProducing()
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
        server._subscription.pauseProducing()
        transport.clear()
        for n in range(5):
            f.h.hub.publish(notices.Problem(at=n, what="test", message=f"m{n}"))
        self.assertEqual(transport.value(), b"")
        server._subscription.resumeProducing()
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
