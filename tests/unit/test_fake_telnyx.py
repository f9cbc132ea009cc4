"""
Self-tests of the fake Telnyx (L{tests.fakes.telnyx}).

"The app" is a tiny twisted.web resource on 127.0.0.1 that records every
webhook, checks its Ed25519 signature with the official SDK's verifier (and
with C{cryptography} for each form of the public key), and serves a
WebSocket endpoint for media streams.  The REST side is driven with StubTreq.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import attrs
from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_der_public_key, load_pem_public_key
from telnyx.lib.webhook_verification import WebhookVerificationError, verify_webhook_signature
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

from tests.fakes.telnyx import (
    CALL_ENDED,
    FakeTelnyx,
    FakeTelnyxError,
    WebhookSigner,
    b64,
)

TO, FROM = "+15551230000", "+15559870000"
#: A fixed key pair and what it signs, cross-checked against PyNaCl once.
KAT_SEED = bytes(range(32))
KAT_PUBLIC = "A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg="
KAT_DER = "MCowBQYDK2VwAyEAA6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg="
KAT_TIMESTAMP = "1700000000"
KAT_BODY = b'{"data":{"event_type":"call.answered"}}'
KAT_SIGNATURE = (
    "3L9VOWcPYmzQ/l1eF8vI/uOuMi3LEGgMm10q+Z5wW/KCKLpPGCtK/ZZoG/WGKD+ObLpeXHVpjcEcVoa3lzDSDg=="
)


@attrs.frozen
class Seen:
    """One webhook as the app received it."""

    path: str
    headers: dict[str, str]
    body: bytes
    sdk_ok: bool
    sdk_error: str | None

    @property
    def envelope(self) -> dict[str, Any]:
        """The JSON body."""
        return json.loads(self.body)

    @property
    def event_type(self) -> str:
        """C{data.event_type}."""
        return self.envelope["data"]["event_type"]

    @property
    def payload(self) -> dict[str, Any]:
        """C{data.payload}."""
        return self.envelope["data"]["payload"]


class App:
    """
    The app under Telnyx: webhooks at C{/hooks/...} (answered C{status}),
    kept in C{seen}; WebSockets at C{/stream} kept in C{sockets}.
    """

    def __init__(self, public_key: str) -> None:
        self.public_key = public_key
        self.status = 200
        self.seen: list[Seen] = []
        self.sockets: list[AppSocket] = []
        self._waits: list[tuple[Callable[[], Any], Deferred]] = []
        factory = WebSocketServerFactory()
        factory.protocol = AppSocket
        factory.app = self
        self.resource = _Root()
        self.resource.putChild(b"hooks", _Hooks(self))
        self.resource.putChild(b"stream", WebSocketResource(factory))
        self.base = "https://voice.example.com"
        self._port: Any = None

    async def listen(self) -> None:
        """Serve on 127.0.0.1, port 0."""
        site = Site(self.resource)
        site.noisy = False
        endpoint = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
        self._port = await endpoint.listen(site)
        self.base = f"http://127.0.0.1:{self._port.getHost().port}"

    @property
    def hook_url(self) -> str:
        """Where the app wants its webhooks."""
        return self.base + "/hooks/telnyx"

    @property
    def stream_url(self) -> str:
        """The wss:// URL of the media-stream endpoint (the fake connects with ws://)."""
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

    def types(self) -> list[str]:
        """The event types received, in order."""
        return [seen.event_type for seen in self.seen]

    def handle(self, request: Any) -> bytes:
        """Record a webhook and check its signature with the SDK."""
        request.content.seek(0)
        body = request.content.read()
        headers = {
            k.decode().lower(): v[0].decode() for k, v in request.requestHeaders.getAllRawHeaders()
        }
        try:
            verify_webhook_signature(body, headers, self.public_key)
            ok, error = True, None
        except WebhookVerificationError as e:
            ok, error = False, e.message
        self.seen.append(Seen(request.path.decode(), headers, body, ok, error))
        self.changed()
        request.setResponseCode(self.status)
        return b""


class _Root(Resource):
    def getChild(self, path: bytes, request: Any) -> Resource:
        return notFound()


class _Hooks(Resource):
    isLeaf = True

    def __init__(self, app: App) -> None:
        super().__init__()
        self.app = app

    def render_POST(self, request: Any) -> bytes:
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

    def send(self, message: Any) -> None:
        """Send one JSON message to Telnyx."""
        self.sendMessage(json.dumps(message).encode("utf-8"), isBinary=False)

    def send_media(self, data: bytes) -> None:
        """Send PCMU audio to Telnyx, as the daemon does (no stream_id)."""
        self.send({"event": "media", "media": {"payload": base64.b64encode(data).decode()}})


def now_clock() -> Clock:
    """A Clock at the wall time, so the SDK's 300 s tolerance accepts its timestamps."""
    clock = Clock()
    clock.advance(time.time())
    return clock


