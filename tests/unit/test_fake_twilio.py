"""
Self-tests of the fake Twilio (L{tests.fakes.twilio}).

"The app" is a tiny twisted.web resource tree on 127.0.0.1 that answers TwiML
by path, checks every X-Twilio-Signature with the official SDK's validator and
serves a WebSocket endpoint for media streams.  The REST side is driven with
StubTreq where a socket adds nothing.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

import attrs
from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from treq.client import HTTPClient
from treq.testing import StubTreq
from twilio.request_validator import RequestValidator
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool, ResponseFailed
from twisted.web.pages import notFound
from twisted.web.resource import Resource
from twisted.web.server import Site

from tests.fakes.twilio import FakeTwilio, FakeTwilioError, Verb

CALL_SID = re.compile(r"CA[0-9a-f]{32}")
STREAM_SID = re.compile(r"MZ[0-9a-f]{32}")
ALL_EVENTS = ("initiated", "ringing", "answered", "completed")


@attrs.frozen
class Seen:
    """One webhook request as the app received it."""

    method: str
    url: str
    params: dict[str, str]
    headers: dict[str, str]
    body: bytes
    signature_ok: bool

    @property
    def path(self) -> str:
        """The path, without the query string."""
        return self.url.split("://", 1)[1].partition("/")[2].partition("?")[0]


class App:
    """
    The app under Twilio: TwiML per path from C{replies} (default C{<Response/>}),
    every request kept in C{seen}, WebSockets at C{/stream} kept in C{sockets}.
    """

    def __init__(self, auth_token: str, base: str | None = None) -> None:
        self.validator = RequestValidator(auth_token)
        self.base = base
        self.replies: dict[str, str] = {}
        self.reject_bad_signatures = False
        self.seen: list[Seen] = []
        self.sockets: list[AppSocket] = []
        self._waits: list[tuple[Callable[[], Any], Deferred]] = []
        factory = WebSocketServerFactory()
        factory.protocol = AppSocket
        factory.app = self
        self.resource = _Root()
        self.resource.putChild(b"hooks", _Hooks(self))
        self.resource.putChild(b"stream", WebSocketResource(factory))
        self._port: Any = None

    async def listen(self) -> None:
        """Serve on 127.0.0.1, port 0."""
        site = Site(self.resource)
        site.noisy = False
        endpoint = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
        self._port = await endpoint.listen(site)
        self.base = f"http://127.0.0.1:{self._port.getHost().port}"

    @property
    def stream_url(self) -> str:
        """The wss:// URL of the media-stream endpoint, as the app would publish it."""
        return "wss://" + self.base.split("://", 1)[1] + "/stream"

    async def stop(self) -> None:
        """Drop sockets and stop listening."""
        for socket in self.sockets:
            if not socket.closed:
                socket.dropConnection(abort=True)
        await self.wait(lambda: all(s.closed for s in self.sockets) or None)
        if self._port is not None:
            await self._port.stopListening()

    def wait(self, check: Callable[[], Any]) -> Deferred:
        """Fires with C{check()} once it is not None."""
        d: Deferred = Deferred()
        value = check()
        if value is not None:
            d.callback(value)
        else:
            self._waits.append((check, d))
        return d

    def changed(self) -> None:
        """Re-check every wait."""
        waits, self._waits = self._waits, []
        for check, d in waits:
            value = check()
            if value is None:
                self._waits.append((check, d))
            else:
                d.callback(value)

    def socket(self, index: int = 0) -> Deferred:
        """Fires with WebSocket number C{index} once it connected."""
        return self.wait(lambda: self.sockets[index] if len(self.sockets) > index else None)

    def requests_to(self, path: str) -> list[Seen]:
        """The requests seen on C{path}."""
        return [seen for seen in self.seen if seen.path == path]

    def handle(self, request: Any) -> bytes:
        """Record a webhook, check its signature, answer TwiML."""
        url = self.base + request.uri.decode("utf-8")
        request.content.seek(0)
        body = request.content.read()
        params = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
        headers = {
            k.decode().lower(): v[0].decode() for k, v in request.requestHeaders.getAllRawHeaders()
        }
        signature = headers.get("x-twilio-signature", "")
        ok = self.validator.validate(url, params, signature)
        self.seen.append(Seen(request.method.decode(), url, params, headers, body, ok))
        self.changed()
        if self.reject_bad_signatures and not ok:
            request.setResponseCode(403)
            return b"Forbidden"
        request.setHeader(b"Content-Type", b"application/xml")
        path = url.split("://", 1)[1].partition("/")[2].partition("?")[0]
        return self.replies.get(path, "<Response/>").encode("utf-8")


