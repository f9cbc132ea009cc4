"""
A fake Plivo Voice API, speaking only Plivo's public protocol.

What it does, as Plivo does it (see C{providers.md} section 3):

  - the REST API under C{/v1/Account/{auth_id}/} (make call, live call
    control, hang up, cancel a request, transfer, speak/play/DTMF, audio
    streams) as a C{twisted.web} resource, C{FakePlivo.resource}, usable with
    C{treq.testing.StubTreq} or served on 127.0.0.1 by L{FakePlivo.listen};
  - call progress driven by the test (L{FakeCall.ring}, L{FakeCall.answer},
    L{FakeCall.busy}, ...), with the ring, answer and hangup callbacks Plivo
    sends, form-encoded and signed with Signature V3;
  - Plivo XML fetched from the app and executed element by element, each
    element logged as an L{Element} (C{<Speak>} takes time on the clock);
  - audio streams (C{<Stream>} or the Stream API): the shared media-stream
    client with L{PlivoDialect} (C{start}, C{media}, C{dtmf}, C{playedStream},
    C{clearedAudio}; C{playAudio}, C{checkpoint}, C{clearAudio} from the app);
  - inbound calls (L{FakePlivo.inbound_call});
  - answering-machine detection (C{machine_detection} with
    C{machine_detection_url}): the test says who picked up
    (L{FakeCall.detect}); the signed callback carries C{Machine=true} or
    C{false} and C{Event=MachineDetection}.

Every action a test takes returns a Deferred that fires once the fake has
nothing left in flight for that call (callbacks answered, XML run up to an
element that waits, or the end of the call), so tests never sleep.  Timing
(speech, waits, input timeouts, ring timeouts, playback) runs on the
injected C{clock}; everything else on the reactor.

Where Plivo's behaviour is not documented the fake makes one choice and says
so in the docstring of the method concerned ("[UNCONFIRMED]").
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import re
import secrets
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit
from xml.etree import ElementTree

import attrs
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

REAL_API_ROOT = "https://api.plivo.com"
LIVE_STATUSES = frozenset({"queued", "ringing", "in-progress"})
FINAL_STATUSES = frozenset({"completed", "busy", "failed", "timeout", "no-answer", "cancel"})
#: Characters of C{<Speak>} text spoken per second (about 150 words a minute).
SPEAK_CHARS_PER_SECOND = 15.0
PLIVO_ELEMENTS = frozenset(
    {
        "Speak",
        "Play",
        "Wait",
        "GetInput",
        "GetDigits",
        "Redirect",
        "Hangup",
        "Stream",
        "DTMF",
        "PreAnswer",
        "Record",
        "Dial",
        "Conference",
        "Message",
        "MultiPartyCall",
    }
)
PROMPT_ELEMENTS = frozenset({"Speak", "Play", "Wait"})

log = Logger()


class FakePlivoError(FakeProviderError):
    """A test asked the fake for something Plivo could not do in the call's state."""


class CallEnded(Exception):
    """The call ended (and went quiet) before what a test waited for happened."""


# -- Signatures (providers.md section 3.6), written from the rules, not an SDK --


def new_nonce() -> str:
    """A nonce shaped like Plivo's: 20 decimal digits."""
    return f"{secrets.randbelow(10**20):020d}"