class FakeTelnyxTestCase(TestCase):
    """Wiring shared by the tests: a fake, a listening app, a REST client (StubTreq)."""

    timeout = 20

    async def start(self, **options: Any) -> tuple[FakeTelnyx, App]:
        """A fake and a listening app, both torn down after the test."""
        options.setdefault("insecure_ws", True)
        signer = WebhookSigner()
        app = App(signer.public_key_base64)
        await app.listen()
        fake = FakeTelnyx(signer=signer, webhook_url=app.hook_url, **options)
        self.addCleanup(app.stop)
        self.addCleanup(fake.stop)
        self.api = StubTreq(fake.resource)
        self.fake, self.app = fake, app
        return fake, app

    async def rest(
        self, method: str, path: str, body: Any = None, key: str | None = None
    ) -> tuple[int, Any]:
        """One REST request to C{/v2/...}; fires with (status, JSON body)."""
        headers = {"Authorization": f"Bearer {key or self.fake.api_key}"}
        kw: dict[str, Any] = {"headers": headers}
        if body is not None:
            kw["data"] = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        response = await self.api.request(method, f"{self.fake.api_url}/{path}", **kw)
        return response.code, json.loads(await response.content())

    async def command(self, call: Any, name: str, body: Any = None) -> tuple[int, Any]:
        """POST one command for C{call}."""
        return await self.rest("POST", f"calls/{call.call_control_id}/actions/{name}", body or {})

    async def dial(self, **extra: Any) -> Any:
        """Dial the way the daemon does; fires with the L{FakeCall}."""
        body = {
            "connection_id": self.fake.connection_id,
            "to": TO,
            "from": FROM,
            "webhook_url": self.app.hook_url,
            "webhook_url_method": "POST",
            "client_state": b64("call-1"),
            "timeout_secs": 30,
            **extra,
        }
        code, answer = await self.rest("POST", "calls", body)
        self.assertEqual(code, 200, answer)
        return self.fake.call(answer["data"]["call_control_id"])

    async def answered(self, **extra: Any) -> Any:
        """A dialled and answered call."""
        call = await self.dial(**extra)
        await call.answer()
        return call


class SignatureTests(TestCase):
    """Ed25519 over C{timestamp|body}, checked without the network."""

    def test_known_answer(self) -> None:
        """A fixed seed signs a fixed message to the pinned signature (cross-checked with NaCl)."""
        signer = WebhookSigner(Ed25519PrivateKey.from_private_bytes(KAT_SEED))
        self.assertEqual(signer.public_key_base64, KAT_PUBLIC)
        self.assertEqual(signer.public_key_der_base64, KAT_DER)
        self.assertEqual(signer.sign(KAT_TIMESTAMP, KAT_BODY), KAT_SIGNATURE)
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(KAT_PUBLIC))
        key.verify(base64.b64decode(KAT_SIGNATURE), KAT_TIMESTAMP.encode() + b"|" + KAT_BODY)

    def test_every_key_form_verifies(self) -> None:
        """The raw, PEM and DER forms of the public key are the same key."""
        signer = WebhookSigner()
        signature = base64.b64decode(signer.sign("42", b"{}"))
        keys = [
            Ed25519PublicKey.from_public_bytes(base64.b64decode(signer.public_key_base64)),
            load_pem_public_key(signer.public_key_pem.encode()),
            load_der_public_key(base64.b64decode(signer.public_key_der_base64)),
        ]
        self.assertTrue(signer.public_key_pem.startswith("-----BEGIN PUBLIC KEY-----"))
        for key in keys:
            key.verify(signature, b"42|{}")
            self.assertRaises(InvalidSignature, key.verify, signature, b"42|{ }")