class _Root(Resource):
    def getChild(self, path: bytes, request: Any) -> Resource:
        return notFound()


class _Hooks(Resource):
    isLeaf = True

    def __init__(self, app: App) -> None:
        super().__init__()
        self.app = app

    def render(self, request: Any) -> bytes:
        return self.app.handle(request)


class AppSocket(WebSocketServerProtocol):
    """The app's end of a media stream: keeps every message, sends on demand."""

    def onConnect(self, request: Any) -> None:
        self.upgrade_headers = dict(request.headers)
        self.messages: list[dict[str, Any]] = []
        self.closed = False
        self.app = self.factory.app
        self.app.sockets.append(self)
        self.app.changed()

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.messages.append(json.loads(payload))
        self.app.changed()

    def onClose(self, wasClean: bool, code: Any, reason: Any) -> None:
        self.closed = True
        if hasattr(self, "app"):
            self.app.changed()

    def of(self, event: str) -> list[dict[str, Any]]:
        """The messages of type C{event}."""
        return [m for m in self.messages if m.get("event") == event]

    def when(self, event: str, count: int = 1) -> Deferred:
        """Fires with the C{count}th message of type C{event}."""
        return self.app.wait(
            lambda: self.of(event)[count - 1] if len(self.of(event)) >= count else None
        )

    def send(self, message: dict[str, Any]) -> None:
        """Send one JSON message to Twilio."""
        self.sendMessage(json.dumps(message).encode("utf-8"), isBinary=False)

    def send_media(self, stream_sid: str, data: bytes) -> None:
        """Send mu-law audio to Twilio."""
        payload = base64.b64encode(data).decode()
        self.send({"event": "media", "streamSid": stream_sid, "media": {"payload": payload}})


def stream_twiml(app: App, **parameters: str) -> str:
    """A <Connect><Stream> document with C{parameters} as <Parameter>s."""
    params = "".join(f'<Parameter name="{k}" value="{v}"/>' for k, v in parameters.items())
    return (
        f'<Response><Connect><Stream url="{app.stream_url}">{params}</Stream></Connect></Response>'
    )


class FakeTwilioTestCase(TestCase):
    """Wiring shared by the tests: a fake, an app, and a REST client (StubTreq)."""

    timeout = 20

    async def start(self, live_app: bool = True, **options: Any) -> tuple[FakeTwilio, App]:
        """A fake and a listening app, both torn down after the test."""
        options.setdefault("insecure_ws", True)
        fake = FakeTwilio(**options)
        app = App(fake.auth_token, base=None if live_app else "https://voice.example.com")
        if live_app:
            await app.listen()
            self.addCleanup(app.stop)
        self.addCleanup(fake.stop)
        self.api = StubTreq(fake.resource)
        self.fake, self.app = fake, app
        return fake, app

    def calls_url(self, suffix: str = "Calls.json") -> str:
        """A REST URL of the fake's account."""
        return f"{self.fake.base_url}/2010-04-01/Accounts/{self.fake.account_sid}/{suffix}"

    async def rest(self, method: str, suffix: str, form: Any = None, auth: Any = None) -> Any:
        """One REST request; fires with (status, JSON body)."""
        auth = auth or (self.fake.account_sid, self.fake.auth_token)
        response = await self.api.request(method, self.calls_url(suffix), data=form, auth=auth)
        return response.code, json.loads(await response.content())

    async def create_call(self, *, events: tuple[str, ...] = ALL_EVENTS, **extra: str) -> Any:
        """Create an outbound call the way the daemon does; fires with its L{FakeCall}."""
        form = [
            ("To", "+15551230000"),
            ("From", "+15559870000"),
            ("Url", f"{self.app.base}/hooks/voice?callId=abc"),
            ("StatusCallback", f"{self.app.base}/hooks/status?callId=abc&type=status"),
            *(("StatusCallbackEvent", event) for event in events),
            ("Timeout", "30"),
            *extra.items(),
        ]
        code, body = await self.rest("POST", "Calls.json", form)
        self.assertEqual(code, 201, body)
        return self.fake.call(body["sid"])


