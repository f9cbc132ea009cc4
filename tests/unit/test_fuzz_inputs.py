"""
Hypothesis against the media-stream and webhook parsers.

Media: random JSON-ish and random byte messages, in random frames cut at
random places, go to a L{MediaStream} of the real Twilio provider (on
a L{Clock}, over a C{StringTransport}), started and not started.  Nothing
may raise; the socket either goes on or closes with a 1xxx code, and the
socket counters and the call's media come back to rest.

Webhooks: random form bodies, headers, queries and signatures POSTed
through C{StubTreq}: a wrong or missing signature always gets a 4xx and
changes nothing (the live rig's manager, store and fake Twilio); a correct
signature over random input never gets a 5xx.
"""

from __future__ import annotations

import base64
import json
import string
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import pairwise
from typing import Any
from urllib.parse import urlencode

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from treq.testing import StubTreq
from twilio.request_validator import RequestValidator
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from tests.fakes.provider import CallBook
from tests.fakes.tts import ScriptedTTS
from tests.unit.rigs import SID, TOKEN, MemoryRig, ScriptedSTT
from voicecalld.config import parse_config
from voicecalld.media.stream import MediaStream
from voicecalld.providers.twilio.provider import TwilioProvider
from voicecalld.values import events as ev
from voicecalld.values.record import CallRecord
from voicecalld.values.states import CallState

CALL_ID = "call-fuzz"
CALL_SID = "CA" + "4" * 32
PUBLIC = "https://voice.example.com/voice/webhook"
FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
HANDSHAKE = (
    b"GET /voice/stream HTTP/1.1\r\n"
    b"Host: voice.example.com\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)

# -- strategies: media messages ------------------------------------------------

KEYS = (
    "event",
    "start",
    "media",
    "payload",
    "mark",
    "name",
    "dtmf",
    "digit",
    "stop",
    "streamSid",
    "callSid",
    "customParameters",
    "token",
    "sequenceNumber",
)
EVENTS = ("connected", "start", "media", "mark", "dtmf", "stop", "clear", "")
leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(["fn5+", "abc", "!!!!", "fn5+\n", CALL_SID, "MZ1"])
)
json_values = st.recursive(
    leaves,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=10,
)
# Any JSON type, containers never empty (empty ones are falsy and take other paths).
any_type = (
    leaves
    | st.lists(leaves, min_size=1, max_size=2)
    | st.dictionaries(st.text(max_size=3), leaves, min_size=1, max_size=2)
)
audio_payloads = st.binary(max_size=320).map(lambda b: base64.b64encode(b).decode()) | json_values


@st.composite
def start_messages(draw: Any, token: str) -> dict[str, Any]:
    """A C{start} message whose fields are right, wrong, of any type, or missing."""

    def either(*values: Any) -> Any:
        return draw(st.sampled_from(values) | any_type)

    parameters = draw(st.sampled_from(["token", "typed", "any"]))
    start = {
        "streamSid": either("MZ" + "5" * 32),
        "callSid": either(CALL_SID, "CA" + "6" * 32),
        "customParameters": (
            {"token": token, "callId": CALL_ID}
            if parameters == "token"
            else {"token": draw(any_type)}
            if parameters == "typed"
            else draw(any_type)
        ),
    }
    missing = draw(st.sampled_from([None, *start]))
    if missing:
        del start[missing]
    message = {"event": "start", "start": start}
    if draw(st.booleans()):
        message["streamSid"] = either("MZ" + "5" * 32)
    return message


@st.composite
def media_messages(draw: Any, token: str) -> Any:
    """A message near Twilio's shapes, or any JSON at all."""
    kind = draw(st.sampled_from(["media", "start", "start", "mark", "dtmf", "other", "any"]))
    if kind == "media":
        return {"event": "media", "media": {"payload": draw(audio_payloads)}}
    if kind == "start":
        return draw(start_messages(token))
    if kind in ("mark", "dtmf"):
        field = "name" if kind == "mark" else "digit"
        return {
            "event": kind,
            kind: draw(st.fixed_dictionaries({field: json_values}) | json_values),
        }
    if kind == "other":
        return {
            "event": draw(st.sampled_from(EVENTS) | json_values),
            **draw(st.dictionaries(st.sampled_from(KEYS), json_values, max_size=3)),
        }
    return draw(json_values)