class RestTests(FakeTelnyxTestCase):
    """The REST API, through StubTreq."""

    async def test_dial_status_and_record(self) -> None:
        """Dial answers the ids with is_alive false; GET shows the call; requests are kept."""
        fake, app = await self.start()
        call = await self.dial(answering_machine_detection="detect")
        self.assertTrue(call.call_control_id.startswith("v3:"))
        uuid.UUID(call.call_leg_id)
        uuid.UUID(call.call_session_id)
        recorded = fake.requests[-1]
        self.assertEqual(
            (recorded.method, recorded.path, recorded.operation), ("POST", "/v2/calls", "dial")
        )
        self.assertEqual(recorded.get("client_state"), b64("call-1"))
        self.assertEqual(
            (call.to, call.from_, call.direction, call.state), (TO, FROM, "outgoing", "queued")
        )
        self.assertEqual(
            (call.client_state_text, call.timeout_secs, call.amd), ("call-1", 30, "detect")
        )
        self.assertEqual(call.webhook_url, app.hook_url)

        code, body = await self.rest("GET", f"calls/{call.call_control_id}")
        self.assertEqual(code, 200)
        self.assertEqual(
            {k: body["data"][k] for k in ("call_control_id", "is_alive", "record_type")},
            {"call_control_id": call.call_control_id, "is_alive": True, "record_type": "call"},
        )
        # The id percent-encoded as a path segment is the same call.
        quoted = call.call_control_id.replace(":", "%3A")
        code, body = await self.rest("GET", f"calls/{quoted}")
        self.assertEqual((code, body["data"]["call_control_id"]), (200, call.call_control_id))

        code, body = await self.rest("GET", "calls/v3:nope")
        self.assertEqual((code, body["errors"][0]["title"]), (404, "Resource not found"))

    async def test_bearer_auth(self) -> None:
        """A wrong or missing key gets 401 with Telnyx's errors body; nothing is created."""
        fake, _ = await self.start()
        code, body = await self.rest("POST", "calls", {}, key="KEYwrong")
        self.assertEqual(code, 401)
        self.assertEqual(set(body["errors"][0]), {"code", "title", "detail"})
        response = await self.api.request("GET", f"{fake.api_url}/calls/x")
        self.assertEqual(response.code, 401)
        self.assertEqual([r.auth_ok for r in fake.requests], [False, False])
        self.assertEqual(fake.calls, [])

    async def test_dial_validation(self) -> None:
        """Each bad field is a 422 naming it; no call is created."""
        fake, _ = await self.start()
        good = {"connection_id": fake.connection_id, "to": TO, "from": FROM}
        cases = [
            ({"connection_id": None}, "connection_id"),
            ({"connection_id": "123"}, "connection_id"),
            ({"to": "5551230000"}, "to"),
            ({"from": None}, "from"),
            ({"client_state": "not base64!"}, "client_state"),
            ({"timeout_secs": 3}, "timeout_secs"),
            ({"answering_machine_detection": "maybe"}, "answering_machine_detection"),
            ({"stream_url": "https://x.example/s"}, "stream_url"),
            ({"stream_url": "wss://x.example/s", "stream_track": "left"}, "stream_track"),
            (
                {"stream_url": "wss://x.example/s", "stream_bidirectional_codec": "PCMA"},
                "stream_bidirectional_codec",
            ),
        ]
        for change, field in cases:
            body = {k: v for k, v in {**good, **change}.items() if v is not None}
            code, answer = await self.rest("POST", "calls", body)
            self.assertEqual(code, 422, (change, answer))
            self.assertEqual(answer["errors"][0]["source"]["pointer"], f"/{field}", change)
        self.assertEqual(fake.calls, [])
        code, _ = await self.rest("POST", "calls", {**good, "to": "sip:bob@example.com"})
        self.assertEqual(code, 200)

    async def test_commands_on_an_ended_call_are_90018(self) -> None:
        """After the hangup every command is a 422 with code 90018; GET says is_alive false."""
        _, app = await self.start()
        call = await self.answered()
        code, body = await self.command(call, "hangup", {"command_id": "h1"})
        self.assertEqual((code, body), (200, {"data": {"result": "ok"}}))
        self.assertEqual(await call.when_ended(), "normal_clearing")
        for name in ("hangup", "speak", "answer"):
            code, body = await self.command(call, name, {"payload": "x", "voice": "female"})
            self.assertEqual((code, body["errors"][0]["code"]), (422, CALL_ENDED))
        code, body = await self.rest("GET", f"calls/{call.call_control_id}")
        self.assertEqual((code, body["data"]["is_alive"]), (200, False))
        self.assertEqual(app.types()[-1], "call.hangup")

    async def test_command_id_is_idempotent_and_client_state_sticks(self) -> None:
        """A repeated command_id is accepted and ignored; client_state is echoed from then on."""
        _, app = await self.start(speak_scale=0)
        call = await self.answered()
        speak = {"payload": "Hi", "voice": "female", "command_id": "s1", "client_state": b64("x")}
        self.assertEqual((await self.command(call, "speak", speak))[0], 200)
        self.assertEqual((await self.command(call, "speak", speak))[0], 200)
        await call.when_webhook("call.speak.ended")
        await call.when_settled()
        self.assertEqual(call.spoken, ["Hi"])
        self.assertEqual(len(call.commands_named("speak")), 2)
        self.assertEqual(app.seen[-1].payload["client_state"], b64("x"))
        code, _ = await self.command(
            call, "speak", {"payload": "x", "voice": "f", "client_state": "?"}
        )
        self.assertEqual(code, 422)

    async def test_injected_failures(self) -> None:
        """fail_next answers Telnyx's error once; drop_next cuts the connection."""
        fake, _ = await self.start()
        fake.fail_next("dial", 503, "10011", "Service unavailable", "try later")
        code, body = await self.rest("POST", "calls", {})
        self.assertEqual((code, body["errors"][0]["code"]), (503, "10011"))
        call = await self.answered()
        fake.fail_next("command")
        code, _ = await self.command(call, "speak", {"payload": "x", "voice": "female"})
        self.assertEqual(code, 422)
        fake.drop_next("hangup")
        with self.assertRaises(ResponseFailed):
            await self.command(call, "hangup")
        self.assertTrue(call.is_alive)