class RestTests(FakeTwilioTestCase):
    """The REST API, through StubTreq."""

    async def test_create_fetch_and_record(self) -> None:
        """Create answers 201 with a queued Call; fetch shows it; requests are recorded."""
        fake, _ = await self.start(live_app=False)
        form = [
            ("To", "+15551230000"),
            ("From", "+15559870000"),
            ("Url", "https://voice.example.com/hooks/voice"),
            ("StatusCallbackEvent", "initiated"),
            ("StatusCallbackEvent", "completed"),
        ]
        code, body = await self.rest("POST", "Calls.json", form)
        self.assertEqual(code, 201)
        self.assertRegex(body["sid"], CALL_SID)
        self.assertEqual(len(body["sid"]), 34)
        self.assertEqual(
            (body["status"], body["to"], body["from"], body["direction"]),
            ("queued", "+15551230000", "+15559870000", "outbound-api"),
        )
        self.assertEqual(body["account_sid"], fake.account_sid)
        recorded = fake.requests[-1]
        self.assertEqual((recorded.method, recorded.auth_ok), ("POST", True))
        self.assertEqual(recorded.path, f"/2010-04-01/Accounts/{fake.account_sid}/Calls.json")
        self.assertEqual(recorded.getall("StatusCallbackEvent"), ["initiated", "completed"])
        self.assertEqual(fake.last_call.status_callback_events, {"initiated", "completed"})

        code, fetched = await self.rest("GET", f"Calls/{body['sid']}.json")
        self.assertEqual((code, fetched["sid"], fetched["status"]), (200, body["sid"], "queued"))

        code, missing = await self.rest("GET", "Calls/CA" + "0" * 32 + ".json")
        self.assertEqual((code, missing["code"], missing["status"]), (404, 20404, 404))

    async def test_wrong_auth_is_401_authenticate(self) -> None:
        """A bad token (or none) gets Twilio's 20003 error body."""
        fake, _ = await self.start(live_app=False)
        code, body = await self.rest("GET", "Calls.json", auth=(fake.account_sid, "nope"))
        self.assertEqual(code, 401)
        self.assertEqual(
            {k: body[k] for k in ("code", "message", "status")},
            {"code": 20003, "message": "Authenticate", "status": 401},
        )
        self.assertIn("more_info", body)
        self.assertFalse(fake.requests[-1].auth_ok)
        response = await self.api.get(self.calls_url())
        self.assertEqual(response.code, 401)

    async def test_injected_errors_and_validation(self) -> None:
        """fail_next answers the next create with the given error; bad input is refused."""
        fake, _ = await self.start(live_app=False)
        fake.fail_next("create", 400, 21211, "Invalid 'To' Phone Number")
        form = {"To": "+15551230000", "From": "+15559870000", "Twiml": "<Response/>"}
        code, body = await self.rest("POST", "Calls.json", form)
        self.assertEqual(
            body,
            {
                "code": 21211,
                "message": "Invalid 'To' Phone Number",
                "more_info": "https://www.twilio.com/docs/errors/21211",
                "status": 400,
            },
        )
        self.assertEqual(code, 400)
        self.assertEqual(fake.calls, [])
        code, body = await self.rest("POST", "Calls.json", form)
        self.assertEqual(code, 201)

        fake.fail_next("update", 500, 20500, "Internal Server Error")
        code, body = await self.rest("POST", f"Calls/{body['sid']}.json", {"Status": "completed"})
        self.assertEqual((code, body["code"]), (500, 20500))

        code, body = await self.rest("POST", "Calls.json", {**form, "To": "not a number"})
        self.assertEqual((code, body["code"]), (400, 21211))
        code, body = await self.rest("POST", "Calls.json", {**form, "Twiml": "x" * 4001})
        self.assertEqual((code, body["code"]), (400, 32018))

    async def test_dropped_connection(self) -> None:
        """drop_next leaves the client without a response."""
        fake, _ = await self.start(live_app=False)
        fake.drop_next("create")
        form = {"To": "+15551230000", "From": "+15559870000", "Twiml": "<Response/>"}
        with self.assertRaises(ResponseFailed):
            await self.rest("POST", "Calls.json", form)
        self.assertEqual(fake.calls, [])

    async def test_live_server(self) -> None:
        """listen() serves the same API on 127.0.0.1 for a real HTTP client."""
        fake, _ = await self.start(live_app=False)
        base = await fake.listen()
        self.assertRegex(base, r"^http://127\.0\.0\.1:\d+$")
        pool = HTTPConnectionPool(reactor, persistent=False)
        self.addCleanup(pool.closeCachedConnections)
        client = HTTPClient(Agent(reactor, pool=pool))
        url = self.calls_url()
        auth = (fake.account_sid, fake.auth_token)
        form = {"To": "+15551230000", "From": "+15559870000", "Twiml": "<Response/>"}
        response = await client.post(url, data=form, auth=auth)
        self.assertEqual(response.code, 201)
        self.assertEqual((await response.json())["status"], "queued")
        fake.drop_next("create")
        with self.assertRaises(ResponseFailed):
            await client.post(url, data=form, auth=auth)

    async def test_cancel_a_ringing_call(self) -> None:
        """Status=completed on a call not answered yet cancels it."""
        await self.start()
        call = await self.create_call()
        code, body = await self.rest("POST", f"Calls/{call.sid}.json", {"Status": "completed"})
        self.assertEqual((code, body["status"]), (200, "canceled"))
        await call.when_ended()
        self.assertEqual(call.callbacks[-1].param("CallStatus"), "canceled")