def frame(payload: bytes, opcode: int = 1, fin: bool = True) -> bytes:
    """A client WebSocket frame (masked with a zero key, so the payload reads as is)."""
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 1 << 16:
        head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
    return head + b"\0\0\0\0" + payload


@st.composite
def wire(draw: Any, token: str) -> bytes:
    """A few frames: JSON messages, random text or binary, control frames, odd opcodes."""
    frames = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["json", "json", "json", "bytes", "frame"]))
        if kind == "json":
            frames.append(frame(json.dumps(draw(media_messages(token))).encode()))
        elif kind == "bytes":
            frames.append(frame(draw(st.binary(max_size=200)), draw(st.sampled_from([1, 2]))))
        else:
            opcode = draw(st.sampled_from([0, 1, 2, 3, 8, 9, 10, 11]))
            size = 125 if opcode >= 8 else 300
            frames.append(frame(draw(st.binary(max_size=size)), opcode, draw(st.booleans())))
    return b"".join(frames)


@st.composite
def chunked(draw: Any, data: bytes) -> list[bytes]:
    """C{data} cut at random places, as TCP may deliver it."""
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=4)))
    edges = [0, *cuts, len(data)]
    return [data[a:b] for a, b in pairwise(edges) if b > a]


# -- the media side --------------------------------------------------------------