class LiveServerTests(FakeTelnyxTestCase):
    """The REST API served on 127.0.0.1, as the product's treq client reaches it."""

    async def test_listen_and_auto_answer(self) -> None:
        """Over TCP: dial, the call answers on its own, a quoted-id hangup ends it."""
        clock = Clock()
        fake, app = await self.start(clock=clock, auto="answer", auto_delay=1.5)
        base = await fake.listen()
        self.assertEqual(fake.api_url, base + "/v2")
        pool = HTTPConnectionPool(reactor, persistent=False)
        http = HTTPClient(Agent(reactor, pool=pool))
        headers = {"Authorization": f"Bearer {fake.api_key}", "Content-Type": "application/json"}
        body = {"connection_id": fake.connection_id, "to": TO, "from": FROM}
        response = await http.post(
            fake.api_url + "/calls", data=json.dumps(body).encode(), headers=headers
        )
        data = json.loads(await response.content())["data"]
        self.assertEqual((response.code, data["is_alive"]), (200, False))
        call = fake.call(data["call_control_id"])
        self.assertEqual(call.webhook_url, app.hook_url)  # the application's URL
        clock.advance(1.5)
        self.assertEqual(await call.when_state("answered"), "answered")
        await call.when_settled()
        quoted = quote(call.call_control_id, safe="")
        response = await http.post(
            f"{fake.api_url}/calls/{quoted}/actions/hangup", data=b"{}", headers=headers
        )
        self.assertEqual(response.code, 200)
        await response.content()
        self.assertEqual(await call.when_ended(), "normal_clearing")
        self.assertEqual(app.types(), ["call.initiated", "call.answered", "call.hangup"])