class CallProgressTests(FakeTwilioTestCase):
    """Status callbacks and TwiML, against a live app."""

    async def test_outbound_call_signed_callbacks_and_twiml(self) -> None:
        """Each progress event is a signed POST; the answer fetches and runs the TwiML."""
        fake, app = await self.start()
        app.replies["hooks/voice"] = (
            '<?xml version="1.0" encoding="UTF-8"?>'
            '<Response><Say voice="alice">Hello there</Say><Play>https://x/a.mp3</Play>'
            "<Hangup/><Say>never</Say></Response>"
        )
        call = await self.create_call()
        await call.ring()
        self.assertEqual(call.status, "ringing")
        await call.answer()
        self.assertEqual(call.status, "completed")
        self.assertEqual(
            call.verbs,
            [
                ("Say", "Hello there", {"voice": "alice"}),
                ("Play", "https://x/a.mp3", {}),
                ("Hangup", "", {}),
            ],
        )
        self.assertIsInstance(call.verbs[0], Verb)

        self.assertTrue(all(seen.signature_ok for seen in app.seen), app.seen)
        status = app.requests_to("hooks/status")
        self.assertEqual(
            [s.params["CallStatus"] for s in status],
            ["initiated", "ringing", "in-progress", "completed"],
        )
        self.assertEqual([s.params["SequenceNumber"] for s in status], ["0", "1", "2", "3"])
        for seen in status:
            self.assertEqual(seen.method, "POST")
            self.assertTrue(seen.url.endswith("/hooks/status?callId=abc&type=status"))
            self.assertEqual(seen.params["CallSid"], call.sid)
            self.assertEqual(seen.params["AccountSid"], fake.account_sid)
            self.assertEqual(seen.params["Direction"], "outbound-api")
            self.assertEqual(seen.params["ApiVersion"], "2010-04-01")
            self.assertEqual(seen.params["CallbackSource"], "call-progress-events")
            self.assertEqual(seen.params["From"], "+15559870000")
            self.assertEqual(seen.params["To"], "+15551230000")
            self.assertRegex(
                seen.params["Timestamp"], r"^\w{3}, \d{2} \w{3} \d{4} [\d:]{8} \+0000$"
            )
            self.assertEqual(seen.headers["content-type"], "application/x-www-form-urlencoded")
        self.assertEqual(status[-1].params["CallDuration"], "0")
        self.assertNotIn("CallDuration", status[0].params)

        (voice,) = app.requests_to("hooks/voice")
        self.assertEqual(voice.params["CallStatus"], "in-progress")
        self.assertTrue(voice.url.endswith("/hooks/voice?callId=abc"))
        self.assertEqual(call.errors, [])

    async def test_only_completed_without_events(self) -> None:
        """With no StatusCallbackEvent only the completed callback is sent."""
        _, app = await self.start()
        call = await self.create_call(events=())
        await call.busy()
        self.assertEqual(
            [s.params["CallStatus"] for s in app.requests_to("hooks/status")], ["busy"]
        )
        self.assertEqual(app.requests_to("hooks/voice"), [])

    async def test_signature_modes_and_duplicates(self) -> None:
        """Wrong and missing signatures on demand; a resent callback is byte-identical."""
        fake, app = await self.start()
        app.reject_bad_signatures = True
        call = await self.create_call()
        fake.signature_mode = "wrong"
        await call.initiate()
        self.assertFalse(app.seen[-1].signature_ok)
        self.assertEqual(call.webhooks[-1].code, 403)
        self.assertIn("11200", call.errors[-1])
        fake.signature_mode = "missing"
        await call.ring()
        self.assertNotIn("x-twilio-signature", app.seen[-1].headers)
        fake.signature_mode = "valid"
        await call.no_answer()
        self.assertTrue(app.seen[-1].signature_ok)

        hook = await fake.resend_last_callback(call)
        self.assertTrue(hook.duplicate)
        first, again = app.seen[-2:]
        self.assertEqual((again.url, again.body), (first.url, first.body))
        for header in ("x-twilio-signature", "i-twilio-idempotency-token"):
            self.assertEqual(again.headers[header], first.headers[header])

    async def test_gather_speech_and_digits(self) -> None:
        """A <Gather> waits; the result is POSTed (signed) to its action and that TwiML runs."""
        fake, app = await self.start()
        app.replies["hooks/voice"] = (
            '<Response><Gather input="speech" action="/hooks/heard?turn=1" speechTimeout="auto">'
            "<Say>What would you like?</Say></Gather><Say>Nothing heard</Say></Response>"
        )
        app.replies["hooks/heard"] = '<Response><Gather input="dtmf" numDigits="2"/></Response>'
        call = await self.create_call()
        await call.answer()
        self.assertEqual(call.waiting, "gather")
        gather = await call.when_gathering()
        self.assertEqual(gather["speechTimeout"], "auto")
        self.assertEqual(call.verbs[-1], ("Say", "What would you like?", {}))
        self.assertRaises(FakeTwilioError, call.gather_digits, "12")

        await fake.gather_result(call, "a table for two", confidence=0.87)
        (heard,) = app.requests_to("hooks/heard")
        self.assertTrue(heard.signature_ok)
        self.assertTrue(heard.url.endswith("/hooks/heard?turn=1"))
        self.assertEqual(heard.params["SpeechResult"], "a table for two")
        self.assertEqual(heard.params["Confidence"], "0.87")
        self.assertEqual(heard.params["CallStatus"], "in-progress")
        self.assertNotIn(("Say", "Nothing heard", {}), call.verbs)

        # The second Gather has no action: Twilio posts to the current document.
        await fake.gather_digits(call, "42")
        self.assertEqual(app.requests_to("hooks/heard")[-1].params["Digits"], "42")
        await call.when_gathering()
        await call.gather_timeout()
        self.assertEqual(call.status, "completed")  # the document ran out

    async def test_pause_on_clock_and_ring_timeout(self) -> None:
        """<Pause> and the ring Timeout run on the injected clock."""
        clock = Clock()
        _, app = await self.start(clock=clock)
        app.replies["hooks/voice"] = '<Response><Pause length="5"/><Say>after</Say></Response>'
        call = await self.create_call()
        await call.answer()
        self.assertEqual(call.waiting, "pause")
        clock.advance(5)
        await call.when_ended()
        self.assertEqual(call.verbs[-1], ("Say", "after", {}))
        self.assertEqual(call.callbacks[-1].param("CallDuration"), "5")

        other = await self.create_call()
        await other.ring()
        clock.advance(30)
        self.assertEqual(await other.when_ended(), "no-answer")

    async def test_auto_answer(self) -> None:
        """auto="answer" answers every new call by itself."""
        fake, app = await self.start(auto="answer")
        app.replies["hooks/voice"] = "<Response><Say>hi</Say></Response>"
        call = await self.create_call()
        self.assertIs(await fake.when_call(0), call)
        self.assertEqual(await call.when_ended(), "completed")
        self.assertEqual(call.verbs, [("Say", "hi", {})])

    async def test_inbound_reject(self) -> None:
        """An inbound call posts ringing/inbound to the voice URL; <Reject> refuses it."""
        fake, app = await self.start()
        app.replies["hooks/inbound"] = '<Response><Reject reason="busy"/></Response>'
        call = await fake.inbound_call("+15550001111", "+15550002222", app.base + "/hooks/inbound")
        self.assertEqual(call.status, "busy")
        self.assertEqual(call.answered_at, None)
        (seen,) = app.requests_to("hooks/inbound")
        self.assertTrue(seen.signature_ok)
        self.assertEqual(
            {k: seen.params[k] for k in ("Direction", "CallStatus", "From", "To", "ApiVersion")},
            {
                "Direction": "inbound",
                "CallStatus": "ringing",
                "From": "+15550001111",
                "To": "+15550002222",
                "ApiVersion": "2010-04-01",
            },
        )
        self.assertRegex(seen.params["CallSid"], CALL_SID)

        app.replies["hooks/inbound"] = "<Response><Reject/></Response>"
        call = await fake.inbound_call("+15550001111", "+15550002222", app.base + "/hooks/inbound")
        self.assertEqual(call.status, "no-answer")

    async def test_webhooks_through_stub_treq(self) -> None:
        """With http=StubTreq(app) webhooks reach an in-memory app, still signed."""
        app = App("secret-token", base="https://voice.example.com")
        fake = FakeTwilio(auth_token="secret-token", http=StubTreq(app.resource))
        self.addCleanup(fake.stop)
        app.replies["hooks/inbound"] = "<Response><Say>hello</Say><Hangup/></Response>"
        call = await fake.inbound_call("+15550001111", "+15550002222", app.base + "/hooks/inbound")
        self.assertEqual(call.status, "completed")
        self.assertTrue(app.seen[0].signature_ok)
        self.assertEqual(call.verbs[0], ("Say", "hello", {}))

    async def test_bad_twiml_is_an_application_error(self) -> None:
        """Unparseable TwiML is recorded and the call hangs up."""
        _, app = await self.start()
        app.replies["hooks/voice"] = "<Response><Say>oops</Response>"
        call = await self.create_call()
        await call.answer()
        self.assertEqual(call.status, "completed")
        self.assertIn("12100", call.errors[0])


