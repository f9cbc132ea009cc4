"""
The Twilio provider and the call manager wired as the daemon wires them,
against the fake Twilio, for the tests of the Twilio provider.

L{MemoryRig} runs everything in memory on one L{MemoryReactorClock}: REST
and webhooks through C{StubTreq}, the fake's media sockets answered by our
guarded site over C{twisted.test.iosim} transports (L{Wire}), time moved by
the test.  L{Rig} serves the same on 127.0.0.1 on the real reactor, for the
few tests that need real time.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from treq.client import HTTPClient
from treq.testing import StubTreq
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, inlineCallbacks
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.test import iosim
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool
from zope.interface import implementer

from tests.fakes.tts import ToneTTS
from tests.fakes.twilio import FakeTwilio
from tests.waiting import wait_for
from voicecalld.calls.hub import NoticeHub
from voicecalld.calls.manager import CallManager
from voicecalld.config import parse_config
from voicecalld.providers.twilio.provider import TwilioProvider
from voicecalld.store.sqlite import SQLiteCallStore, SynchronousRunner
from voicecalld.voice.stt import ISTT, ISTTSession
from voicecalld.web.guard import GuardedSite
from voicecalld.web.site import build_root

SID = "AC" + "1" * 32
TOKEN = "twilio-test-token"
TO = "+15551234567"
PATH = "/voice/stream"

#: The fake's media sockets set no autobahn timers, so no reactor keeps any.
NO_TIMERS = {"openHandshakeTimeout": 0, "closeHandshakeTimeout": 0}


@implementer(ISTTSession)
class _Session:
    def __init__(self, listener: Any) -> None:
        self.listener = listener
        self.audio = bytearray()
        self.closed = False

    def feed(self, ulaw: bytes) -> None:
        self.audio += ulaw

    def close(self) -> None:
        self.closed = True


@implementer(ISTT)
class ScriptedSTT:
    """Records audio per session; the test speaks for the vendor through the listener."""

    def __init__(self) -> None:
        self.sessions: list[_Session] = []

    def open_session(self, listener: Any) -> _Session:
        session = _Session(listener)
        self.sessions.append(session)
        return session


class StreamClient(WebSocketClientProtocol):
    """Twilio's end of a media socket, as far as the limit tests need it."""

    def __init__(self) -> None:
        super().__init__()
        self.handshake: Deferred = Deferred()
        self.closed: Deferred = Deferred()
        self.messages: list[dict[str, Any]] = []
        self.close_code: int | None = None
        self.close_reason: str | None = None

    def onOpen(self) -> None:
        self.handshake.callback(True)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.messages.append(json.loads(payload))

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.close_code, self.close_reason = code, reason
        if not self.handshake.called:
            self.handshake.callback(False)
        self.closed.callback((code, reason))

    def send_json(self, message: Any) -> None:
        """Send one JSON text frame."""
        self.sendMessage(json.dumps(message).encode(), isBinary=False)

    @property
    def accepted(self) -> bool | None:
        """Whether the upgrade was accepted (None while it is not answered)."""
        return self.handshake.result if self.handshake.called else None

    @property
    def refused_status(self) -> int | None:
        """The HTTP status of a refused upgrade."""
        found = re.search(r"upgrade failed \[(\d{3})\]", self.close_reason or "")
        return int(found.group(1)) if found else None


class Wire:
    """
    Client sockets to one server factory over in-memory transports: each
    L{connect} is a new connection from the given address, and L{pump}
    delivers every byte and disconnection both ways until nothing moves.
    """

    SERVER = IPv4Address("TCP", "127.0.0.1", 3334)

    def __init__(self, clock: Clock, server_factory: Any) -> None:
        self.clock = clock
        self.server_factory = server_factory
        self.pumps: list[iosim.IOPump] = []

    def connect(self, client_factory: Any, bind: str) -> Any:
        """A new connection from C{bind}; the client protocol."""
        peer = IPv4Address("TCP", bind, 40000 + len(self.pumps))
        server = self.server_factory.buildProtocol(peer)
        client = client_factory.buildProtocol(self.SERVER)
        self.pumps.append(
            iosim.connect(
                server,
                iosim.FakeTransport(server, True, self.SERVER, peer),
                client,
                iosim.FakeTransport(client, False, peer, self.SERVER),
                greet=False,
                clock=self.clock,
            )
        )
        self.pump()
        return client

    def pump(self) -> None:
        """Move bytes until no connection has anything left to deliver."""
        for _ in range(1000):
            moved = False
            for pump in self.pumps:
                moved = pump.flush() or moved
            if not moved:
                return
        raise AssertionError("the connections never went quiet")