class WebhookTests(FakeTelnyxTestCase):
    """Call progress and the signed JSON webhooks it sends."""

    async def test_outbound_call_life(self) -> None:
        """initiated, answered, hangup: Telnyx's envelope, every one verified by the SDK."""
        _, app = await self.start(clock=now_clock())
        call = await self.dial()
        await call.ring()
        self.assertEqual(call.state, "ringing")
        await call.answer()
        await self.command(call, "hangup")
        await call.when_ended()
        self.assertEqual(app.types(), ["call.initiated", "call.answered", "call.hangup"])
        self.assertEqual([s.sdk_ok for s in app.seen], [True] * 3, [s.sdk_error for s in app.seen])
        envelope = app.seen[0].envelope
        self.assertEqual(set(envelope), {"data", "meta"})
        self.assertEqual(envelope["data"]["record_type"], "event")
        uuid.UUID(envelope["data"]["id"])
        self.assertRegex(
            envelope["data"]["occurred_at"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$"
        )
        self.assertEqual(envelope["meta"], {"attempt": 1, "delivered_to": app.hook_url})
        initiated, answered, hangup = (s.payload for s in app.seen)
        for payload in (initiated, answered, hangup):
            self.assertEqual(
                {
                    k: payload[k]
                    for k in ("call_control_id", "from", "to", "direction", "client_state")
                },
                {
                    "call_control_id": call.call_control_id,
                    "from": FROM,
                    "to": TO,
                    "direction": "outgoing",
                    "client_state": b64("call-1"),
                },
            )
        self.assertEqual(
            [initiated["state"], answered["state"], hangup["state"]],
            ["bridging", "answered", "hangup"],
        )
        self.assertEqual(
            (hangup["hangup_cause"], hangup["hangup_source"]), ("normal_clearing", "caller")
        )
        headers = app.seen[0].headers
        self.assertEqual(headers["content-type"], "application/json")
        self.assertEqual(headers["telnyx-timestamp"], str(int(self.fake.clock.seconds())))

    async def test_public_key_forms_verify_deliveries(self) -> None:
        """What arrives verifies over C{timestamp|raw body} with the PEM and DER keys too."""
        fake, app = await self.start()
        await self.answered()
        seen = app.seen[-1]
        message = seen.headers["telnyx-timestamp"].encode() + b"|" + seen.body
        signature = base64.b64decode(seen.headers["telnyx-signature-ed25519"])
        load_pem_public_key(fake.public_key_pem.encode()).verify(signature, message)
        load_der_public_key(base64.b64decode(fake.public_key_der_base64)).verify(signature, message)
        self.assertEqual(fake.webhooks[-1].body, seen.body)

    async def test_unanswered_outcomes(self) -> None:
        """busy, no answer, and the ring timeout on the clock end with their causes."""
        clock = Clock()
        _, app = await self.start(clock=clock)
        busy = await self.dial()
        await busy.busy()
        self.assertEqual((busy.hangup_cause, busy.hangup_source), ("user_busy", "callee"))
        nobody = await self.dial()
        await nobody.no_answer()
        self.assertEqual(nobody.hangup_cause, "timeout")
        ringing = await self.dial(timeout_secs=10)
        await ringing.ring()
        clock.advance(9)
        self.assertTrue(ringing.is_alive)
        clock.advance(1)
        self.assertEqual(await ringing.when_ended(), "timeout")
        self.assertEqual(app.types(), ["call.initiated", "call.hangup"] * 3)
        self.assertEqual(app.seen[-1].payload["sip_hangup_cause"], "487")
        self.assertRaises(FakeTelnyxError, ringing.answer)

    async def test_inbound_call_waits_for_answer(self) -> None:
        """call.initiated incoming and parked; the app's answer brings call.answered."""
        fake, app = await self.start()
        call = await fake.inbound_call(FROM, TO)
        self.assertEqual((call.direction, call.state), ("incoming", "parked"))
        initiated = app.seen[0].payload
        self.assertEqual(
            (initiated["direction"], initiated["state"], initiated["from"], initiated["to"]),
            ("incoming", "parked", FROM, TO),
        )
        self.assertIsNone(initiated["client_state"])
        self.assertRaises(FakeTelnyxError, call.answer)
        code, _ = await self.command(call, "answer", {"client_state": b64("in-1")})
        self.assertEqual(code, 200)
        await call.when_webhook("call.answered")
        self.assertEqual(app.seen[-1].payload["client_state"], b64("in-1"))
        await call.caller_hangup()
        self.assertEqual((call.hangup_cause, call.hangup_source), ("normal_clearing", "caller"))
        code, _ = await self.command(call, "answer")
        self.assertEqual(code, 422)

        rejected = await fake.inbound_call(FROM, TO)
        await self.command(rejected, "reject", {"cause": "USER_BUSY"})
        self.assertEqual(await rejected.when_ended(), "user_busy")
        cancelled = await fake.inbound_call(FROM, TO)
        await cancelled.caller_hangup()
        self.assertEqual(cancelled.hangup_cause, "originator_cancel")

    async def test_signature_switches(self) -> None:
        """stale, future, wrong and missing signatures fail the SDK's check for their reason."""
        fake, app = await self.start(clock=now_clock())
        call = await self.answered()
        fake.signature_mode = "stale"
        await call.press("1")
        fake.signature_mode = "future"
        await call.press("2")
        fake.signature_mode = "wrong"
        await call.press("3")
        fake.signature_mode = "missing"
        await call.press("4")
        stale, future, wrong, missing = app.seen[-4:]
        self.assertIn("too old or too new", stale.sdk_error)
        self.assertIn("too old or too new", future.sdk_error)
        self.assertIn("does not match", wrong.sdk_error)
        self.assertIn("Missing required header", missing.sdk_error)
        message = stale.headers["telnyx-timestamp"].encode() + b"|" + stale.body
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(fake.public_key_base64))
        key.verify(base64.b64decode(stale.headers["telnyx-signature-ed25519"]), message)
        self.assertEqual(int(fake.clock.seconds()) - int(stale.headers["telnyx-timestamp"]), 600)

    async def test_replay_is_byte_for_byte(self) -> None:
        """resend delivers the same body, timestamp and signature again."""
        fake, app = await self.start()
        call = await self.answered()
        replay = await fake.resend()
        self.assertTrue(replay.duplicate)
        first, again = app.seen[-2:]
        self.assertEqual(
            (again.body, again.headers["telnyx-signature-ed25519"]),
            (first.body, first.headers["telnyx-signature-ed25519"]),
        )
        self.assertEqual(again.headers["telnyx-timestamp"], first.headers["telnyx-timestamp"])
        self.assertEqual(call.event_types, ["call.initiated", "call.answered"])

    async def test_out_of_order_delivery(self) -> None:
        """Held webhooks can be released reversed: the app hears the hangup before the answer."""
        fake, app = await self.start()
        call = await self.dial()
        await call.ring()
        fake.hold_webhooks()
        await call.answer()
        await call.caller_hangup()
        self.assertEqual(app.types(), ["call.initiated"])
        sent = await fake.release_webhooks(reverse=True)
        self.assertEqual([h.event_type for h in sent], ["call.hangup", "call.answered"])
        self.assertEqual(app.types(), ["call.initiated", "call.hangup", "call.answered"])
        self.assertTrue(all(h.ok for h in call.webhooks))

    async def test_failed_webhook_is_recorded(self) -> None:
        """A non-2xx answer is kept as the call's error; the call goes on."""
        _, app = await self.start()
        app.status = 500
        call = await self.answered()
        self.assertEqual(call.webhooks[-1].code, 500)
        self.assertIn("answered HTTP 500", call.errors[-1])
        self.assertEqual(call.state, "answered")

    async def test_a_failed_webhook_goes_to_the_failover_url(self) -> None:
        """Not answered 2xx, a webhook is delivered once more, re-signed, to the failover URL."""
        fake, app = await self.start()
        failover = App(fake.signer.public_key_base64)
        await failover.listen()
        self.addCleanup(failover.stop)
        fake.failover_url = failover.hook_url
        app.status = 503
        call = await self.answered()
        answered = [h for h in call.webhooks if h.event_type == "call.answered"]
        self.assertEqual([(h.code, h.failover) for h in answered], [(503, False), (200, True)])
        self.assertEqual(answered[0].body, answered[1].body)
        self.assertIn("call.answered", failover.types())
        self.assertTrue(all(seen.sdk_ok for seen in failover.seen))
        self.assertEqual(call.errors, [])

    async def test_webhooks_through_stub_treq(self) -> None:
        """With http=StubTreq(app) webhooks reach an in-memory app, still signed."""
        signer = WebhookSigner()
        app = App(signer.public_key_base64)
        fake = FakeTelnyx(
            signer=signer, webhook_url=app.hook_url, http=StubTreq(app.resource), clock=now_clock()
        )
        self.addCleanup(fake.stop)
        call = await fake.inbound_call(FROM, TO)
        self.assertEqual(app.types(), ["call.initiated"])
        self.assertTrue(app.seen[0].sdk_ok, app.seen[0].sdk_error)
        self.assertTrue(call.webhooks[0].ok)

    async def test_answering_machine_detection(self) -> None:
        """AMD sends its result after call.answered; premium has its own events."""
        _, app = await self.start()
        call = await self.dial(answering_machine_detection="detect_beep")
        await call.answer(machine="machine")
        self.assertEqual(app.types()[-2:], ["call.answered", "call.machine.detection.ended"])
        self.assertEqual(app.seen[-1].payload["result"], "machine")
        await call.machine_greeting_ended("beep_detected")
        self.assertEqual(app.types()[-1], "call.machine.greeting.ended")
        premium = await self.dial(answering_machine_detection="premium")
        await premium.answer()
        self.assertEqual(app.seen[-1].event_type, "call.machine.premium.detection.ended")
        self.assertEqual(app.seen[-1].payload["result"], "human_residence")