class MediaStreamTests(FakeTwilioTestCase):
    """<Connect><Stream>: the WebSocket client side of Twilio."""

    async def answered_stream(self, **options: Any) -> tuple[Any, Any, AppSocket]:
        """An answered call with an open stream: (call, stream, app socket)."""
        _, app = await self.start(**options)
        app.replies["hooks/voice"] = stream_twiml(app, token="t0k", callId="abc")
        call = await self.create_call()
        await call.answer()
        stream = call.stream
        self.assertEqual((stream.state, call.waiting), ("open", "stream"))
        socket = await app.socket()
        await socket.when("start")
        return call, stream, socket

    async def test_connected_and_start(self) -> None:
        """connected, then start with the <Parameter>s; the upgrade is signed over wss://."""
        call, stream, socket = await self.answered_stream()
        connected, start = socket.messages[:2]
        self.assertEqual(connected, {"event": "connected", "protocol": "Call", "version": "1.0.0"})
        self.assertEqual(start["event"], "start")
        self.assertEqual(start["sequenceNumber"], "1")
        self.assertRegex(start["streamSid"], STREAM_SID)
        self.assertEqual(start["streamSid"], stream.sid)
        body = start["start"]
        self.assertEqual(body["callSid"], call.sid)
        self.assertEqual(body["accountSid"], self.fake.account_sid)
        self.assertEqual(body["tracks"], ["inbound"])
        self.assertEqual(body["customParameters"], {"token": "t0k", "callId": "abc"})
        self.assertEqual(
            body["mediaFormat"], {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
        )
        signature = socket.upgrade_headers["x-twilio-signature"]
        self.assertTrue(self.app.validator.validate(self.app.stream_url, {}, signature))
        self.assertEqual(
            call.verbs[:2],
            [("Connect", "", {}), ("Stream", self.app.stream_url, {"url": self.app.stream_url})],
        )

    async def test_audio_both_ways(self) -> None:
        """send_audio frames the caller's audio; the app's media is recorded with times."""
        _, stream, socket = await self.answered_stream()
        sent = await stream.send_audio(bytes(range(200)) + bytes(200))
        self.assertEqual(sent, 480)
        media = await socket.when("media", 3)
        frames = socket.of("media")
        self.assertIs(media, frames[2])
        self.assertEqual([m["media"]["chunk"] for m in frames], ["1", "2", "3"])
        self.assertEqual([m["sequenceNumber"] for m in frames], ["2", "3", "4"])
        self.assertEqual([m["media"]["track"] for m in frames], ["inbound"] * 3)
        timestamps = [int(m["media"]["timestamp"]) for m in frames]
        self.assertEqual(timestamps, sorted(set(timestamps)))
        audio = b"".join(base64.b64decode(m["media"]["payload"]) for m in frames)
        self.assertEqual(audio, bytes(range(200)) + bytes(200) + b"\xff" * 80)

        stream.send_dtmf("7")
        dtmf = await socket.when("dtmf")
        self.assertEqual(dtmf["dtmf"], {"track": "inbound_track", "digit": "7"})

        socket.send_media(stream.sid, b"\x01" * 160)
        socket.send_media(stream.sid, b"\x02" * 100)
        self.assertEqual(await stream.when_audio(260), b"\x01" * 160 + b"\x02" * 100)
        self.assertEqual([len(data) for _, data in stream.frames], [160, 100])
        self.assertEqual(stream.errors, [])

    async def test_marks_echo_at_playback_pace(self) -> None:
        """A mark comes back once the audio before it has played at 8000 bytes/s."""
        clock = Clock()
        _, stream, socket = await self.answered_stream(clock=clock)
        socket.send({"event": "mark", "streamSid": stream.sid, "mark": {"name": "idle"}})
        socket.send_media(stream.sid, b"\x00" * 800)
        socket.send({"event": "mark", "streamSid": stream.sid, "mark": {"name": "m1"}})
        socket.send_media(stream.sid, b"\x00" * 800)
        socket.send({"event": "mark", "streamSid": stream.sid, "mark": {"name": "m2"}})
        await stream.when_mark("m2")
        self.assertEqual(stream.marks_echoed, [(0, "idle")])  # nothing queued before it
        clock.advance(0.05)
        self.assertEqual([name for _, name in stream.marks_echoed], ["idle"])
        clock.advance(0.05)
        self.assertEqual(stream.marks_echoed[-1], (0.1, "m1"))
        clock.advance(0.1)
        self.assertEqual(await stream.when_mark_echoed("m2"), 0.2)
        echoes = await socket.when("mark", 3)
        self.assertEqual(echoes["mark"], {"name": "m2"})
        self.assertEqual([m["mark"]["name"] for m in socket.of("mark")], ["idle", "m1", "m2"])
        self.assertEqual(socket.of("mark")[0]["streamSid"], stream.sid)

    async def test_clear_flushes_audio_and_marks(self) -> None:
        """clear drops the queued audio and echoes every pending mark at once."""
        clock = Clock()
        _, stream, socket = await self.answered_stream(clock=clock)
        socket.send_media(stream.sid, b"\x00" * 8000)
        socket.send({"event": "mark", "streamSid": stream.sid, "mark": {"name": "a"}})
        socket.send_media(stream.sid, b"\x00" * 800)
        socket.send({"event": "mark", "streamSid": stream.sid, "mark": {"name": "b"}})
        await stream.when_mark("b")
        clock.advance(0.5)
        self.assertEqual(stream.marks_echoed, [])
        socket.send({"event": "clear", "streamSid": stream.sid})
        self.assertEqual(await stream.when_clear(), (0.5, 4800))
        self.assertEqual(stream.marks_echoed, [(0.5, "a"), (0.5, "b")])
        await socket.when("mark", 2)
        clock.advance(5)
        self.assertEqual(len(stream.marks_echoed), 2)

    async def test_realtime_pacing(self) -> None:
        """send_audio(realtime=True) sends one frame per 20 ms of the clock."""
        clock = Clock()
        _, stream, socket = await self.answered_stream(clock=clock)
        done = stream.send_audio(b"\x10" * 480, realtime=True)
        await socket.when("media", 1)
        self.assertNoResult(done)
        clock.advance(0.02)
        clock.advance(0.02)
        self.assertEqual(await done, 480)
        await socket.when("media", 3)
        frames = socket.of("media")
        self.assertEqual([m["media"]["timestamp"] for m in frames], ["0", "20", "40"])

    async def test_redirect_stops_the_stream(self) -> None:
        """A REST update with new TwiML sends stop, closes the socket and runs the TwiML."""
        call, stream, socket = await self.answered_stream()
        twiml = "<Response><Say>Goodbye</Say><Hangup/></Response>"
        code, body = await self.rest("POST", f"Calls/{call.sid}.json", {"Twiml": twiml})
        self.assertEqual((code, body["status"]), (200, "in-progress"))
        self.assertEqual(await stream.when_closed(), "twilio")
        stop = await socket.when("stop")
        self.assertEqual(stop["stop"], {"accountSid": self.fake.account_sid, "callSid": call.sid})
        self.assertEqual(stop["streamSid"], stream.sid)
        self.assertEqual(await call.when_ended(), "completed")
        self.assertEqual(call.verbs[-2:], [("Say", "Goodbye", {}), ("Hangup", "", {})])
        await self.app.wait(lambda: socket.closed or None)

    async def test_hangup_stops_the_stream(self) -> None:
        """Status=completed ends the call: stop, close, completed callback with duration."""
        call, stream, socket = await self.answered_stream()
        code, body = await self.rest("POST", f"Calls/{call.sid}.json", {"Status": "completed"})
        self.assertEqual((code, body["status"]), (200, "completed"))
        await socket.when("stop")
        self.assertEqual(await call.when_ended(), "completed")
        self.assertEqual(await stream.when_closed(), "twilio")
        self.assertEqual(self.app.requests_to("hooks/status")[-1].params["CallStatus"], "completed")

    async def test_app_closing_the_socket_moves_the_twiml_on(self) -> None:
        """When the app closes the stream, Twilio runs the next verb."""
        _, app = await self.start()
        app.replies["hooks/voice"] = stream_twiml(app).replace(
            "</Response>", "<Say>after the stream</Say></Response>"
        )
        call = await self.create_call()
        await call.answer()
        socket = await app.socket()
        socket.sendClose(1000)
        self.assertEqual(await call.stream.when_closed(), "app")
        self.assertEqual(await call.when_ended(), "completed")
        self.assertEqual(call.verbs[-1], ("Say", "after the stream", {}))

    async def test_caller_hangup_and_stream_errors(self) -> None:
        """caller_hangup stops the stream; a wrong streamSid is recorded as a protocol error."""
        call, stream, socket = await self.answered_stream()
        socket.send_media("MZ" + "0" * 32, b"\x00" * 160)
        socket.send({"event": "mark", "streamSid": stream.sid, "mark": {"name": "x"}})
        await stream.when_mark("x")
        self.assertEqual(stream.frames, [])
        self.assertIn("streamSid", stream.errors[0])
        await call.caller_hangup()
        self.assertEqual(call.status, "completed")
        self.assertEqual(await stream.when_closed(), "twilio")
        await socket.when("stop")

    async def test_ws_url_is_refused(self) -> None:
        """A ws:// stream URL fails as on Twilio (31922) and the call moves on."""
        _, app = await self.start()
        app.replies["hooks/voice"] = stream_twiml(app).replace("wss://", "ws://")
        call = await self.create_call()
        await call.answer()
        self.assertEqual(call.stream.closed_by, "failed")
        self.assertIn("31922", call.errors[0])
        self.assertEqual(call.status, "completed")
        self.assertEqual(app.sockets, [])

    async def test_rejected_handshake_moves_on(self) -> None:
        """A stream URL the app refuses (404) is a 31920 error; the TwiML moves on."""
        _, app = await self.start()
        app.replies["hooks/voice"] = stream_twiml(app).replace("/stream", "/nowhere")
        call = await self.create_call()
        await call.answer()
        self.assertEqual(call.stream.closed_by, "failed")
        self.assertIn("31920", call.errors[0])
        self.assertEqual(call.status, "completed")

    async def test_start_stream_is_a_unidirectional_fork(self) -> None:
        """<Start><Stream> does not block, carries the asked tracks and takes no media back."""
        _, app = await self.start()
        app.replies["hooks/voice"] = (
            f'<Response><Start><Stream url="{app.stream_url}" track="both_tracks"/></Start>'
            '<Pause length="60"/></Response>'
        )
        call = await self.create_call()
        await call.answer()
        self.assertEqual(call.waiting, "pause")
        stream = await call.when_stream()
        socket = await app.socket()
        start = await socket.when("start")
        self.assertEqual(start["start"]["tracks"], ["inbound", "outbound"])
        self.assertRaises(FakeTwilioError, stream.send_dtmf, "1")
        socket.send_media(stream.sid, b"\x00" * 160)
        await stream.when_message("media")
        self.assertEqual((stream.frames, len(stream.errors)), ([], 1))
        await call.caller_hangup()
        self.assertEqual(await stream.when_closed(), "twilio")
        await socket.when("stop")
