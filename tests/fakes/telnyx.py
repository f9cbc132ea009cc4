"""
A fake Telnyx Call Control v2, speaking only Telnyx's public protocol.

What it does, as Telnyx does it (see C{providers.md} section 2):

  - the REST API (C{POST /v2/calls}, C{POST /v2/calls/{id}/actions/{command}},
    C{GET /v2/calls/{id}}) as a C{twisted.web} resource, C{FakeTelnyx.resource},
    usable with C{treq.testing.StubTreq} or served on 127.0.0.1 by
    L{FakeTelnyx.listen}; Bearer auth, Telnyx's C{{"errors": [...]}} bodies;
  - webhooks: JSON envelopes POSTed to the call's C{webhook_url}, signed with
    Ed25519 over C{timestamp|body} by a key pair the fake generates (public
    key as raw Base64, PEM and Base64 DER), with switches for stale, wrong or
    missing signatures, replays and out-of-order delivery;
  - call progress driven by the test (L{FakeCall.ring}, L{FakeCall.answer},
    L{FakeCall.busy}, ...), inbound calls parked until the app sends
    C{answer} (L{FakeTelnyx.inbound_call});
  - commands the daemon uses: C{speak} and C{gather_using_speak} timed on the
    clock, C{transcription_start} (then L{FakeCall.say} makes the caller
    speak), DTMF, answering-machine detection, C{streaming_start/stop};
  - media streaming: the shared WebSocket client (L{tests.fakes.media_stream})
    speaking Telnyx's dialect (C{connected}, C{start}, C{media} optionally out
    of order, C{dtmf}, C{mark} echoes at playback pace, C{stop}).

Every action a test takes returns a Deferred that fires once the fake has
nothing left in flight for that call (webhooks answered, playback started or
finished), so tests never sleep.  Timing (speech, gathers, ring timeouts, mark
echoes, paced audio, timestamps) runs on the injected C{clock}.

Error codes: only C{90018} (call already ended) is from C{providers.md}; the
other codes in L{telnyx_error} bodies are the fake's own, in Telnyx's shape.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import json
import re
import secrets
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import unquote, urlsplit

import attrs
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from twisted.internet.defer import CancelledError, Deferred, DeferredLock, ensureDeferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from tests.fakes.media_stream import (
    ULAW_8K,
    AppMessage,
    AudioFormat,
    FakeProviderError,
    MediaStreamClient,
    StreamProtocolError,
    Waiters,
    decode_payload,
)

REAL_API_ROOT = "https://api.telnyx.com"
SIGNATURE_HEADER = "telnyx-signature-ed25519"
TIMESTAMP_HEADER = "telnyx-timestamp"

#: Error codes.  CALL_ENDED is Telnyx's; the others are the fake's choice.
CALL_ENDED = "90018"
AUTH_FAILED = "10009"
NOT_FOUND = "10005"
INVALID = "10015"
WRONG_STATE = "90034"

AMD_MODES = frozenset(
    {"premium", "detect", "detect_beep", "detect_words", "greeting_end", "disabled"}
)
STREAM_TRACKS = frozenset({"inbound_track", "outbound_track", "both_tracks"})
STREAM_CODECS = frozenset({"PCMU", "PCMA", "G722", "OPUS", "AMR-WB", "L16", "default"})
BIDI_CODECS = frozenset({"PCMU", "PCMA", "G722", "OPUS", "AMR-WB", "L16"})
BIDI_MODES = frozenset({"mp3", "rtp"})
HANGUP_CAUSES = frozenset(
    {
        "call_rejected",
        "normal_clearing",
        "originator_cancel",
        "timeout",
        "time_limit",
        "user_busy",
        "not_found",
        "no_answer",
        "unspecified",
    }
)
#: SIP codes the fake reports with each hangup cause (its own choice).
SIP_CAUSES = {
    "normal_clearing": "200",
    "user_busy": "486",
    "timeout": "487",
    "originator_cancel": "487",
    "no_answer": "480",
    "call_rejected": "603",
    "not_found": "404",
}
COMMANDS = frozenset(
    {
        "answer",
        "reject",
        "hangup",
        "speak",
        "gather",
        "gather_using_speak",
        "gather_stop",
        "playback_start",
        "playback_stop",
        "transcription_start",
        "transcription_stop",
        "streaming_start",
        "streaming_stop",
        "send_dtmf",
        "transfer",
        "client_state_update",
    }
)
MAX_SPEAK_CHARS = 3000

log = Logger()


class FakeTelnyxError(FakeProviderError):
    """A test asked the fake for something Telnyx could not do in the call's state."""


class CallEnded(Exception):
    """The call ended (and went quiet) before what a test waited for happened."""


def new_call_control_id() -> str:
    """An opaque C{v3:...} id with URL-safe characters, like Telnyx's."""
    return "v3:" + secrets.token_urlsafe(39)


def iso_time(seconds: float) -> str:
    """A Unix time as Telnyx writes it: C{2025-11-23T03:30:00.076316Z}."""
    moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def telnyx_error(code: str, title: str, detail: str) -> dict[str, Any]:
    """The JSON body of a Telnyx REST error."""
    return {"errors": [{"code": code, "title": title, "detail": detail}]}