class Forward:
    """Stands for an object made later (the fake Twilio needs the app before it exists)."""

    def __init__(self, target: Any) -> None:
        self.target = target

    def __getattr__(self, name: str) -> Any:
        return getattr(self.target(), name)


class RestLine:
    """The provider's way to Twilio's REST API; L{unplug} makes it unreachable."""

    def __init__(self, stub: StubTreq) -> None:
        self.stub = stub
        self.up = True

    def unplug(self) -> None:
        """From now on every request fails as one to an address nothing listens on."""
        self.up = False

    def request(self, method: str, url: str, **options: Any) -> Deferred:
        if not self.up:
            return fail(ConnectionRefusedError("nothing listens at the API's address"))
        return self.stub.request(method, url, **options)


class MemoryRig:
    """
    The Twilio provider and the call manager wired as the daemon wires them,
    against the fake Twilio, all in memory on one L{MemoryReactorClock}.
    L{run} moves bytes and lets time pass (20 ms at a time) until what the
    test waits for has happened.  C{streaming} gives the provider TTS and
    STT doubles and turns Media Streams on; C{pause_scale} is the fake's.
    """

    URL = "http://127.0.0.1:3334/voice/webhook"

    def __init__(
        self,
        test: TestCase,
        config: dict[str, Any],
        streaming: bool = True,
        pause_scale: float = 0.0,
        realtime: Any = None,
    ) -> None:
        self.test = test
        self.url = self.URL
        if realtime is not None:
            streaming = False
            config = {
                "inboundPolicy": "open",
                **config,
                "realtime": {"enabled": True, **config.get("realtime", {})},
            }
        self.reactor = MemoryReactorClock()
        self.reactor.advance(1_800_000_000)
        self.notices: list[Any] = []
        #: Every id the manager made (call ids and turn tokens), in order.
        self.ids: list[str] = []
        #: Our webhook site as the fake (and a test posting webhooks) reaches it.
        self.http: Any = None
        self.fake_http = Forward(lambda: self.http)
        self.fake = FakeTwilio(
            SID,
            TOKEN,
            reactor=self.reactor,
            insecure_ws=True,
            pause_scale=pause_scale,
            http=self.fake_http,
            ws_options=NO_TIMERS,
        )
        self.rest = StubTreq(self.fake.resource)
        self.api = RestLine(self.rest)
        settings = parse_config(
            {
                "provider": "twilio",
                "fromNumber": "+15550001111",
                "twilio": {"accountSid": SID, "authToken": TOKEN},
                "streaming": {"enabled": streaming},
                **config,
            },
            None,
            {},
        ).settings
        self.settings = settings
        self.tts = ToneTTS(self.reactor)
        self.stt = ScriptedSTT()
        self.provider = TwilioProvider(
            settings,
            self.reactor,
            public_url=self.URL,
            http=self.api,
            tts=self.tts if streaming else None,
            stt=self.stt if streaming else None,
            realtime=realtime,
        )
        self.store = SQLiteCallStore(test.mktemp(), SynchronousRunner())
        test.successResultOf(self.store.open())
        hub = NoticeHub()
        hub.listen(self.notices.append)
        self.manager = CallManager(
            settings=settings,
            store=self.store,
            provider=self.provider,
            clock=self.reactor,
            hub=hub,
            new_id=self.new_id,
        )
        resources = self.provider.web_resources()
        self.http = StubTreq(build_root(resources))
        self.wire = Wire(self.reactor, GuardedSite(build_root(resources), reactor=self.reactor))
        self.answered = 0
        self.provider.start(self.manager.handle_event, self.manager.directory)
        self.run(Deferred.fromCoroutine(self.manager.restore()))
        self.manager.start()
        self.provider.use_public_url(self.URL, known=True)
        test.addCleanup(self.quiesce)

    def new_id(self) -> str:
        self.ids.append(str(uuid.uuid4()))
        return self.ids[-1]

    def pump(self) -> bool:
        """Move every byte there is to move and run what is due now; whether anything moved."""
        moved = False
        for _ in range(1000):
            step = self.answer()
            self.rest.flush()
            self.http.flush()
            self.wire.pump()
            now = self.reactor.seconds()
            if any(c.getTime() <= now for c in self.reactor.getDelayedCalls()):
                self.reactor.advance(0)
                step = True
            if not step:
                return moved
            moved = True
        raise AssertionError("the rig never went quiet")

    def answer(self) -> bool:
        """Connect the fake's new media-socket dials to our site."""
        dials = self.reactor.tcpClients[self.answered :]
        connectors = self.reactor.connectors[self.answered :]
        self.answered = len(self.reactor.tcpClients)
        for (_host, _port, factory, _timeout, _bind), connector in zip(
            dials, connectors, strict=True
        ):
            if not connector.stoppedConnecting:
                self.wire.connect(factory, "127.0.0.1")
        return bool(dials)

    def run(self, d: Deferred, limit: float = 60.0) -> Any:
        """Let things happen, 20 ms of time at a time, until C{d} fires (within C{limit} s)."""
        deadline = self.reactor.seconds() + limit
        self.pump()
        while not d.called:
            if self.reactor.seconds() > deadline:
                raise AssertionError(f"nothing happened within {limit} s")
            self.reactor.advance(0.02)
            self.pump()
        return self.test.successResultOf(d)

    def failure(self, d: Deferred, *kinds: type[BaseException], limit: float = 60.0) -> Any:
        """Like L{run}, for a C{d} that must fail with one of C{kinds}; the failure."""
        deadline = self.reactor.seconds() + limit
        self.pump()
        while not d.called:
            if self.reactor.seconds() > deadline:
                raise AssertionError(f"nothing happened within {limit} s")
            self.reactor.advance(0.02)
            self.pump()
        return self.test.failureResultOf(d, *kinds)

    def until(self, check: Any, limit: float = 60.0) -> None:
        """Like L{run}, until C{check()} is true."""
        deadline = self.reactor.seconds() + limit
        self.pump()
        while not check():
            if self.reactor.seconds() > deadline:
                raise AssertionError(f"condition not met within {limit} s")
            self.reactor.advance(0.02)
            self.pump()

    def quiesce(self) -> None:
        """Stop everything; every media socket must close."""
        self.manager.stop()
        self.provider.stop()
        # Let each close handshake finish before the fake drops what is left:
        # our site's close-handshake timer (autobahn's, on the global reactor)
        # stays if the peer drops instead of answering.
        self.until(lambda: not self.provider.media.factory.open, limit=5)
        stopping = self.fake.stop()
        self.run(stopping, limit=5)

    def initiate(self, message: str | None = "Hello from voicecalld", mode: str = "notify") -> Any:
        """Place a call through the manager; its record."""
        return self.run(Deferred.fromCoroutine(self.manager.initiate(TO, message, mode)))

    def record(self, call_id: str) -> Any:
        """The call's record as the manager reports it."""
        return self.run(Deferred.fromCoroutine(self.manager.get(call_id)))

    def kinds(self) -> list[str]:
        """The kinds of the notices so far, in order."""
        return [n.kind for n in self.notices]

    def client(self, bind: str = "127.0.0.1") -> StreamClient:
        """A client socket of our own to the daemon's stream path, once its upgrade was answered."""
        factory = WebSocketClientFactory(f"ws://127.0.0.1:3334{PATH}", reactor=self.reactor)
        factory.protocol = StreamClient
        factory.setProtocolOptions(**NO_TIMERS)
        client = self.wire.connect(factory, bind)
        self.pump()
        self.test.assertIsNotNone(client.accepted, "the upgrade was not answered")
        self.test.addCleanup(self.close_client, client)
        return client

    def close_client(self, client: StreamClient) -> None:
        if client.state == client.STATE_OPEN:
            client.sendClose(1000)
        self.pump()
        self.test.assertTrue(client.closed.called)

    def closed(self, client: StreamClient) -> tuple[int | None, str | None]:
        """The code and reason C{client} was closed with, once all was delivered."""
        self.run(client.closed, limit=1)
        return client.close_code, client.close_reason


