"""
What the streaming speech-to-text and realtime voice tests share: a
listener that records, log capture, an in-memory network from our client to
a vendor fake (L{MemoryNet}), a stub client protocol, scripted dials, and the
base of the "real client against the fake" test cases.
"""

from __future__ import annotations

import json
from typing import Any

from autobahn.websocket.protocol import WebSocketProtocol
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import IHostnameResolver, IHostResolution
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.test import iosim
from twisted.trial.unittest import TestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from tests.fakes.ws_vendor import Waitable
from voicecalld.realtime.interface import IRealtimeListener
from voicecalld.voice.stt import ISTT, ISTTSession, ITranscriptListener

FRAME = 160  # 20 ms of 8 kHz mu-law


def frames(count: int, start: int = 0) -> list[bytes]:
    """C{count} 20 ms frames, each filled with its own byte so order shows."""
    return [bytes([(start + i) % 251]) * FRAME for i in range(count)]


@implementer(ITranscriptListener)
class RecordingListener(Waitable):
    """Keeps every listener call, in order, as a tuple."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[str, ...]] = []

    def speech_started(self) -> None:
        self.record("speech_started")

    def speech_stopped(self) -> None:
        self.record("speech_stopped")

    def partial(self, text: str) -> None:
        self.record("partial", text)

    def final(self, text: str) -> None:
        self.record("final", text)

    def problem(self, message: str) -> None:
        self.record("problem", message)

    def record(self, *event: str) -> None:
        self.events.append(event)
        self.changed()

    def of(self, kind: str) -> list[str]:
        """The texts of every call of one kind."""
        return [e[1] for e in self.events if e[0] == kind]

    def count(self, n: int) -> Deferred:
        """Fires once C{n} calls have been made."""
        return self.when(lambda: len(self.events) >= n)


@implementer(IRealtimeListener)
class RealtimeRecorder:
    """
    Hands every realtime listener call to L{record} as C{(kind, *args)};
    subclasses keep them.  The tokens of started responses are kept in order.
    """

    tokens: list[str | None]

    def ready(self) -> None:
        self.record("ready")

    def audio(self, ulaw: bytes) -> None:
        self.record("audio", ulaw)

    def speech_started(self) -> None:
        self.record("speech_started")

    def speech_stopped(self) -> None:
        self.record("speech_stopped")

    def user_transcript(self, text: str) -> None:
        self.record("user_transcript", text)

    def response_started(self, token: str | None = None) -> None:
        self.tokens.append(token)
        self.record("response_started")

    def assistant_transcript(self, text: str) -> None:
        self.record("assistant_transcript", text)

    def response_done(self) -> None:
        self.record("response_done")

    def tool_call(self, call_id: str, name: str, arguments: dict[str, Any]) -> None:
        self.record("tool_call", call_id, name, arguments)

    def problem(self, message: str) -> None:
        self.record("problem", message)

    def closed(self, reason: str) -> None:
        self.record("closed", reason)

    def record(self, *event: Any) -> None:
        """Keep one call."""
        raise NotImplementedError


class LogCapture(Waitable):
    """Every log event while a test runs, and the codes of voicecalld's STT events."""

    def __init__(self, test: TestCase) -> None:
        super().__init__()
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self)
        test.addCleanup(globalLogPublisher.removeObserver, self)

    def __call__(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        self.changed()

    @property
    def codes(self) -> list[str]:
        """The C{log_code} of each STT event, in order."""
        return [
            e["log_code"]
            for e in self.events
            if "log_code" in e and e.get("log_namespace", "").startswith("voicecalld.voice.stt")
        ]

    def code_count(self, code: str, n: int) -> Deferred:
        """Fires once C{code} has been logged C{n} times."""
        return self.when(lambda: self.codes.count(code) >= n)


@implementer(IHostResolution)
class _Resolution:
    def __init__(self, name: str) -> None:
        self.name = name

    def cancel(self) -> None:
        """Nothing to cancel: the answer is immediate."""


@implementer(IHostnameResolver)
class FixedResolver:
    """Resolves every name to one address, so that no test asks DNS."""

    def __init__(self, address: str) -> None:
        self.address = address

    def resolveHostName(
        self, receiver, hostName, portNumber=0, addressTypes=None, transportSemantics="TCP"
    ):
        receiver.resolutionBegan(_Resolution(hostName))
        receiver.addressResolved(IPv4Address("TCP", self.address, portNumber))
        receiver.resolutionComplete()
        return receiver


def delays(clock: Clock) -> list[float]:
    """Seconds until each pending call on C{clock}."""
    return sorted(c.getTime() - clock.seconds() for c in clock.getDelayedCalls())


class MemoryNet:
    """
    The fake vendor and our client on one L{MemoryReactorClock}: each dial
    the client makes is answered by the fake's factory over an in-memory
    transport (C{twisted.test.iosim}), and L{pump} moves the bytes.
    """

    def __init__(self, test: TestCase, fake_class: type) -> None:
        self.reactor = MemoryReactorClock()
        self.fake = fake_class(self.reactor)
        test.successResultOf(self.fake.start())
        # Any address will do: every dial reaches the fake.
        self.url = "ws://127.0.0.1:8443/v1/realtime?intent=transcription"
        ((_port, self.server_factory, _backlog, _interface),) = self.reactor.tcpServers
        self.answered = 0
        self.pumps: list[iosim.IOPump] = []
        self.refuse_dials = False

    def pump(self) -> None:
        """Answer new dials and move bytes both ways until nothing moves."""
        for _ in range(1000):
            moved = self.answer()
            for pump in self.pumps:
                moved = pump.flush() or moved
            self.pumps = [
                p for p in self.pumps if not (p.clientIO.disconnected and p.serverIO.disconnected)
            ]
            if not moved:
                return
        raise AssertionError("the sockets never went quiet")

    def answer(self) -> bool:
        dials = self.reactor.tcpClients[self.answered :]
        connectors = self.reactor.connectors[self.answered :]
        self.answered = len(self.reactor.tcpClients)
        for (host, port, factory, _timeout, _bind), connector in zip(
            dials, connectors, strict=True
        ):
            if connector.stoppedConnecting:
                continue
            if self.refuse_dials:
                factory.clientConnectionFailed(None, Failure(ConnectionRefusedError()))
                # The name endpoint gives up once its attempt delay has passed.
                self.reactor.advance(1)
                continue
            server_address = IPv4Address("TCP", host, port)
            client_address = IPv4Address("TCP", "127.0.0.1", 40000 + self.answered)
            server = self.server_factory.buildProtocol(client_address)
            client = factory.buildProtocol(server_address)
            self.pumps.append(
                iosim.connect(
                    server,
                    iosim.FakeTransport(server, True, server_address, client_address),
                    client,
                    iosim.FakeTransport(client, False, client_address, server_address),
                    greet=False,
                )
            )
        return bool(dials)


def stub_protocol(factory: Any) -> Any:
    """The real client protocol with its socket side replaced by recorders."""
    proto = factory.buildProtocol(None)
    proto.state = WebSocketProtocol.STATE_OPEN
    proto.sent = []
    proto.closed_with = None

    def send_message(payload: bytes, isBinary: bool = False) -> None:
        proto.sent.append(json.loads(payload))

    def send_close(code: int | None = None, reason: str | None = None) -> None:
        proto.closed_with = ("close", code)

    def drop_connection(abort: bool = False) -> None:
        proto.closed_with = ("drop", abort)

    proto.sendMessage = send_message
    proto.sendClose = send_close
    proto.dropConnection = drop_connection
    return proto


class ScriptedDials:
    """A test mixin: the provider's C{connect} becomes L{dial}, whose Deferreds the test fires."""

    factory: Any = None
    attempts: list[Deferred]

    def dial(self, factory: Any) -> Deferred:
        """Record C{factory} and return a pending attempt."""
        self.factory = factory
        d: Deferred = Deferred()
        self.attempts.append(d)
        return d


class SessionBasics:
    """Tests every STT provider passes, mixed into a test case with C{stt} and C{session}."""

    stt: Any
    session: Any

    def test_interfaces(self) -> None:
        """The provider and session provide their interfaces."""
        verifyObject(ISTT, self.stt)
        verifyObject(ISTTSession, self.session)

    def test_feed_never_raises(self) -> None:
        """A bad argument to feed is logged once, not raised."""
        self.session.feed(None)  # type: ignore[arg-type]
        self.session.feed(None)  # type: ignore[arg-type]
        self.assertEqual(len(self.flushLoggedErrors(TypeError)), 1)  # type: ignore[attr-defined]


class LiveFakeCase(TestCase):
    """
    Base of the tests of our real client against a vendor fake, in memory:
    the bytes move over C{iosim} transports, our timers run on a L{Clock}.
    Subclasses name C{fake_class} and build their provider in L{make_stt}.
    """

    fake_class: type

    def setUp(self) -> None:
        self.net = MemoryNet(self, self.fake_class)
        self.fake = self.net.fake
        self.clock = Clock()
        self.listener = RecordingListener()
        self.logs = LogCapture(self)

    def make_stt(self, **settings: Any) -> Any:
        """The provider under test, on C{self.net.reactor} and C{self.clock}."""
        raise NotImplementedError

    def open(self, **settings: Any) -> Any:
        """A session of a provider made with C{settings}, closed when the test ends."""
        session = self.make_stt(**settings).open_session(self.listener)
        self.addCleanup(self.closed, session)
        return session

    def closed(self, session: Any) -> None:
        """Close C{session} and see it done, with no socket left open."""
        closing = session.close()
        self.net.pump()
        self.successResultOf(closing)
        self.assertFalse(self.fake.connected)

    def wait(self, d: Deferred) -> Any:
        """Move every byte there is to move; C{d} must have fired by then."""
        self.net.pump()
        return self.successResultOf(d)

    def advance(self, seconds: float) -> None:
        """Let C{seconds} pass on our clock, then move what that made happen."""
        self.clock.advance(seconds)
        self.net.pump()

    def assert_secret_unlogged(self, secret: str) -> None:
        """C{secret} is in no log event so far, formatted or raw."""
        for event in self.logs.events:
            self.assertNotIn(secret, formatEvent(event))
            self.assertNotIn(secret, repr(event))

    def feed_early_and_late(self, session: Any) -> list[bytes]:
        """Three frames while connecting, twelve once open; all of them, once they arrived."""
        early, late = frames(3), frames(12, start=3)
        for frame in early:
            session.feed(frame)
        self.wait(self.fake.audio_at_least(3 * FRAME))
        for frame in late:
            session.feed(frame)
        self.advance(0.1)
        self.wait(self.fake.audio_at_least(15 * FRAME))
        return early + late

    def opened(self) -> Any:
        """A session that has said it is open."""
        session = self.open()
        self.wait(self.logs.code_count("stt.open", 1))
        return session


class SttFactoryCase(TestCase):
    """Base of the tests of C{make_stt}: the speech-to-text warnings it logs."""

    def setUp(self) -> None:
        self.logs = LogCapture(self)

    def warnings(self) -> list[str]:
        """The text of each speech-to-text warning so far."""
        return [
            formatEvent(e)
            for e in self.logs.events
            if e.get("log_level") == LogLevel.warn
            and e.get("log_namespace") == "voicecalld.voice.stt"
        ]