def _grouped(pairs: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for name, value in pairs:
        grouped.setdefault(name, []).append(value)
    return grouped


def _sorted_query(mapping: dict[str, list[str]]) -> str:
    return "&".join(f"{k}={v}" for k in sorted(mapping) for v in sorted(mapping[k]))


def _sorted_concat(mapping: dict[str, list[str]]) -> str:
    return "".join(f"{k}{v}" for k in sorted(mapping) for v in sorted(mapping[k]))


def _pairs(params: dict[str, str] | Iterable[tuple[str, str]] | None) -> list[tuple[str, str]]:
    if params is None:
        return []
    if isinstance(params, dict):
        return list(params.items())
    return list(params)


def v3_base_string(
    method: str, url: str, params: dict[str, str] | Iterable[tuple[str, str]] | None = None
) -> str:
    """
    The string Signature V3 signs (before C{"." + nonce}) for a request.

    C{url} is the URL Plivo requested; C{params} the POST body parameters
    (for a GET, parameters not already in the URL's query).
    """
    parts = urlsplit(url)
    base = f"{parts.scheme}://{parts.netloc}{parts.path}"
    query = _grouped(parse_qsl(parts.query, keep_blank_values=True))
    extra = _grouped(_pairs(params))
    if method.upper() == "GET" or not extra:
        merged = {**extra, **query}
        sorted_query = _sorted_query(merged)
        return base + ("?" + sorted_query if sorted_query else "")
    sorted_query = _sorted_query(query)
    return base + "?" + sorted_query + ("." if sorted_query else "") + _sorted_concat(extra)


def signature_v3(
    auth_token: str,
    method: str,
    url: str,
    nonce: str,
    params: dict[str, str] | Iterable[tuple[str, str]] | None = None,
) -> str:
    """Base64(HMAC-SHA256(auth_token, base string + "." + nonce))."""
    message = f"{v3_base_string(method, url, params)}.{nonce}".encode()
    digest = hmac.new(auth_token.encode("utf-8"), message, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def signature_v2(auth_token: str, url: str, nonce: str) -> str:
    """The deprecated V2: Base64(HMAC-SHA256(auth_token, URL without query + nonce))."""
    parts = urlsplit(url)
    message = f"{parts.scheme}://{parts.netloc}{parts.path}{nonce}".encode()
    digest = hmac.new(auth_token.encode("utf-8"), message, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


# -- small values ---------------------------------------------------------------


def plivo_time(seconds: float) -> str:
    """A Unix time as Plivo writes callback times: C{2025-01-14 10:00:00} (UTC)."""
    moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def plivo_session_time(seconds: float) -> str:
    """A Unix time with microseconds, as in C{SessionStart}."""
    moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")


def plivo_error(message: str) -> dict[str, Any]:
    """The JSON body of a Plivo REST error."""
    return {"api_id": str(uuid.uuid4()), "error": message}


def _digits(number: str) -> str:
    """A number as Plivo writes it in callbacks: no C{+}; SIP URIs as they are."""
    return number if number.startswith("sip:") else number.lstrip("+")


class Element(NamedTuple):
    """One Plivo XML element (or API action) the fake executed: C{("Speak", text, attrs)}."""

    name: str
    text: str
    attrs: dict[str, str]


@attrs.frozen
class Hangup:
    """How a call ended, as the hangup callback and the CDR tell it."""

    status: str  # CallStatus: completed, busy, failed, timeout, no-answer, cancel
    cause: str  # HangupCause, e.g. NORMAL_CLEARING
    code: int  # HangupCauseCode
    name: str  # HangupCauseName
    source: str  # HangupSource


# Codes 1000, 2010, 4000 and 4010 are from Plivo's hangup-cause table; the
# others and the FreeSWITCH-style cause names are [UNCONFIRMED].
_ENDINGS = {
    "normal": ("completed", "NORMAL_CLEARING", 4000, "Normal Hangup"),
    "end-of-xml": ("completed", "NORMAL_CLEARING", 4010, "End Of XML Instructions"),
    "canceled": ("cancel", "ORIGINATOR_CANCEL", 1000, "Canceled"),
    "busy": ("busy", "USER_BUSY", 3000, "Busy Line"),
    "rejected": ("no-answer", "CALL_REJECTED", 3010, "Rejected"),
    "no-answer": ("no-answer", "NO_ANSWER", 3020, "No Answer"),
    "ring-timeout": ("timeout", "NO_ANSWER", 3040, "Ring Timeout Reached"),
    "failed": ("failed", "DESTINATION_OUT_OF_ORDER", 2010, "Destination Out Of Service"),
    "time-limit": ("completed", "ALLOTTED_TIMEOUT", 4000, "Normal Hangup"),
    "answer-url-failed": ("completed", "NORMAL_CLEARING", 7011, "Answer URL Request Failed"),
    "invalid-xml": ("completed", "NORMAL_CLEARING", 8011, "Invalid Answer XML"),
    "machine-detected": ("completed", "NORMAL_CLEARING", 4000, "Machine Detected"),
}


def _ending(reason: str, source: str, status: str | None = None) -> Hangup:
    final, cause, code, name = _ENDINGS[reason]
    return Hangup(status or final, cause, code, name, source)


@attrs.frozen
class RestRequest:
    """One request the fake's REST API received (C{body}: the decoded JSON or form)."""

    method: str
    path: str
    query: tuple[tuple[str, str], ...]
    body: dict[str, Any]
    auth_ok: bool
    username: str | None

    def get(self, name: str, default: Any = None) -> Any:
        """Parameter C{name} from the body, else the query string."""
        if name in self.body:
            return self.body[name]
        return next((v for k, v in self.query if k == name), default)


@attrs.define(eq=False)
class Callback:
    """One HTTP request the fake sent to the app, and how the app answered it."""

    call_uuid: str
    kind: str  # "answer", "fallback", "ring", "hangup", "action", "redirect", "transfer", "stream"
    method: str
    url: str  # exactly as requested (and signed), query string included
    params: list[tuple[str, str]]
    headers: dict[str, str]
    body: bytes
    sent_at: float
    nonce: str | None = None
    duplicate: bool = False
    code: int | None = None
    response: bytes = b""
    content_type: str = ""
    error: str | None = None

    def param(self, name: str) -> str | None:
        """The value of parameter C{name} the fake sent."""
        return next((v for k, v in self.params if k == name), None)

    @property
    def signature(self) -> str | None:
        """The C{X-Plivo-Signature-V3} header sent, if any."""
        return self.headers.get("X-Plivo-Signature-V3")

    @property
    def ok(self) -> bool:
        """Whether the app answered with a 2xx."""
        return self.code is not None and 200 <= self.code < 300


@attrs.define
class _Failure:
    status: int = 500
    message: str = "internal server error"
    drop: bool = False


@attrs.define
class _Input:
    attrs: dict[str, str]
    element: str  # "GetInput" or "GetDigits"
    inputs: frozenset[str]
    listening: bool = False
    params: list[tuple[str, str]] | None = None
    wakers: list[Deferred] = attrs.Factory(list)

    def give(self, params: list[tuple[str, str]]) -> None:
        self.params = params
        wakers, self.wakers = self.wakers, []
        for d in wakers:
            if not d.called:
                d.callback(True)


class FakePlivo:
    """
    A fake Plivo account: REST API, calls, callbacks, XML and audio streams.

    @param auth_id: the account's Auth ID (random C{MA...} if not given).
    @param auth_token: its Auth Token (random if not given); signs C{-V3}.
    @param main_auth_token: the main account's token, signing C{-Ma-V3}
        (default: C{auth_token}, i.e. the account is the main account).
    @param reactor: runs network I/O and "soon" work (default: the global reactor).
    @param clock: times speech, waits, timeouts and playback (default: C{reactor}).
    @param http: a treq-like client (C{request(method, url, **kw)}) for
        callbacks; default: C{treq} over non-persistent connections.  Pass
        C{StubTreq(app_resource)} to reach an in-memory app.
    @param insecure_ws: connect to C{wss://} stream URLs with plain C{ws://}
        (still signing the C{wss://} URL).
    @param ws_options: autobahn protocol options for the audio sockets (see
        L{MediaStreamClient}), e.g. no handshake timers left on a test's reactor.
    @param insecure_callbacks: fetch C{https://} URLs with plain C{http://}
        (still signing the C{https://} URL, as Plivo would).
    @param auto: C{None} (the test drives each call) or the outcome every new
        outbound call gets on its own: C{"answer"}, C{"busy"}, C{"no-answer"}, C{"failed"}.
    @param auto_delay: seconds (on C{clock}) before an automatic outcome.
    @param speak_scale: multiplies the time C{<Speak>} takes (its text at
        15 characters a second); 0 makes speech instant.  Default: 1 with an
        injected C{clock}, 0 on the reactor (so live tests never wait for speech).
    @param wait_scale: multiplies C{<Wait length>}; 0 makes waits instant.
    @param honour_timeouts: end calls on C{ring_timeout}, C{hangup_on_ring},
        C{time_limit}, C{executionTimeout} and C{streamTimeout}.
    @param stream_stop_frame: send a JSON C{stop} before Plivo closes a
        stream (Plivo documents only the close; some SDKs accept a C{stop}).
    @param transfer_waits_for_stream: a transfer during a C{keepCallAlive}
        stream waits until the socket closes instead of closing it
        (which of the two Plivo does is [UNCONFIRMED]).
    """

    def __init__(
        self,
        auth_id: str | None = None,
        auth_token: str | None = None,
        *,
        main_auth_token: str | None = None,
        reactor: Any = None,
        clock: Any = None,
        http: Any = None,
        insecure_ws: bool = False,
        ws_options: dict[str, Any] | None = None,
        insecure_callbacks: bool = False,
        auto: str | None = None,
        auto_delay: float = 0.0,
        speak_scale: float | None = None,
        wait_scale: float = 1.0,
        honour_timeouts: bool = True,
        stream_stop_frame: bool = False,
        transfer_waits_for_stream: bool = False,
        callback_timeout: float = 15.0,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor
        if auto not in (None, "answer", "busy", "no-answer", "failed"):
            raise ValueError(f"auto must be None, answer, busy, no-answer or failed, not {auto!r}")
        self.auth_id = auth_id or "MA" + "".join(
            secrets.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") for _ in range(18)
        )
        self.auth_token = auth_token or secrets.token_urlsafe(30)[:40]
        self.main_auth_token = main_auth_token or self.auth_token
        self.reactor = reactor
        self.clock = clock if clock is not None else reactor
        self.insecure_ws = insecure_ws
        self.ws_options = dict(ws_options or {})
        self.insecure_callbacks = insecure_callbacks
        self.auto = auto
        self.auto_delay = auto_delay
        if speak_scale is None:
            speak_scale = 1.0 if clock is not None else 0.0
        self.speak_scale = speak_scale
        self.wait_scale = wait_scale
        self.honour_timeouts = honour_timeouts
        self.stream_stop_frame = stream_stop_frame
        self.transfer_waits_for_stream = transfer_waits_for_stream
        self.callback_timeout = callback_timeout
        #: "valid" (V3), "wrong" (V3 made with another token), "missing",
        #: "v2" (only the deprecated V2 headers) or "v2+v3" (both).
        self.signature_mode = "valid"
        #: Other active Auth Tokens (key rotation): each adds one
        #: comma-separated signature to C{X-Plivo-Signature-V3}, after the current one.
        self.other_tokens: list[str] = []
        #: If set, every signature uses this nonce (to test replay defences).
        self.fixed_nonce: str | None = None
        #: Where the REST API is: Plivo's real root until L{listen} says otherwise.
        self.base_url = REAL_API_ROOT
        #: Every REST request received, in order.
        self.requests: list[RestRequest] = []
        #: Every callback sent to the app, for all calls, in order.
        self.callbacks: list[Callback] = []
        #: Every call (outbound and inbound), in creation order.
        self.calls: list[FakeCall] = []
        self.resource = _RestResource(self)
        self._failures: dict[str, deque[_Failure]] = {
            operation: deque()
            for operation in ("create", "get", "transfer", "hangup", "cancel", "dtmf", "stream")
        }
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

    def stop(self) -> Deferred:
        """Stop listening, drop open streams and cancel every timer; no more callbacks."""
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

    # -- test controls --------------------------------------------------------

    def fail_next(
        self, operation: str = "create", status: int = 500, message: str = "internal server error"
    ) -> None:
        """
        Make the next REST C{operation} answer Plivo's error JSON with C{status}:
        "create", "get", "transfer", "hangup", "cancel", "dtmf" or "stream".
        """
        self._failures[operation].append(_Failure(status, message))

    def drop_next(self, operation: str = "create") -> None:
        """Make the next REST C{operation} drop the connection unanswered."""
        self._failures[operation].append(_Failure(drop=True))

    def call(self, uuid_: str) -> FakeCall:
        """The call with CallUUID (or request_uuid) C{uuid_}."""
        for call in self.calls:
            if uuid_ in (call.call_uuid, call.request_uuid):
                return call
        raise KeyError(uuid_)

    @property
    def last_call(self) -> FakeCall:
        """The most recently created call."""
        return self.calls[-1]

    def when_call(self, index: int = 0) -> Deferred:
        """Fires with the call number C{index} (0 = first) once it exists."""
        return self._waiters.wait(lambda: self.calls[index] if len(self.calls) > index else None)

    @property
    def errors(self) -> list[str]:
        """Every error the fake's calls recorded (bad XML, failed fetches, ...)."""
        return [f"{call.call_uuid}: {error}" for call in self.calls for error in call.errors]

    def sign(
        self,
        method: str,
        url: str,
        nonce: str,
        params: dict[str, str] | Iterable[tuple[str, str]] | None = None,
        token: str | None = None,
    ) -> str:
        """The V3 signature Plivo would send for this request (with C{token}, default ours)."""
        return signature_v3(token or self.auth_token, method, url, nonce, params)

    def inbound_call(
        self,
        from_: str,
        to: str,
        answer_url: str,
        *,
        answer_method: str = "POST",
        hangup_url: str | None = None,
        hangup_method: str = "POST",
        fallback_url: str | None = None,
        fallback_method: str = "POST",
        caller_name: str = "",
    ) -> Deferred:
        """
        Someone dials C{to} (the app's number): POST its answer URL with
        C{Direction=inbound}, C{CallStatus=ringing}, C{Event=StartApp} and run
        the XML it returns.  Fires with the L{FakeCall} once that XML waits or
        the call ends.
        """
        call = FakeCall(
            self,
            direction="inbound",
            from_=from_,
            to=to,
            answer_url=answer_url,
            answer_method=answer_method,
            hangup_url=hangup_url,
            hangup_method=hangup_method,
            fallback_url=fallback_url,
            fallback_method=fallback_method,
            caller_name=caller_name,
        )
        call._set_status("ringing")
        self._add_call(call)
        return call._act(call._inbound_flow()).addCallback(lambda _: call)

    def resend_last_callback(self, call: FakeCall | None = None, hook: Any = None) -> Deferred:
        """
        Send the last callback (of C{call}, or of any call), or C{hook}, again,
        byte for byte.
        """
        hooks = call.callbacks if call is not None else self.callbacks
        if not hooks:
            raise FakePlivoError("no callback has been sent yet")
        last = hook if hook is not None else hooks[-1]
        owner = self.call(last.call_uuid)
        replay = attrs.evolve(
            last, duplicate=True, code=None, response=b"", content_type="", error=None
        )
        replay.sent_at = self.clock.seconds()

        async def resend() -> Callback:
            return await self._deliver(owner, replay)

        return owner._act_value(resend())

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

    def _signature_headers(
        self, method: str, url: str, params: list[tuple[str, str]]
    ) -> tuple[dict[str, str], str | None]:
        """The signature headers for one request, and the nonce used."""
        mode = self.signature_mode
        if mode == "missing":
            return {}, None
        nonce = self.fixed_nonce or new_nonce()
        headers: dict[str, str] = {}
        if mode in ("valid", "wrong", "v2+v3"):
            tokens = [self.auth_token, *self.other_tokens]
            if mode == "wrong":
                tokens = ["not-" + token for token in tokens]
            main = "not-" + self.main_auth_token if mode == "wrong" else self.main_auth_token
            headers["X-Plivo-Signature-V3"] = ",".join(
                signature_v3(token, method, url, nonce, params) for token in tokens
            )
            headers["X-Plivo-Signature-Ma-V3"] = signature_v3(main, method, url, nonce, params)
            headers["X-Plivo-Signature-V3-Nonce"] = nonce
        if mode in ("v2", "v2+v3"):
            headers["X-Plivo-Signature-V2"] = signature_v2(self.auth_token, url, nonce)
            headers["X-Plivo-Signature-Ma-V2"] = signature_v2(self.main_auth_token, url, nonce)
            headers["X-Plivo-Signature-V2-Nonce"] = nonce
        return headers, nonce

    async def _send_callback(
        self,
        call: FakeCall,
        kind: str,
        url: str,
        method: str,
        params: list[tuple[str, str]],
    ) -> Callback:
        """Sign and send one callback as Plivo does; never raises."""
        method = (method or "POST").upper()
        target = url.split("#", 1)[0]  # Plivo's retry-tuning fragment is not sent
        headers = {"User-Agent": "PlivoHTTP/1.0", "Accept": "*/*"}
        if method == "GET":
            query = urlencode(params)
            if query:
                target += ("&" if "?" in target else "?") + query
            body = b""
            signed, nonce = self._signature_headers("GET", target, [])
        else:
            body = urlencode(params).encode("utf-8")
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            signed, nonce = self._signature_headers("POST", target, params)
        headers.update(signed)
        hook = Callback(
            call_uuid=call.call_uuid,
            kind=kind,
            method=method,
            url=target,
            params=list(params),
            headers=headers,
            body=body,
            sent_at=self.clock.seconds(),
            nonce=nonce,
        )
        return await self._deliver(call, hook)

    async def _request(self, hook: Callback, url: str) -> Any:
        return await self._http.request(
            hook.method,
            url,
            data=hook.body or None,
            headers=hook.headers,
            allow_redirects=False,
            timeout=self.callback_timeout,
        )

    async def _deliver(self, call: FakeCall, hook: Callback) -> Callback:
        call.callbacks.append(hook)
        self.callbacks.append(hook)
        if self._stopped:
            hook.error = "the fake was stopped"
            return hook
        url = hook.url
        if self.insecure_callbacks and url.startswith("https://"):
            url = "http://" + url[len("https://") :]
        try:
            response = await self._request(hook, url)
            hook.code = response.code
            content_type = response.headers.getRawHeaders(b"content-type", [b""])[0]
            hook.content_type = content_type.decode("latin-1")
            hook.response = await response.content()
        except Exception as e:
            hook.error = f"{type(e).__name__}: {e}"
        if not hook.ok:
            problem = hook.error or f"answered HTTP {hook.code}"
            call.errors.append(f"{hook.kind} callback {hook.method} {hook.url}: {problem}")
        return hook

    # REST API

    def _render(self, request: Request) -> bytes | int:
        method = request.method.decode("ascii")
        path = request.path.decode("utf-8")
        query = tuple(parse_qsl(request.uri.decode("utf-8").partition("?")[2], True))
        raw = request.content.read() if request.content is not None else b""
        content_type = (request.getHeader(b"content-type") or b"").decode("latin-1")
        body: dict[str, Any] = {}
        bad_body = None
        if raw.strip():
            if "application/x-www-form-urlencoded" in content_type:
                body = dict(parse_qsl(raw.decode("utf-8"), keep_blank_values=True))
            else:
                try:
                    decoded = json.loads(raw)
                except ValueError:
                    decoded = None
                if isinstance(decoded, dict):
                    body = decoded
                else:
                    bad_body = "request body is not a JSON object"
        user = request.getUser().decode("utf-8") or None
        password = request.getPassword().decode("utf-8")
        auth_ok = user == self.auth_id and password == self.auth_token
        rest = RestRequest(method, path, query, body, auth_ok, user)
        self.requests.append(rest)
        if not auth_ok:
            # The body Plivo sends with a 401 is [UNCONFIRMED]; the SDK reads "error".
            request.setHeader(b"WWW-Authenticate", b'Basic realm="Authentication Required"')
            return _json(request, 401, plivo_error("authentication failed"))
        prefix = f"/v1/Account/{self.auth_id}/"
        if method == "GET" and path == prefix:
            return _json(request, 200, {"auth_id": self.auth_id, "cash_credits": "10.00"})
        if not path.startswith(prefix) or not path.endswith("/"):
            return _json(request, 404, plivo_error("not found"))
        if bad_body is not None:
            return _json(request, 400, plivo_error(bad_body))
        segments = path[len(prefix) : -1].split("/")
        return self._route(request, rest, segments)

    def _route(self, request: Request, rest: RestRequest, segments: list[str]) -> bytes | int:
        method = rest.method
        not_found = plivo_error("not found")
        if segments == ["Call"]:
            if method == "POST":
                return self._guarded(request, "create", lambda: self._rest_create(request, rest))
            if method == "GET":
                return self._guarded(request, "get", lambda: self._rest_list(request, rest))
            return _json(request, 405, plivo_error("method not allowed"))
        if len(segments) == 2 and segments[0] == "Request" and method == "DELETE":
            return self._guarded(request, "cancel", lambda: self._rest_cancel(request, segments[1]))
        if len(segments) < 2 or segments[0] != "Call":
            return _json(request, 404, not_found)
        call_uuid, tail = segments[1], segments[2:]
        handlers: dict[tuple[str, ...], tuple[str, Callable[[], bytes | int]]] = {
            ("GET",): ("get", lambda: self._rest_get(request, rest, call_uuid)),
            ("POST",): ("transfer", lambda: self._rest_transfer(request, rest, call_uuid)),
            ("DELETE",): ("hangup", lambda: self._rest_hangup(request, call_uuid)),
            ("POST", "DTMF"): ("dtmf", lambda: self._rest_dtmf(request, rest, call_uuid)),
            ("POST", "Speak"): ("transfer", lambda: self._rest_speak(request, rest, call_uuid)),
            ("DELETE", "Speak"): ("transfer", lambda: self._rest_stop(request, call_uuid, "Speak")),
            ("POST", "Play"): ("transfer", lambda: self._rest_play(request, rest, call_uuid)),
            ("DELETE", "Play"): ("transfer", lambda: self._rest_stop(request, call_uuid, "Play")),
            ("POST", "Stream"): ("stream", lambda: self._rest_stream(request, rest, call_uuid)),
            ("GET", "Stream"): ("get", lambda: self._rest_streams(request, call_uuid, None)),
            ("DELETE", "Stream"): (
                "stream",
                lambda: self._rest_stream_stop(request, call_uuid, None),
            ),
        }
        if len(tail) == 2 and tail[0] == "Stream":
            if method == "GET":
                return self._guarded(
                    request, "get", lambda: self._rest_streams(request, call_uuid, tail[1])
                )
            if method == "DELETE":
                return self._guarded(
                    request, "stream", lambda: self._rest_stream_stop(request, call_uuid, tail[1])
                )
            return _json(request, 405, plivo_error("method not allowed"))
        handler = handlers.get((method, *tail))
        if handler is None:
            return _json(request, 404, not_found)
        operation, run = handler
        return self._guarded(request, operation, run)

    def _guarded(
        self, request: Request, operation: str, run: Callable[[], bytes | int]
    ) -> bytes | int:
        if self._failures[operation]:
            failure = self._failures[operation].popleft()
            if failure.drop:
                request.channel.transport.abortConnection()
                return NOT_DONE_YET
            return _json(request, failure.status, plivo_error(failure.message))
        return run()

    def _live(self, call_uuid: str) -> FakeCall | None:
        """The live call whose CallUUID is C{call_uuid} (not its request uuid)."""
        call = next((c for c in self.calls if c.call_uuid == call_uuid), None)
        if call is None or not call.is_live or call.status == "queued":
            return None
        return call

    def _rest_create(self, request: Request, rest: RestRequest) -> bytes:
        def bad(message: str) -> bytes:
            return _json(request, 400, plivo_error(message))

        from_, to, answer_url = rest.get("from"), rest.get("to"), rest.get("answer_url")
        for name, value in (("from", from_), ("to", to), ("answer_url", answer_url)):
            if not value:
                return bad(f"{name} parameter is required")
        if not isinstance(from_, str) or not _is_address(from_):
            return bad(f"invalid from number: {from_!r}")
        destinations = str(to).split("<")
        if any(not _is_address(d) for d in destinations):
            return bad(f"invalid to number: {to!r}")
        if from_ in destinations:
            return bad("from and to cannot be the same")
        for name in ("answer_url", "hangup_url", "ring_url", "fallback_url"):
            value = rest.get(name)
            if value and not _is_http_url(str(value)):
                return bad(f"{name} is not a valid URL: {value}")
        try:
            ring_timeout = int(rest.get("ring_timeout", 60))
            hangup_on_ring = rest.get("hangup_on_ring")
            hangup_on_ring = int(hangup_on_ring) if hangup_on_ring not in (None, "") else None
            time_limit = int(rest.get("time_limit", 14400))
        except (TypeError, ValueError):
            return bad("ring_timeout, hangup_on_ring and time_limit must be integers")
        machine = rest.get("machine_detection")
        if machine not in (None, "", "true", "hangup", True):
            return bad(f"invalid machine_detection: {machine!r}")
        request_uuids = []
        for destination in destinations:
            call = FakeCall(
                self,
                direction="outbound",
                from_=from_,
                to=destination,
                answer_url=answer_url,
                answer_method=rest.get("answer_method") or "POST",
                hangup_url=rest.get("hangup_url"),
                hangup_method=rest.get("hangup_method") or "POST",
                ring_url=rest.get("ring_url"),
                ring_method=rest.get("ring_method") or "POST",
                fallback_url=rest.get("fallback_url"),
                fallback_method=rest.get("fallback_method") or "POST",
                caller_name=rest.get("caller_name") or "",
                ring_timeout=ring_timeout,
                hangup_on_ring=hangup_on_ring,
                time_limit=time_limit,
                create_request=rest,
            )
            self._add_call(call)
            request_uuids.append(call.request_uuid)
            if self.auto is not None:
                outcome = {
                    "answer": call.answer,
                    "busy": call.busy,
                    "no-answer": call.no_answer,
                    "failed": call.fail,
                }[self.auto]
                self._call_later(self.auto_delay, _ignore_result(outcome))
        body = {
            "api_id": str(uuid.uuid4()),
            "message": "call fired",
            "request_uuid": request_uuids[0] if len(request_uuids) == 1 else request_uuids,
        }
        return _json(request, 201, body)

    def _rest_list(self, request: Request, rest: RestRequest) -> bytes:
        status = rest.get("status")
        if status == "live":
            calls = [c.call_uuid for c in self.calls if c.status in ("ringing", "in-progress")]
            return _json(request, 200, {"api_id": str(uuid.uuid4()), "calls": calls})
        if status == "queued":
            calls = [c.request_uuid for c in self.calls if c.status == "queued"]
            return _json(request, 200, {"api_id": str(uuid.uuid4()), "calls": calls})
        ended = [c.cdr() for c in self.calls if not c.is_live]
        meta = {"count": len(ended), "limit": 20, "next": None, "offset": 0, "previous": None}
        return _json(request, 200, {"api_id": str(uuid.uuid4()), "meta": meta, "objects": ended})

    def _rest_get(self, request: Request, rest: RestRequest, call_uuid: str) -> bytes:
        """
        C{?status=live}: the live call (ringing or in progress); C{?status=queued}:
        the queued request, by request uuid; no status: the call record (CDR),
        which exists once the call ended (404 while it is live [UNCONFIRMED]).
        """
        status = rest.get("status")
        if status == "live":
            call = self._live(call_uuid)
            if call is None:
                return _json(request, 404, plivo_error("call not found"))
            return _json(request, 200, call.live_resource())
        if status == "queued":
            call = next((c for c in self.calls if c.request_uuid == call_uuid), None)
            if call is None or call.status != "queued":
                return _json(request, 404, plivo_error("call not found"))
            return _json(request, 200, call.queued_resource())
        call = next((c for c in self.calls if c.call_uuid == call_uuid), None)
        if call is None or call.is_live:
            return _json(request, 404, plivo_error("call not found"))
        return _json(request, 200, call.cdr())

    def _rest_hangup(self, request: Request, call_uuid: str) -> bytes:
        """A live call ends (C{cancel} if not answered yet); 204 with no body."""
        call = self._live(call_uuid)
        if call is None:
            return _json(request, 404, plivo_error("call not found"))
        if call.status == "in-progress":
            ending = _ending("normal", "API Request")
        else:
            ending = _ending("canceled", "API Request")
        call._end_soon(ending)
        request.setResponseCode(204)
        return b""

    def _rest_cancel(self, request: Request, request_uuid: str) -> bytes:
        """A request not answered yet is cancelled (204); an answered or ended one is 404."""
        call = next((c for c in self.calls if c.request_uuid == request_uuid), None)
        if call is None or call.status not in ("queued", "ringing"):
            return _json(request, 404, plivo_error("request not found"))
        call._end_soon(_ending("canceled", "API Request"))
        request.setResponseCode(204)
        return b""

    def _rest_transfer(self, request: Request, rest: RestRequest, call_uuid: str) -> bytes:
        """
        Point the A leg at new XML (C{legs=aleg}, C{aleg_url}); 202 "call transfered".
        A call not answered yet is refused with 400 [UNCONFIRMED].
        """
        call = self._live(call_uuid)
        if call is None:
            return _json(request, 404, plivo_error("call not found"))
        legs = rest.get("legs") or "aleg"
        if legs not in ("aleg", "bleg", "both"):
            return _json(request, 400, plivo_error(f"invalid legs: {legs!r}"))
        url = rest.get("aleg_url")
        if legs in ("aleg", "both") and not url:
            return _json(request, 400, plivo_error("aleg_url is required for legs aleg"))
        if url and not _is_http_url(str(url)):
            return _json(request, 400, plivo_error(f"aleg_url is not a valid URL: {url}"))
        if call.status != "in-progress":
            return _json(request, 400, plivo_error("call is not in progress"))
        call.elements.append(Element("Transfer", str(url or ""), {"legs": legs, "via": "api"}))
        if url:
            call._transfer(str(url), str(rest.get("aleg_method") or "POST"))
        body = {"api_id": str(uuid.uuid4()), "message": "call transfered"}
        return _json(request, 202, body)

    def _rest_dtmf(self, request: Request, rest: RestRequest, call_uuid: str) -> bytes:
        call = self._live(call_uuid)
        if call is None or call.status != "in-progress":
            return _json(request, 404, plivo_error("call not found"))
        digits = str(rest.get("digits") or "")
        if not re.fullmatch(r"[0-9*#wW]+", digits):
            return _json(request, 400, plivo_error(f"invalid digits: {digits!r}"))
        leg = str(rest.get("leg") or "aleg")
        call.elements.append(Element("DTMF", digits, {"leg": leg, "via": "api"}))
        call.dtmf_sent.append(digits)
        call._changed()
        return _json(request, 202, {"api_id": str(uuid.uuid4()), "message": "digits sent"})

    def _rest_speak(self, request: Request, rest: RestRequest, call_uuid: str) -> bytes:
        call = self._live(call_uuid)
        if call is None or call.status != "in-progress":
            return _json(request, 404, plivo_error("call not found"))
        text = str(rest.get("text") or "")
        if not text:
            return _json(request, 400, plivo_error("text parameter is required"))
        extra = {k: str(rest.get(k)) for k in ("voice", "language", "legs", "loop", "mix")}
        attributes = {k: v for k, v in extra.items() if v != "None"}
        call.elements.append(Element("Speak", text, {**attributes, "via": "api"}))
        call._changed()
        return _json(request, 202, {"api_id": str(uuid.uuid4()), "message": "speak started"})

    def _rest_play(self, request: Request, rest: RestRequest, call_uuid: str) -> bytes:
        call = self._live(call_uuid)
        if call is None or call.status != "in-progress":
            return _json(request, 404, plivo_error("call not found"))
        urls = str(rest.get("urls") or "")
        if not urls:
            return _json(request, 400, plivo_error("urls parameter is required"))
        call.elements.append(Element("Play", urls, {"via": "api"}))
        call._changed()
        return _json(request, 202, {"api_id": str(uuid.uuid4()), "message": "play started"})

    def _rest_stop(self, request: Request, call_uuid: str, what: str) -> bytes:
        call = self._live(call_uuid)
        if call is None or call.status != "in-progress":
            return _json(request, 404, plivo_error("call not found"))
        call.elements.append(Element(f"Stop{what}", "", {"via": "api"}))
        message = {"Speak": "speak stopped", "Play": "play stopped"}[what]
        return _json(request, 202, {"api_id": str(uuid.uuid4()), "message": message})

    def _rest_stream(self, request: Request, rest: RestRequest, call_uuid: str) -> bytes:
        """Start an audio stream on a live call (the API twin of C{<Stream>}); 201."""
        call = self._live(call_uuid)
        if call is None or call.status != "in-progress":
            return _json(request, 404, plivo_error("call not found"))
        service_url = str(rest.get("service_url") or "")
        if urlsplit(service_url).scheme not in ("ws", "wss"):
            return _json(request, 400, plivo_error(f"invalid service_url: {service_url!r}"))
        attributes = {
            "bidirectional": str(rest.get("bidirectional", "false")).lower(),
            "audioTrack": str(rest.get("audio_track") or "inbound"),
            "streamTimeout": str(rest.get("stream_timeout") or 86400),
            "contentType": str(rest.get("content_type") or "audio/x-l16;rate=8000"),
            "statusCallbackMethod": str(rest.get("status_callback_method") or "POST"),
        }
        if rest.get("status_callback_url"):
            attributes["statusCallbackUrl"] = str(rest.get("status_callback_url"))
        if rest.get("extra_headers"):
            attributes["extraHeaders"] = str(rest.get("extra_headers"))
        stream = call._new_stream(service_url, attributes, via="api")
        call._spawn(stream._connect())
        body = {
            "api_id": str(uuid.uuid4()),
            "message": "audio streaming started",
            "stream_id": stream.sid,
        }
        return _json(request, 201, body)

    def _rest_streams(self, request: Request, call_uuid: str, stream_id: str | None) -> bytes:
        call = next((c for c in self.calls if c.call_uuid == call_uuid), None)
        if call is None:
            return _json(request, 404, plivo_error("call not found"))
        if stream_id is None:
            objects = [s.resource() for s in call.streams]
            meta = {"count": len(objects), "limit": 20, "next": None, "offset": 0}
            body = {"api_id": str(uuid.uuid4()), "meta": meta, "objects": objects}
            return _json(request, 200, body)
        stream = next((s for s in call.streams if s.sid == stream_id), None)
        if stream is None:
            return _json(request, 404, plivo_error("stream not found"))
        return _json(request, 200, {"api_id": str(uuid.uuid4()), **stream.resource()})

    def _rest_stream_stop(self, request: Request, call_uuid: str, stream_id: str | None) -> bytes:
        call = self._live(call_uuid)
        if call is None:
            return _json(request, 404, plivo_error("call not found"))
        streams = [s for s in call.streams if stream_id in (None, s.sid) and s.state != "closed"]
        if stream_id is not None and not streams:
            return _json(request, 404, plivo_error("stream not found"))
        for stream in streams:
            stream._close_by_provider()
        request.setResponseCode(204)
        return b""


class FakeCall:
    """
    One call as Plivo sees it: status, callbacks sent, XML elements run, streams.

    C{request_uuid} is what make-call returned (C{None} for inbound calls);
    C{call_uuid} is the call's own id, first seen by the app in a callback.
    Control methods return Deferreds that fire once the fake has nothing in
    flight for this call.  Calling one that does not fit the call's state
    (say, L{answer} on a completed call) raises L{FakePlivoError}.
    """

    def __init__(
        self,
        fake: FakePlivo,
        *,
        direction: str,
        from_: str,
        to: str,
        answer_url: str,
        answer_method: str = "POST",
        hangup_url: str | None = None,
        hangup_method: str = "POST",
        ring_url: str | None = None,
        ring_method: str = "POST",
        fallback_url: str | None = None,
        fallback_method: str = "POST",
        caller_name: str = "",
        ring_timeout: int = 60,
        hangup_on_ring: int | None = None,
        time_limit: int = 14400,
        create_request: RestRequest | None = None,
    ) -> None:
        self.fake = fake
        self.call_uuid = str(uuid.uuid4())
        self.request_uuid = str(uuid.uuid4()) if direction == "outbound" else None
        self.direction = direction
        self.from_ = from_
        self.to = to
        self.answer_url = answer_url
        self.answer_method = answer_method
        self.hangup_url = hangup_url
        self.hangup_method = hangup_method
        self.ring_url = ring_url
        self.ring_method = ring_method
        self.fallback_url = fallback_url
        self.fallback_method = fallback_method
        self.caller_name = caller_name
        self.ring_timeout = ring_timeout
        self.hangup_on_ring = hangup_on_ring
        self.time_limit = time_limit
        self.create_request = create_request
        rest = create_request
        #: C{machine_detection} as dialled ("true", "hangup" or None) and where its result goes.
        self.machine_detection = str(rest.get("machine_detection") or "") or None if rest else None
        self.machine_detection_url = rest.get("machine_detection_url") if rest else None
        self.machine_detection_method = (
            rest.get("machine_detection_method") if rest else None
        ) or "POST"
        self.status = "queued"
        self.status_history: list[str] = ["queued"]
        self.created_at = fake.clock.seconds()
        self.answered_at: float | None = None
        self.ended_at: float | None = None
        #: How the call ended, once it has.
        self.hangup: Hangup | None = None
        #: Every XML element (and API action) executed, in order; nested
        #: prompts follow their C{GetInput}.
        self.elements: list[Element] = []
        #: Every callback sent for this call.
        self.callbacks: list[Callback] = []
        #: Every audio stream opened for this call.
        self.streams: list[PlivoStream] = []
        #: DTMF the app sent into the call (C{<DTMF>} and the DTMF API).
        self.dtmf_sent: list[str] = []
        #: The number a C{<Dial>} rang (as Plivo writes it) and the caller id it showed.
        self.dialled: str | None = None
        self.dialled_from: str | None = None
        self._dial: Deferred | None = None
        #: Problems Plivo would report in its debug log (bad XML, failed fetches).
        self.errors: list[str] = []
        #: What the call's XML is blocked on: "speak", "wait", "input", "stream" or None.
        self.waiting: str | None = None
        #: The URL of the XML document being executed.
        self.document_url: str | None = None
        self._gen = 0
        self._wait: Deferred | None = None
        self._input: _Input | None = None
        self._active = 0
        self._timers: list[Any] = []
        self._pending_transfer: tuple[str, str] | None = None
        self._progress = DeferredLock()
        self._waiters = Waiters()

    def __repr__(self) -> str:
        return f"<FakeCall {self.call_uuid} {self.direction} {self.to} {self.status}>"

    # -- what tests read ------------------------------------------------------

    @property
    def stream(self) -> PlivoStream | None:
        """The most recent audio stream, if any."""
        return self.streams[-1] if self.streams else None

    @property
    def duration(self) -> int:
        """Seconds from answer to end (0 if never answered)."""
        if self.answered_at is None:
            return 0
        end = self.ended_at if self.ended_at is not None else self.fake.clock.seconds()
        return round(end - self.answered_at)

    @property
    def is_live(self) -> bool:
        """Whether the call has not ended."""
        return self.status not in FINAL_STATUSES

    def elements_named(self, name: str) -> list[Element]:
        """The executed elements called C{name}."""
        return [element for element in self.elements if element.name == name]

    def callbacks_of(self, kind: str) -> list[Callback]:
        """The callbacks of C{kind} ("answer", "hangup", "action", ...)."""
        return [hook for hook in self.callbacks if hook.kind == kind]

    def live_resource(self) -> dict[str, Any]:
        """The live call as C{GET .../Call/{uuid}/?status=live} returns it."""
        return {
            "api_id": str(uuid.uuid4()),
            "call_status": self.status,
            "call_uuid": self.call_uuid,
            "caller_name": self.caller_name,
            "direction": self.direction,
            "from": self.from_,
            "request_uuid": self.request_uuid,
            "session_start": plivo_session_time(self.created_at),
            "to": _digits(self.to),
        }

    def queued_resource(self) -> dict[str, Any]:
        """The queued request as C{GET .../Call/{request_uuid}/?status=queued} returns it."""
        return {
            "api_id": str(uuid.uuid4()),
            "call_status": "queued",
            "direction": self.direction,
            "from": self.from_,
            "request_uuid": self.request_uuid,
            "to": _digits(self.to),
        }

    def cdr(self) -> dict[str, Any]:
        """The call record as C{GET .../Call/{uuid}/} returns it once the call ended."""
        hangup = self.hangup
        return {
            "answer_time": None if self.answered_at is None else plivo_time(self.answered_at),
            "api_id": str(uuid.uuid4()),
            "bill_duration": self.duration,
            "billed_duration": self.duration,
            "call_direction": self.direction,
            "call_duration": self.duration,
            # call_state's values are [UNCONFIRMED]; hangup_cause_* are Plivo's.
            "call_state": "ANSWER"
            if self.answered_at
            else (hangup.status.upper() if hangup else ""),
            "call_uuid": self.call_uuid,
            "end_time": None if self.ended_at is None else plivo_time(self.ended_at),
            "from_number": self.from_,
            "hangup_cause_code": hangup.code if hangup else None,
            "hangup_cause_name": hangup.name if hangup else None,
            "hangup_source": hangup.source if hangup else None,
            "initiation_time": plivo_time(self.created_at),
            "parent_call_uuid": None,
            "resource_uri": f"/v1/Account/{self.fake.auth_id}/Call/{self.call_uuid}/",
            "to_number": _digits(self.to),
            "total_amount": "0.00000",
            "total_rate": "0.00850",
        }

    # -- waiting --------------------------------------------------------------

    def when_settled(self) -> Deferred:
        """Fires with the call once nothing is in flight for it."""
        return self._waiters.wait(lambda: self if self._active == 0 else None, persistent=True)

    def when_status(self, *statuses: str) -> Deferred:
        """Fires with the first of C{statuses} the call has reached (now or later)."""
        return self._waiters.wait(
            lambda: next((s for s in self.status_history if s in statuses), None)
        )

    def when_ended(self) -> Deferred:
        """Fires with the final status once the call ended and its hangup callback was sent."""
        return self._waiters.wait(
            lambda: self.status if not self.is_live and self._active == 0 else None,
            persistent=True,
        )

    def when_element(self, name: str, count: int = 1) -> Deferred:
        """Fires with the C{count}th executed element called C{name}."""

        def check() -> Element | None:
            found = self.elements_named(name)
            return found[count - 1] if len(found) >= count else None

        return self._waiters.wait(check)

    def when_listening(self) -> Deferred:
        """Fires with the C{<GetInput>}'s attributes once its prompts have played."""
        return self._waiters.wait(
            lambda: self._input.attrs if self._input and self._input.listening else None
        )

    def when_stream(self, index: int = 0) -> Deferred:
        """Fires with stream number C{index} once it is open (or failed to open)."""

        def check() -> PlivoStream | None:
            if len(self.streams) > index and self.streams[index].state != "connecting":
                return self.streams[index]
            return None

        return self._waiters.wait(check)

    def when_callback(self, kind: str, count: int = 1) -> Deferred:
        """Fires with the C{count}th answered callback of C{kind} (e.g. "hangup")."""

        def check() -> Callback | None:
            done = [h for h in self.callbacks if h.kind == kind and (h.code or h.error)]
            return done[count - 1] if len(done) >= count else None

        return self._waiters.wait(check)

    # -- call progress (outbound) ---------------------------------------------

    def ring(self) -> Deferred:
        """The callee's phone rings: the ring callback (C{Event=Ring}) if C{ring_url} was given."""
        self._expect({"queued"}, "ring")
        return self._act(self._progress_flow(self._ring_flow))

    def answer(self) -> Deferred:
        """The callee picks up: the answer URL is fetched (C{Event=StartApp}) and its XML runs."""
        self._expect({"queued", "ringing"}, "answer")
        return self._act(self._progress_flow(self._answer_flow))

    def busy(self) -> Deferred:
        """The callee is busy: the call ends C{busy}."""
        self._expect({"queued", "ringing"}, "busy")
        return self._act(self._progress_flow(self._unanswered_flow, "busy"))

    def detect(self, callee: str, after: float = 0.0) -> Deferred:
        """
        Who answered, as Plivo's machine detection reports it to
        C{machine_detection_url}: C{Machine=true} for a C{machine}; for a
        C{human} nothing (Plivo reports machines only); Plivo reports no
        beep.  With C{machine_detection=hangup} a machine is hung up instead
        (cause C{machine_detected} [UNCONFIRMED]).  With C{after}, the
        callback goes that many seconds later on the fake's clock.
        """
        if self.status != "in-progress":
            raise FakePlivoError(f"detect() on a {self.status} call {self.call_uuid}")
        if self.machine_detection is None:
            raise FakePlivoError(f"call {self.call_uuid} was not made with machine_detection")
        if callee not in ("human", "machine"):
            raise FakePlivoError(f"Plivo tells only a human from a machine, not {callee!r}")
        if after > 0:
            self.fake._call_later(after, lambda: self._spawn(self._detected(callee)))
            return self.when_settled()
        return self._act(self._detected(callee))

    async def _detected(self, callee: str) -> None:
        if not self.is_live:
            return
        machine = callee == "machine"
        if not machine:
            return
        if self.machine_detection == "hangup":
            await self._end(_ending("machine-detected", "Plivo"))
            return
        if not self.machine_detection_url:
            return
        params = self._params("MachineDetection")
        params.append(("Machine", "true"))
        await self.fake._send_callback(
            self, "machine", self.machine_detection_url, self.machine_detection_method, params
        )

    def no_answer(self) -> Deferred:
        """The callee rejects the call or it is not picked up: it ends C{no-answer}."""
        self._expect({"queued", "ringing"}, "no_answer")
        return self._act(self._progress_flow(self._unanswered_flow, "no-answer"))

    def fail(self) -> Deferred:
        """The call cannot be connected: it ends C{failed}."""
        self._expect({"queued", "ringing"}, "fail")
        return self._act(self._progress_flow(self._unanswered_flow, "failed"))

    def caller_hangup(self) -> Deferred:
        """
        The person on the phone hangs up: streams close, the call ends
        C{completed} (C{cancel} if an inbound call was not answered yet).
        """
        if self.status != "in-progress" and not (
            self.direction == "inbound" and self.status == "ringing"
        ):
            raise FakePlivoError(f"caller_hangup on a {self.status} call {self.call_uuid}")
        source = "Caller" if self.direction == "inbound" else "Call recipient"
        reason = "normal" if self.status == "in-progress" else "canceled"
        return self._act(self._end(_ending(reason, source)))

    # -- caller input ---------------------------------------------------------

    def say(self, speech: str, confidence: float = 0.9) -> Deferred:
        """
        The caller says C{speech} during a C{<GetInput inputType="speech">}
        (also while its prompt still plays): POST C{InputType=speech},
        C{Speech}, C{SpeechConfidenceScore} to its action.
        """
        pending = self._expect_input("speech")
        params = [
            ("InputType", "speech"),
            ("Speech", speech),
            ("SpeechConfidenceScore", f"{confidence:g}"),
            ("BilledAmount", "0.00000"),
        ]
        pending.give(params)
        return self.when_settled()

    def press(self, digits: str) -> Deferred:
        """The caller presses C{digits} during a C{<GetInput>} (dtmf) or C{<GetDigits>}."""
        pending = self._expect_input("dtmf")
        if pending.element == "GetDigits":
            params = [("Digits", digits)]
        else:
            params = [("InputType", "dtmf"), ("Digits", digits), ("BilledAmount", "0.00000")]
        pending.give(params)
        return self.when_settled()

    def input_timeout(self) -> Deferred:
        """
        The caller says nothing until C{executionTimeout}: as Plivo documents,
        nothing is posted and the element after C{<GetInput>} runs.
        """
        pending = self._expect_input(None)
        if not pending.listening:
            raise FakePlivoError("the <GetInput> prompt is still playing; no timeout yet")
        pending.give([])
        return self.when_settled()

    def _expect_input(self, kind: str | None) -> _Input:
        pending = self._input
        if pending is None or pending.params is not None:
            raise FakePlivoError(f"call {self.call_uuid} is not waiting on <GetInput>")
        if kind is not None and kind not in pending.inputs:
            wanted = pending.attrs.get("inputType", "dtmf")
            raise FakePlivoError(f"<{pending.element} inputType={wanted!r}> takes no {kind}")
        return pending

    # -- activity bookkeeping -------------------------------------------------

    def _expect(self, statuses: set[str], what: str) -> None:
        if self.direction == "inbound":
            raise FakePlivoError(f"{what}() is for outbound calls; {self.call_uuid} is inbound")
        if self.status not in statuses:
            raise FakePlivoError(f"{what}() on a {self.status} call {self.call_uuid}")

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

    def _spawn(self, coroutine: Any) -> None:
        self._waiters.reopen()
        self._active += 1
        d = ensureDeferred(coroutine)
        d.addErrback(self._crashed)
        d.addBoth(lambda _: self._release())

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
        log.failure("The fake Plivo crashed on call {uuid}", failure, uuid=self.call_uuid)

    def _changed(self) -> None:
        self._waiters.changed()
        if not self.is_live and self._active == 0:
            self._waiters.close(CallEnded(f"call {self.call_uuid} ended {self.status}"))

    async def _block(self, d: Deferred, waiting: str) -> Any:
        """Wait for C{d}; the call counts as quiet meanwhile."""
        self.waiting = waiting
        self._wait = d

        def resumed(result: Any) -> Any:
            self._active += 1
            self.waiting = None
            self._wait = None
            return result

        d.addBoth(resumed)
        self._active -= 1
        self._changed()
        return await d

    async def _sleep(self, seconds: float | None, waiting: str) -> bool:
        """
        Wait C{seconds} on the clock (C{None}: until the call moves on); with a
        pending input, stop early once the caller gave it.  C{True} if input came.
        """
        pending = self._input
        if pending is not None and pending.params is not None:
            return True
        timer: list[Any] = []

        def cancel(_: Deferred) -> None:
            if timer and timer[0].active():
                timer[0].cancel()

        d: Deferred = Deferred(cancel)
        if seconds is not None:
            timer.append(self.fake._call_later(max(seconds, 0.0), _fire, d, False))
        if pending is not None:
            pending.wakers.append(d)
        woke = await self._block(d, waiting)
        cancel(d)
        return bool(woke)

    def _abandon(self) -> None:
        """Stop the running XML document (a transfer, or the call ended)."""
        self._gen += 1
        self._input = None
        if self._wait is not None:
            self._wait.cancel()

    def _set_status(self, status: str) -> None:
        self.status = status
        self.status_history.append(status)

    def _timer(self, delay: float, f: Callable[..., Any], *args: Any) -> None:
        if self.fake.honour_timeouts:
            self._timers.append(self.fake._call_later(delay, f, *args))

    def _cancel_timers(self) -> None:
        for timer in self._timers:
            if timer.active():
                timer.cancel()
        self._timers = []

    def _finish(self, ending: Hangup) -> bool:
        """End the call now (streams close); the caller sends the hangup callback."""
        if not self.is_live:
            return False
        self.hangup = ending
        self.ended_at = self.fake.clock.seconds()
        self._cancel_timers()
        self._abandon()
        self._set_status(ending.status)
        for stream in self.streams:
            stream._close_by_provider()
        return True

    async def _end(self, ending: Hangup) -> None:
        """End the call and send the hangup callback."""
        if self._finish(ending):
            await self._hangup_callback()

    def _end_soon(self, ending: Hangup) -> None:
        """End the call now; the hangup callback goes out on the next reactor turn."""
        if self._finish(ending):
            self._spawn_soon(self._hangup_callback)

    def _timed_end(self, reason: str, source: str, statuses: frozenset[str]) -> None:
        if self.status in statuses:
            self._spawn(self._end(_ending(reason, source)))

    def _transfer(self, url: str, method: str) -> None:
        """A transfer: stop what runs (streams close) and run the XML at C{url}."""
        if self.fake.transfer_waits_for_stream and self.waiting == "stream":
            self._pending_transfer = (url, method)
            return
        self._abandon()
        for stream in self.streams:
            stream._close_by_provider()
        self._spawn_soon(self._fetch_and_run, self._gen, "transfer", url, method, [])

    # -- flows ----------------------------------------------------------------

    async def _progress_flow(self, flow: Callable[..., Any], *args: Any) -> None:
        await self._progress.acquire()
        try:
            await flow(*args)
        finally:
            self._progress.release()

    async def _ring_flow(self) -> None:
        if self.status != "queued":
            return
        self._set_status("ringing")
        self._timer(
            self.ring_timeout,
            self._timed_end,
            "ring-timeout",
            "Plivo",
            frozenset({"ringing"}),
        )
        if self.hangup_on_ring is not None:
            self._timer(
                self.hangup_on_ring,
                self._timed_end,
                "canceled",
                "Plivo",
                frozenset({"ringing"}),
            )
        if self.ring_url:
            await self.fake._send_callback(
                self, "ring", self.ring_url, self.ring_method, self._params("Ring")
            )

    async def _answer_flow(self) -> None:
        await self._ring_flow()
        if self.status != "ringing":
            return
        self._cancel_timers()
        self._answered()
        # The XML runs outside the progress lock: it may wait for long.
        self._spawn(
            self._fetch_and_run(self._gen, "answer", self.answer_url, self.answer_method, [])
        )

    def _answered(self) -> None:
        self.answered_at = self.fake.clock.seconds()
        self._set_status("in-progress")
        self._timer(
            self.time_limit,
            self._timed_end,
            "time-limit",
            "Plivo",
            frozenset({"in-progress"}),
        )

    async def _unanswered_flow(self, status: str) -> None:
        if status == "no-answer":
            await self._ring_flow()
        reason = {"busy": "busy", "no-answer": "no-answer", "failed": "failed"}[status]
        source = "Carrier" if status == "failed" else "Call recipient"
        await self._end(_ending(reason, source))

    async def _inbound_flow(self) -> None:
        await self._fetch_and_run(self._gen, "answer", self.answer_url, self.answer_method, [])

    def _answer_inbound(self) -> None:
        """An inbound call's XML did something that needs the call answered."""
        if self.direction == "inbound" and self.status == "ringing":
            self._answered()

    # -- callbacks ------------------------------------------------------------

    def _params(self, event: str | None, call_status: str | None = None) -> list[tuple[str, str]]:
        """The parameters Plivo sends with every request about this call."""
        params = [
            ("CallUUID", self.call_uuid),
            ("From", _digits(self.from_)),
            ("To", _digits(self.to)),
            ("Direction", self.direction),
            ("CallStatus", call_status or self.status),
            ("BillRate", "0.00850"),
            ("SessionStart", plivo_session_time(self.created_at)),
        ]
        if event is not None:
            params.append(("Event", event))
        if self.direction == "outbound":
            params += [
                ("RequestUUID", self.request_uuid or ""),
                ("ALegUUID", self.call_uuid),
                ("ALegRequestUUID", self.request_uuid or ""),
            ]
        if self.caller_name:
            params.append(("CallerName", self.caller_name))
        return params

    async def _hangup_callback(self) -> None:
        if not self.hangup_url or self.hangup is None:
            return
        ending = self.hangup
        params = self._params("Hangup")
        params += [
            ("HangupCause", ending.cause),
            ("HangupCauseCode", str(ending.code)),
            ("HangupCauseName", ending.name),
            ("HangupSource", ending.source),
            ("Duration", str(self.duration)),
            ("BillDuration", str(self.duration)),
            ("TotalCost", "0.00000"),
            ("StartTime", plivo_time(self.created_at)),
            ("AnswerTime", "" if self.answered_at is None else plivo_time(self.answered_at)),
            (
                "EndTime",
                plivo_time(self.fake.clock.seconds() if self.ended_at is None else self.ended_at),
            ),
        ]
        await self.fake._send_callback(self, "hangup", self.hangup_url, self.hangup_method, params)

    async def _fetch_and_run(
        self, gen: int, kind: str, url: str, method: str, extra: list[tuple[str, str]]
    ) -> None:
        """Fetch XML from C{url} and run it; an unusable answer ends the call."""
        event = {"answer": "StartApp", "redirect": "Redirect", "transfer": "Redirect"}.get(kind)
        hook = await self.fake._send_callback(self, kind, url, method, self._params(event) + extra)
        if not hook.ok and kind == "answer" and self.fallback_url and self._current(gen):
            url = self.fallback_url
            hook = await self.fake._send_callback(
                self, "fallback", url, self.fallback_method, self._params(event) + extra
            )
        if not self._current(gen):
            return
        if not hook.ok:
            await self._end(_ending("answer-url-failed", "Error"))
            return
        await self._run_document(gen, hook.response.decode("utf-8", "replace"), url)

    # -- Plivo XML ------------------------------------------------------------

    def _current(self, gen: int) -> bool:
        return gen == self._gen and self.is_live

    def _parse(self, text: str) -> ElementTree.Element | None:
        """The document's root, or C{None} (recorded as an error) if Plivo would refuse it."""
        try:
            root = ElementTree.fromstring(text.strip())
        except ElementTree.ParseError as e:
            self.errors.append(f"8011 invalid XML: {e} in {text[:200]!r}")
            return None
        if root.tag != "Response":
            self.errors.append(f"8011 invalid XML: root <{root.tag}>, not <Response>")
            return None
        for element in root:
            if element.tag not in PLIVO_ELEMENTS:
                self.errors.append(f"8011 invalid XML: <{element.tag}> is not a Plivo element")
                return None
            if element.tag in ("GetInput", "GetDigits"):
                bad = [c.tag for c in element if c.tag not in ("Speak", "Play")]
                if bad:
                    self.errors.append(f"8011 invalid XML: <{element.tag}> cannot hold {bad}")
                    return None
                if not element.get("action"):
                    self.errors.append(f"8011 invalid XML: <{element.tag}> needs an action")
                    return None
            if element.tag == "PreAnswer":
                bad = [c.tag for c in element if c.tag not in PROMPT_ELEMENTS]
                if bad:
                    self.errors.append(f"8011 invalid XML: <PreAnswer> cannot hold {bad}")
                    return None
        return root

    async def _run_document(self, gen: int, text: str, url: str) -> None:
        """Execute a Plivo XML document top-down; one that runs out ends the call (4010)."""
        if not self._current(gen):
            return
        self.document_url = url
        root = self._parse(text)
        if root is None:
            await self._end(_ending("invalid-xml", "Error"))
            return
        for index, element in enumerate(root):
            if not self._current(gen):
                return
            if await self._run_element(gen, element, url, first=index == 0):
                return
        if self._current(gen):
            await self._end(_ending("end-of-xml", "Plivo"))

    async def _run_element(
        self, gen: int, element: ElementTree.Element, url: str, first: bool
    ) -> bool:
        """Run one element; C{True} when control left this document."""
        name = element.tag
        text = (element.text or "").strip()
        attributes = dict(element.attrib)
        if name == "Hangup":
            return await self._run_hangup(attributes, first)
        if name == "PreAnswer":
            self.elements.append(Element(name, "", attributes))
            for child in element:
                await self._run_prompt(child)
            return False
        self._answer_inbound()
        if not self._current(gen):
            return True
        if name in PROMPT_ELEMENTS:
            await self._run_prompt(element)
            return False
        if name == "DTMF":
            self.elements.append(Element(name, text, attributes))
            self.dtmf_sent.append(text)
            return False
        if name == "Redirect":
            self.elements.append(Element(name, text, attributes))
            target = self._resolve(url, text)
            if target is None:
                return await self._bad(f"<Redirect> to {text!r}")
            await self._fetch_and_run(gen, "redirect", target, attributes.get("method", "POST"), [])
            return True
        if name in ("GetInput", "GetDigits"):
            return await self._run_input(gen, element, url)
        if name == "Stream":
            return await self._run_stream(gen, element, url)
        if name == "Dial":
            return await self._run_dial(gen, element)
        self.elements.append(Element(name, text, attributes))
        self.errors.append(f"the fake does not run <{name}>; skipped")
        return False

    async def _run_prompt(self, element: ElementTree.Element) -> bool:
        """C{<Speak>}, C{<Play>} or C{<Wait>}, taking their time; C{True} if input cut them."""
        name = element.tag
        text = (element.text or "").strip()
        attributes = dict(element.attrib)
        self.elements.append(Element(name, text, attributes))
        if name == "Wait":
            seconds = float(attributes.get("length", "1")) * self.fake.wait_scale
            return await self._sleep(seconds, "wait") if seconds > 0 else False
        if name == "Play":
            return False  # the fake does not fetch audio files
        loop = int(attributes.get("loop", "1") or 1)
        seconds = len(text) / SPEAK_CHARS_PER_SECOND * self.fake.speak_scale
        if loop == 0:
            return await self._sleep(None, "speak")
        seconds *= loop
        return await self._sleep(seconds, "speak") if seconds > 0 else False

    async def _run_hangup(self, attributes: dict[str, str], first: bool) -> bool:
        self.elements.append(Element("Hangup", "", attributes))
        schedule = attributes.get("schedule")
        if schedule:
            self._timer(
                float(schedule),
                self._timed_end,
                "normal",
                "Answer XML",
                frozenset({"in-progress", "ringing"}),
            )
            return False
        reason = attributes.get("reason")
        if reason == "busy":
            ending = _ending("busy", "Answer XML")
        elif reason == "rejected" or (first and self.status == "ringing"):
            ending = _ending("rejected", "Answer XML")
        else:
            ending = _ending("normal", "Answer XML")
        await self._end(ending)
        return True

    def _resolve(self, document_url: str, target: str) -> str | None:
        """An absolute URL for C{target} relative to the current document."""
        if _is_http_url(target):
            return target
        if not target:
            return None
        return urljoin(document_url, target)

    async def _bad(self, what: str) -> bool:
        self.errors.append(f"invalid URL: {what}")
        await self._end(_ending("invalid-xml", "Error"))
        return True

    async def _run_input(self, gen: int, element: ElementTree.Element, url: str) -> bool:
        name = element.tag
        attributes = dict(element.attrib)
        self.elements.append(Element(name, "", attributes))
        if name == "GetDigits":
            inputs = frozenset({"dtmf"})
            timeout = float(attributes.get("timeout", "5"))
        else:
            inputs = frozenset(attributes.get("inputType", "dtmf").split())
            timeout = float(attributes.get("executionTimeout", "15"))
        pending = _Input(attributes, name, inputs)
        self._input = pending
        for child in element:
            if await self._run_prompt(child) or not self._current(gen):
                break
        if self._current(gen) and pending.params is None:
            pending.listening = True
            await self._sleep(timeout if self.fake.honour_timeouts else None, "input")
        if not self._current(gen):
            return True
        self._input = None
        params = pending.params or []
        if not params:
            return False  # no input: the next element runs
        target = self._resolve(url, attributes["action"])
        if target is None:
            return await self._bad(f"<{name} action={attributes['action']!r}>")
        method = attributes.get("method", "POST")
        if attributes.get("redirect", "true").lower() == "false":
            await self.fake._send_callback(
                self, "action", target, method, self._params(None) + params
            )
            return False
        await self._fetch_and_run(gen, "action", target, method, params)
        return True

    async def _run_dial(self, gen: int, element: ElementTree.Element) -> bool:
        """
        C{<Dial>} one C{<Number>} (digits, no C{+}): a B leg rings the person
        until L{person_hangs_up}; then the elements after the C{<Dial>} run.
        """
        attributes = dict(element.attrib)
        numbers = [(c.text or "").strip() for c in element if c.tag == "Number"]
        self.elements.append(Element("Dial", ",".join(numbers), attributes))
        if len(numbers) != 1 or not re.fullmatch(r"[1-9]\d{6,14}", numbers[0]):
            self.errors.append(f"<Dial> needs one <Number> of digits, got {numbers!r}")
            return False
        self.dialled = numbers[0]
        self.dialled_from = attributes.get("callerId")
        self._dial = Deferred()
        await self._block(self._dial, "dial")
        return not self._current(gen)

    def person_hangs_up(self) -> Deferred:
        """The person a C{<Dial>} rang hangs up: the document carries on after the C{<Dial>}."""
        if self.waiting != "dial" or self._dial is None:
            raise FakePlivoError(f"{self.call_uuid} is not dialling anyone ({self.waiting})")
        d, self._dial = self._dial, None
        self._spawn_soon(_resume, d)
        return self.when_settled()

    async def _run_stream(self, gen: int, element: ElementTree.Element, url: str) -> bool:
        attributes = dict(element.attrib)
        service_url = (element.text or "").strip()
        self.elements.append(Element("Stream", service_url, attributes))
        stream = self._new_stream(service_url, attributes, via="xml")
        await stream._connect()
        if not self._current(gen):
            return True
        if attributes.get("keepCallAlive", "false").lower() != "true":
            return False
        if stream.state != "closed":
            await self._block(stream.when_closed(), "stream")
        if self._pending_transfer is not None and self._current(gen):
            target, method = self._pending_transfer
            self._pending_transfer = None
            self._abandon()
            await self._fetch_and_run(self._gen, "transfer", target, method, [])
            return True
        return not self._current(gen)

    def _new_stream(self, service_url: str, attributes: dict[str, str], via: str) -> PlivoStream:
        callback = attributes.get("statusCallbackUrl")
        if callback and self.document_url and not _is_http_url(callback):
            attributes = {**attributes, "statusCallbackUrl": urljoin(self.document_url, callback)}
        stream = PlivoStream(self, service_url, attributes, via=via)
        self.streams.append(stream)
        self._changed()
        return stream


def _fire(d: Deferred, value: Any) -> None:
    if not d.called:
        d.callback(value)


# -- audio streams (providers.md section 3.7) ----------------------------------

#: The C{contentType}s Plivo streams, and how their audio is framed.
CONTENT_TYPES = {
    "audio/x-mulaw;rate=8000": ("audio/x-mulaw", 8000, ULAW_8K),
    "audio/x-l16;rate=8000": ("audio/x-l16", 8000, AudioFormat(320, 16000, b"\x00")),
    "audio/x-l16;rate=16000": ("audio/x-l16", 16000, AudioFormat(640, 32000, b"\x00")),
}


class PlivoDialect:
    """Plivo's audio-stream messages (C{providers.md} section 3.7)."""

    provider = "plivo"
    audio = ULAW_8K

    def opening(self, stream: PlivoStream) -> list[dict[str, Any]]:
        """C{start}, with the call, the stream, the tracks and the media format nested."""
        return [
            {
                "event": "start",
                "sequenceNumber": stream.next_seq(),
                "start": {
                    "callId": stream.call.call_uuid,
                    "streamId": stream.sid,
                    "accountId": stream.fake.auth_id,
                    "tracks": list(stream.tracks),
                    "mediaFormat": {"encoding": stream.encoding, "sampleRate": stream.sample_rate},
                },
                "extra_headers": stream.extra_headers_json,
            }
        ]

    def media(
        self, stream: PlivoStream, frame: bytes, chunk: int, timestamp: int
    ) -> dict[str, Any]:
        """One inbound frame; the timestamp is a string, the chunk a number."""
        return {
            "event": "media",
            "sequenceNumber": stream.next_seq(),
            "streamId": stream.sid,
            "media": {
                "track": "inbound",
                "timestamp": str(timestamp),
                "chunk": chunk,
                "payload": base64.b64encode(frame).decode("ascii"),
            },
            "extra_headers": stream.extra_headers_json,
        }

    def dtmf(self, stream: PlivoStream, digit: str) -> dict[str, Any]:
        """A key press on the inbound track."""
        elapsed = round((stream.clock.seconds() - (stream.started_at or 0.0)) * 1000)
        return {
            "event": "dtmf",
            "sequenceNumber": stream.next_seq(),
            "streamId": stream.sid,
            "dtmf": {"track": "inbound", "digit": digit, "timestamp": str(elapsed)},
            "extra_headers": stream.extra_headers_json,
        }

    def mark_echo(self, stream: PlivoStream, name: str) -> dict[str, Any]:
        """C{playedStream}: the audio queued before the checkpoint C{name} has played."""
        return {
            "event": "playedStream",
            "sequenceNumber": stream.next_seq(),
            "streamId": stream.sid,
            "name": name,
        }

    def cleared(self, stream: PlivoStream) -> dict[str, Any]:
        """C{clearedAudio}: the playback queue was flushed."""
        return {
            "event": "clearedAudio",
            "sequenceNumber": stream.next_seq(),
            "streamId": stream.sid,
        }

    def stop(self, stream: PlivoStream) -> dict[str, Any] | None:
        """Plivo documents only the close; a C{stop} frame only when the fake is asked for one."""
        if not stream.fake.stream_stop_frame:
            return None
        return {
            "event": "stop",
            "sequenceNumber": stream.next_seq(),
            "streamId": stream.sid,
            "stop": {"callId": stream.call.call_uuid, "streamId": stream.sid},
        }

    def parse(self, stream: PlivoStream, message: Any) -> AppMessage:
        """C{playAudio} (in the stream's format), C{checkpoint} or C{clearAudio}."""
        event = message.get("event") if isinstance(message, dict) else None
        if event == "playAudio":
            media = message.get("media")
            if not isinstance(media, dict):
                raise StreamProtocolError(f"playAudio without media: {message!r}"[:120])
            content_type, rate = media.get("contentType"), media.get("sampleRate")
            if content_type != stream.encoding or rate != stream.sample_rate:
                raise StreamProtocolError(
                    f"playAudio as {content_type!r} at {rate!r} on a stream of "
                    f"{stream.encoding} at {stream.sample_rate}"
                )
            try:
                return AppMessage("media", audio=decode_payload(media.get("payload")))
            except ValueError as e:
                raise StreamProtocolError(f"bad playAudio payload: {e}") from None
        if event in ("checkpoint", "clearAudio"):
            if message.get("streamId") != stream.sid:
                raise StreamProtocolError(
                    f"{event} for streamId {message.get('streamId')!r}, not {stream.sid}"
                )
            if event == "clearAudio":
                return AppMessage("clear")
            name = message.get("name")
            if not isinstance(name, str) or not name:
                raise StreamProtocolError(f"checkpoint without a name: {message!r}"[:120])
            return AppMessage("mark", name=name)
        raise StreamProtocolError(f"unknown event: {json.dumps(message)[:80]!r}")


PLIVO_DIALECT = PlivoDialect()


class PlivoStream(MediaStreamClient):
    """
    One audio-stream WebSocket from the fake to the app, Plivo's side of it.

    Everything the shared L{MediaStreamClient} records and waits for (the
    app's C{checkpoint}s are its marks, C{playedStream} their echoes), plus
    Plivo's rules: C{ws://} or C{wss://} with the query kept, the upgrade
    signed with Signature V3 (method GET), the C{contentType} chosen in the
    XML, C{playAudio} only on bidirectional streams, checkpoints still
    queued when the app clears are dropped (no C{playedStream}), stream
    status callbacks, C{streamTimeout}, and C{closed_by} "plivo" when Plivo
    ends it.
    """

    usage_error = FakePlivoError

    def __init__(self, call: FakeCall, url: str, attributes: dict[str, str], via: str) -> None:
        fake = call.fake
        content_type = attributes.get("contentType", "audio/x-l16;rate=8000").replace(" ", "")
        encoding, rate, audio = CONTENT_TYPES.get(
            content_type, CONTENT_TYPES["audio/x-l16;rate=8000"]
        )
        bidirectional = attributes.get("bidirectional", "false").lower() == "true"
        super().__init__(
            PLIVO_DIALECT,
            url,
            clock=fake.clock,
            reactor=fake.reactor,
            call_later=fake._call_later,
            bidirectional=bidirectional,
            audio=audio,
            sid=str(uuid.uuid4()),
            ws_options=fake.ws_options,
        )
        self.call = call
        self.fake = fake
        self.attributes = dict(attributes)
        self.via = via
        self.content_type = content_type
        self.encoding = encoding
        self.sample_rate = rate
        track = attributes.get("audioTrack", "inbound")
        self.tracks = ["inbound", "outbound"] if track == "both" else [track]
        self.extra_headers = _extra_headers(attributes.get("extraHeaders", ""))
        if content_type not in CONTENT_TYPES:
            self._record_error(f"unknown contentType {content_type!r}; streaming L16 at 8 kHz")
        if bidirectional and track != "inbound":
            self._record_error(f"a bidirectional stream must use audioTrack inbound, not {track}")
        self._timeout_timer: Any = None

    @property
    def extra_headers_json(self) -> str:
        """The C{extraHeaders} as the JSON string the events carry."""
        return json.dumps(self.extra_headers)

    @property
    def checkpoints_played(self) -> list[tuple[float, str]]:
        """C{(time, name)} of every C{playedStream} sent."""
        return list(self.marks_echoed)

    def resource(self) -> dict[str, Any]:
        """The stream as C{GET .../Call/{uuid}/Stream/} lists it."""
        status = {"connecting": "initiated", "open": "in-progress", "closed": "stopped"}
        return {
            "call_uuid": self.call.call_uuid,
            "end_time": None,
            "service_url": self.url,
            "start_time": None,
            "status": status[self.state],
            "status_callback_url": self.attributes.get("statusCallbackUrl", ""),
            "stream_id": self.sid,
        }

    def send_stop(self) -> Deferred:
        """Plivo ends the stream (a C{stop} frame only with C{stream_stop_frame}), then closes."""
        return super().send_stop()

    # -- Plivo around the socket ----------------------------------------------

    async def _connect(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            self._failed(f"stream URL must be ws:// or wss:// (got {self.url!r})")
            return
        headers, _ = self.fake._signature_headers("GET", self.url, [])
        target = self.url
        if self.fake.insecure_ws and parts.scheme == "wss":
            target = urlunsplit(("ws", parts.netloc, parts.path or "/", parts.query, ""))
        await self._dial(target, headers, useragent="PlivoStream/1.0")

    def _record_error(self, error: str) -> None:
        self.errors.append(error)
        self.call.errors.append(error)

    def _started(self) -> None:
        timeout = float(self.attributes.get("streamTimeout", "86400") or 86400)
        if self.fake.honour_timeouts:
            self._timeout_timer = self.fake._call_later(timeout, self._close_by_provider)
        self._stream_status("StartStream")

    def _opened_hook(self) -> None:
        self.call._changed()

    def _stopped(self) -> None:
        if self._timeout_timer is not None and self._timeout_timer.active():
            self._timeout_timer.cancel()
        self._stream_status("StopStream")
        self.call._changed()

    def _failed_hook(self, error: str) -> None:
        self._stream_status("DroppedStream", error)
        self.call._changed()

    def _on_clear(self, now: float) -> None:
        # Plivo sends no playedStream for checkpoints the clear dropped.
        self._pending_marks = []
        super()._on_clear(now)

    def _stream_status(self, event: str, error: str | None = None) -> None:
        callback = self.attributes.get("statusCallbackUrl")
        if not callback:
            return
        params = [
            ("Event", event),
            ("CallUUID", self.call.call_uuid),
            ("StreamID", self.sid),
            ("ServiceURL", self.url),
            ("Timestamp", plivo_time(self.fake.clock.seconds())),
            ("From", _digits(self.call.from_)),
            ("To", _digits(self.call.to)),
            ("Direction", self.call.direction),
            ("Bidirectional", "true" if self.bidirectional else "false"),
            ("AudioTrack", ",".join(self.tracks)),
            ("ContentType", self.content_type),
        ]
        if error is not None:
            params.append(("Error", error))
        method = self.attributes.get("statusCallbackMethod", "POST")
        self.call._spawn(self.fake._send_callback(self.call, "stream", callback, method, params))


def _extra_headers(value: str) -> dict[str, str]:
    """C{k=v,k2=v2} as a dict."""
    pairs = (item.split("=", 1) for item in value.split(",") if "=" in item)
    return {k.strip(): v.strip() for k, v in pairs}


class _RestResource(Resource):
    """The REST API root; every path is routed by L{FakePlivo}."""

    isLeaf = True

    def __init__(self, fake: FakePlivo) -> None:
        super().__init__()
        self._fake = fake

    def render(self, request: Request) -> bytes | int:
        return self._fake._render(request)


def _json(request: Request, status: int, body: dict[str, Any]) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", b"application/json")
    return json.dumps(body).encode("utf-8")


def _is_address(value: str) -> bool:
    """A number with its country code (C{+} optional) or a C{sip:} URI."""
    if value.startswith("sip:"):
        return True
    return re.fullmatch(r"\+?[0-9]{6,15}", value) is not None


def _is_http_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def _ignore_result(f: Callable[[], Deferred]) -> Callable[[], None]:
    def run() -> None:
        try:
            f().addErrback(lambda failure: log.failure("automatic call outcome", failure))
        except FakePlivoError:
            pass  # the test moved the call on first

    return run


__all__ = [
    "CallEnded",
    "Callback",
    "Element",
    "FakeCall",
    "FakePlivo",
    "FakePlivoError",
    "Hangup",
    "PlivoDialect",
    "PlivoStream",
    "RestRequest",
    "new_nonce",
    "signature_v2",
    "signature_v3",
    "v3_base_string",
]


async def _resume(d: Deferred) -> None:
    """Let a blocked verb go on (a dialled person hung up)."""
    d.callback(None)