class CommandTests(FakeTelnyxTestCase):
    """speak, gathers and transcription, timed on the clock."""

    async def test_speak_is_timed_by_length_and_queued(self) -> None:
        """Each speak plays len/15 s; a second one waits for the first; both end completed."""
        clock = Clock()
        _, app = await self.start(clock=clock)
        call = await self.answered()
        await self.command(call, "speak", {"payload": "x" * 30, "voice": "female"})
        await self.command(call, "speak", {"payload": "y" * 15, "voice": "female"})
        await call.when_webhook("call.speak.started")
        await call.when_settled()
        self.assertEqual(call.waiting, "speak")
        clock.advance(1.9)
        self.assertEqual(call.playbacks[0].status, None)
        clock.advance(0.1)
        await call.when_webhook("call.speak.started", 2)
        await call.when_settled()
        clock.advance(1)
        await call.when_webhook("call.speak.ended", 2)
        await call.when_settled()
        self.assertEqual(
            [(p.started_at, p.ended_at, p.status) for p in call.playbacks],
            [(0, 2, "completed"), (2, 3, "completed")],
        )
        ended = [s.payload for s in app.seen if s.event_type == "call.speak.ended"]
        self.assertEqual([p["status"] for p in ended], ["completed", "completed"])
        self.assertEqual(call.playbacks[0].voice, "female")

    async def test_speak_validation_and_stop(self) -> None:
        """A speak needs payload and voice; stop=current cuts the one playing."""
        clock = Clock()
        await self.start(clock=clock)
        call = await self.answered()
        code, body = await self.command(call, "speak", {"payload": "hi"})
        self.assertEqual((code, body["errors"][0]["source"]["pointer"]), (422, "/voice"))
        code, _ = await self.command(call, "speak", {"payload": "x" * 3001, "voice": "female"})
        self.assertEqual(code, 422)
        await self.command(call, "speak", {"payload": "a long sentence", "voice": "female"})
        await call.when_webhook("call.speak.started")
        await self.command(call, "speak", {"payload": "now", "voice": "female", "stop": "current"})
        await call.when_webhook("call.speak.started", 2)
        self.assertEqual(call.playbacks[0].status, "cancelled")

    async def test_speak_before_answer_is_refused(self) -> None:
        """Commands that need media are a 422 while the call rings."""
        await self.start()
        call = await self.dial()
        await call.ring()
        code, body = await self.command(call, "speak", {"payload": "hi", "voice": "female"})
        self.assertEqual(code, 422, body)

    async def test_hangup_while_speaking(self) -> None:
        """The caller hangs up mid-speech: speak.ended call_hangup, then call.hangup."""
        clock = Clock()
        _, app = await self.start(clock=clock)
        call = await self.answered()
        await self.command(call, "speak", {"payload": "x" * 150, "voice": "female"})
        await call.when_webhook("call.speak.started")
        await call.caller_hangup()
        self.assertEqual(app.types()[-2:], ["call.speak.ended", "call.hangup"])
        self.assertEqual(app.seen[-2].payload["status"], "call_hangup")
        self.assertEqual(app.seen[-1].payload["hangup_source"], "callee")

    async def test_gather_using_speak(self) -> None:
        """The prompt plays, digits arrive as dtmf webhooks, the terminating key ends it."""
        clock = Clock()
        _, app = await self.start(clock=clock)
        call = await self.answered()
        await self.command(
            call,
            "gather_using_speak",
            {"payload": "Press 1", "voice": "female", "maximum_digits": 4, "minimum_digits": 2},
        )
        await call.when_webhook("call.speak.started")
        clock.advance(1)
        gather = await call.when_gathering()
        self.assertEqual(gather.prompt.status, "completed")
        await call.press("12#")
        self.assertEqual(
            app.types()[-4:],
            ["call.dtmf.received", "call.dtmf.received", "call.dtmf.received", "call.gather.ended"],
        )
        self.assertEqual(app.seen[-2].payload["digit"], "#")
        self.assertEqual(
            {k: app.seen[-1].payload[k] for k in ("digits", "status")},
            {"digits": "12", "status": "valid"},
        )

    async def test_gather_timeouts_and_invalid(self) -> None:
        """No key: timeout; too few keys then the timeout: invalid; gather_timeout ends now."""
        clock = Clock()
        _, app = await self.start(clock=clock, speak_scale=0)
        call = await self.answered()
        await self.command(call, "gather", {"timeout_millis": 5000, "minimum_digits": 3})
        await call.when_gathering()
        clock.advance(5)
        await call.when_webhook("call.gather.ended")
        self.assertEqual(app.seen[-1].payload["status"], "timeout")
        await self.command(call, "gather", {"minimum_digits": 3})
        await call.when_gathering()
        await call.press("7")
        await call.gather_timeout()
        ended = await call.when_webhook("call.gather.ended", 2)
        self.assertEqual((ended.payload["digits"], ended.payload["status"]), ("7", "invalid"))
        self.assertRaises(FakeTelnyxError, call.gather_timeout)

    async def test_transcription(self) -> None:
        """After transcription_start the caller's words come as call.transcription."""
        _, app = await self.start()
        call = await self.answered()
        self.assertRaises(FakeTelnyxError, call.say, "too early")
        await self.command(call, "transcription_start", {"transcription_engine": "Google"})
        await call.when_transcribing()
        await call.say("hello there", interim=True, confidence=0.8)
        data = [
            s.payload["transcription_data"]
            for s in app.seen
            if s.event_type == "call.transcription"
        ]
        self.assertEqual(
            data,
            [
                {
                    "transcript": "hello",
                    "confidence": 0.8,
                    "is_final": False,
                    "transcription_track": "inbound",
                },
                {
                    "transcript": "hello there",
                    "confidence": 0.8,
                    "is_final": True,
                    "transcription_track": "inbound",
                },
            ],
        )
        await self.command(call, "transcription_stop")
        self.assertRaises(FakeTelnyxError, call.say, "gone")

    async def test_send_dtmf_and_transfer_are_recorded(self) -> None:
        """send_dtmf and transfer are validated and kept."""
        await self.start()
        call = await self.answered()
        self.assertEqual((await self.command(call, "send_dtmf", {"digits": "1w2#"}))[0], 200)
        self.assertEqual((await self.command(call, "send_dtmf", {"digits": "x"}))[0], 422)
        self.assertEqual((await self.command(call, "transfer", {"to": "+15550001111"}))[0], 200)
        self.assertEqual(call.dtmf_sent, ["1w2#"])
        self.assertEqual(call.transfers[0]["to"], "+15550001111")