def b64(text: str) -> str:
    """C{text} as Base64 (what C{client_state} must be)."""
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def _is_base64(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def _is_number(value: Any) -> bool:
    return isinstance(value, str) and re.fullmatch(r"\+[1-9][0-9]{6,14}", value) is not None


def _is_destination(value: Any) -> bool:
    return _is_number(value) or (isinstance(value, str) and value.startswith("sip:"))


def _is_http_url(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def _is_ws_url(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    parts = urlsplit(value)
    return parts.scheme in ("ws", "wss") and bool(parts.hostname)


# -- what the fake records ------------------------------------------------------


@attrs.frozen
class RestRequest:
    """One request the fake's REST API received."""

    method: str
    path: str
    body: Any
    raw: bytes
    auth_ok: bool
    api_key: str | None
    #: "dial", "status", a command name, or "" for a path the fake does not serve.
    operation: str = ""
    call_control_id: str | None = None

    def get(self, name: str, default: Any = None) -> Any:
        """Field C{name} of the JSON body."""
        if isinstance(self.body, dict):
            return self.body.get(name, default)
        return default


@attrs.define(eq=False)
class Webhook:
    """One webhook the fake sent to the app, and how the app answered it."""

    call_control_id: str
    event_type: str
    url: str
    body: bytes  # exactly as sent (and signed)
    headers: dict[str, str]
    sent_at: float
    duplicate: bool = False
    held: bool = False
    #: Sent again to the failover URL because the first delivery was not answered 2xx.
    failover: bool = False
    code: int | None = None
    response: bytes = b""
    error: str | None = None

    @property
    def envelope(self) -> dict[str, Any]:
        """The decoded JSON body."""
        return json.loads(self.body)

    @property
    def data(self) -> dict[str, Any]:
        """C{envelope["data"]}."""
        return self.envelope["data"]

    @property
    def payload(self) -> dict[str, Any]:
        """C{envelope["data"]["payload"]}."""
        return self.data["payload"]

    @property
    def event_id(self) -> str:
        """C{data.id}, the id to dedupe on."""
        return self.data["id"]

    @property
    def signature(self) -> str | None:
        """The C{telnyx-signature-ed25519} header sent, if any."""
        return self.headers.get(SIGNATURE_HEADER)

    @property
    def timestamp(self) -> str | None:
        """The C{telnyx-timestamp} header sent, if any."""
        return self.headers.get(TIMESTAMP_HEADER)

    @property
    def ok(self) -> bool:
        """Whether the app answered with a 2xx."""
        return self.code is not None and 200 <= self.code < 300


@attrs.define(eq=False)
class Playback:
    """One C{speak}, C{playback_start} or gather prompt, and how it ended."""

    kind: str  # "speak", "playback"
    text: str  # the speak payload, or the audio URL
    params: dict[str, Any]
    queued_at: float
    started_at: float | None = None
    ended_at: float | None = None
    status: str | None = None

    @property
    def voice(self) -> str | None:
        """The C{voice} asked for."""
        return self.params.get("voice")


@attrs.define(eq=False)
class Gather:
    """One C{gather} or C{gather_using_speak}: its options and what it collected."""

    params: dict[str, Any]
    prompt: Playback | None
    digits: str = ""
    status: str | None = None
    collecting: bool = False

    @property
    def minimum(self) -> int:
        """C{minimum_digits} (default 1)."""
        return int(self.params.get("minimum_digits", 1))

    @property
    def maximum(self) -> int:
        """C{maximum_digits} (default 128)."""
        return int(self.params.get("maximum_digits", 128))

    @property
    def terminating(self) -> str:
        """C{terminating_digit} (default C{#})."""
        return self.params.get("terminating_digit", "#")

    @property
    def valid(self) -> str:
        """C{valid_digits} (default every key)."""
        return self.params.get("valid_digits", "0123456789#*")


@attrs.define
class _Failure:
    status: int = 422
    code: str = INVALID
    title: str = "Invalid parameter"
    detail: str = "The fake was told to fail this request"
    drop: bool = False


# -- Ed25519 -------------------------------------------------------------------


class WebhookSigner:
    """
    Telnyx's webhook signature: Ed25519 over C{"<timestamp>|<raw body>"}.

    @param private_key: the key pair to sign with (a new one if not given).
    """

    def __init__(self, private_key: Ed25519PrivateKey | None = None) -> None:
        self.private_key = private_key or Ed25519PrivateKey.generate()
        self.public_key = self.private_key.public_key()

    @property
    def public_key_raw(self) -> bytes:
        """The 32 raw public-key bytes."""
        return self.public_key.public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @property
    def public_key_base64(self) -> str:
        """Base64 of the 32 raw bytes: what Mission Control shows."""
        return base64.b64encode(self.public_key_raw).decode("ascii")

    @property
    def public_key_der_base64(self) -> str:
        """Base64 of the DER SubjectPublicKeyInfo."""
        der = self.public_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return base64.b64encode(der).decode("ascii")

    @property
    def public_key_pem(self) -> str:
        """The public key as a PEM C{PUBLIC KEY} block."""
        return self.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode("ascii")

    def sign(self, timestamp: str, body: bytes) -> str:
        """Base64 of the signature over C{timestamp|body}."""
        message = timestamp.encode("ascii") + b"|" + body
        return base64.b64encode(self.private_key.sign(message)).decode("ascii")


# -- the fake account ----------------------------------------------------------


class FakeTelnyx:
    """
    A fake Telnyx account with one Call Control application.

    @param api_key: the API key REST calls must bear (random if not given).
    @param connection_id: the Call Control application id dials must name.
    @param webhook_url: the application's webhook URL (for inbound calls and
        dials without a C{webhook_url}).
    @param signer: the L{WebhookSigner} (a fresh key pair if not given).
    @param reactor: runs network I/O and "soon" work (default: the global reactor).
    @param clock: times speech, gathers, timeouts, playback (default: C{reactor}).
    @param http: a treq-like client for webhooks (default: treq on C{reactor});
        pass C{StubTreq(app_resource)} to reach an in-memory app.
    @param insecure_ws: connect to C{wss://} stream URLs with plain C{ws://}.
    @param ws_options: autobahn protocol options for the media sockets (see
        L{MediaStreamClient}), e.g. no handshake timers left on a test's reactor.
    @param insecure_webhooks: POST C{https://} webhook URLs over plain C{http://}.
    @param auto: C{None} (the test drives each call) or the outcome every new
        outbound call gets on its own: C{"answer"}, C{"busy"}, C{"no-answer"}, C{"failed"}.
    @param auto_delay: seconds (on C{clock}) before an automatic outcome.
    @param honour_timeout: end a ringing call with C{timeout} after C{timeout_secs}.
    @param speak_rate: characters of C{speak} text played per second.
    @param speak_scale: multiplies every speech and playback time; 0 makes them instant.
    @param playback_seconds: how long a C{playback_start} file plays.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        connection_id: str | None = None,
        webhook_url: str | None = None,
        signer: WebhookSigner | None = None,
        reactor: Any = None,
        clock: Any = None,
        http: Any = None,
        insecure_ws: bool = False,
        ws_options: dict[str, Any] | None = None,
        insecure_webhooks: bool = False,
        auto: str | None = None,
        auto_delay: float = 0.0,
        honour_timeout: bool = True,
        speak_rate: float = 15.0,
        speak_scale: float = 1.0,
        playback_seconds: float = 2.0,
        webhook_timeout: float = 15.0,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor
        if auto not in (None, "answer", "busy", "no-answer", "failed"):
            raise ValueError(f"auto must be None, answer, busy, no-answer or failed, not {auto!r}")
        self.api_key = api_key or "KEY" + secrets.token_hex(16).upper() + "_" + secrets.token_hex(8)
        self.connection_id = connection_id or str(secrets.randbelow(10**18) + 10**18)
        self.webhook_url = webhook_url
        self.signer = signer or WebhookSigner()
        self.reactor = reactor
        self.clock = clock if clock is not None else reactor
        self.insecure_ws = insecure_ws
        self.ws_options = dict(ws_options or {})
        self.insecure_webhooks = insecure_webhooks
        self.auto = auto
        self.auto_delay = auto_delay
        self.honour_timeout = honour_timeout
        self.speak_rate = speak_rate
        self.speak_scale = speak_scale
        self.playback_seconds = playback_seconds
        self.webhook_timeout = webhook_timeout
        #: The connection's failover URL: a webhook not answered 2xx is sent there once more.
        self.failover_url: str | None = None
        #: "valid", "wrong" (another key signed it), "missing" (no signature
        #: headers), "stale" (correctly signed, timestamp C{skew} seconds old)
        #: or "future" (C{skew} seconds ahead).
        self.signature_mode = "valid"
        self.skew = 600.0
        #: Where the REST API is: Telnyx's real root until L{listen} says otherwise.
        self.base_url = REAL_API_ROOT
        #: Every REST request received, in order.
        self.requests: list[RestRequest] = []
        #: Every webhook sent (or held) for any call, in order.
        self.webhooks: list[Webhook] = []
        #: Every call, in creation order.
        self.calls: list[FakeCall] = []
        self.resource = _RestResource(self)
        self._other_signer = WebhookSigner()
        self._failures: dict[str, deque[_Failure]] = {}
        self._holding = False
        self._held: list[Webhook] = []
        self._waiters = Waiters()
        self._timers: set[Any] = set()
        self._port: Any = None
        self._pool: Any = None
        self._stopped = False
        self._http = http if http is not None else self._default_http()

    # -- set-up and tear-down -------------------------------------------------

    def _default_http(self) -> Any:
        from treq.client import HTTPClient
        from twisted.web.client import Agent, HTTPConnectionPool

        self._pool = HTTPConnectionPool(self.reactor, persistent=False)
        return HTTPClient(Agent(self.reactor, pool=self._pool))

    def listen(self, reactor: Any = None, interface: str = "127.0.0.1") -> Deferred:
        """Serve the REST API on C{interface}, port 0; fires with the base URL."""
        reactor = reactor if reactor is not None else self.reactor
        site = Site(self.resource)
        site.noisy = False

        def listening(port: Any) -> str:
            self._port = port
            self.base_url = f"http://{interface}:{port.getHost().port}"
            return self.base_url

        return (
            TCP4ServerEndpoint(reactor, 0, interface=interface).listen(site).addCallback(listening)
        )

    @property
    def api_url(self) -> str:
        """The API root the product should use: C{base_url + "/v2"}."""
        return self.base_url + "/v2"

    def stop(self) -> Deferred:
        """Stop listening, drop open streams and cancel every timer; no more webhooks."""
        self._stopped = True
        for timer in list(self._timers):
            if timer.active():
                timer.cancel()
        self._timers.clear()
        closing = []
        for call in self.calls:
            call._abandon()
            for stream in call.streams:
                if stream.state != "closed":
                    stream.drop()
                    closing.append(stream.when_closed().addErrback(lambda _: None))
        if self._port is not None:
            closing.append(Deferred.fromCoroutine(self._stop_port()))
        if self._pool is not None:
            closing.append(self._pool.closeCachedConnections())

        async def all_done() -> None:
            for d in closing:
                await d

        return Deferred.fromCoroutine(all_done())

    async def _stop_port(self) -> None:
        port, self._port = self._port, None
        await port.stopListening()

    # -- the public key, as the product is configured with it -----------------

    @property
    def public_key_base64(self) -> str:
        """The webhook public key: Base64 of the 32 raw bytes."""
        return self.signer.public_key_base64

    @property
    def public_key_pem(self) -> str:
        """The webhook public key as PEM."""
        return self.signer.public_key_pem

    @property
    def public_key_der_base64(self) -> str:
        """The webhook public key as Base64 of its DER SubjectPublicKeyInfo."""
        return self.signer.public_key_der_base64

    def sign(self, timestamp: str, body: bytes) -> str:
        """The C{telnyx-signature-ed25519} value Telnyx would send for C{body}."""
        return self.signer.sign(timestamp, body)

    # -- test controls --------------------------------------------------------

    def fail_next(
        self,
        operation: str = "dial",
        status: int = 422,
        code: str = INVALID,
        title: str = "Invalid parameter",
        detail: str = "The fake was told to fail this request",
    ) -> None:
        """
        Make the next request of C{operation} answer a Telnyx JSON error:
        C{"dial"}, C{"status"}, a command name (C{"speak"}) or C{"command"} (any).
        """
        self._failures.setdefault(operation, deque()).append(_Failure(status, code, title, detail))

    def drop_next(self, operation: str = "dial") -> None:
        """Make the next request of C{operation} drop the connection unanswered."""
        self._failures.setdefault(operation, deque()).append(_Failure(drop=True))

    def call(self, call_control_id: str) -> FakeCall:
        """The call with C{call_control_id}."""
        for call in self.calls:
            if call.call_control_id == call_control_id:
                return call
        raise KeyError(call_control_id)

    @property
    def last_call(self) -> FakeCall:
        """The most recently created call."""
        return self.calls[-1]

    def when_call(self, index: int = 0) -> Deferred:
        """Fires with the call number C{index} (0 = first) once it exists."""
        return self._waiters.wait(lambda: self.calls[index] if len(self.calls) > index else None)

    @property
    def errors(self) -> list[str]:
        """Every problem the fake's calls recorded (failed webhooks, stream errors, ...)."""
        return [f"{call.call_control_id}: {error}" for call in self.calls for error in call.errors]

    def events(self, event_type: str | None = None) -> list[Webhook]:
        """Every webhook sent, or those of C{event_type}."""
        return [h for h in self.webhooks if event_type is None or h.event_type == event_type]

    def inbound_call(
        self,
        from_: str,
        to: str,
        *,
        webhook_url: str | None = None,
        caller_id_name: str | None = None,
    ) -> Deferred:
        """
        Someone dials C{to}: C{call.initiated} (C{direction=incoming},
        C{state=parked}); the call waits for the app's C{answer} command.
        Fires with the L{FakeCall} once the webhook was answered.
        """
        url = webhook_url or self.webhook_url
        if not url:
            raise FakeTelnyxError("inbound_call needs a webhook_url (or the fake's webhook_url)")
        call = FakeCall(self, direction="incoming", from_=from_, to=to, webhook_url=url)
        call.caller_id_name = caller_id_name or from_
        call._set_state("parked")
        self._add_call(call)
        return call._act(call._event("call.initiated"))

    def hold_webhooks(self) -> None:
        """From now on keep webhooks instead of sending them (see L{release_webhooks})."""
        self._holding = True

    def release_webhooks(
        self,
        order: Callable[[list[Webhook]], Iterable[Webhook]] | None = None,
        *,
        reverse: bool = False,
    ) -> Deferred:
        """
        Send the held webhooks, one after the other, in C{order(held)} (or the
        held order, reversed with C{reverse}), and stop holding.  Fires with
        the webhooks in the order sent, once all were answered.
        """
        self._holding = False
        held, self._held = self._held, []
        if order is not None:
            held = list(order(held))
        elif reverse:
            held.reverse()

        async def send_all() -> list[Webhook]:
            for hook in held:
                owner = self.call(hook.call_control_id)
                hook.held = False
                await owner._act(self._post(owner, hook))
            return held

        return Deferred.fromCoroutine(send_all())

    def resend(self, hook: Webhook | None = None) -> Deferred:
        """
        Deliver C{hook} (default: the last webhook sent) again, byte for byte:
        same body, same timestamp and signature.  Fires with the new L{Webhook}.
        """
        if hook is None:
            if not self.webhooks:
                raise FakeTelnyxError("no webhook has been sent yet")
            hook = self.webhooks[-1]
        owner = self.call(hook.call_control_id)
        replay = attrs.evolve(hook, duplicate=True, held=False, code=None, response=b"", error=None)
        replay.sent_at = self.clock.seconds()
        return owner._act_value(self._deliver(owner, replay))

    # Call controls, also available on the call itself.

    def ring(self, call: FakeCall | str) -> Deferred:
        """See L{FakeCall.ring}."""
        return self._the(call).ring()

    def answer(self, call: FakeCall | str, **kw: Any) -> Deferred:
        """See L{FakeCall.answer}."""
        return self._the(call).answer(**kw)

    def busy(self, call: FakeCall | str) -> Deferred:
        """See L{FakeCall.busy}."""
        return self._the(call).busy()

    def no_answer(self, call: FakeCall | str) -> Deferred:
        """See L{FakeCall.no_answer}."""
        return self._the(call).no_answer()

    def caller_hangup(self, call: FakeCall | str) -> Deferred:
        """See L{FakeCall.caller_hangup}."""
        return self._the(call).caller_hangup()

    def _the(self, call: FakeCall | str) -> FakeCall:
        return call if isinstance(call, FakeCall) else self.call(call)

    # -- internals ------------------------------------------------------------

    def _call_later(self, delay: float, f: Callable[..., Any], *args: Any) -> Any:
        """A timer on the fake's clock that L{stop} cancels."""

        def fire() -> None:
            self._timers.discard(timer)
            f(*args)

        timer = self.clock.callLater(delay, fire)
        self._timers.add(timer)
        return timer

    def _soon(self, f: Callable[..., Any], *args: Any) -> Any:
        """Run C{f} on the next reactor turn (never re-entering the caller)."""

        def fire() -> None:
            self._timers.discard(timer)
            f(*args)

        timer = self.reactor.callLater(0, fire)
        self._timers.add(timer)
        return timer

    def _add_call(self, call: FakeCall) -> None:
        self.calls.append(call)
        self._soon(self._waiters.changed)

    def _signature_headers(self, body: bytes) -> dict[str, str]:
        now = self.clock.seconds()
        if self.signature_mode == "missing":
            return {}
        when = {"stale": now - self.skew, "future": now + self.skew}.get(self.signature_mode, now)
        timestamp = str(int(when))
        signer = self._other_signer if self.signature_mode == "wrong" else self.signer
        return {SIGNATURE_HEADER: signer.sign(timestamp, body), TIMESTAMP_HEADER: timestamp}

    def _envelope(
        self, call: FakeCall, event_type: str, payload: dict[str, Any], url: str
    ) -> bytes:
        envelope = {
            "data": {
                "event_type": event_type,
                "id": str(uuid.uuid4()),
                "occurred_at": iso_time(self.clock.seconds()),
                "payload": payload,
                "record_type": "event",
            },
            "meta": {"attempt": 1, "delivered_to": url},
        }
        return json.dumps(envelope).encode("utf-8")

    async def _send_webhook(
        self, call: FakeCall, event_type: str, payload: dict[str, Any]
    ) -> Webhook:
        """Sign and send (or hold) one webhook; never raises."""
        url = call.webhook_url or ""
        body = self._envelope(call, event_type, payload, url)
        headers = {"Content-Type": "application/json", "Accept": "*/*"}
        headers.update(self._signature_headers(body))
        hook = Webhook(
            call_control_id=call.call_control_id,
            event_type=event_type,
            url=url,
            body=body,
            headers=headers,
            sent_at=self.clock.seconds(),
        )
        if self._holding:
            hook.held = True
            call.webhooks.append(hook)
            self.webhooks.append(hook)
            self._held.append(hook)
            return hook
        return await self._deliver(call, hook)

    async def _deliver(self, call: FakeCall, hook: Webhook) -> Webhook:
        call.webhooks.append(hook)
        self.webhooks.append(hook)
        return await self._post(call, hook)

    async def _post(self, call: FakeCall, hook: Webhook) -> Webhook:
        if self._stopped:
            hook.error = "the fake was stopped"
            return hook
        if not hook.url:
            hook.error = "no webhook URL for this call"
            call.errors.append(f"{hook.event_type}: {hook.error}")
            return hook
        url = hook.url
        if self.insecure_webhooks and url.startswith("https://"):
            url = "http://" + url[len("https://") :]
        try:
            response = await self._request(hook, url)
            hook.code = response.code
            hook.response = await response.content()
        except Exception as e:
            hook.error = f"{type(e).__name__}: {e}"
        if not hook.ok and self.failover_url and not hook.failover:
            again = attrs.evolve(
                hook,
                url=self.failover_url,
                headers={**hook.headers, **self._signature_headers(hook.body)},
                sent_at=self.clock.seconds(),
                failover=True,
                code=None,
                response=b"",
                error=None,
            )
            await self._deliver(call, again)
        elif not hook.ok:
            problem = hook.error or f"answered HTTP {hook.code}"
            call.errors.append(f"webhook {hook.event_type} to {hook.url}: {problem}")
        return hook

    async def _request(self, hook: Webhook, url: str) -> Any:
        return await self._http.request(
            "POST",
            url,
            data=hook.body,
            headers=hook.headers,
            allow_redirects=False,
            timeout=self.webhook_timeout,
        )

    # REST API

    def _render(self, request: Request) -> bytes | int:
        method = request.method.decode("ascii")
        path = request.path.decode("utf-8")
        raw = request.content.read() if request.content is not None else b""
        authorization = (request.getHeader(b"authorization") or b"").decode("latin-1")
        scheme, _, key = authorization.partition(" ")
        api_key = key.strip() if scheme.lower() == "bearer" else None
        auth_ok = api_key == self.api_key
        operation, call_id = _route(method, path)
        body: Any = None
        bad_json = False
        if raw.strip():
            try:
                body = json.loads(raw)
            except ValueError:
                bad_json = True
        rest = RestRequest(method, path, body, raw, auth_ok, api_key, operation, call_id)
        self.requests.append(rest)
        if not auth_ok:
            return _json(
                request,
                401,
                telnyx_error(
                    AUTH_FAILED,
                    "Authentication failed",
                    "Could not understand the provided credentials.",
                ),
            )
        if method == "GET" and path.rstrip("/") == "/v2/balance":
            return _json(request, 200, {"data": {"balance": "10.00", "currency": "USD"}})
        if not operation:
            return _json(
                request,
                404,
                telnyx_error(NOT_FOUND, "Resource not found", f"No route for {method} {path}"),
            )
        injected = self._injected(request, operation)
        if injected is not None:
            return injected
        if bad_json or (body is not None and not isinstance(body, dict)):
            return _json(
                request,
                400,
                telnyx_error(INVALID, "Invalid JSON", "The body must be a JSON object"),
            )
        params = body if isinstance(body, dict) else {}
        if operation == "dial":
            return self._rest_dial(request, rest, params)
        try:
            call = self.call(call_id or "")
        except KeyError:
            return _json(
                request,
                404,
                telnyx_error(NOT_FOUND, "Resource not found", f"No call {call_id!r}"),
            )
        if operation == "status":
            return _json(request, 200, {"data": call.resource()})
        call.commands.append(rest)
        return call._command(request, operation, params)

    def _injected(self, request: Request, operation: str) -> bytes | int | None:
        for key in (operation, "command" if operation in COMMANDS else None):
            queue = self._failures.get(key or "")
            if queue:
                failure = queue.popleft()
                if failure.drop:
                    request.channel.transport.abortConnection()
                    return NOT_DONE_YET
                return _json(
                    request,
                    failure.status,
                    telnyx_error(failure.code, failure.title, failure.detail),
                )
        return None

    def _rest_dial(self, request: Request, rest: RestRequest, params: dict[str, Any]) -> bytes:
        problem = _dial_problem(params, self.connection_id)
        if problem is None and not (params.get("webhook_url") or self.webhook_url):
            problem = (
                "connection_id",
                "Only Call Control Apps with valid webhook URL are accepted.",
            )
        if problem is not None:
            return _invalid(request, *problem)
        call = FakeCall(
            self,
            direction="outgoing",
            from_=params["from"],
            to=params["to"],
            webhook_url=params.get("webhook_url") or self.webhook_url,
            client_state=params.get("client_state"),
            timeout_secs=int(params.get("timeout_secs", 30)),
            amd=params.get("answering_machine_detection", "disabled"),
            stream=_stream_options(params),
            dial_request=rest,
        )
        self._add_call(call)
        if self.auto is not None:
            outcome = {
                "answer": call.answer,
                "busy": call.busy,
                "no-answer": call.no_answer,
                "failed": call.fail,
            }[self.auto]
            self._call_later(self.auto_delay, _ignore_result(outcome))
        return _json(
            request,
            200,
            {
                "data": {
                    "call_control_id": call.call_control_id,
                    "call_leg_id": call.call_leg_id,
                    "call_session_id": call.call_session_id,
                    "is_alive": False,
                    "record_type": "call",
                }
            },
        )


def _route(method: str, path: str) -> tuple[str, str | None]:
    """The operation and call id a REST path names ("" if none)."""
    if path.rstrip("/") == "/v2/calls":
        return ("dial", None) if method == "POST" else ("", None)
    match = re.fullmatch(r"/v2/calls/([^/]+)(?:/actions/([a-z_]+))?/?", path)
    if match is None:
        return "", None
    call_id = unquote(match.group(1))
    command = match.group(2)
    if command is None:
        return ("status", call_id) if method == "GET" else ("", None)
    if method != "POST" or command not in COMMANDS:
        return "", None
    return command, call_id


def _dial_problem(params: dict[str, Any], connection_id: str) -> tuple[str, str] | None:
    """The first (field, detail) wrong with a dial, else C{None}."""
    if not params.get("connection_id"):
        return "connection_id", "connection_id is required"
    if str(params["connection_id"]) != connection_id:
        return "connection_id", f"Unknown connection_id {params['connection_id']!r}"
    to = params.get("to")
    if not to:
        return "to", "to is required"
    if not all(_is_destination(t) for t in (to if isinstance(to, list) else [to])):
        return "to", f"Invalid destination number: {to!r}"
    if not params.get("from"):
        return "from", "from is required"
    if not _is_number(params["from"]):
        return "from", f"Invalid from number: {params['from']!r}"
    if "webhook_url" in params and not _is_http_url(params["webhook_url"]):
        return "webhook_url", f"Invalid URL: {params['webhook_url']!r}"
    if params.get("webhook_url_method", "POST") not in ("POST", "GET"):
        return "webhook_url_method", "webhook_url_method must be POST or GET"
    if "client_state" in params and not _is_base64(params["client_state"]):
        return "client_state", "client_state must be a valid Base64 string"
    timeout = params.get("timeout_secs", 30)
    if not isinstance(timeout, int) or isinstance(timeout, bool) or not 5 <= timeout <= 600:
        return "timeout_secs", "timeout_secs must be an integer from 5 to 600"
    if params.get("answering_machine_detection", "disabled") not in AMD_MODES:
        return "answering_machine_detection", "Unknown answering_machine_detection mode"
    return _stream_problem(params)


def _stream_problem(params: dict[str, Any]) -> tuple[str, str] | None:
    """The first (field, detail) wrong with the C{stream_*} fields, else C{None}."""
    if "stream_url" in params and not _is_ws_url(params["stream_url"]):
        return "stream_url", f"stream_url must be a ws:// or wss:// URL: {params['stream_url']!r}"
    checks = (
        ("stream_track", STREAM_TRACKS),
        ("stream_codec", STREAM_CODECS),
        ("stream_bidirectional_mode", BIDI_MODES),
        ("stream_bidirectional_codec", BIDI_CODECS),
    )
    for name, allowed in checks:
        if name in params and params[name] not in allowed:
            return name, f"{name} must be one of {sorted(allowed)}"
    if "stream_bidirectional_codec" in params and params.get("stream_bidirectional_mode") != "rtp":
        return "stream_bidirectional_codec", "stream_bidirectional_codec needs mode rtp"
    custom = params.get("custom_parameters", [])
    if not isinstance(custom, list) or not all(
        isinstance(p, dict) and set(p) == {"name", "value"} for p in custom
    ):
        return "custom_parameters", "custom_parameters must be a list of {name, value}"
    return None


def _stream_options(params: dict[str, Any]) -> dict[str, Any] | None:
    """The C{stream_*} fields of a dial, answer or streaming_start, if it asks for a stream."""
    if not params.get("stream_url"):
        return None
    names = (
        "stream_url",
        "stream_track",
        "stream_codec",
        "stream_bidirectional_mode",
        "stream_bidirectional_codec",
        "stream_bidirectional_sampling_rate",
        "stream_bidirectional_target_legs",
        "stream_auth_token",
        "custom_parameters",
    )
    return {name: params[name] for name in names if name in params}


# -- one call --------------------------------------------------------------------


class FakeCall:
    """
    One call leg as Telnyx sees it: state, commands received, webhooks sent,
    speech played, streams.

    C{state} is "queued" (dialled, nothing sent yet), "ringing" (outbound,
    C{call.initiated} sent), "parked" (inbound, waiting for C{answer}),
    "answered" or "ended" (then C{hangup_cause} and C{hangup_source} say why).

    Control methods return Deferreds that fire once the fake has nothing in
    flight for this call.  One that does not fit the call's state (say,
    L{answer} on an ended call) raises L{FakeTelnyxError}.
    """

    def __init__(
        self,
        fake: FakeTelnyx,
        *,
        direction: str,
        from_: str,
        to: Any,
        webhook_url: str | None,
        client_state: str | None = None,
        timeout_secs: int = 30,
        amd: str = "disabled",
        stream: dict[str, Any] | None = None,
        dial_request: RestRequest | None = None,
    ) -> None:
        self.fake = fake
        self.call_control_id = new_call_control_id()
        self.call_leg_id = str(uuid.uuid4())
        self.call_session_id = str(uuid.uuid4())
        self.connection_id = fake.connection_id
        self.direction = direction
        self.from_ = from_
        self.to = to
        self.caller_id_name: str | None = None
        self.webhook_url = webhook_url
        self.client_state = client_state
        self.timeout_secs = timeout_secs
        #: The C{answering_machine_detection} mode ("disabled" when not asked for).
        self.amd = amd
        #: The C{stream_*} options that open a stream at answer, if any.
        self.stream_options = stream
        self.dial_request = dial_request
        self.state = "queued"
        self.state_history: list[str] = ["queued"]
        self.hangup_cause: str | None = None
        self.hangup_source: str | None = None
        self.created_at = fake.clock.seconds()
        self.answered_at: float | None = None
        self.ended_at: float | None = None
        #: Every command request for this call, in order (duplicates included).
        self.commands: list[RestRequest] = []
        #: Every webhook sent (or held) for this call.
        self.webhooks: list[Webhook] = []
        #: Every speak / playback, in the order queued (gather prompts included).
        self.playbacks: list[Playback] = []
        #: Every gather, in order.
        self.gathers: list[Gather] = []
        #: Every media stream opened for this call.
        self.streams: list[TelnyxMediaStream] = []
        #: Digits the app sent with C{send_dtmf}; transfer targets.
        self.dtmf_sent: list[str] = []
        self.transfers: list[dict[str, Any]] = []
        #: Whom a C{transfer} bridged this call to, once the person answered.
        self.bridged_to: str | None = None
        #: The C{transcription_start} options while transcribing, else None.
        self.transcription: dict[str, Any] | None = None
        #: Problems Telnyx would report (failed webhooks, stream errors, ...).
        self.errors: list[str] = []
        #: What the call waits on: "speak", "playback", "gather" or None.
        self.waiting: str | None = None
        self._command_ids: set[str] = set()
        self._queue: deque[Playback | Gather] = deque()
        self._current: Playback | Gather | None = None
        self._current_wait: Deferred | None = None
        self._current_timer: Any = None
        self._playing = False
        self._active = 0
        self._ring_timer: Any = None
        self._progress = DeferredLock()
        self._waiters = Waiters()

    def __repr__(self) -> str:
        return f"<FakeCall {self.call_control_id} {self.direction} {self.to} {self.state}>"

    # -- what tests read ------------------------------------------------------

    @property
    def is_alive(self) -> bool:
        """Whether the call has not ended."""
        return self.state != "ended"

    @property
    def stream(self) -> TelnyxMediaStream | None:
        """The most recent media stream, if any."""
        return self.streams[-1] if self.streams else None

    @property
    def client_state_text(self) -> str | None:
        """C{client_state}, decoded."""
        if self.client_state is None:
            return None
        return base64.b64decode(self.client_state).decode("utf-8", "replace")

    @property
    def duration(self) -> int:
        """Seconds from answer to end (or now); 0 if never answered."""
        if self.answered_at is None:
            return 0
        end = self.ended_at if self.ended_at is not None else self.fake.clock.seconds()
        return round(end - self.answered_at)

    @property
    def spoken(self) -> list[str]:
        """The text of every C{speak} (and gather prompt), in order."""
        return [p.text for p in self.playbacks if p.kind == "speak"]

    def events(self, event_type: str | None = None) -> list[Webhook]:
        """The webhooks sent for this call, or those of C{event_type}."""
        return [h for h in self.webhooks if event_type is None or h.event_type == event_type]

    @property
    def event_types(self) -> list[str]:
        """The C{event_type} of every webhook sent, in order."""
        return [h.event_type for h in self.webhooks if not h.duplicate]

    def commands_named(self, name: str) -> list[RestRequest]:
        """The C{name} command requests received for this call."""
        return [r for r in self.commands if r.operation == name]

    def resource(self) -> dict[str, Any]:
        """The call as C{GET /v2/calls/{id}} returns it."""
        now = self.fake.clock.seconds()
        return {
            "record_type": "call",
            "call_control_id": self.call_control_id,
            "call_leg_id": self.call_leg_id,
            "call_session_id": self.call_session_id,
            "client_state": self.client_state,
            "is_alive": self.is_alive,
            "call_duration": round((self.ended_at or now) - self.created_at),
            "start_time": iso_time(self.created_at),
            "end_time": iso_time(self.ended_at) if self.ended_at is not None else None,
        }

    # -- waiting --------------------------------------------------------------

    def when_settled(self) -> Deferred:
        """Fires with the call once nothing is in flight for it."""
        return self._waiters.wait(lambda: self if self._active == 0 else None, persistent=True)

    def when_state(self, *states: str) -> Deferred:
        """Fires with the first of C{states} the call has reached (now or later)."""
        return self._waiters.wait(
            lambda: next((s for s in self.state_history if s in states), None)
        )

    def when_ended(self) -> Deferred:
        """Fires with the hangup cause once the call ended and its webhooks were answered."""
        return self._waiters.wait(
            lambda: self.hangup_cause if not self.is_alive and self._active == 0 else None,
            persistent=True,
        )

    def when_webhook(self, event_type: str, count: int = 1) -> Deferred:
        """Fires with the C{count}th answered (or failed) webhook of C{event_type}."""

        def check() -> Webhook | None:
            done = [
                h
                for h in self.webhooks
                if h.event_type == event_type and not h.duplicate and (h.code or h.error)
            ]
            return done[count - 1] if len(done) >= count else None

        return self._waiters.wait(check)

    def when_command(self, name: str, count: int = 1) -> Deferred:
        """Fires with the C{count}th C{name} command request received."""

        def check() -> RestRequest | None:
            found = self.commands_named(name)
            return found[count - 1] if len(found) >= count else None

        return self._waiters.wait(check)

    def when_stream(self, index: int = 0) -> Deferred:
        """Fires with stream number C{index} once it is open (or failed to open)."""

        def check() -> TelnyxMediaStream | None:
            if len(self.streams) > index and self.streams[index].state != "connecting":
                return self.streams[index]
            return None

        return self._waiters.wait(check)

    def when_gathering(self) -> Deferred:
        """Fires with the L{Gather} once the call collects digits for one."""
        return self._waiters.wait(
            lambda: (
                self._current
                if isinstance(self._current, Gather) and self._current.collecting
                else None
            )
        )

    def when_transcribing(self) -> Deferred:
        """Fires with the C{transcription_start} options once transcription runs."""
        return self._waiters.wait(lambda: self.transcription)

    # -- call progress (outbound) ---------------------------------------------

    def ring(self) -> Deferred:
        """Telnyx dials out and the callee's phone rings: C{call.initiated}."""
        self._expect({"queued"}, "ring")
        return self._act(self._progress_flow(self._ring_flow))

    def answer(self, *, machine: str | None = None, greeting: float | None = None) -> Deferred:
        """
        The callee picks up: C{call.answered}, the media stream opens if one
        was asked for, and with answering-machine detection on, the detection
        result (C{machine}: "human" by default; for premium, "human_residence").
        With C{greeting}, a machine's greeting ends that many seconds later on
        the fake's clock (L{machine_greeting_ended} with C{beep_detected}).
        """
        self._expect({"queued", "ringing"}, "answer")
        if greeting is not None:
            self.fake._call_later(greeting, self._beep)
        return self._act(self._progress_flow(self._answer_flow, machine))

    def _beep(self) -> None:
        if self.is_alive and self.amd != "disabled":
            self.machine_greeting_ended("beep_detected")

    def busy(self) -> Deferred:
        """The callee is busy: C{call.hangup} with C{user_busy}."""
        self._expect({"queued", "ringing"}, "busy")
        return self._act(self._progress_flow(self._unanswered_flow, "user_busy"))

    def no_answer(self, cause: str = "timeout") -> Deferred:
        """Nobody picks up: C{call.hangup} with C{cause} (C{timeout} or C{no_answer})."""
        self._expect({"queued", "ringing"}, "no_answer")
        return self._act(self._progress_flow(self._unanswered_flow, cause))

    def fail(self, cause: str = "unspecified") -> Deferred:
        """The call cannot be connected: C{call.hangup} with C{cause} (e.g. C{not_found})."""
        self._expect({"queued", "ringing"}, "fail")
        if cause not in HANGUP_CAUSES:
            raise FakeTelnyxError(f"not a Telnyx hangup cause: {cause!r}")
        return self._act(self._progress_flow(self._unanswered_flow, cause))

    def caller_hangup(self) -> Deferred:
        """
        The person on the phone hangs up: playback ends (C{call_hangup}), open
        streams get C{stop}, then C{call.hangup} (C{normal_clearing}, or
        C{originator_cancel} for an inbound call not answered yet).
        """
        if self.state not in ("answered", "parked"):
            raise FakeTelnyxError(f"caller_hangup on a {self.state} call {self.call_control_id}")
        source = "caller" if self.direction == "incoming" else "callee"
        cause = "normal_clearing" if self.state == "answered" else "originator_cancel"
        return self._act(self._hangup_flow(cause, source))

    def machine_greeting_ended(self, result: str = "ended") -> Deferred:
        """
        The machine's greeting ended (detect_beep / greeting_end / detect_words):
        C{call.machine.greeting.ended} (premium: C{call.machine.premium.greeting.ended}).
        """
        self._expect_alive("machine_greeting_ended")
        premium = self.amd == "premium"
        event = "call.machine.premium.greeting.ended" if premium else "call.machine.greeting.ended"
        return self._act(self._event(event, result=result))

    # -- the caller's input ---------------------------------------------------

    def press(self, digits: str) -> Deferred:
        """
        The caller presses C{digits}, one by one: C{call.dtmf.received} for
        each, a C{dtmf} message on an open stream, and digits for a running
        gather (which may end it: C{call.gather.ended}).
        """
        if self.state != "answered":
            raise FakeTelnyxError(f"press on a {self.state} call {self.call_control_id}")
        return self._act(self._press_flow(digits))

    def say(
        self,
        text: str,
        *,
        confidence: float = 0.9,
        interim: bool = False,
        is_final: bool = True,
    ) -> Deferred:
        """
        The caller says C{text} while transcription runs: C{call.transcription}
        with C{transcription_data} (C{is_final}); with C{interim}, one
        non-final result per word first ("hello", "hello there", ...).
        """
        if self.state != "answered":
            raise FakeTelnyxError(f"say on a {self.state} call {self.call_control_id}")
        if self.transcription is None:
            raise FakeTelnyxError(f"say on call {self.call_control_id}: transcription is not on")
        return self._act(self._say_flow(text, confidence, interim, is_final))

    def gather_timeout(self) -> Deferred:
        """The caller stops pressing keys: the running gather ends now, as on its timeout."""
        gather = self._current
        if not isinstance(gather, Gather) or not gather.collecting:
            raise FakeTelnyxError(f"call {self.call_control_id} is not gathering digits")
        self._end_current("timeout")
        return self.when_settled()

    # -- commands -------------------------------------------------------------

    def _command(self, request: Request, name: str, params: dict[str, Any]) -> bytes:
        """Run one REST command; the answer is C{{"data": {"result": "ok"}}} or an error."""
        if not self.is_alive:
            return _json(
                request,
                422,
                telnyx_error(
                    CALL_ENDED,
                    "Call has already ended",
                    "This call is no longer active and can't receive commands.",
                ),
            )
        if "client_state" in params and not _is_base64(params["client_state"]):
            return _invalid(request, "client_state", "client_state must be a valid Base64 string")
        command_id = params.get("command_id")
        if command_id is not None and command_id in self._command_ids:
            return _json(request, 200, {"data": {"result": "ok"}})
        handler = getattr(self, f"_cmd_{name}")
        problem = handler(params)
        if problem is not None:
            status, code, field, detail = problem
            body = telnyx_error(
                code, "Invalid parameter" if status == 422 else "Not allowed", detail
            )
            body["errors"][0]["source"] = {"pointer": f"/{field}"}
            return _json(request, status, body)
        if command_id is not None:
            self._command_ids.add(command_id)
        if "client_state" in params:
            self.client_state = params["client_state"]
        self._changed()
        return _json(request, 200, {"data": {"result": "ok"}})

    def _not_answered(self, name: str) -> tuple[int, str, str, str] | None:
        if self.state != "answered":
            return (
                422,
                WRONG_STATE,
                "call_control_id",
                f"{name}: the call is {self.state}, not answered",
            )
        return None

    def _cmd_answer(self, params: dict[str, Any]) -> Any:
        if self.direction != "incoming" or self.state != "parked":
            return 422, WRONG_STATE, "call_control_id", f"answer: the call is {self.state}"
        if "webhook_url" in params and not _is_http_url(params["webhook_url"]):
            return 422, INVALID, "webhook_url", "Invalid URL"
        problem = _stream_problem(params)
        if problem is not None:
            return (422, INVALID, *problem)
        if params.get("webhook_url"):
            self.webhook_url = params["webhook_url"]
        self.stream_options = _stream_options(params)
        self._set_state("answered")
        self.answered_at = self.fake.clock.seconds()
        self._spawn_soon(self._answered_flow, None)
        return None

    def _cmd_reject(self, params: dict[str, Any]) -> Any:
        cause = params.get("cause")
        if cause not in ("CALL_REJECTED", "USER_BUSY"):
            return 422, INVALID, "cause", "cause must be CALL_REJECTED or USER_BUSY"
        if self.direction != "incoming" or self.state != "parked":
            return 422, WRONG_STATE, "call_control_id", f"reject: the call is {self.state}"
        self._spawn_soon(self._hangup_flow, cause.lower(), "callee")
        return None

    def _cmd_hangup(self, params: dict[str, Any]) -> Any:
        if self.state in ("queued", "ringing"):
            cause = "originator_cancel"
        else:
            cause = "normal_clearing"
        source = "caller" if self.direction == "outgoing" else "callee"
        self._spawn_soon(self._hangup_flow, cause, source)
        return None

    def _cmd_speak(self, params: dict[str, Any]) -> Any:
        problem = self._not_answered("speak") or _speak_problem(params)
        if problem is not None:
            return problem
        self._stop_for(params.get("stop"))
        self._enqueue(Playback("speak", params["payload"], dict(params), self.fake.clock.seconds()))
        return None

    def _cmd_playback_start(self, params: dict[str, Any]) -> Any:
        problem = self._not_answered("playback_start")
        if problem is not None:
            return problem
        sources = [k for k in ("audio_url", "media_name", "playback_content") if params.get(k)]
        if len(sources) != 1:
            return (
                422,
                INVALID,
                "audio_url",
                "exactly one of audio_url, media_name, playback_content",
            )
        self._stop_for(params.get("stop"))
        what = params[sources[0]] if sources[0] != "playback_content" else "<inline audio>"
        self._enqueue(Playback("playback", what, dict(params), self.fake.clock.seconds()))
        return None

    def _cmd_playback_stop(self, params: dict[str, Any]) -> Any:
        self._stop_for(params.get("stop", "all"))
        return None

    def _cmd_gather_using_speak(self, params: dict[str, Any]) -> Any:
        problem = self._not_answered("gather_using_speak") or _speak_problem(params)
        if problem is None:
            problem = _gather_problem(params)
        if problem is not None:
            return problem
        prompt = Playback("speak", params["payload"], dict(params), self.fake.clock.seconds())
        self._enqueue(Gather(dict(params), prompt))
        return None

    def _cmd_gather(self, params: dict[str, Any]) -> Any:
        problem = self._not_answered("gather") or _gather_problem(params)
        if problem is not None:
            return problem
        self._enqueue(Gather(dict(params), None))
        return None

    def _cmd_gather_stop(self, params: dict[str, Any]) -> Any:
        if isinstance(self._current, Gather):
            self._end_current("cancelled")
        return None

    def _cmd_transcription_start(self, params: dict[str, Any]) -> Any:
        problem = self._not_answered("transcription_start")
        if problem is not None:
            return problem
        tracks = params.get("transcription_tracks", "inbound")
        if tracks not in ("inbound", "outbound", "both"):
            return 422, INVALID, "transcription_tracks", "inbound, outbound or both"
        self.transcription = dict(params)
        return None

    def _cmd_transcription_stop(self, params: dict[str, Any]) -> Any:
        self.transcription = None
        return None

    def _cmd_streaming_start(self, params: dict[str, Any]) -> Any:
        problem = self._not_answered("streaming_start")
        if problem is None and not params.get("stream_url"):
            problem = 422, INVALID, "stream_url", "stream_url is required"
        if problem is None and (found := _stream_problem(params)) is not None:
            problem = (422, INVALID, *found)
        if problem is not None:
            return problem
        options = _stream_options(params)
        self._spawn_soon(self._replace_stream, options)
        return None

    def _cmd_streaming_stop(self, params: dict[str, Any]) -> Any:
        wanted = params.get("stream_id")
        for stream in self.streams:
            if wanted is None or stream.stream_id == wanted:
                stream._close_by_provider()
        return None

    def _cmd_send_dtmf(self, params: dict[str, Any]) -> Any:
        digits = params.get("digits")
        if not isinstance(digits, str) or not re.fullmatch(r"[0-9A-D*#wW]+", digits):
            return 422, INVALID, "digits", "digits must be DTMF characters (0-9 A-D * # w W)"
        problem = self._not_answered("send_dtmf")
        if problem is not None:
            return problem
        self.dtmf_sent.append(digits)
        return None

    def _cmd_transfer(self, params: dict[str, Any]) -> Any:
        if not _is_destination(params.get("to")):
            return 422, INVALID, "to", f"Invalid destination: {params.get('to')!r}"
        leg_state = params.get("target_leg_client_state")
        if leg_state is not None and not _is_base64(leg_state):
            return 422, INVALID, "target_leg_client_state", "must be a valid Base64 string"
        problem = self._not_answered("transfer")
        if problem is not None:
            return problem
        self.transfers.append(dict(params))
        return None

    def person_answers(self) -> Deferred:
        """
        The person a C{transfer} dialled answers: the new leg gets
        C{call.answered} (with the transfer's C{target_leg_client_state}), then it is
        bridged to this one, which gets C{call.bridged}.
        """
        self._expect_transfer()
        self.bridged_to = self.transfers[-1]["to"]

        async def answered() -> None:
            await self._leg_event("call.answered", state="answered")
            await self._event("call.bridged")

        return self._act(answered())

    def person_does_not_answer(self, cause: str = "timeout") -> Deferred:
        """
        The new leg of a C{transfer} ends unanswered: it gets C{call.hangup};
        this call stays up, as Telnyx leaves it (the app may command it again).
        """
        self._expect_transfer()
        hangup = {"state": "hangup", "hangup_cause": cause, "hangup_source": "callee"}
        return self._act(self._leg_event("call.hangup", **hangup))

    def person_hangs_up(self) -> Deferred:
        """The person the call was transferred to hangs up: the bridged call ends."""
        if self.bridged_to is None or not self.is_alive:
            raise FakeTelnyxError(f"{self.call_control_id} is not bridged to anyone")
        return self._act(self._hangup_flow("normal_clearing", "callee"))

    def _expect_transfer(self) -> None:
        if not self.transfers or not self.is_alive or self.bridged_to is not None:
            raise FakeTelnyxError(f"{self.call_control_id} has no transfer ringing")

    async def _leg_event(self, event_type: str, **extra: Any) -> Webhook:
        """A webhook of the leg the last C{transfer} dialled (its own ids, its client_state)."""
        transfer = self.transfers[-1]
        if "leg" not in transfer:
            transfer["leg"] = new_call_control_id()
        payload = self._payload(
            call_control_id=transfer["leg"],
            call_leg_id=str(uuid.uuid4()),
            client_state=transfer.get("target_leg_client_state"),
            direction="outgoing",
            **{"from": transfer.get("from") or self.from_, "to": transfer["to"]},
            **extra,
        )
        return await self.fake._send_webhook(self, event_type, payload)

    def _cmd_client_state_update(self, params: dict[str, Any]) -> Any:
        if "client_state" not in params:
            return 422, INVALID, "client_state", "client_state is required"
        return None

    # -- activity bookkeeping -------------------------------------------------

    def _expect(self, states: set[str], what: str) -> None:
        if self.direction == "incoming":
            raise FakeTelnyxError(
                f"{what}() is for outbound calls; {self.call_control_id} is inbound"
            )
        if self.state not in states:
            raise FakeTelnyxError(f"{what}() on a {self.state} call {self.call_control_id}")

    def _expect_alive(self, what: str) -> None:
        if not self.is_alive:
            raise FakeTelnyxError(f"{what}() on an ended call {self.call_control_id}")

    def _act(self, coroutine: Any) -> Deferred:
        """Run call work; fires with the call once the call is quiet again."""
        self._spawn(coroutine)
        return self.when_settled()

    def _act_value(self, coroutine: Any) -> Deferred:
        """Run call work; fires with its result once the call is quiet again."""
        box: list[Any] = []

        async def keep() -> None:
            box.append(await coroutine)

        return self._act(keep()).addCallback(lambda _: box[0])

    def _spawn(self, coroutine: Any) -> Deferred:
        self._waiters.reopen()
        self._active += 1
        d = ensureDeferred(coroutine)
        d.addErrback(self._crashed)
        d.addBoth(lambda result: (self._release(), result)[1])
        return d

    def _spawn_soon(self, f: Callable[..., Any], *args: Any) -> None:
        """Start C{f(*args)} (a coroutine function) on the next reactor turn."""
        self._waiters.reopen()
        self._active += 1

        def start() -> None:
            self._spawn(f(*args))
            self._release()

        self.fake._soon(start)

    def _release(self) -> None:
        self._active -= 1
        self._changed()

    def _crashed(self, failure: Failure) -> None:
        if failure.check(CancelledError):
            return
        self.errors.append(f"fake crashed: {failure.getErrorMessage()}")
        log.failure("The fake Telnyx crashed on call {id}", failure, id=self.call_control_id)

    def _changed(self) -> None:
        self._waiters.changed()
        if not self.is_alive and self._active == 0:
            self._waiters.close(CallEnded(f"call {self.call_control_id} ended {self.hangup_cause}"))

    async def _block(self, d: Deferred, waiting: str) -> Any:
        """Wait for C{d}; the call counts as quiet meanwhile."""
        self.waiting = waiting

        def resumed(result: Any) -> Any:
            self._active += 1
            self.waiting = None
            return result

        d.addBoth(resumed)
        self._active -= 1
        self._changed()
        return await d

    def _abandon(self) -> None:
        """The fake stopped: end what plays without webhooks."""
        self._queue.clear()
        if self._current_timer is not None and self._current_timer.active():
            self._current_timer.cancel()
        if self._current_wait is not None and not self._current_wait.called:
            self._current_wait.cancel()

    def _set_state(self, state: str) -> None:
        self.state = state
        self.state_history.append(state)

    def _cancel_ring_timer(self) -> None:
        if self._ring_timer is not None and self._ring_timer.active():
            self._ring_timer.cancel()
        self._ring_timer = None

    # -- flows ----------------------------------------------------------------

    async def _progress_flow(self, flow: Callable[..., Any], *args: Any) -> None:
        await self._progress.acquire()
        try:
            await flow(*args)
        finally:
            self._progress.release()

    async def _ring_flow(self) -> None:
        if self.state != "queued":
            return
        self._set_state("ringing")
        if self.fake.honour_timeout:
            self._ring_timer = self.fake._call_later(self.timeout_secs, self._ring_timed_out)
        await self._event("call.initiated")

    def _ring_timed_out(self) -> None:
        self._ring_timer = None
        if self.state == "ringing":
            self._spawn(self._hangup_flow("timeout", "unknown"))

    async def _answer_flow(self, machine: str | None) -> None:
        await self._ring_flow()
        if self.state != "ringing":
            return
        self._cancel_ring_timer()
        self._set_state("answered")
        self.answered_at = self.fake.clock.seconds()
        await self._answered_flow(machine)

    async def _answered_flow(self, machine: str | None) -> None:
        """C{call.answered}, then the stream and answering-machine detection."""
        await self._event("call.answered")
        if self.stream_options is not None and self.is_alive:
            await self._open_stream(self.stream_options)
        if self.amd != "disabled" and self.is_alive:
            premium = self.amd == "premium"
            result = machine or ("human_residence" if premium else "human")
            event = (
                "call.machine.premium.detection.ended"
                if premium
                else "call.machine.detection.ended"
            )
            await self._event(event, result=result)

    async def _unanswered_flow(self, cause: str) -> None:
        if cause in ("timeout", "no_answer"):
            await self._ring_flow()
        elif self.state == "queued":
            self._set_state("ringing")
            await self._event("call.initiated")
        if self.is_alive:
            await self._hangup_flow(cause, "callee")

    async def _hangup_flow(self, cause: str, source: str) -> None:
        """End the call: playback and streams stop (with their webhooks), then C{call.hangup}."""
        if not self.is_alive:
            return
        self._set_state("ended")
        self.hangup_cause = cause
        self.hangup_source = source
        self.ended_at = self.fake.clock.seconds()
        self._cancel_ring_timer()
        self.transcription = None
        self._queue.clear()
        if self._current is not None:
            self._end_current("call_hangup")
        await self._waiters.wait(lambda: None if self._playing else True, persistent=True)
        for stream in self.streams:
            stream._close_by_provider()
        for stream in self.streams:
            await stream.when_closed()
            if stream._status_hook is not None:
                await stream._status_hook
        await self._event(
            "call.hangup",
            hangup_cause=cause,
            hangup_source=source,
            sip_hangup_cause=SIP_CAUSES.get(cause, "unspecified"),
            start_time=iso_time(self.created_at),
            end_time=iso_time(self.ended_at),
        )

    async def _press_flow(self, digits: str) -> None:
        for digit in digits:
            if not self.is_alive:
                return
            await self._event("call.dtmf.received", digit=digit)
            for stream in self.streams:
                if stream.state == "open":
                    stream.send_dtmf(digit)
            self._gather_digit(digit)

    async def _say_flow(self, text: str, confidence: float, interim: bool, is_final: bool) -> None:
        words = text.split()
        partials = [" ".join(words[:n]) for n in range(1, len(words))] if interim else []
        for partial in partials:
            await self._transcript(partial, confidence, False)
        await self._transcript(text, confidence, is_final)

    async def _transcript(self, text: str, confidence: float, is_final: bool) -> None:
        if self.transcription is None or not self.is_alive:
            return
        tracks = self.transcription.get("transcription_tracks", "inbound")
        data = {
            "transcript": text,
            "confidence": confidence,
            "is_final": is_final,
            "transcription_track": "outbound" if tracks == "outbound" else "inbound",
        }
        await self._event("call.transcription", transcription_data=data)

    # -- playback queue -------------------------------------------------------

    def _enqueue(self, item: Playback | Gather) -> None:
        if isinstance(item, Gather):
            self.gathers.append(item)
            if item.prompt is not None:
                self.playbacks.append(item.prompt)
        else:
            self.playbacks.append(item)
        self._queue.append(item)
        if not self._playing:
            self._playing = True
            self._spawn_soon(self._play_all)

    def _stop_for(self, stop: str | None) -> None:
        """C{stop="current"} ends what plays; C{"all"} also empties the queue."""
        if stop == "all":
            for item in self._queue:
                if isinstance(item, Playback):
                    item.status = "cancelled"
            self._queue.clear()
        if stop in ("current", "all") and isinstance(self._current, Playback):
            self._end_current("cancelled")

    def _end_current(self, status: str) -> None:
        """End the running item now with C{status} (its worker sends the webhooks)."""
        if self._current_timer is not None and self._current_timer.active():
            self._current_timer.cancel()
        self._current_timer = None
        wait, self._current_wait = self._current_wait, None
        if wait is not None and not wait.called:
            wait.callback(status)

    def _wait_for(self, seconds: float | None, status: str, waiting: str) -> Any:
        """Block until C{seconds} pass (then C{status}) or L{_end_current}."""
        d: Deferred = Deferred()
        self._current_wait = d
        if seconds is not None:
            self._current_timer = self.fake._call_later(
                max(0.0, seconds), self._end_current, status
            )
        return self._block(d, waiting)

    async def _play_all(self) -> None:
        try:
            await self._play_queue()
        finally:
            self._playing = False

    async def _play_queue(self) -> None:
        while self._queue and self.is_alive:
            item = self._queue.popleft()
            self._current = item
            try:
                if isinstance(item, Gather):
                    await self._run_gather(item)
                else:
                    await self._run_playback(item)
            finally:
                self._current = None
                self._current_wait = None
                self._current_timer = None

    def _seconds(self, item: Playback) -> float:
        if item.kind == "speak":
            seconds = len(item.text) / self.fake.speak_rate
        else:
            seconds = self.fake.playback_seconds
        return seconds * self.fake.speak_scale

    async def _run_playback(self, item: Playback) -> None:
        prefix = "call.speak" if item.kind == "speak" else "call.playback"
        extra = {} if item.kind == "speak" else {"media_url": item.text, "overlay": False}
        item.started_at = self.fake.clock.seconds()
        await self._event(f"{prefix}.started", **extra)
        if not self.is_alive:
            item.status = "call_hangup"
        else:
            waiting = "speak" if item.kind == "speak" else "playback"
            item.status = await self._wait_for(self._seconds(item), "completed", waiting)
        item.ended_at = self.fake.clock.seconds()
        await self._event(f"{prefix}.ended", status=item.status, **extra)

    async def _run_gather(self, gather: Gather) -> None:
        if gather.prompt is not None:
            await self._run_playback(gather.prompt)
            if gather.prompt.status == "call_hangup":
                gather.status = "call_hangup"
                await self._event("call.gather.ended", digits="", status="call_hangup")
                return
        gather.collecting = True  # waits see it once the timer below is armed
        timeout = float(gather.params.get("timeout_millis", 60000)) / 1000
        outcome = await self._wait_for(timeout, "timeout", "gather")
        gather.collecting = False
        if outcome == "digits":
            outcome = _gather_status(gather)
        elif outcome == "timeout" and gather.digits:
            outcome = _gather_status(gather)
        gather.status = outcome
        await self._event("call.gather.ended", digits=gather.digits, status=outcome)

    def _gather_digit(self, digit: str) -> None:
        gather = self._current
        if not isinstance(gather, Gather):
            return
        if not gather.collecting:
            if gather.prompt is not None and gather.prompt.status is None:
                self._end_current("completed")  # a key press cuts the prompt short
                gather.digits += digit if digit != gather.terminating else ""
            return
        if digit == gather.terminating:
            self._end_current("digits")
            return
        gather.digits += digit
        if len(gather.digits) >= gather.maximum:
            self._end_current("digits")
            return
        inter = gather.params.get("inter_digit_timeout_millis")
        if inter is not None and self._current_timer is not None:
            self._current_timer.cancel()
            self._current_timer = self.fake._call_later(
                float(inter) / 1000, self._end_current, "digits"
            )

    # -- webhooks -------------------------------------------------------------

    def _payload(self, **extra: Any) -> dict[str, Any]:
        """The fields every call event carries, and C{extra}."""
        state = {
            "queued": "bridging",
            "ringing": "bridging",
            "parked": "parked",
            "answered": "answered",
            "ended": "hangup",
        }[self.state]
        payload: dict[str, Any] = {
            "call_control_id": self.call_control_id,
            "call_leg_id": self.call_leg_id,
            "call_session_id": self.call_session_id,
            "connection_id": self.connection_id,
            "client_state": self.client_state,
            "from": self.from_,
            "to": self.to,
            "direction": self.direction,
            "state": state,
        }
        payload.update(extra)
        return payload

    async def _event(self, event_type: str, **extra: Any) -> Webhook:
        """Send the webhook C{event_type} for this call."""
        if event_type == "call.initiated":
            extra.setdefault("start_time", iso_time(self.created_at))
            if self.direction == "incoming":
                extra.setdefault("caller_id_name", self.caller_id_name or self.from_)
                extra.setdefault("calling_party_type", "pstn")
                extra.setdefault("connection_codecs", "PCMU,PCMA")
                extra.setdefault("offered_codecs", "PCMU")
        if event_type == "call.answered":
            extra.setdefault("start_time", iso_time(self.answered_at or self.created_at))
            if self.stream_options is not None:
                extra.setdefault("stream_url", self.stream_options["stream_url"])
                extra.setdefault(
                    "stream_track", self.stream_options.get("stream_track", "inbound_track")
                )
        return await self.fake._send_webhook(self, event_type, self._payload(**extra))

    # -- streams --------------------------------------------------------------

    async def _replace_stream(self, options: dict[str, Any]) -> None:
        """C{streaming_start}: one stream per call, so an open one stops first."""
        for stream in self.streams:
            if stream.state != "closed":
                stream._close_by_provider()
                await stream.when_closed()
        if self.is_alive:
            await self._open_stream(options)

    async def _open_stream(self, options: dict[str, Any]) -> TelnyxMediaStream:
        stream = TelnyxMediaStream(self, options)
        self.streams.append(stream)
        await stream._connect()
        self._changed()
        return stream


def _speak_problem(params: dict[str, Any]) -> tuple[int, str, str, str] | None:
    payload = params.get("payload")
    if not isinstance(payload, str) or not payload:
        return 422, INVALID, "payload", "payload is required"
    if len(payload) > MAX_SPEAK_CHARS:
        return 422, INVALID, "payload", f"payload is longer than {MAX_SPEAK_CHARS} characters"
    if not params.get("voice"):
        return 422, INVALID, "voice", "voice is required"
    if params.get("payload_type", "text") not in ("text", "ssml"):
        return 422, INVALID, "payload_type", "payload_type must be text or ssml"
    if params.get("stop") not in (None, "current", "all"):
        return 422, INVALID, "stop", "stop must be current or all"
    return None


def _gather_problem(params: dict[str, Any]) -> tuple[int, str, str, str] | None:
    low, high = params.get("minimum_digits", 1), params.get("maximum_digits", 128)
    if not isinstance(low, int) or not isinstance(high, int) or not 1 <= low <= high <= 128:
        return 422, INVALID, "minimum_digits", "need 1 <= minimum_digits <= maximum_digits <= 128"
    for name in ("timeout_millis", "inter_digit_timeout_millis"):
        if name in params and (not isinstance(params[name], int) or params[name] <= 0):
            return 422, INVALID, name, f"{name} must be a positive integer"
    return None


def _gather_status(gather: Gather) -> str:
    if len(gather.digits) < gather.minimum or any(d not in gather.valid for d in gather.digits):
        return "invalid"
    return "valid"


# -- media streaming -------------------------------------------------------------


class TelnyxDialect:
    """Telnyx's media-streaming messages (C{providers.md} section 2.6)."""

    provider = "telnyx"
    audio = ULAW_8K

    def opening(self, stream: TelnyxMediaStream) -> list[dict[str, Any]]:
        """C{connected}, then C{start} with C{stream_id} at the top level."""
        call = stream.call
        return [
            {"event": "connected", "version": "1.0.0"},
            {
                "event": "start",
                "sequence_number": str(stream.next_seq()),
                "stream_id": stream.stream_id,
                "start": {
                    "user_id": stream.user_id,
                    "call_control_id": call.call_control_id,
                    "call_session_id": call.call_session_id,
                    "from": call.from_,
                    "to": call.to,
                    "tags": [],
                    "client_state": call.client_state,
                    "custom_parameters": dict(stream.custom_parameters),
                    "media_format": {
                        "encoding": stream.encoding,
                        "sample_rate": 8000,
                        "channels": 1,
                    },
                },
            },
        ]

    def media(
        self, stream: TelnyxMediaStream, frame: bytes, chunk: int, timestamp: int
    ) -> dict[str, Any]:
        """One frame of the caller's audio (RTP payload, no header)."""
        return {
            "event": "media",
            "sequence_number": str(stream.next_seq()),
            "stream_id": stream.stream_id,
            "media": {
                "track": "inbound",
                "chunk": str(chunk),
                "timestamp": str(timestamp),
                "payload": base64.b64encode(frame).decode("ascii"),
            },
        }

    def dtmf(self, stream: TelnyxMediaStream, digit: str) -> dict[str, Any]:
        """A key press, timed with C{occurred_at}."""
        return {
            "event": "dtmf",
            "stream_id": stream.stream_id,
            "occurred_at": iso_time(stream.clock.seconds()),
            "sequence_number": str(stream.next_seq()),
            "dtmf": {"digit": digit},
        }

    def mark_echo(self, stream: TelnyxMediaStream, name: str) -> dict[str, Any]:
        """The app's mark, once the audio before it has played."""
        return {
            "event": "mark",
            "stream_id": stream.stream_id,
            "sequence_number": str(stream.next_seq()),
            "mark": {"name": name},
        }

    def cleared(self, stream: TelnyxMediaStream) -> None:
        """Telnyx answers a clear only by returning the queued marks."""
        return None

    def stop(self, stream: TelnyxMediaStream) -> dict[str, Any]:
        """The C{stop} message before Telnyx closes the socket."""
        return {
            "event": "stop",
            "sequence_number": str(stream.next_seq()),
            "stop": {"user_id": stream.user_id, "call_control_id": stream.call.call_control_id},
            "stream_id": stream.stream_id,
        }

    def parse(self, stream: TelnyxMediaStream, message: Any) -> AppMessage:
        """C{media}, C{mark} or C{clear}; malformed frames get Telnyx's C{error} back."""
        event = message.get("event") if isinstance(message, dict) else None
        if event not in ("media", "mark", "clear"):
            raise self._error(stream, 100003, "malformed_frame", f"unknown event {event!r}")
        if "stream_id" in message and message["stream_id"] != stream.stream_id:
            raise StreamProtocolError(
                f"{event} for stream_id {message['stream_id']!r}, not {stream.stream_id}"
            )
        if event == "media":
            try:
                audio = decode_payload(message["media"]["payload"])
            except (KeyError, TypeError, ValueError) as e:
                raise self._error(stream, 100004, "invalid_media", f"bad payload: {e!r}") from None
            return AppMessage("media", audio=audio)
        if event == "mark":
            mark = message.get("mark")
            name = mark.get("name") if isinstance(mark, dict) else None
            if not isinstance(name, str) or not name:
                raise self._error(stream, 100003, "malformed_frame", "mark without a name")
            return AppMessage("mark", name=name)
        return AppMessage("clear")

    def _error(
        self, stream: TelnyxMediaStream, code: int, title: str, detail: str
    ) -> StreamProtocolError:
        reply = {
            "event": "error",
            "payload": {"code": code, "title": title, "detail": detail},
            "stream_id": stream.stream_id,
        }
        return StreamProtocolError(f"{code} {title}: {detail}", reply)


TELNYX_DIALECT = TelnyxDialect()
PCMA_8K = AudioFormat(silence=b"\xd5")


class TelnyxMediaStream(MediaStreamClient):
    """
    One media-streaming WebSocket from the fake to the app, Telnyx's side.

    Everything the shared L{MediaStreamClient} records and waits for, plus
    Telnyx's rules: the stream options it was started with (C{options}),
    C{streaming.started} / C{streaming.stopped} / C{streaming.failed} webhooks,
    and C{closed_by} "telnyx" when Telnyx ends it.  Audio from the app plays
    at 8000 bytes/s in C{rtp} mode; in C{mp3} mode it is recorded but not timed.
    """

    usage_error = FakeTelnyxError

    def __init__(self, call: FakeCall, options: dict[str, Any]) -> None:
        fake = call.fake
        codec = options.get("stream_bidirectional_codec", "PCMU")
        super().__init__(
            TELNYX_DIALECT,
            options["stream_url"],
            clock=fake.clock,
            reactor=fake.reactor,
            call_later=fake._call_later,
            bidirectional=True,
            audio=PCMA_8K if codec == "PCMA" else ULAW_8K,
            sid=str(uuid.uuid4()),
            ws_options=fake.ws_options,
        )
        self.call = call
        self.fake = fake
        self.options = dict(options)
        self.user_id = str(uuid.uuid5(uuid.NAMESPACE_URL, fake.connection_id))
        self.track = options.get("stream_track", "inbound_track")
        self.mode = options.get("stream_bidirectional_mode", "mp3")
        self.codec = codec
        stream_codec = options.get("stream_codec", "default")
        self.encoding = "PCMU" if stream_codec == "default" else stream_codec
        self.custom_parameters = {
            p["name"]: p["value"] for p in options.get("custom_parameters", [])
        }
        self._status_hook: Deferred | None = None
        if self.encoding not in ("PCMU", "PCMA") or codec not in ("PCMU", "PCMA"):
            self.errors.append(
                f"the fake frames audio as 8 kHz G.711 only, not {codec}/{self.encoding}"
            )

    @property
    def stream_id(self) -> str:
        """The stream's id (C{stream_id} in every message and webhook)."""
        return self.sid

    # -- Telnyx around the socket ---------------------------------------------

    async def _connect(self) -> None:
        parts = urlsplit(self.url)
        target = self.url
        if parts.scheme == "wss" and self.fake.insecure_ws:
            target = "ws://" + self.url[len("wss://") :]
        headers: dict[str, str] = {}
        if self.options.get("stream_auth_token"):
            headers["Authorization"] = f"Bearer {self.options['stream_auth_token']}"
        await self._dial(target, headers)

    def _record_error(self, error: str) -> None:
        self.errors.append(error)
        self.call.errors.append(error)

    def _on_media(self, now: float, data: bytes) -> None:
        if self.mode != "rtp":
            self.frames.append((now, data))  # an MP3 file: kept, not timed
            return
        super()._on_media(now, data)

    def _params(self) -> dict[str, Any]:
        return {"stream_url": self.url, "track": self.track}

    def _started(self) -> None:
        self._webhook("streaming.started", stream_url=self.url, stream_id=self.stream_id)

    def _opened_hook(self) -> None:
        self.call._changed()

    def _stopped(self) -> None:
        self._webhook("streaming.stopped", stream_url=self.url, stream_id=self.stream_id)

    def _failed_hook(self, error: str) -> None:
        self._webhook(
            "streaming.failed",
            failure_reason=error,
            stream_id=self.stream_id,
            stream_type="websocket",
            stream_params=self._params(),
        )

    def _webhook(self, event_type: str, **extra: Any) -> None:
        # Straight from the socket's callbacks: run as call work, and let the
        # hang-up flow wait for it so C{call.hangup} comes last.
        self._status_hook = self.call._spawn(self.call._event(event_type, **extra))


def _invalid(request: Request, field: str, detail: str) -> bytes:
    body = telnyx_error(INVALID, "Invalid parameter", detail)
    body["errors"][0]["source"] = {"pointer": f"/{field}"}
    return _json(request, 422, body)


class _RestResource(Resource):
    """The REST API root; every path is routed by L{FakeTelnyx}."""

    isLeaf = True

    def __init__(self, fake: FakeTelnyx) -> None:
        super().__init__()
        self._fake = fake

    def render(self, request: Request) -> bytes | int:
        return self._fake._render(request)


def _json(request: Request, status: int, body: dict[str, Any]) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", b"application/json; charset=utf-8")
    return json.dumps(body).encode("utf-8")


def _ignore_result(f: Callable[[], Deferred]) -> Callable[[], None]:
    def run() -> None:
        try:
            f().addErrback(lambda failure: log.failure("automatic call outcome", failure))
        except FakeTelnyxError:
            pass  # the test moved the call on first

    return run