class MediaRig:
    """The Twilio provider on a Clock with one live call, and sockets over StringTransports."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_800_000_000)
        self.settings = parse_config(
            {
                "provider": "twilio",
                "fromNumber": "+15550001111",
                "twilio": {"accountSid": SID, "authToken": TOKEN},
                "streaming": {"enabled": True},
            },
            None,
            {},
        ).settings
        self.stt = ScriptedSTT()
        self.provider = TwilioProvider(
            self.settings,
            self.clock,
            public_url=PUBLIC,
            known_public_url=PUBLIC,
            tts=ScriptedTTS(self.clock),
            stt=self.stt,
        )
        self.events: list[ev.CallEvent] = []
        self.provider.start(self._sink, CallBook({CALL_SID: CALL_ID}))
        factory = self.provider.media.factory
        # No autobahn timers on the global reactor: these sockets are in memory.
        factory.setProtocolOptions(openHandshakeTimeout=0, closeHandshakeTimeout=0)
        self.provider.answer(
            CallRecord(
                call_id=CALL_ID,
                provider="twilio",
                direction="outbound",
                mode="conversation",
                from_number="+15550001111",
                to_number="+15551234567",
                state=CallState.ANSWERED,
                started_at=self.clock.seconds(),
                provider_call_id=CALL_SID,
            )
        )

    def _sink(self, event: ev.CallEvent) -> Deferred:
        self.events.append(event)
        return succeed(None)

    def token(self) -> str:
        """A fresh stream token for the live call."""
        return self.provider.media.tokens.issue(CALL_ID, CALL_SID)

    def open(self) -> MediaStream:
        """A socket that has done its WebSocket handshake and nothing else."""
        peer = IPv4Address("TCP", "198.51.100.7", 40000)
        stream = self.provider.media.factory.buildProtocol(peer)
        stream.makeConnection(StringTransport(peerAddress=peer))
        stream.dataReceived(HANDSHAKE)
        assert stream.state == stream.STATE_OPEN, stream.transport.value()
        return stream

    def start(self, stream: MediaStream) -> None:
        """Send the valid start of the live call on C{stream}."""
        message = {
            "event": "start",
            "streamSid": "MZ" + "5" * 32,
            "start": {"callSid": CALL_SID, "customParameters": {"token": self.token()}},
        }
        stream.dataReceived(frame(json.dumps(message).encode()))
        assert stream.handler is not None

    @contextmanager
    def socket(self, test: TestCase, started: bool) -> Iterator[MediaStream]:
        """
        A socket for one example; afterwards it is open or closed with a 1xxx
        code, and once it is gone everything is back at rest.
        """
        stream = self.open()
        try:
            if started:
                self.start(stream)
            yield stream
            if stream.state != stream.STATE_OPEN:
                code = stream.localCloseCode
                test.assertTrue(code is not None and 1000 <= code <= 1999, code)
        finally:
            stream.connectionLost(Failure(ConnectionDone()))
        factory = self.provider.media.factory
        test.assertEqual((factory.open, factory.pending), (set(), {}))
        test.assertIsNone(self.provider.media.session(CALL_ID))
        kinds = [type(e).__name__ for e in self.events]
        test.assertEqual(kinds.count("MediaConnected"), kinds.count("MediaDisconnected"))
        test.assertNotIn("Failed", kinds)
        test.assertEqual(test.flushLoggedErrors(), [])


class MediaParser(TestCase):
    """Random input to a media socket never raises; it is handled or closed with 1xxx."""

    def test_unstarted_socket(self):
        rig = MediaRig()

        @FUZZ
        @given(st.data())
        def fuzz(data: Any) -> None:
            token = rig.token()
            with rig.socket(self, started=False) as stream:
                for chunk in data.draw(wire(token).flatmap(chunked)):
                    stream.dataReceived(chunk)
                if stream.handler is not None:
                    # Only a start with the call's own token and CallSid gets in.
                    self.assertIsNone(rig.provider.media.tokens.claim(token, CALL_SID))
                    self.assertIs(rig.provider.media.session(CALL_ID).socket, stream)

        fuzz()

    def test_any_start_message(self):
        rig = MediaRig()

        @FUZZ
        @given(st.data())
        def fuzz(data: Any) -> None:
            token = rig.token()
            message = data.draw(start_messages(token))
            with rig.socket(self, started=False) as stream:
                stream.dataReceived(frame(json.dumps(message).encode()))
                if stream.handler is None:
                    self.assertIn(stream.localCloseCode, (1007, 1008))
                else:
                    start = message["start"]
                    self.assertEqual(start["customParameters"]["token"], token)
                    self.assertEqual(start["callSid"], CALL_SID)

        fuzz()

    def test_started_socket(self):
        rig = MediaRig()

        @FUZZ
        @given(st.data())
        def fuzz(data: Any) -> None:
            with rig.socket(self, started=True) as stream:
                session = rig.stt.sessions[-1]
                for chunk in data.draw(wire(rig.token()).flatmap(chunked)):
                    stream.dataReceived(chunk)
                for event in rig.events:
                    if isinstance(event, ev.Dtmf):
                        self.assertIsInstance(event.digits, str)
            self.assertTrue(session.closed)

        fuzz()

    def test_valid_audio_reaches_stt_intact(self):
        rig = MediaRig()

        @FUZZ
        @given(st.lists(st.binary(min_size=1, max_size=400), max_size=6))
        def fuzz(chunks: list[bytes]) -> None:
            with rig.socket(self, started=True) as stream:
                for chunk in chunks:
                    payload = base64.b64encode(chunk).decode()
                    message = {"event": "media", "media": {"payload": payload}}
                    stream.dataReceived(frame(json.dumps(message).encode()))
                self.assertEqual(stream.state, stream.STATE_OPEN)
                self.assertEqual(bytes(rig.stt.sessions[-1].audio), b"".join(chunks))

        fuzz()


# -- strategies: webhooks -----------------------------------------------------------

header_text = st.text(alphabet=string.ascii_letters + string.digits + " =+/:;,.-_", max_size=40)
PARAM_NAMES = (
    "CallSid",
    "CallStatus",
    "AccountSid",
    "From",
    "To",
    "Direction",
    "SpeechResult",
    "Confidence",
    "Digits",
    "SequenceNumber",
    "AnsweredBy",
    "StreamEvent",
)
STATUSES = ("queued", "ringing", "in-progress", "completed", "busy", "no-answer", "failed")
KINDS = ("status", "answer", "played", "gather", "idle", "stream-ended")


def form_pairs(call_sid: str) -> Any:
    """Form parameters near Twilio's, or anything."""
    value = st.sampled_from([call_sid, *STATUSES, "inbound", "outbound-api"]) | st.text(max_size=20)
    return st.lists(
        st.tuples(st.sampled_from(PARAM_NAMES) | st.text(max_size=10), value), max_size=6
    )


def queries(call_id: str) -> Any:
    """Our webhook queries (call id, type, turn, utterance), or anything."""
    return st.dictionaries(
        st.sampled_from(["callId", "type", "turn", "utt"]) | st.text(min_size=1, max_size=6),
        st.sampled_from([call_id, *KINDS, "7", "-1", "9" * 5000]) | st.text(max_size=10),
        max_size=4,
    )