class MediaStreamTests(FakeTelnyxTestCase):
    """Media streaming: the WebSocket client side of Telnyx."""

    async def streaming(self, **options: Any) -> tuple[Any, Any, AppSocket]:
        """An answered call streaming to the app: (call, stream, app socket)."""
        await self.start(**options)
        call = await self.dial(
            stream_url=self.app.stream_url,
            stream_track="inbound_track",
            stream_bidirectional_mode="rtp",
            stream_bidirectional_codec="PCMU",
        )
        await call.answer()
        stream = call.stream
        self.assertEqual(stream.state, "open")
        socket = await self.app.socket()
        await socket.when("start")
        return call, stream, socket

    async def test_connected_start_and_webhooks(self) -> None:
        """connected, then start with a top-level stream_id; streaming.started after answered."""
        call, stream, socket = await self.streaming()
        connected, start = socket.messages[:2]
        self.assertEqual(connected, {"event": "connected", "version": "1.0.0"})
        self.assertEqual((start["sequence_number"], start["stream_id"]), ("1", stream.stream_id))
        body = start["start"]
        self.assertEqual(body["call_control_id"], call.call_control_id)
        self.assertEqual(body["client_state"], b64("call-1"))
        self.assertEqual(
            body["media_format"], {"encoding": "PCMU", "sample_rate": 8000, "channels": 1}
        )
        self.assertNotIn("stream_id", body)
        await call.when_webhook("streaming.started")
        self.assertEqual(self.app.types(), ["call.initiated", "call.answered", "streaming.started"])
        self.assertEqual(self.app.seen[1].payload["stream_url"], self.app.stream_url)
        self.assertEqual(self.app.seen[2].payload["stream_id"], stream.stream_id)

    async def test_audio_out_of_order_and_dtmf(self) -> None:
        """Caller audio in 160-byte frames, pairs swapped on request; dtmf on the socket too."""
        call, stream, socket = await self.streaming()
        sent = await stream.send_audio(bytes(range(160)) * 3 + b"\x01" * 10, out_of_order=True)
        self.assertEqual(sent, 640)
        await socket.when("media", 4)
        frames = socket.of("media")
        self.assertEqual([m["sequence_number"] for m in frames], ["3", "2", "5", "4"])
        self.assertEqual([m["media"]["chunk"] for m in frames], ["2", "1", "4", "3"])
        self.assertEqual({m["stream_id"] for m in frames}, {stream.stream_id})
        ordered = sorted(frames, key=lambda m: int(m["media"]["chunk"]))
        audio = b"".join(base64.b64decode(m["media"]["payload"]) for m in ordered)
        self.assertEqual(audio, bytes(range(160)) * 3 + b"\x01" * 10 + b"\xff" * 150)
        await call.press("5")
        dtmf = await socket.when("dtmf")
        self.assertEqual(dtmf["dtmf"], {"digit": "5"})
        self.assertIn("occurred_at", dtmf)
        self.assertEqual(call.event_types[-1], "call.dtmf.received")

    async def test_marks_and_clear_at_playback_pace(self) -> None:
        """The app's audio plays at 8000 bytes/s; marks come back in time; clear flushes."""
        clock = Clock()
        _, stream, socket = await self.streaming(clock=clock)
        socket.send({"event": "mark", "mark": {"name": "idle"}})
        socket.send_media(b"\x00" * 1600)
        socket.send({"event": "mark", "mark": {"name": "m1"}})
        socket.send_media(b"\x00" * 8000)
        socket.send({"event": "mark", "mark": {"name": "m2"}})
        await stream.when_mark("m2")
        self.assertEqual(stream.marks_echoed, [(0, "idle")])
        clock.advance(0.2)
        self.assertEqual(await stream.when_mark_echoed("m1"), 0.2)
        echo = await socket.when("mark", 2)
        self.assertEqual((echo["mark"], echo["stream_id"]), ({"name": "m1"}, stream.stream_id))
        clock.advance(0.3)
        socket.send({"event": "clear"})
        self.assertEqual(await stream.when_clear(), (0.5, 5600))
        self.assertEqual(stream.marks_echoed[-1], (0.5, "m2"))
        self.assertEqual(stream.outbound_audio, b"\x00" * 9600)
        self.assertEqual(stream.errors, [])

    async def test_bad_frames_get_telnyx_errors(self) -> None:
        """A payload that is not base64 gets an error event (100004); unknown events 100003."""
        _, stream, socket = await self.streaming()
        socket.send({"event": "media", "media": {"payload": "%%%"}})
        socket.send({"event": "dance"})
        await socket.when("error", 2)
        codes = [m["payload"]["code"] for m in socket.of("error")]
        self.assertEqual(codes, [100004, 100003])
        self.assertEqual(len(stream.errors), 2)
        self.assertEqual(stream.frames, [])

    async def test_hangup_stops_the_stream_first(self) -> None:
        """A hangup sends stop and closes; streaming.stopped comes before call.hangup."""
        call, stream, socket = await self.streaming()
        await self.command(call, "hangup")
        await call.when_ended()
        stop = await socket.when("stop")
        self.assertEqual(stop["stop"]["call_control_id"], call.call_control_id)
        self.assertEqual(stop["stream_id"], stream.stream_id)
        self.assertEqual(await stream.when_closed(), "telnyx")
        self.assertEqual(self.app.types()[-2:], ["streaming.stopped", "call.hangup"])

    async def test_streaming_start_and_stop_commands(self) -> None:
        """streaming_start opens a stream (custom parameters); streaming_stop ends it."""
        await self.start()
        call = await self.answered()
        code, _ = await self.command(
            call,
            "streaming_start",
            {
                "stream_url": self.app.stream_url,
                "stream_bidirectional_mode": "rtp",
                "custom_parameters": [{"name": "token", "value": "t0k"}],
            },
        )
        self.assertEqual(code, 200)
        stream = await call.when_stream()
        socket = await self.app.socket()
        start = await socket.when("start")
        self.assertEqual(start["start"]["custom_parameters"], {"token": "t0k"})
        await self.command(call, "streaming_stop", {"stream_id": stream.stream_id})
        self.assertEqual(await stream.when_closed(), "telnyx")
        await call.when_webhook("streaming.stopped")
        self.assertTrue(call.is_alive)

    async def test_refused_stream_is_streaming_failed(self) -> None:
        """A stream URL the app refuses (404) is a streaming.failed webhook; the call goes on."""
        await self.start()
        call = await self.dial(stream_url=self.app.stream_url.replace("/stream", "/nowhere"))
        await call.answer()
        self.assertEqual(call.stream.closed_by, "failed")
        failed = await call.when_webhook("streaming.failed")
        self.assertEqual(failed.payload["stream_type"], "websocket")
        self.assertIn("handshake", failed.payload["failure_reason"].lower())
        self.assertEqual(call.state, "answered")
