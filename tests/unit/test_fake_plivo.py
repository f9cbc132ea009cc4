"""
Self-tests of the fake Plivo (L{tests.fakes.plivo}).

"The app" is a tiny twisted.web resource tree on 127.0.0.1 that answers Plivo
XML by path, checks every Signature V3 (and the main-account one) with the
plivo SDK's own validator and serves a WebSocket endpoint for audio streams.
The REST side is driven with StubTreq where a socket adds nothing.  The
fake's signatures are also checked against the known-answer vectors of
Plivo's Go, Ruby and .NET SDK test suites.
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
from plivo.utils import signature_v3 as sdk_v3
from plivo.utils.signature_v3 import validate_v3_signature
from treq.client import HTTPClient
from treq.testing import StubTreq
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool, ResponseFailed
from twisted.web.pages import notFound
from twisted.web.resource import Resource
from twisted.web.server import Site

from tests.fakes.plivo import (
    Element,
    FakePlivo,
    FakePlivoError,
    signature_v2,
    signature_v3,
    v3_base_string,
)

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
TIME = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")


@attrs.frozen
class Seen:
    """One callback as the app received it, with what the plivo SDK made of its signatures."""

    method: str
    url: str
    params: dict[str, str]
    headers: dict[str, str]
    body: bytes
    v3_ok: bool
    ma_v3_ok: bool

    @property
    def path(self) -> str:
        """The path, without the query string."""
        return self.url.split("://", 1)[1].partition("/")[2].partition("?")[0]


def sdk_valid(method: str, url: str, headers: dict[str, str], params: dict, token: str) -> bool:
    """
    The plivo SDK's verdict on the C{X-Plivo-Signature-V3} in C{headers}.

    Its public validator refuses C{ws://} and C{wss://} URLs, so a stream
    upgrade is checked with the helpers that validator is made of.
    """
    signature = headers.get("x-plivo-signature-v3")
    nonce = headers.get("x-plivo-signature-v3-nonce")
    if signature is None or nonce is None:
        return False
    if url.startswith(("ws://", "wss://")):
        base = sdk_v3.construct_get_url(url, dict(params)).decode("utf-8")
        expected = sdk_v3.get_signature_v3(token.encode(), base, nonce.encode())
        return expected in signature.encode().split(b",")
    return validate_v3_signature(method, url, nonce, token, signature, dict(params))


class App:
    """
    The app under Plivo: XML per path from C{replies} (default C{<Response/>}),
    every request kept in C{seen}, WebSockets at C{/stream} kept in C{sockets}.
    """

    def __init__(self, auth_token: str, main_token: str, base: str | None = None) -> None:
        self.auth_token = auth_token
        self.main_token = main_token
        self.base = base
        self.replies: dict[str, str] = {}
        self.codes: dict[str, int] = {}
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
        """The wss:// URL of the audio-stream endpoint, as the app would publish it."""
        return "wss://" + self.base.split("://", 1)[1] + "/stream?callId=abc"

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
        """Record a callback, check its signatures, answer XML."""
        url = self.base + request.uri.decode("utf-8")
        request.content.seek(0)
        body = request.content.read()
        method = request.method.decode()
        params = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
        headers = {
            k.decode().lower(): v[0].decode() for k, v in request.requestHeaders.getAllRawHeaders()
        }
        v3_ok = sdk_valid(method, url, headers, params, self.auth_token)
        ma_headers = {
            "x-plivo-signature-v3": headers.get("x-plivo-signature-ma-v3", ""),
            "x-plivo-signature-v3-nonce": headers.get("x-plivo-signature-v3-nonce", ""),
        }
        ma_ok = sdk_valid(method, url, ma_headers, params, self.main_token)
        seen = Seen(method, url, params, headers, body, v3_ok, ma_ok)
        self.seen.append(seen)
        self.changed()
        if self.reject_bad_signatures and not v3_ok:
            request.setResponseCode(403)
            return b"Forbidden"
        request.setResponseCode(self.codes.get(seen.path, 200))
        request.setHeader(b"Content-Type", b"application/xml")
        return self.replies.get(seen.path, "<Response/>").encode("utf-8")


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
    """The app's end of an audio stream: keeps every message, sends on demand."""

    def onConnect(self, request: Any) -> None:
        self.upgrade_headers = dict(request.headers)
        self.request_path = request.path
        self.request_params = request.params
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
        """Send one JSON message to Plivo."""
        self.sendMessage(json.dumps(message).encode("utf-8"), isBinary=False)

    def play(self, data: bytes, content_type: str = "audio/x-mulaw", rate: int = 8000) -> None:
        """Send audio to Plivo as a playAudio event."""
        payload = base64.b64encode(data).decode()
        media = {"contentType": content_type, "sampleRate": rate, "payload": payload}
        self.send({"event": "playAudio", "media": media})


def stream_xml(app: App, after: str = "", **attributes: str) -> str:
    """A bidirectional mu-law <Stream> document, then C{after}."""
    settings = {
        "bidirectional": "true",
        "keepCallAlive": "true",
        "contentType": "audio/x-mulaw;rate=8000",
        **attributes,
    }
    attrs_text = " ".join(f'{k}="{v}"' for k, v in settings.items())
    url = app.stream_url.replace("&", "&amp;")
    return f"<Response><Stream {attrs_text}>{url}</Stream>{after}</Response>"


class FakePlivoTestCase(TestCase):
    """Wiring shared by the tests: a fake, an app, and a REST client (StubTreq)."""

    timeout = 20

    async def start(self, live_app: bool = True, **options: Any) -> tuple[FakePlivo, App]:
        """A fake and a listening app, both torn down after the test."""
        options.setdefault("insecure_ws", True)
        fake = FakePlivo(**options)
        app = App(
            fake.auth_token,
            fake.main_auth_token,
            base=None if live_app else "https://voice.example.com",
        )
        if live_app:
            await app.listen()
            self.addCleanup(app.stop)
        self.addCleanup(fake.stop)
        self.api = StubTreq(fake.resource)
        self.fake, self.app = fake, app
        return fake, app

    def url(self, suffix: str) -> str:
        """A REST URL of the fake's account."""
        return f"{self.fake.base_url}/v1/Account/{self.fake.auth_id}/{suffix}"

    async def rest(
        self, method: str, suffix: str, body: Any = None, auth: Any = None, params: Any = None
    ) -> tuple[int, Any]:
        """One REST request; fires with (status, JSON body or None)."""
        auth = auth or (self.fake.auth_id, self.fake.auth_token)
        extra = {} if body is None else {"json": body}
        response = await self.api.request(
            method, self.url(suffix), auth=auth, params=params, **extra
        )
        content = await response.content()
        return response.code, json.loads(content) if content else None

    async def make_call(self, **extra: Any) -> Any:
        """Make an outbound call the way the daemon does; fires with its L{FakeCall}."""
        body = {
            "from": "+14155550100",
            "to": "+14155550111",
            "answer_url": f"{self.app.base}/hooks/answer?callId=abc&flow=answer",
            "answer_method": "POST",
            "hangup_url": f"{self.app.base}/hooks/hangup?callId=abc&flow=hangup",
            "hangup_method": "POST",
            "ring_url": f"{self.app.base}/hooks/ring?callId=abc",
            **extra,
        }
        code, answer = await self.rest("POST", "Call/", body)
        self.assertEqual(code, 201, answer)
        return self.fake.call(answer["request_uuid"])


class RestTests(FakePlivoTestCase):
    """The REST API, through StubTreq."""

    async def test_make_call_answers_a_request_uuid(self) -> None:
        """201 with api_id, message and request_uuid; the CallUUID is another id."""
        fake, _ = await self.start(live_app=False)
        body = {
            "from": "+14155550100",
            "to": "14155550111",
            "answer_url": "https://voice.example.com/hooks/answer",
            "ring_timeout": 30,
            "hangup_on_ring": 25,
            "machine_detection": "true",
        }
        code, answer = await self.rest("POST", "Call/", body)
        self.assertEqual(code, 201)
        self.assertEqual(set(answer), {"api_id", "message", "request_uuid"})
        self.assertEqual(answer["message"], "call fired")
        self.assertRegex(answer["request_uuid"], UUID)
        call = fake.call(answer["request_uuid"])
        self.assertIs(fake.call(call.call_uuid), call)
        self.assertNotEqual(call.call_uuid, call.request_uuid)
        self.assertEqual((call.status, call.ring_timeout, call.hangup_on_ring), ("queued", 30, 25))
        recorded = fake.requests[-1]
        self.assertEqual((recorded.method, recorded.auth_ok), ("POST", True))
        self.assertEqual(recorded.path, f"/v1/Account/{fake.auth_id}/Call/")
        self.assertEqual(recorded.get("machine_detection"), "true")

        code, queued = await self.rest(
            "GET", f"Call/{call.request_uuid}/", params={"status": "queued"}
        )
        self.assertEqual((code, queued["call_status"]), (200, "queued"))
        code, missing = await self.rest("GET", f"Call/{call.call_uuid}/", params={"status": "live"})
        self.assertEqual(code, 404)
        self.assertEqual(set(missing), {"api_id", "error"})
        code, _ = await self.rest("GET", f"Call/{call.call_uuid}/")
        self.assertEqual(code, 404)  # no call record while the call is live

    async def test_bulk_destinations(self) -> None:
        """Several destinations joined by < make one call each and a list of request uuids."""
        fake, _ = await self.start(live_app=False)
        body = {
            "from": "14155550100",
            "to": "14155550111<sip:agent@example.com",
            "answer_url": "https://voice.example.com/a",
        }
        code, answer = await self.rest("POST", "Call/", body)
        self.assertEqual(code, 201)
        self.assertEqual(len(answer["request_uuid"]), 2)
        self.assertEqual([c.to for c in fake.calls], ["14155550111", "sip:agent@example.com"])

    async def test_wrong_auth_is_401(self) -> None:
        """A bad token, a wrong Auth ID or no credentials get 401 with Plivo's error JSON."""
        fake, _ = await self.start(live_app=False)
        for auth in ((fake.auth_id, "nope"), ("MAOTHERACCOUNT000000", fake.auth_token)):
            code, body = await self.rest("GET", "Call/", auth=auth)
            self.assertEqual(code, 401)
            self.assertEqual(set(body), {"api_id", "error"})
        self.assertFalse(fake.requests[-1].auth_ok)
        response = await self.api.get(self.url("Call/"))
        self.assertEqual(response.code, 401)
        self.assertEqual(fake.calls, [])

    async def test_validation_and_injected_errors(self) -> None:
        """Bad input is a 400 that creates nothing; fail_next and drop_next fail on demand."""
        fake, _ = await self.start(live_app=False)
        good = {"from": "14155550100", "to": "14155550111", "answer_url": "https://x.example/a"}
        for broken in (
            {k: v for k, v in good.items() if k != "answer_url"},
            {**good, "to": "not a number"},
            {**good, "to": "14155550100"},
            {**good, "answer_url": "ftp://x.example/a"},
            {**good, "ring_timeout": "soon"},
        ):
            code, body = await self.rest("POST", "Call/", broken)
            self.assertEqual(code, 400, broken)
            self.assertIn("error", body)
        self.assertEqual(fake.calls, [])
        fake.fail_next("create", 500, "internal server error")
        code, body = await self.rest("POST", "Call/", good)
        self.assertEqual((code, body["error"]), (500, "internal server error"))
        fake.drop_next("create")
        with self.assertRaises(ResponseFailed):
            await self.rest("POST", "Call/", good)
        self.assertEqual(fake.calls, [])
        code, _ = await self.rest("POST", "Call/", good)
        self.assertEqual(code, 201)
        code, _ = await self.rest("GET", "Call")  # Plivo's paths end with /
        self.assertEqual(code, 404)

    async def test_live_server(self) -> None:
        """listen() serves the same API on 127.0.0.1 for a real HTTP client."""
        fake, _ = await self.start(live_app=False)
        base = await fake.listen()
        self.assertRegex(base, r"^http://127\.0\.0\.1:\d+$")
        pool = HTTPConnectionPool(reactor, persistent=False)
        self.addCleanup(pool.closeCachedConnections)
        client = HTTPClient(Agent(reactor, pool=pool))
        body = {"from": "14155550100", "to": "14155550111", "answer_url": "https://x.example/a"}
        auth = (fake.auth_id, fake.auth_token)
        response = await client.post(self.url("Call/"), json=body, auth=auth)
        self.assertEqual(response.code, 201)
        self.assertEqual((await response.json())["message"], "call fired")
        fake.drop_next("create")
        with self.assertRaises(ResponseFailed):
            await client.post(self.url("Call/"), json=body, auth=auth)

    async def test_whole_call_over_tcp_with_auto_answer(self) -> None:
        """As the product reaches it: REST over TCP, callbacks to a live app, auto-answer."""
        fake, app = await self.start(auto="answer")
        await fake.listen()
        app.replies["hooks/answer"] = "<Response><Speak>hi</Speak></Response>"
        pool = HTTPConnectionPool(reactor, persistent=False)
        self.addCleanup(pool.closeCachedConnections)
        client = HTTPClient(Agent(reactor, pool=pool))
        body = {
            "from": "+14155550100",
            "to": "+14155550111",
            "answer_url": f"{app.base}/hooks/answer?callId=abc",
            "hangup_url": f"{app.base}/hooks/hangup?callId=abc",
        }
        response = await client.post(
            self.url("Call/"), json=body, auth=(fake.auth_id, fake.auth_token)
        )
        self.assertEqual(response.code, 201)
        call = fake.call((await response.json())["request_uuid"])
        self.assertEqual(await call.when_ended(), "completed")
        self.assertEqual([s.path for s in app.seen], ["hooks/answer", "hooks/hangup"])
        self.assertTrue(all(s.v3_ok for s in app.seen))
        uuid_in_path = f"Call/{call.call_uuid}/"
        response = await client.get(self.url(uuid_in_path), auth=(fake.auth_id, fake.auth_token))
        self.assertEqual((await response.json())["hangup_cause_code"], 4010)

    async def test_cancel_before_answer_uses_the_request(self) -> None:
        """DELETE Request/{request_uuid}/ cancels a ringing call; the hangup callback says 1000."""
        fake, app = await self.start()
        call = await self.make_call()
        await call.ring()
        code, _ = await self.rest("DELETE", f"Call/{call.request_uuid}/")
        self.assertEqual(code, 404)  # the request uuid is not a CallUUID
        code, body = await self.rest("DELETE", f"Request/{call.request_uuid}/")
        self.assertEqual((code, body), (204, None))
        self.assertEqual(await call.when_ended(), "cancel")
        (hangup,) = app.requests_to("hooks/hangup")
        self.assertEqual(
            {k: hangup.params[k] for k in ("CallStatus", "HangupCauseCode", "HangupSource")},
            {"CallStatus": "cancel", "HangupCauseCode": "1000", "HangupSource": "API Request"},
        )
        code, _ = await self.rest("DELETE", f"Request/{call.request_uuid}/")
        self.assertEqual(code, 404)
        self.assertEqual(fake.errors, [])

    async def test_live_call_hangup_and_call_record(self) -> None:
        """?status=live while in progress; DELETE hangs up (204); then the CDR tells how."""
        clock = Clock()
        _, app = await self.start(clock=clock)
        app.replies["hooks/answer"] = '<Response><Wait length="60"/></Response>'
        call = await self.make_call()
        await call.answer()
        clock.advance(7)
        code, live = await self.rest("GET", f"Call/{call.call_uuid}/", params={"status": "live"})
        self.assertEqual(code, 200)
        self.assertEqual(
            {k: live[k] for k in ("call_status", "call_uuid", "request_uuid", "direction")},
            {
                "call_status": "in-progress",
                "call_uuid": call.call_uuid,
                "request_uuid": call.request_uuid,
                "direction": "outbound",
            },
        )
        code, body = await self.rest("DELETE", f"Call/{call.call_uuid}/")
        self.assertEqual((code, body), (204, None))
        self.assertEqual(await call.when_ended(), "completed")
        code, cdr = await self.rest("GET", f"Call/{call.call_uuid}/")
        self.assertEqual(code, 200)
        self.assertEqual(
            {
                k: cdr[k]
                for k in ("call_uuid", "call_duration", "hangup_cause_name", "hangup_source")
            },
            {
                "call_uuid": call.call_uuid,
                "call_duration": 7,
                "hangup_cause_name": "Normal Hangup",
                "hangup_source": "API Request",
            },
        )
        code, _ = await self.rest("GET", f"Call/{call.call_uuid}/", params={"status": "live"})
        self.assertEqual(code, 404)
        code, _ = await self.rest("DELETE", f"Call/{call.call_uuid}/")
        self.assertEqual(code, 404)
        self.assertEqual(app.requests_to("hooks/hangup")[-1].params["Duration"], "7")

    async def test_transfer_dtmf_and_speak(self) -> None:
        """Transfer (202) runs the aleg_url's XML; DTMF and Speak are recorded (202)."""
        _, app = await self.start()
        app.replies["hooks/answer"] = '<Response><Wait length="300"/></Response>'
        app.replies["hooks/speak"] = '<Response><Speak language="en-US">Hi</Speak></Response>'
        call = await self.make_call()
        await call.ring()
        transfer = {"legs": "aleg", "aleg_url": f"{app.base}/hooks/speak?callId=abc"}
        code, body = await self.rest("POST", f"Call/{call.call_uuid}/", transfer)
        self.assertEqual(code, 400)  # not answered yet
        await call.answer()
        self.assertEqual(call.waiting, "wait")
        code, body = await self.rest("POST", f"Call/{call.call_uuid}/DTMF/", {"digits": "12#"})
        self.assertEqual((code, body["message"]), (202, "digits sent"))
        self.assertEqual(call.dtmf_sent, ["12#"])
        code, body = await self.rest("POST", f"Call/{call.call_uuid}/Speak/", {"text": "Hold on"})
        self.assertEqual((code, body["message"]), (202, "speak started"))
        code, body = await self.rest("POST", f"Call/{call.call_uuid}/", {"legs": "aleg"})
        self.assertEqual(code, 400)  # no aleg_url
        code, body = await self.rest("POST", f"Call/{call.call_uuid}/", transfer)
        self.assertEqual((code, body["message"]), (202, "call transfered"))
        self.assertEqual(await call.when_ended(), "completed")
        (fetched,) = app.requests_to("hooks/speak")
        self.assertTrue(fetched.v3_ok)
        self.assertEqual(fetched.params["Event"], "Redirect")
        self.assertEqual(
            [e.name for e in call.elements], ["Wait", "DTMF", "Speak", "Transfer", "Speak"]
        )
        self.assertEqual(call.elements[-1], ("Speak", "Hi", {"language": "en-US"}))
        self.assertEqual(call.hangup.code, 4010)


class CallbackTests(FakePlivoTestCase):
    """Ring, answer and hangup callbacks and Plivo XML, against a live app."""

    async def test_outbound_call_signed_callbacks_and_timed_speech(self) -> None:
        """Ring, StartApp and Hangup are signed form posts; <Speak> takes time on the clock."""
        clock = Clock()
        _fake, app = await self.start(clock=clock)
        app.replies["hooks/answer"] = (
            '<?xml version="1.0" encoding="UTF-8"?>'
            '<Response><Speak voice="WOMAN">Hello there, this is a test.</Speak>'
            "<Play>https://x.example/a.mp3</Play><Hangup/><Speak>never</Speak></Response>"
        )
        call = await self.make_call()
        await call.ring()
        (ring,) = app.requests_to("hooks/ring")
        self.assertEqual((ring.params["Event"], ring.params["CallStatus"]), ("Ring", "ringing"))
        await call.answer()
        self.assertEqual((call.status, call.waiting), ("in-progress", "speak"))
        clock.advance(1.0)
        self.assertEqual(call.waiting, "speak")  # 28 characters take about 1.9 s
        clock.advance(1.0)
        self.assertEqual(await call.when_ended(), "completed")
        self.assertEqual(
            call.elements,
            [
                ("Speak", "Hello there, this is a test.", {"voice": "WOMAN"}),
                ("Play", "https://x.example/a.mp3", {}),
                ("Hangup", "", {}),
            ],
        )
        self.assertIsInstance(call.elements[0], Element)
        self.assertTrue(all(s.v3_ok and s.ma_v3_ok for s in app.seen), app.seen)
        (answer,) = app.requests_to("hooks/answer")
        self.assertTrue(answer.url.endswith("/hooks/answer?callId=abc&flow=answer"))
        self.assertEqual(answer.headers["content-type"], "application/x-www-form-urlencoded")
        self.assertEqual(
            {k: answer.params[k] for k in ("Event", "CallStatus", "Direction", "From", "To")},
            {
                "Event": "StartApp",
                "CallStatus": "in-progress",
                "Direction": "outbound",
                "From": "14155550100",
                "To": "14155550111",
            },
        )
        for seen in app.seen:
            self.assertEqual(seen.params["CallUUID"], call.call_uuid)
            self.assertEqual(seen.params["RequestUUID"], call.request_uuid)
            self.assertEqual(seen.params["ALegRequestUUID"], call.request_uuid)
            self.assertRegex(seen.headers["x-plivo-signature-v3-nonce"], r"^\d{20}$")
        (hangup,) = app.requests_to("hooks/hangup")
        self.assertEqual(
            {
                k: hangup.params[k]
                for k in (
                    "Event",
                    "CallStatus",
                    "HangupCause",
                    "HangupCauseCode",
                    "HangupCauseName",
                    "HangupSource",
                    "Duration",
                    "BillDuration",
                )
            },
            {
                "Event": "Hangup",
                "CallStatus": "completed",
                "HangupCause": "NORMAL_CLEARING",
                "HangupCauseCode": "4000",
                "HangupCauseName": "Normal Hangup",
                "HangupSource": "Answer XML",
                "Duration": "2",
                "BillDuration": "2",
            },
        )
        for name in ("StartTime", "AnswerTime", "EndTime"):
            self.assertRegex(hangup.params[name], TIME)
        self.assertEqual(call.errors, [])

    async def test_get_input_speech_dtmf_and_timeout(self) -> None:
        """Speech and digits are posted to the action; a timeout runs the next element."""
        clock = Clock()
        _fake, app = await self.start(clock=clock)
        app.replies["hooks/answer"] = (
            '<Response><GetInput action="/hooks/heard?turn=1" inputType="speech" '
            'executionTimeout="10" speechEndTimeout="auto">'
            "<Speak>What would you like?</Speak></GetInput><Speak>Nothing heard</Speak></Response>"
        )
        app.replies["hooks/heard"] = (
            f'<Response><GetInput action="{app.base}/hooks/keys" inputType="dtmf" '
            'redirect="false" executionTimeout="5"/>'
            '<GetInput action="/hooks/keys" inputType="dtmf speech" executionTimeout="5"/>'
            "<Speak>Bye</Speak></Response>"
        )
        call = await self.make_call()
        await call.answer()
        self.assertEqual(call.waiting, "speak")
        self.assertRaises(FakePlivoError, call.input_timeout)  # the prompt still plays
        clock.advance(2)
        attributes = await call.when_listening()
        self.assertEqual(attributes["speechEndTimeout"], "auto")
        self.assertEqual(call.waiting, "input")
        self.assertRaises(FakePlivoError, call.press, "12")

        await call.say("a table for two", confidence=0.87)
        (heard,) = app.requests_to("hooks/heard")
        self.assertTrue(heard.v3_ok)
        self.assertTrue(heard.url.endswith("/hooks/heard?turn=1"))
        self.assertEqual(
            {k: heard.params[k] for k in ("InputType", "Speech", "SpeechConfidenceScore")},
            {"InputType": "speech", "Speech": "a table for two", "SpeechConfidenceScore": "0.87"},
        )
        self.assertNotIn("Event", heard.params)
        self.assertNotIn(("Speak", "Nothing heard", {}), call.elements)

        # redirect="false": the digits are posted and the next element runs.
        await call.when_listening()
        await call.press("42")
        (keys,) = app.requests_to("hooks/keys")
        self.assertEqual((keys.params["InputType"], keys.params["Digits"]), ("dtmf", "42"))
        self.assertEqual(call.elements[-1].name, "GetInput")
        self.assertEqual(call.waiting, "input")
        clock.advance(5)  # executionTimeout: nothing posted, the Speak after runs
        await call.when_element("Speak", 2)
        clock.advance(1)
        self.assertEqual(await call.when_ended(), "completed")
        self.assertEqual(len(app.requests_to("hooks/keys")), 1)
        self.assertEqual(call.elements[-1], ("Speak", "Bye", {}))
        self.assertEqual(call.hangup.name, "End Of XML Instructions")

    async def test_caller_speaks_over_the_prompt(self) -> None:
        """Speech while the nested <Speak> plays cuts it and is posted at once."""
        clock = Clock()
        _, app = await self.start(clock=clock)
        app.replies["hooks/answer"] = (
            '<Response><GetInput action="/hooks/heard" inputType="speech">'
            "<Speak>A long, long greeting that takes several seconds</Speak>"
            "</GetInput></Response>"
        )
        app.replies["hooks/heard"] = "<Response><Hangup/></Response>"
        call = await self.make_call()
        await call.answer()
        clock.advance(1)
        self.assertEqual(call.waiting, "speak")
        await call.say("stop")
        self.assertEqual(app.requests_to("hooks/heard")[0].params["Speech"], "stop")
        self.assertEqual(await call.when_ended(), "completed")
        self.assertEqual(call.duration, 1)

    async def test_redirect_wait_dtmf_and_end_of_xml(self) -> None:
        """<Redirect> fetches the next document; <Wait> takes its length; running out is 4010."""
        clock = Clock()
        _, app = await self.start(clock=clock)
        app.replies["hooks/answer"] = "<Response><Redirect>/hooks/next?step=2</Redirect></Response>"
        app.replies["hooks/next"] = '<Response><Wait length="3"/><DTMF>12</DTMF></Response>'
        call = await self.make_call()
        await call.answer()
        self.assertEqual(call.waiting, "wait")
        (redirect,) = app.requests_to("hooks/next")
        self.assertEqual(redirect.params["Event"], "Redirect")
        self.assertTrue(redirect.url.endswith("/hooks/next?step=2"))
        clock.advance(3)
        self.assertEqual(await call.when_ended(), "completed")
        self.assertEqual(call.dtmf_sent, ["12"])
        hangup = app.requests_to("hooks/hangup")[-1]
        self.assertEqual(
            (hangup.params["HangupCauseCode"], hangup.params["HangupCauseName"]),
            ("4010", "End Of XML Instructions"),
        )

    async def test_twilio_verbs_are_not_plivo_xml(self) -> None:
        """A document with <Say> is refused whole (8011): nothing runs and the call ends."""
        _, app = await self.start()
        app.replies["hooks/answer"] = "<Response><Speak>hi</Speak><Say>oops</Say></Response>"
        call = await self.make_call()
        await call.answer()
        self.assertEqual(call.status, "completed")
        self.assertEqual(call.elements, [])
        self.assertIn("8011", call.errors[0])
        self.assertEqual(app.requests_to("hooks/hangup")[-1].params["HangupCauseCode"], "8011")

    async def test_failed_answer_url_uses_the_fallback(self) -> None:
        """An answer URL answering 500 is retried on fallback_url; both failing ends the call."""
        _, app = await self.start()
        app.codes["hooks/answer"] = 500
        app.replies["hooks/fallback"] = "<Response><Speak>fallback</Speak></Response>"
        call = await self.make_call(fallback_url=f"{app.base}/hooks/fallback")
        await call.answer()
        self.assertEqual(call.elements, [("Speak", "fallback", {})])
        self.assertEqual([c.kind for c in call.callbacks][:3], ["ring", "answer", "fallback"])
        self.assertIn("answered HTTP 500", call.errors[0])

        other = await self.make_call()
        await other.answer()
        self.assertEqual(other.status, "completed")
        self.assertEqual(other.hangup.code, 7011)

    async def test_ring_timeout_and_hangup_on_ring_on_the_clock(self) -> None:
        """ring_timeout ends a ringing call "timeout"; hangup_on_ring cancels it sooner."""
        clock = Clock()
        _, app = await self.start(clock=clock)
        call = await self.make_call(ring_timeout=30)
        await call.ring()
        clock.advance(29)
        self.assertEqual(call.status, "ringing")
        clock.advance(1)
        self.assertEqual(await call.when_ended(), "timeout")
        other = await self.make_call(ring_timeout=30, hangup_on_ring=10)
        await other.ring()
        clock.advance(10)
        self.assertEqual(await other.when_ended(), "cancel")
        self.assertEqual(
            [s.params["CallStatus"] for s in app.requests_to("hooks/hangup")], ["timeout", "cancel"]
        )

    async def test_busy_no_answer_failed_and_auto(self) -> None:
        """Unanswered outcomes end with their CallStatus; auto="answer" answers by itself."""
        fake, app = await self.start()
        for outcome, status in (("busy", "busy"), ("no_answer", "no-answer"), ("fail", "failed")):
            call = await self.make_call()
            await getattr(call, outcome)()
            self.assertEqual(call.status, status)
            self.assertRaises(FakePlivoError, call.answer)
        self.assertEqual(
            [s.params["CallStatus"] for s in app.requests_to("hooks/hangup")],
            ["busy", "no-answer", "failed"],
        )
        self.assertEqual(app.requests_to("hooks/answer"), [])
        fake.auto = "answer"
        app.replies["hooks/answer"] = "<Response><Speak>hi</Speak></Response>"
        call = await self.make_call()
        self.assertIs(await fake.when_call(3), call)
        self.assertEqual(await call.when_ended(), "completed")
        self.assertEqual(call.elements, [("Speak", "hi", {})])

    async def test_inbound_calls(self) -> None:
        """An inbound call posts Direction=inbound, CallStatus=ringing; <Hangup/> first rejects."""
        fake, app = await self.start()
        app.replies["hooks/inbound"] = "<Response><Speak>hello</Speak></Response>"
        call = await fake.inbound_call(
            "+14155550199",
            "14155550100",
            app.base + "/hooks/inbound",
            hangup_url=app.base + "/hooks/hangup",
        )
        self.assertEqual(call.status, "completed")
        self.assertIsNotNone(call.answered_at)
        (seen,) = app.requests_to("hooks/inbound")
        self.assertTrue(seen.v3_ok)
        self.assertEqual(
            {k: seen.params[k] for k in ("Direction", "CallStatus", "From", "To", "Event")},
            {
                "Direction": "inbound",
                "CallStatus": "ringing",
                "From": "14155550199",
                "To": "14155550100",
                "Event": "StartApp",
            },
        )
        self.assertNotIn("RequestUUID", seen.params)
        self.assertIsNone(call.request_uuid)
        self.assertRaises(FakePlivoError, call.answer)

        app.replies["hooks/inbound"] = "<Response><Hangup/></Response>"
        call = await fake.inbound_call("14155550199", "14155550100", app.base + "/hooks/inbound")
        self.assertEqual(call.status, "no-answer")
        self.assertIsNone(call.answered_at)
        self.assertEqual(call.hangup.name, "Rejected")

    async def test_callbacks_through_stub_treq(self) -> None:
        """With http=StubTreq(app) callbacks reach an in-memory app, still signed."""
        app = App("secret-token", "secret-token", base="https://voice.example.com")
        fake = FakePlivo(auth_token="secret-token", http=StubTreq(app.resource))
        self.addCleanup(fake.stop)
        app.replies["hooks/inbound"] = "<Response><Speak>hello</Speak><Hangup/></Response>"
        call = await fake.inbound_call("14155550199", "14155550100", app.base + "/hooks/inbound")
        self.assertEqual(call.status, "completed")
        self.assertTrue(app.seen[0].v3_ok)
        self.assertEqual(call.elements[0], ("Speak", "hello", {}))

    async def test_get_callbacks_are_signed_over_the_query(self) -> None:
        """answer_method=GET puts the parameters in the query string, signed as a GET."""
        _, app = await self.start()
        app.replies["hooks/answer"] = "<Response><Hangup/></Response>"
        call = await self.make_call(answer_method="GET")
        await call.answer()
        (answer,) = app.requests_to("hooks/answer")
        self.assertEqual((answer.method, answer.body), ("GET", b""))
        self.assertIn(f"CallUUID={call.call_uuid}", answer.url)
        self.assertTrue(answer.v3_ok and answer.ma_v3_ok)


class SignatureTests(FakePlivoTestCase):
    """Signature V3 (and V2) as the fake computes it, against the SDK and published vectors."""

    # The parameters of Plivo's SDK test vectors (plivo-go utils_test.go,
    # plivo-ruby spec/signature_spec.rb, plivo-dotnet TestSignature.cs).
    VECTOR_TOKEN = "Y2Q2ZDgxZmY5YWRiOTI5YmQ1Njg0MTAxZWIyOTc4"
    VECTOR_NONCE = "31627761595286130198"
    VECTOR_URL = "https://plivobin.non-prod.plivops.com/api/v1/validate_signature03.xml"
    VECTOR_PARAMS = {
        "Direction": "outbound",
        "From": "19792014278",
        "ALegUUID": "3e82ae9d-2c78-4d85-b1a4-6eae7dbafb36",
        "CallStatus": "in-progress",
        "BillRate": "0.002",
        "ParentAuthID": "MANWVLYTK4ZWU1YTY4QA",
        "To": "sip:PlivoSignature382029104058171078704104@phone-qa.voice.plivodev.com",
        "ALegRequestUUID": "3e82ae9d-2c78-4d85-b1a4-6eae7dbafb36",
        "CallUUID": "3e82ae9d-2c78-4d85-b1a4-6eae7dbafb36",
        "RequestUUID": "3e82ae9d-2c78-4d85-b1a4-6eae7dbafb36",
        "SIP-H-To": "<sip:PlivoSignature382029104058171078704104@52.9.11.55;transport=udp>;tag=1",
        "SessionStart": "2020-04-08 11:34:33.238707",
        "Event": "StartApp",
    }

    def test_published_v3_vectors(self) -> None:
        """The four V3 vectors the Go, Ruby and .NET suites share: POST/GET, with/without query."""
        cases = [
            ("POST", self.VECTOR_URL + "/?a=b&c=d", "k7Pusd4OxCIjR5IfA9iedDNu/h/gbdYqdzG/MiYtd1c="),
            ("GET", self.VECTOR_URL + "/?a=b&c=d", "UBq8jAtd32wR8EK9VgxbBn4n5rpI/l1H9iN4WfSEHFQ="),
            ("POST", self.VECTOR_URL, "iAjE5QqI37mbkYe4w3jTMudqEzbDufdqi7sYwTu64e0="),
            ("GET", self.VECTOR_URL, "i/MQsaQSAd6fiKhOh2qeeeLHZ9faldADSb3/7+Akfbc="),
        ]
        for method, url, expected in cases:
            ours = signature_v3(
                self.VECTOR_TOKEN, method, url, self.VECTOR_NONCE, self.VECTOR_PARAMS
            )
            self.assertEqual(ours, expected, (method, url))
            self.assertTrue(
                validate_v3_signature(
                    method,
                    url,
                    self.VECTOR_NONCE,
                    self.VECTOR_TOKEN,
                    ours,
                    dict(self.VECTOR_PARAMS),
                )
            )

    def test_published_v2_vector(self) -> None:
        """The V2 vector of the Go, Ruby, Java and .NET suites."""
        self.assertEqual(
            signature_v2("my_auth_token", "https://answer.url", "12345"),
            "ehV3IKhLysWBxC1sy8INm0qGoQYdYsHwuoKjsX7FsXc=",
        )

    def test_base_strings(self) -> None:
        """A POST base is URL?sorted-query.params (bare ? without a query); a GET merges all."""
        params = [("To", "1"), ("Digits", "12"), ("SIP-H-To", "x"), ("a", "b c")]
        self.assertEqual(
            v3_base_string("POST", "https://h.example:8443/p?z=1&y=", params),
            "https://h.example:8443/p?y=&z=1.Digits12SIP-H-ToxTo1ab c",
        )
        self.assertEqual(
            v3_base_string("POST", "https://h.example/p#ct=2000", params),
            "https://h.example/p?Digits12SIP-H-ToxTo1ab c",
        )
        self.assertEqual(
            v3_base_string("GET", "https://h.example/p?b=2&a=1%20x", [("c", "3")]),
            "https://h.example/p?a=1 x&b=2&c=3",
        )
        self.assertEqual(v3_base_string("POST", "https://h.example/p"), "https://h.example/p")

    def test_sdk_agrees_on_every_shape(self) -> None:
        """The SDK validates the fake's signature for ports, blanks, unicode, + and spaces."""
        urls = [
            "https://voice.example.com/hooks/answer",
            "https://voice.example.com:8443/hooks/answer?callId=abc&flow=answer",
            "http://127.0.0.1:9000/plivo/?provider=plivo&x=",
            # (the SDK cannot parse a query with percent-encoded non-ASCII)
            "https://voice.example.com/h?q=a+b&r=%2F%26",
        ]
        param_sets = [
            {},
            {"CallUUID": "u", "From": "+15551111111", "Speech": "a table for two"},
            {"Speech": "\u00e9t\u00e9 \u2014 ok", "Digits": "", "X-PH-Key": "v=1"},
        ]
        for url in urls:
            for params in param_sets:
                for method in ("POST", "GET"):
                    nonce = "12345678901234567890"
                    signature = signature_v3("tok", method, url, nonce, params)
                    self.assertTrue(
                        validate_v3_signature(method, url, nonce, "tok", signature, dict(params)),
                        (method, url, params),
                    )

    async def test_signature_modes(self) -> None:
        """Wrong, missing, V2-only and rotated-key signatures on demand."""
        fake, app = await self.start()
        app.reject_bad_signatures = True
        app.replies["hooks/answer"] = '<Response><Wait length="60"/></Response>'
        fake.signature_mode = "wrong"
        call = await self.make_call()
        await call.ring()
        self.assertFalse(app.seen[-1].v3_ok)
        self.assertEqual(call.callbacks[-1].code, 403)
        self.assertIn("answered HTTP 403", call.errors[-1])

        fake.signature_mode = "missing"
        call = await self.make_call()
        await call.ring()
        self.assertFalse([h for h in app.seen[-1].headers if h.startswith("x-plivo-signature")])

        fake.signature_mode = "v2"
        call = await self.make_call()
        await call.ring()
        headers = app.seen[-1].headers
        self.assertNotIn("x-plivo-signature-v3", headers)
        nonce = headers["x-plivo-signature-v2-nonce"]
        self.assertEqual(
            headers["x-plivo-signature-v2"],
            signature_v2(fake.auth_token, app.seen[-1].url, nonce),
        )

        fake.signature_mode = "valid"
        fake.other_tokens = ["previous-token"]
        call = await self.make_call()
        await call.ring()
        seen = app.seen[-1]
        self.assertEqual(len(seen.headers["x-plivo-signature-v3"].split(",")), 2)
        self.assertTrue(seen.v3_ok)
        self.assertTrue(sdk_valid("POST", seen.url, seen.headers, seen.params, "previous-token"))

    async def test_replays_and_fixed_nonces(self) -> None:
        """A resent callback is byte-identical (same nonce); fixed_nonce reuses one nonce."""
        fake, app = await self.start()
        call = await self.make_call()
        await call.ring()
        hook = await fake.resend_last_callback(call)
        self.assertTrue(hook.duplicate)
        first, again = app.seen[-2:]
        self.assertEqual((again.url, again.body), (first.url, first.body))
        for header in ("x-plivo-signature-v3", "x-plivo-signature-v3-nonce"):
            self.assertEqual(again.headers[header], first.headers[header])

        fake.fixed_nonce = "11111111111111111111"
        await call.answer()
        await call.when_ended()
        nonces = {s.headers["x-plivo-signature-v3-nonce"] for s in app.seen[-2:]}
        self.assertEqual(nonces, {"11111111111111111111"})
        self.assertTrue(all(s.v3_ok for s in app.seen))

    async def test_subaccount_signs_ma_with_the_main_token(self) -> None:
        """-V3 is keyed with the subaccount's token, -Ma-V3 with the main account's."""
        _, app = await self.start(auth_id="SAZDK0MZQ1ZJBHNWVMZT", main_auth_token="main-token")
        call = await self.make_call()
        await call.ring()
        seen = app.seen[-1]
        self.assertTrue(seen.v3_ok and seen.ma_v3_ok)
        self.assertFalse(sdk_valid("POST", seen.url, seen.headers, seen.params, "main-token"))


class StreamTests(FakePlivoTestCase):
    """<Stream> and the Stream API: Plivo's end of the audio WebSocket."""

    async def answered_stream(self, after: str = "", **options: Any) -> tuple[Any, Any, AppSocket]:
        """An answered call with an open stream: (call, stream, app socket)."""
        attributes = options.pop("attributes", {})
        _, app = await self.start(**options)
        app.replies["hooks/answer"] = stream_xml(app, after, **attributes)
        call = await self.make_call()
        await call.answer()
        stream = await call.when_stream()
        self.assertEqual(stream.state, "open")
        socket = await app.socket()
        await socket.when("start")
        return call, stream, socket

    async def test_start_and_signed_upgrade(self) -> None:
        """start nests callId/streamId/mediaFormat; the upgrade is signed as a GET of its URL."""
        call, stream, socket = await self.answered_stream(
            attributes={
                "extraHeaders": "callId=abc,token=t0k",
                "statusCallbackUrl": "/hooks/stream-status",
            }
        )
        self.assertEqual(call.waiting, "stream")  # keepCallAlive
        (start,) = socket.messages
        self.assertEqual(start["event"], "start")
        self.assertEqual(start["sequenceNumber"], 1)
        body = start["start"]
        self.assertEqual(
            body,
            {
                "callId": call.call_uuid,
                "streamId": stream.sid,
                "accountId": self.fake.auth_id,
                "tracks": ["inbound"],
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000},
            },
        )
        self.assertRegex(body["streamId"], UUID)
        self.assertEqual(json.loads(start["extra_headers"]), {"callId": "abc", "token": "t0k"})
        headers = {k.lower(): v for k, v in socket.upgrade_headers.items()}
        self.assertTrue(sdk_valid("GET", self.app.stream_url, headers, {}, self.fake.auth_token))
        self.assertEqual(socket.request_params, {"callId": ["abc"]})
        self.assertEqual(call.elements[0].name, "Stream")
        self.assertEqual(call.elements[0].text, self.app.stream_url)
        self.assertEqual(call.errors, [])

    async def test_audio_both_ways_and_dtmf(self) -> None:
        """Caller audio goes out in 160-byte frames; playAudio in the stream's format is played."""
        _, stream, socket = await self.answered_stream()
        sent = await stream.send_audio(bytes(range(200)) + bytes(200))
        self.assertEqual(sent, 480)
        await socket.when("media", 3)
        frames = socket.of("media")
        self.assertEqual([m["media"]["chunk"] for m in frames], [1, 2, 3])
        self.assertEqual([m["sequenceNumber"] for m in frames], [2, 3, 4])
        self.assertEqual({m["streamId"] for m in frames}, {stream.sid})
        self.assertEqual([m["media"]["track"] for m in frames], ["inbound"] * 3)
        timestamps = [m["media"]["timestamp"] for m in frames]
        self.assertTrue(all(isinstance(t, str) for t in timestamps))
        audio = b"".join(base64.b64decode(m["media"]["payload"]) for m in frames)
        self.assertEqual(audio, bytes(range(200)) + bytes(200) + b"\xff" * 80)

        stream.send_dtmf("7")
        dtmf = await socket.when("dtmf")
        self.assertEqual((dtmf["dtmf"]["digit"], dtmf["dtmf"]["track"]), ("7", "inbound"))
        self.assertEqual(dtmf["streamId"], stream.sid)

        socket.play(b"\x01" * 160)
        socket.play(b"\x02" * 100, content_type="audio/x-l16", rate=8000)
        socket.send({"event": "sendDTMF", "dtmf": "1"})
        socket.play(b"\x03" * 100)
        self.assertEqual(await stream.when_audio(260), b"\x01" * 160 + b"\x03" * 100)
        await stream.when_message("playAudio", 3)
        self.assertIn("audio/x-l16", stream.errors[0])
        self.assertIn("unknown event", stream.errors[1])

    async def test_checkpoints_are_played_at_pace(self) -> None:
        """playedStream comes once the audio before the checkpoint has played (8000 bytes/s)."""
        clock = Clock()
        _, stream, socket = await self.answered_stream(clock=clock)
        socket.send({"event": "checkpoint", "streamId": stream.sid, "name": "idle"})
        socket.play(b"\x00" * 800)
        socket.send({"event": "checkpoint", "streamId": stream.sid, "name": "utt-1"})
        socket.play(b"\x00" * 800)
        socket.send({"event": "checkpoint", "streamId": stream.sid, "name": "utt-2"})
        await stream.when_mark("utt-2")
        self.assertEqual(stream.checkpoints_played, [(0, "idle")])
        clock.advance(0.1)
        self.assertEqual(stream.checkpoints_played[-1], (0.1, "utt-1"))
        clock.advance(0.1)
        self.assertEqual(await stream.when_mark_echoed("utt-2"), 0.2)
        played = await socket.when("playedStream", 3)
        self.assertEqual((played["name"], played["streamId"]), ("utt-2", stream.sid))
        self.assertIsInstance(played["sequenceNumber"], int)

    async def test_clear_audio_drops_the_queue_and_its_checkpoints(self) -> None:
        """clearAudio flushes playback and answers clearedAudio; cut checkpoints never play."""
        clock = Clock()
        _, stream, socket = await self.answered_stream(clock=clock)
        socket.play(b"\x00" * 8000)
        socket.send({"event": "checkpoint", "streamId": stream.sid, "name": "a"})
        await stream.when_mark("a")
        clock.advance(0.5)
        socket.send({"event": "clearAudio", "streamId": stream.sid})
        self.assertEqual(await stream.when_clear(), (0.5, 4000))
        cleared = await socket.when("clearedAudio")
        self.assertEqual(cleared["streamId"], stream.sid)
        clock.advance(5)
        self.assertEqual(stream.checkpoints_played, [])
        self.assertEqual(socket.of("playedStream"), [])
        socket.send({"event": "clearAudio", "streamId": "someone-else"})
        await stream.when_message("clearAudio", 2)
        self.assertIn("streamId", stream.errors[-1])

    async def test_app_closing_the_socket_moves_the_xml_on(self) -> None:
        """With keepCallAlive, the element after <Stream> runs once the socket closes."""
        clock = Clock()
        call, stream, socket = await self.answered_stream(
            after="<Speak>after the stream</Speak>", clock=clock
        )
        socket.sendClose(1000)
        self.assertEqual(await stream.when_closed(), "app")
        await call.when_element("Speak")
        self.assertEqual(call.waiting, "speak")
        clock.advance(2)
        self.assertEqual(await call.when_ended(), "completed")
        self.assertEqual(call.hangup.code, 4010)

    async def test_stream_without_keep_alive_ends_with_the_document(self) -> None:
        """Without keepCallAlive a <Stream> followed by nothing ends the call (and the stream)."""
        _, app = await self.start()
        app.replies["hooks/answer"] = stream_xml(app, keepCallAlive="false")
        call = await self.make_call()
        await call.answer()
        self.assertEqual(await call.when_ended(), "completed")
        self.assertEqual(await call.streams[0].when_closed(), "plivo")

    async def test_hangup_closes_the_stream(self) -> None:
        """The caller hanging up closes the socket (a stop frame only if asked for)."""
        call, stream, socket = await self.answered_stream(stream_stop_frame=True)
        await call.caller_hangup()
        self.assertEqual(await stream.when_closed(), "plivo")
        stop = await socket.when("stop")
        self.assertEqual(stop["streamId"], stream.sid)
        await self.app.wait(lambda: socket.closed or None)
        hangup = self.app.requests_to("hooks/hangup")[-1]
        self.assertEqual(hangup.params["HangupSource"], "Call recipient")

    async def test_transfer_closes_the_stream_and_runs_the_new_xml(self) -> None:
        """A transfer during a keepCallAlive stream closes it and runs the aleg_url's XML."""
        call, stream, socket = await self.answered_stream()
        self.app.replies["hooks/speak"] = "<Response><Speak>Goodbye</Speak></Response>"
        body = {"legs": "aleg", "aleg_url": f"{self.app.base}/hooks/speak", "aleg_method": "POST"}
        code, _ = await self.rest("POST", f"Call/{call.call_uuid}/", body)
        self.assertEqual(code, 202)
        self.assertEqual(await stream.when_closed(), "plivo")
        self.assertEqual(await call.when_ended(), "completed")
        self.assertEqual(call.elements[-1], ("Speak", "Goodbye", {}))
        await self.app.wait(lambda: socket.closed or None)
        self.assertEqual(socket.of("stop"), [])

    async def test_transfer_can_wait_for_the_stream(self) -> None:
        """transfer_waits_for_stream: the transfer runs only after the app closes the socket."""
        call, stream, socket = await self.answered_stream(transfer_waits_for_stream=True)
        self.app.replies["hooks/speak"] = "<Response><Speak>Goodbye</Speak></Response>"
        body = {"legs": "aleg", "aleg_url": f"{self.app.base}/hooks/speak"}
        code, _ = await self.rest("POST", f"Call/{call.call_uuid}/", body)
        self.assertEqual(code, 202)
        await call.when_settled()
        self.assertEqual((stream.state, self.app.requests_to("hooks/speak")), ("open", []))
        socket.sendClose(1000)
        self.assertEqual(await call.when_ended(), "completed")
        self.assertEqual(len(self.app.requests_to("hooks/speak")), 1)

    async def test_stream_api_and_status_callbacks(self) -> None:
        """POST Stream/ opens one (201, stream_id); GET lists it; DELETE closes it (204)."""
        _, app = await self.start()
        app.replies["hooks/answer"] = '<Response><Wait length="300"/></Response>'
        call = await self.make_call()
        await call.answer()
        body = {
            "service_url": app.stream_url,
            "bidirectional": True,
            "content_type": "audio/x-l16;rate=16000",
            "status_callback_url": f"{app.base}/hooks/stream-status",
        }
        code, started = await self.rest("POST", f"Call/{call.call_uuid}/Stream/", body)
        self.assertEqual((code, started["message"]), (201, "audio streaming started"))
        stream = await call.when_stream()
        self.assertEqual(stream.sid, started["stream_id"])
        socket = await app.socket()
        start = await socket.when("start")
        self.assertEqual(
            start["start"]["mediaFormat"], {"encoding": "audio/x-l16", "sampleRate": 16000}
        )
        await stream.send_audio(b"\x00" * 640)
        media = await socket.when("media")
        self.assertEqual(len(base64.b64decode(media["media"]["payload"])), 640)  # 20 ms of L16

        code, listed = await self.rest("GET", f"Call/{call.call_uuid}/Stream/")
        self.assertEqual(code, 200)
        self.assertEqual([s["stream_id"] for s in listed["objects"]], [stream.sid])
        code, _ = await self.rest("DELETE", f"Call/{call.call_uuid}/Stream/{stream.sid}/")
        self.assertEqual(code, 204)
        self.assertEqual(await stream.when_closed(), "plivo")
        self.assertEqual(call.status, "in-progress")
        statuses = await app.wait(
            lambda: (
                [s.params["Event"] for s in app.requests_to("hooks/stream-status")][:2] or None
                if len(app.requests_to("hooks/stream-status")) >= 2
                else None
            )
        )
        self.assertEqual(statuses, ["StartStream", "StopStream"])
        self.assertTrue(all(s.v3_ok for s in app.requests_to("hooks/stream-status")))
        code, _ = await self.rest(
            "POST", f"Call/{call.call_uuid}/Stream/", {"service_url": "https://x"}
        )
        self.assertEqual(code, 400)

    async def test_refused_handshake_moves_on(self) -> None:
        """A stream URL the app refuses (404) is recorded; the XML moves on."""
        _, app = await self.start()
        app.replies["hooks/answer"] = stream_xml(app).replace("/stream", "/nowhere")
        call = await self.make_call()
        await call.answer()
        self.assertEqual(call.streams[0].closed_by, "failed")
        self.assertTrue(call.errors)
        self.assertEqual(call.status, "completed")
        self.assertEqual(app.sockets, [])