def random_headers() -> Any:
    """Headers that matter to URL rebuilding and signatures, with random values."""
    return st.dictionaries(
        st.sampled_from(
            [
                "X-Forwarded-Host",
                "X-Forwarded-Proto",
                "X-Forwarded-Port",
                "Forwarded",
                "Host",
                "Content-Type",
                "X-Twilio-Signature",
                "X-Original-Url",
            ]
        ),
        header_text,
        max_size=4,
    )


def _request(stub: StubTreq, method: str, url: str, body: bytes, headers: dict[str, str]):
    """One request through C{stub}, answered before this returns."""
    d = stub.request(method, url, data=body, headers=headers)
    stub.flush()
    return d


class WebhookParser(TestCase):
    """Random webhook requests: unsigned ones get 4xx and change nothing; none gets 5xx."""

    timeout = 60

    def test_wrong_or_missing_signatures_get_4xx_and_change_nothing(self):
        rig = MemoryRig(self, {}, streaming=False)
        record = rig.initiate()
        rig.run(rig.fake.when_call(0))
        before = rig.run(Deferred.fromCoroutine(rig.manager.recent(10)))
        notices, requests = len(rig.notices), len(rig.fake.requests)
        # The daemon's own resource tree, as the fake Twilio reaches it.
        stub = rig.http
        sid = record.provider_call_id

        @FUZZ
        @given(
            method=st.sampled_from(
                ["POST"] * 6 + ["GET", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH"]
            ),
            query=queries(record.call_id),
            pairs=form_pairs(sid),
            raw=st.none() | st.binary(max_size=200),
            headers=random_headers(),
            signature=st.sampled_from(
                ["missing", "random", "other-url", "other-params", "other-token", "header"]
            ),
            noise=header_text,
        )
        def fuzz(method, query, pairs, raw, headers, signature, noise) -> None:
            url = rig.url + ("?" + urlencode(query) if query else "")
            body = raw if raw is not None else urlencode(pairs).encode()
            params = dict(pairs)
            headers = {k: v for k, v in headers.items() if k != "X-Twilio-Signature"}
            headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
            if signature == "random":
                headers["X-Twilio-Signature"] = noise
            elif signature == "other-url":
                headers["X-Twilio-Signature"] = rig.fake.sign(url + "&x=1", params)
            elif signature == "other-params":
                # A name longer than any generated one, so the body really differs.
                extra = {**params, "NotInTheBody12345": noise}
                headers["X-Twilio-Signature"] = rig.fake.sign(url, extra)
            elif signature == "other-token":
                other = RequestValidator("not-" + TOKEN)
                headers["X-Twilio-Signature"] = other.compute_signature(url, params)
            elif signature == "header":
                headers["X-Twilio-Signature"] = base64.b64encode(noise.encode()).decode()
            response = self.successResultOf(_request(stub, method, url, body, headers))
            self.assertTrue(400 <= response.code < 500, (response.code, method, url, body))
            self.successResultOf(stub.content(response))

        fuzz()
        self.assertEqual(rig.run(Deferred.fromCoroutine(rig.manager.recent(10))), before)
        self.assertEqual(rig.manager.live_calls()[0].state, CallState.INITIATED)
        self.assertEqual(len(rig.notices), notices)
        self.assertEqual(len(rig.fake.requests), requests)
        self.flushLoggedErrors()

    def test_signed_random_input_never_gets_5xx(self):
        rig = MediaRig()
        stub = StubTreq(rig.provider.web_resources()[rig.settings.serve.path])
        validator = RequestValidator(TOKEN)

        @FUZZ
        @given(
            query=queries(CALL_ID),
            pairs=form_pairs(CALL_SID),
            content_type=st.sampled_from(
                ["application/x-www-form-urlencoded", "text/plain", "application/json"]
            ),
        )
        def fuzz(query, pairs, content_type) -> None:
            url = PUBLIC + ("?" + urlencode(query) if query else "")
            params = dict(pairs)
            pairs = list(params.items())
            headers = {
                "Content-Type": content_type,
                "X-Twilio-Signature": validator.compute_signature(url, params),
            }
            d = _request(stub, "POST", url, urlencode(pairs).encode(), headers)
            response = self.successResultOf(d)
            self.assertLess(response.code, 500, (url, pairs))
            self.assertNotEqual(response.code, 403, (url, pairs))
            self.successResultOf(stub.content(response))
            self.assertEqual(self.flushLoggedErrors(), [])

        fuzz()