class Rig:
    """
    The same wiring on 127.0.0.1 and the real reactor, for tests whose
    fake plays C{<Pause>}s in real time; L{start} fires with the rig.
    """

    def __init__(
        self,
        test: TestCase,
        config: dict[str, Any],
        streaming: bool,
        pause_scale: float = 0.0,
        realtime: Any = None,
    ) -> None:
        self.test = test
        self.realtime = realtime
        if realtime is not None:
            streaming = False
            config = {
                "inboundPolicy": "open",
                **config,
                "realtime": {"enabled": True, **config.get("realtime", {})},
            }
        self.config = config
        self.streaming = streaming
        self.pause_scale = pause_scale
        self.notices: list[Any] = []
        #: Every id the manager made (call ids and turn tokens), in order.
        self.ids: list[str] = []

    @inlineCallbacks
    def start(self):
        pool = HTTPConnectionPool(reactor, persistent=False)
        self.http = HTTPClient(Agent(reactor, pool=pool))
        self.test.addCleanup(pool.closeCachedConnections)
        self.fake = FakeTwilio(
            SID, TOKEN, insecure_ws=True, pause_scale=self.pause_scale, ws_options=NO_TIMERS
        )
        base = yield self.fake.listen()
        self.test.addCleanup(self.fake.stop)
        config = {
            "provider": "twilio",
            "fromNumber": "+15550001111",
            "twilio": {"accountSid": SID, "authToken": TOKEN, "apiBaseUrl": base},
            "streaming": {"enabled": self.streaming},
            **self.config,
        }
        self.settings = parse_config(config, None, {}).settings
        self.tts = ToneTTS(reactor)
        self.stt = ScriptedSTT()
        self.provider = TwilioProvider(
            self.settings,
            reactor,
            public_url="http://placeholder/voice/webhook",
            http=self.http,
            tts=self.tts if self.streaming else None,
            stt=self.stt if self.streaming else None,
            realtime=self.realtime,
        )
        self.store = SQLiteCallStore(self.test.mktemp(), SynchronousRunner())
        yield self.store.open()
        hub = NoticeHub()
        hub.listen(self.notices.append)
        self.manager = CallManager(
            settings=self.settings,
            store=self.store,
            provider=self.provider,
            clock=reactor,
            hub=hub,
            new_id=self.new_id,
        )
        self.provider.start(self.manager.handle_event, self.manager.directory)
        yield Deferred.fromCoroutine(self.manager.restore())
        self.manager.start()
        site = GuardedSite(build_root(self.provider.web_resources()), reactor=reactor)
        self.port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(site)
        self.test.addCleanup(self.port.stopListening)
        self.test.addCleanup(self.quiesce)
        self.url = f"http://127.0.0.1:{self.port.getHost().port}/voice/webhook"
        self.provider.use_public_url(self.url, known=True)
        return self

    def quiesce(self) -> Deferred:
        """Stop everything and wait until every media socket has closed."""
        self.manager.stop()
        self.provider.stop()
        return wait_for(
            lambda: (
                not self.provider.media.factory.open
                and all(stream.closed_by for call in self.fake.calls for stream in call.streams)
                and all(hook.code is not None or hook.error for hook in self.fake.webhooks)
            )
        )

    def new_id(self) -> str:
        self.ids.append(str(uuid.uuid4()))
        return self.ids[-1]

    def initiate(self, message: str | None = "Hello from voicecalld", mode: str = "notify"):
        return Deferred.fromCoroutine(self.manager.initiate(TO, message, mode))

    def record(self, call_id: str):
        return Deferred.fromCoroutine(self.manager.get(call_id))

    def kinds(self) -> list[str]:
        return [n.kind for n in self.notices]
