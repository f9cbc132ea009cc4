"""
A fake Twilio Programmable Voice, speaking only Twilio's public protocol.

What it does, as Twilio does it (see C{providers.md} section 1):

  - the REST API (C{Calls.json}, C{Calls/{Sid}.json}) as a C{twisted.web}
    resource, C{FakeTwilio.resource}, usable with C{treq.testing.StubTreq} or
    served on 127.0.0.1 by L{FakeTwilio.listen};
  - call progress driven by the test (L{FakeCall.ring}, L{FakeCall.answer},
    L{FakeCall.busy}, ...), with the signed status callbacks Twilio sends;
  - TwiML fetched from the app (signed POSTs) and executed verb by verb, each
    verb logged as a L{Verb};
  - Media Streams: the shared WebSocket client (L{tests.fakes.media_stream})
    speaking Twilio's dialect: C{connected}, C{start}, C{media}, C{dtmf},
    C{stop}, and C{mark}s echoed at playback pace;
  - inbound calls (L{FakeTwilio.inbound_call});
  - answering-machine detection (C{MachineDetection} with C{AsyncAmd}): the
    test says who picked up (L{FakeCall.detect}) and, for a machine, after
    how long on the clock its greeting ends; the signed
    C{AsyncAmdStatusCallback} carries C{AnsweredBy} as Twilio's would.

Every action a test takes returns a Deferred that fires once the fake has
nothing left in flight for that call (webhooks answered, TwiML run up to a
blocking verb or the end of the call), so tests never sleep.  Timing (mark
echoes, paced audio, C{<Pause>}, ring timeouts, timestamps) runs on the
injected C{clock}; everything else on the reactor.
"""

from __future__ import annotations

import base64
import datetime
import email.utils
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
from twilio.request_validator import RequestValidator
from twisted.internet import task
from twisted.internet.defer import CancelledError, Deferred, DeferredLock, ensureDeferred, succeed
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from tests.fakes.media_stream import (
    ULAW_8K,
    AppMessage,
    FakeProviderError,
    MediaStreamClient,
    StreamProtocolError,
    Waiters,
    decode_payload,
)

API_VERSION = "2010-04-01"
REAL_API_ROOT = "https://api.twilio.com"
FINAL_STATUSES = frozenset({"completed", "busy", "failed", "no-answer", "canceled"})
STATUS_EVENTS = ("initiated", "ringing", "answered", "completed")
MAX_TWIML_CHARS = 4000

log = Logger()


class FakeTwilioError(FakeProviderError):
    """A test asked the fake for something Twilio could not do in the call's state."""


class CallEnded(Exception):
    """The call ended (and went quiet) before what a test waited for happened."""


def new_sid(prefix: str) -> str:
    """A Twilio-shaped SID: a two-letter prefix and 32 hex digits."""
    return prefix + secrets.token_hex(16)


def rfc2822(seconds: float) -> str:
    """A Unix time as Twilio writes dates: C{Tue, 14 Jan 2025 10:00:00 +0000}."""
    moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return email.utils.format_datetime(moment)


def twilio_error(status: int, code: int, message: str) -> dict[str, Any]:
    """The JSON body of a Twilio REST error."""
    return {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


def _with_query(url: str, params: Iterable[tuple[str, str]]) -> str:
    """C{url} with C{params} appended to its query string."""
    query = urlencode(list(params))
    if not query:
        return url
    return url + ("&" if "?" in url else "?") + query


def _plain(url: str, scheme: str) -> str:
    """C{url} with its scheme replaced (same host, port, path and query)."""
    parts = urlsplit(url)
    return urlunsplit((scheme, parts.netloc, parts.path, parts.query, ""))


class Verb(NamedTuple):
    """One TwiML verb (or noun) the fake executed: C{("Say", text, attrs)}."""

    name: str
    text: str
    attrs: dict[str, str]


@attrs.define
class Dialled:
    """The child leg a C{<Dial>} placed: the person's number, our caller id, its SID."""

    number: str
    caller_id: str | None
    sid: str
    attrs: dict[str, str]
    answered: bool = False


@attrs.frozen
class RestRequest:
    """One request the fake's REST API received."""

    method: str
    path: str
    params: tuple[tuple[str, str], ...]
    auth_ok: bool
    username: str | None

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of parameter C{name}."""
        return next((v for k, v in self.params if k == name), default)

    def getall(self, name: str) -> list[str]:
        """Every value of parameter C{name}, in order (repeated keys)."""
        return [v for k, v in self.params if k == name]


@attrs.define(eq=False)
class Webhook:
    """One HTTP request the fake sent to the app, and how the app answered it."""

    call_sid: str
    kind: str  # "voice", "fallback", "status", "action", "redirect", "update", "stream-status"
    method: str
    url: str  # exactly as requested (and signed), query string included
    params: list[tuple[str, str]]
    headers: dict[str, str]
    body: bytes
    sent_at: float
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
        """The C{X-Twilio-Signature} header sent, if any."""
        return self.headers.get("X-Twilio-Signature")

    @property
    def ok(self) -> bool:
        """Whether the app answered with a 2xx."""
        return self.code is not None and 200 <= self.code < 300


@attrs.define
class _Failure:
    status: int = 500
    code: int = 20500
    message: str = "Internal Server Error"
    drop: bool = False


@attrs.define
class _Gather:
    attrs: dict[str, str]
    document_url: str | None
    inputs: frozenset[str]
    result: Deferred


class FakeTwilio:
    """
    A fake Twilio account: REST API, calls, webhooks and media streams.

    @param account_sid: the account SID (random C{AC...} if not given).
    @param auth_token: the auth token (random if not given); signs webhooks.
    @param reactor: runs network I/O and "soon" work (default: the global reactor).
    @param clock: times playback, pacing, pauses, timeouts (default: C{reactor}).
    @param http: a treq-like client (C{request(method, url, **kw)}) for webhooks;
        default: C{treq} over non-persistent connections on C{reactor}.
        Pass C{StubTreq(app_resource)} to reach an in-memory app.
    @param insecure_ws: connect to C{wss://} stream URLs with plain C{ws://}.
    @param insecure_webhooks: fetch C{https://} webhook URLs with plain C{http://}
        (still signing the C{https://} URL, as Twilio would).
    @param auto: C{None} (the test drives each call) or the outcome every new
        outbound call gets on its own: C{"answer"}, C{"busy"}, C{"no-answer"}, C{"failed"}.
    @param auto_delay: seconds (on C{clock}) before an automatic outcome.
    @param pause_scale: multiplies C{<Pause length>}; 0 makes pauses instant.
    @param honour_timeout: end a ringing call with C{no-answer} after its C{Timeout}.
    @param api_keys: extra C{{key_sid: secret}} accepted for Basic auth.
    @param ws_options: autobahn protocol options for the media sockets (see
        L{MediaStreamClient}); C{{"openHandshakeTimeout": 0,
        "closeHandshakeTimeout": 0}} leaves no autobahn timers behind.
    """

    def __init__(
        self,
        account_sid: str | None = None,
        auth_token: str | None = None,
        *,
        reactor: Any = None,
        clock: Any = None,
        http: Any = None,
        insecure_ws: bool = False,
        insecure_webhooks: bool = False,
        auto: str | None = None,
        auto_delay: float = 0.0,
        pause_scale: float = 1.0,
        honour_timeout: bool = True,
        api_keys: dict[str, str] | None = None,
        webhook_timeout: float = 15.0,
        ws_options: dict[str, Any] | None = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor
        if auto not in (None, "answer", "busy", "no-answer", "failed"):
            raise ValueError(f"auto must be None, answer, busy, no-answer or failed, not {auto!r}")
        self.account_sid = account_sid or new_sid("AC")
        self.auth_token = auth_token or secrets.token_hex(16)
        self.reactor = reactor
        self.clock = clock if clock is not None else reactor
        self.insecure_ws = insecure_ws
        self.insecure_webhooks = insecure_webhooks
        self.auto = auto
        self.auto_delay = auto_delay
        self.pause_scale = pause_scale
        self.honour_timeout = honour_timeout
        self.api_keys = dict(api_keys or {})
        self.webhook_timeout = webhook_timeout
        self.ws_options = dict(ws_options or {})
        #: "valid", "wrong" (a signature made with another token) or "missing".
        self.signature_mode = "valid"
        #: Where the REST API is: Twilio's real root until L{listen} says otherwise.
        self.base_url = REAL_API_ROOT
        #: Every REST request received, in order.
        self.requests: list[RestRequest] = []
        #: Every webhook sent to the app, for all calls, in order.
        self.webhooks: list[Webhook] = []
        #: Every call (outbound and inbound), in creation order.
        self.calls: list[FakeCall] = []
        self.resource = _RestResource(self)
        self._validator = RequestValidator(self.auth_token)
        self._failures: dict[str, deque[_Failure]] = {
            operation: deque() for operation in ("create", "update", "fetch")
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

    # -- test controls --------------------------------------------------------

    def fail_next(
        self,
        operation: str = "create",
        status: int = 400,
        code: int = 21211,
        message: str = "Invalid 'To' Phone Number",
    ) -> None:
        """Make the next C{create}, C{update} or C{fetch} answer a Twilio JSON error."""
        self._failures[operation].append(_Failure(status, code, message))

    def drop_next(self, operation: str = "create") -> None:
        """Make the next C{create}, C{update} or C{fetch} drop the connection unanswered."""
        self._failures[operation].append(_Failure(drop=True))

    def call(self, sid: str) -> FakeCall:
        """The call with CallSid C{sid}."""
        for call in self.calls:
            if call.sid == sid:
                return call
        raise KeyError(sid)

    @property
    def last_call(self) -> FakeCall:
        """The most recently created call."""
        return self.calls[-1]

    def when_call(self, index: int = 0) -> Deferred:
        """Fires with the call number C{index} (0 = first) once it exists."""
        return self._waiters.wait(lambda: self.calls[index] if len(self.calls) > index else None)

    @property
    def errors(self) -> list[str]:
        """Every error the fake's calls recorded (bad TwiML, failed fetches, ...)."""
        return [f"{call.sid}: {error}" for call in self.calls for error in call.errors]

    def sign(self, url: str, params: dict[str, str] | None = None) -> str:
        """The C{X-Twilio-Signature} Twilio would send for C{url} and POST C{params}."""
        return self._validator.compute_signature(url, params or {})

    def inbound_call(
        self,
        from_: str,
        to: str,
        voice_url: str,
        *,
        method: str = "POST",
        status_callback: str | None = None,
        status_callback_method: str = "POST",
        status_callback_events: Iterable[str] = ("completed",),
    ) -> Deferred:
        """
        Someone dials C{to}: POST the voice URL (C{CallStatus=ringing},
        C{Direction=inbound}) and run the TwiML it returns.  Fires with the
        L{FakeCall} once that TwiML blocks or the call ends.
        """
        call = FakeCall(
            self,
            direction="inbound",
            from_=from_,
            to=to,
            url=voice_url,
            method=method,
            status_callback=status_callback,
            status_callback_method=status_callback_method,
            status_callback_events=frozenset(status_callback_events),
        )
        call._set_status("ringing")
        self._add_call(call)
        return call._act(call._inbound_flow()).addCallback(lambda _: call)

    def resend_last_callback(self, call: FakeCall | None = None, hook: Any = None) -> Deferred:
        """
        Send the last webhook (of C{call}, or of any call), or C{hook}, again,
        byte for byte.
        """
        hooks = call.webhooks if call is not None else self.webhooks
        if not hooks:
            raise FakeTwilioError("no webhook has been sent yet")
        last = hook if hook is not None else hooks[-1]
        owner = self.call(last.call_sid)
        replay = attrs.evolve(
            last, duplicate=True, code=None, response=b"", content_type="", error=None
        )
        replay.sent_at = self.clock.seconds()

        async def resend() -> Webhook:
            return await self._deliver(owner, replay)

        return owner._act_value(resend())

    # Call controls, also available on the call itself.

    def ring(self, call: FakeCall | str) -> Deferred:
        """See L{FakeCall.ring}."""
        return self._the(call).ring()

    def answer(self, call: FakeCall | str) -> Deferred:
        """See L{FakeCall.answer}."""
        return self._the(call).answer()

    def busy(self, call: FakeCall | str) -> Deferred:
        """See L{FakeCall.busy}."""
        return self._the(call).busy()

    def no_answer(self, call: FakeCall | str) -> Deferred:
        """See L{FakeCall.no_answer}."""
        return self._the(call).no_answer()

    def fail(self, call: FakeCall | str) -> Deferred:
        """See L{FakeCall.fail}."""
        return self._the(call).fail()

    def caller_hangup(self, call: FakeCall | str) -> Deferred:
        """See L{FakeCall.caller_hangup}."""
        return self._the(call).caller_hangup()

    def gather_result(self, call: FakeCall | str, speech: str, confidence: float = 0.9) -> Deferred:
        """See L{FakeCall.gather_result}."""
        return self._the(call).gather_result(speech, confidence)

    def gather_digits(
        self, call: FakeCall | str, digits: str, finished_on_key: str | None = None
    ) -> Deferred:
        """See L{FakeCall.gather_digits}."""
        return self._the(call).gather_digits(digits, finished_on_key)

    def gather_timeout(self, call: FakeCall | str) -> Deferred:
        """See L{FakeCall.gather_timeout}."""
        return self._the(call).gather_timeout()

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

    def _signature_header(self, url: str, params: dict[str, str]) -> dict[str, str]:
        if self.signature_mode == "missing":
            return {}
        if self.signature_mode == "wrong":
            wrong = RequestValidator("not-" + self.auth_token)
            return {"X-Twilio-Signature": wrong.compute_signature(url, params)}
        return {"X-Twilio-Signature": self._validator.compute_signature(url, params)}

    async def _send_webhook(
        self,
        call: FakeCall,
        kind: str,
        url: str,
        method: str,
        params: list[tuple[str, str]],
    ) -> Webhook:
        """Sign and send one webhook as Twilio does; never raises."""
        method = (method or "POST").upper()
        target = url.split("#", 1)[0]
        headers = {
            "User-Agent": "TwilioProxy/1.1",
            "Accept": "*/*",
            "I-Twilio-Idempotency-Token": str(uuid.uuid4()),
        }
        if method == "GET":
            target = _with_query(target, params)
            body = b""
            headers.update(self._signature_header(target, {}))
        else:
            body = urlencode(params).encode("ascii")
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            headers.update(self._signature_header(target, dict(params)))
        hook = Webhook(
            call_sid=call.sid,
            kind=kind,
            method=method,
            url=target,
            params=list(params),
            headers=headers,
            body=body,
            sent_at=self.clock.seconds(),
        )
        return await self._deliver(call, hook)

    async def _deliver(self, call: FakeCall, hook: Webhook) -> Webhook:
        call.webhooks.append(hook)
        self.webhooks.append(hook)
        if self._stopped:
            hook.error = "the fake was stopped"
            return hook
        url = hook.url
        if self.insecure_webhooks and url.startswith("https://"):
            url = _plain(url, "http")
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
            call.errors.append(f"11200 {hook.kind} webhook {hook.method} {hook.url}: {problem}")
        return hook

    async def _request(self, hook: Webhook, url: str) -> Any:
        return await self._http.request(
            hook.method,
            url,
            data=hook.body or None,
            headers=hook.headers,
            allow_redirects=False,
            timeout=self.webhook_timeout,
        )

    # REST API

    def _render(self, request: Request) -> bytes | int:
        method = request.method.decode("ascii")
        path = request.path.decode("utf-8")
        query = request.uri.decode("utf-8").partition("?")[2]
        raw = request.content.read() if request.content is not None else b""
        if method == "POST":
            params = parse_qsl(raw.decode("utf-8"), keep_blank_values=True)
        else:
            params = parse_qsl(query, keep_blank_values=True)
        user = request.getUser().decode("utf-8") or None
        password = request.getPassword().decode("utf-8")
        auth_ok = user is not None and (
            (user == self.account_sid and password == self.auth_token)
            or (user in self.api_keys and password == self.api_keys[user])
        )
        rest = RestRequest(method, path, tuple(params), auth_ok, user)
        self.requests.append(rest)
        if not auth_ok:
            request.setHeader(b"WWW-Authenticate", b'Basic realm="Twilio API"')
            return _json(request, 401, twilio_error(401, 20003, "Authenticate"))
        if method == "GET" and path == f"/{API_VERSION}/Accounts/{self.account_sid}.json":
            return _json(request, 200, {"sid": self.account_sid, "status": "active"})
        prefix = f"/{API_VERSION}/Accounts/{self.account_sid}/"
        not_found = twilio_error(404, 20404, f"The requested resource {path} was not found")
        if not path.startswith(prefix):
            return _json(request, 404, not_found)
        tail = path[len(prefix) :]
        if tail == "Calls.json" and method == "POST":
            return self._rest_create(request, rest)
        if tail == "Calls.json" and method == "GET":
            return _json(request, 200, _page(path, [c.resource() for c in self.calls]))
        match = re.fullmatch(r"Calls/([^/]+)\.json", tail)
        if match is None or method not in ("GET", "POST"):
            return _json(request, 404, not_found)
        operation = "fetch" if method == "GET" else "update"
        injected = self._injected(request, operation)
        if injected is not None:
            return injected
        try:
            call = self.call(match.group(1))
        except KeyError:
            return _json(request, 404, not_found)
        if method == "GET":
            return _json(request, 200, call.resource())
        return self._rest_update(request, rest, call)

    def _injected(self, request: Request, operation: str) -> bytes | int | None:
        if not self._failures[operation]:
            return None
        failure = self._failures[operation].popleft()
        if failure.drop:
            request.channel.transport.abortConnection()
            return NOT_DONE_YET
        return _json(
            request, failure.status, twilio_error(failure.status, failure.code, failure.message)
        )

    def _rest_create(self, request: Request, rest: RestRequest) -> bytes | int:
        injected = self._injected(request, "create")
        if injected is not None:
            return injected

        def bad(code: int, message: str) -> bytes:
            return _json(request, 400, twilio_error(400, code, message))

        to, from_ = rest.get("To"), rest.get("From")
        if not to:
            return bad(21201, "No 'To' number is specified")
        if not from_:
            return bad(21213, "No 'From' number is specified")
        if not _is_address(to):
            return bad(21211, f"Invalid 'To' Phone Number: {to}")
        if not _is_address(from_):
            return bad(21212, f"Invalid 'From' Phone Number: {from_}")
        url, twiml = rest.get("Url"), rest.get("Twiml")
        if not url and not twiml and not rest.get("ApplicationSid"):
            return bad(21205, "Url parameter is required")
        if url and not _is_http_url(url):
            return bad(21205, f"Url is not a valid URL: {url}")
        if twiml and len(twiml) > MAX_TWIML_CHARS:
            return bad(32018, "Twiml size exceeded maximum allowed value of 4000 characters")
        events = rest.getall("StatusCallbackEvent")
        expanded = [e for value in events for e in value.split()]
        if any(e not in STATUS_EVENTS for e in expanded):
            return bad(21626, "Invalid 'StatusCallbackEvent'")
        try:
            timeout = min(int(rest.get("Timeout") or 60), 600)
        except ValueError:
            return bad(21208, "Invalid Timeout value")
        call = FakeCall(
            self,
            direction="outbound-api",
            from_=from_,
            to=to,
            url=url or None,
            method=rest.get("Method") or "POST",
            twiml=None if url else twiml,
            fallback_url=rest.get("FallbackUrl"),
            fallback_method=rest.get("FallbackMethod") or "POST",
            status_callback=rest.get("StatusCallback"),
            status_callback_method=rest.get("StatusCallbackMethod") or "POST",
            status_callback_events=frozenset(expanded),
            timeout=timeout,
            create_request=rest,
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
        return _json(request, 201, call.resource())

    def _rest_update(self, request: Request, rest: RestRequest, call: FakeCall) -> bytes:
        def bad(code: int, message: str) -> bytes:
            return _json(request, 400, twilio_error(400, code, message))

        status = rest.get("Status")
        url, twiml = rest.get("Url"), rest.get("Twiml")
        for name in ("StatusCallback", "StatusCallbackMethod"):
            if rest.get(name):
                setattr(call, _snake(name), rest.get(name))
        if status is not None:
            if status not in ("completed", "canceled"):
                return bad(21218, f"Invalid Status: {status}")
            if call.status in FINAL_STATUSES:
                return _json(request, 200, call.resource())
            if status == "canceled" and call.status == "in-progress":
                return _json(request, 200, call.resource())
            final = "completed" if call.status == "in-progress" else "canceled"
            call._finish(final)
            call._spawn_soon(call._status_event, "completed")
            return _json(request, 200, call.resource())
        if url and twiml:
            return bad(21220, "Url and Twiml are mutually exclusive")
        if not url and not twiml:
            return _json(request, 200, call.resource())
        if url and not _is_http_url(url):
            return bad(21205, f"Url is not a valid URL: {url}")
        if twiml and len(twiml) > MAX_TWIML_CHARS:
            return bad(32018, "Twiml size exceeded maximum allowed value of 4000 characters")
        if call.status in FINAL_STATUSES:
            return bad(21220, "Call is not in-progress. Cannot redirect.")
        method = rest.get("Method") or "POST"
        if call.status != "in-progress":
            call.url, call.method, call.twiml = url, method, twiml
            return _json(request, 200, call.resource())
        call._redirect(url, method, twiml)
        return _json(request, 200, call.resource())


class FakeCall:
    """
    One call as Twilio sees it: status, webhooks sent, TwiML verbs run, streams.

    Control methods return Deferreds that fire once the fake has nothing in
    flight for this call.  Calling one that does not fit the call's state (say,
    L{answer} on a completed call) raises L{FakeTwilioError}.
    """

    def __init__(
        self,
        fake: FakeTwilio,
        *,
        direction: str,
        from_: str,
        to: str,
        url: str | None = None,
        method: str = "POST",
        twiml: str | None = None,
        fallback_url: str | None = None,
        fallback_method: str = "POST",
        status_callback: str | None = None,
        status_callback_method: str = "POST",
        status_callback_events: frozenset[str] = frozenset(),
        timeout: int = 60,
        create_request: RestRequest | None = None,
    ) -> None:
        self.fake = fake
        self.sid = new_sid("CA")
        self.account_sid = fake.account_sid
        self.direction = direction
        self.from_ = from_
        self.to = to
        self.url = url
        self.method = method
        self.twiml = twiml
        self.fallback_url = fallback_url
        self.fallback_method = fallback_method
        self.status_callback = status_callback
        self.status_callback_method = status_callback_method
        self.status_callback_events = status_callback_events
        self.timeout = timeout
        self.create_request = create_request
        self.status = "queued"
        self.status_history: list[str] = ["queued"]
        self.created_at = fake.clock.seconds()
        self.answered_at: float | None = None
        self.ended_at: float | None = None
        #: Every verb executed, in order (nested prompts follow their C{Gather}).
        self.verbs: list[Verb] = []
        #: Every webhook sent for this call.
        self.webhooks: list[Webhook] = []
        #: Every media stream opened for this call.
        self.streams: list[MediaStream] = []
        #: Problems Twilio would report in its debugger (bad TwiML, failed fetches).
        self.errors: list[str] = []
        #: What the call's TwiML is blocked on: "gather", "stream", "pause", "enqueue" or None.
        self.waiting: str | None = None
        #: The URL of the TwiML document being executed (None for inline TwiML).
        self.document_url: str | None = None
        self._gen = 0
        self._wait: Deferred | None = None
        self._gather: _Gather | None = None
        self._active = 0
        self._initiated = False
        self._sequence = 0
        self._ring_timer: Any = None
        #: The person a C{<Dial>} rang, if one did.
        self.dialled: Dialled | None = None
        self._dial: Deferred | None = None
        self._progress = DeferredLock()
        self._waiters = Waiters()
        rest = create_request
        #: The call's answering-machine detection: None, Enable or DetectMessageEnd.
        self.machine_detection = rest.get("MachineDetection") if rest else None
        self.async_amd = bool(rest and (rest.get("AsyncAmd") or "").lower() == "true")
        self.amd_callback = rest.get("AsyncAmdStatusCallback") if rest else None
        self.amd_callback_method = (
            rest.get("AsyncAmdStatusCallbackMethod") if rest else None
        ) or "POST"

    def __repr__(self) -> str:
        return f"<FakeCall {self.sid} {self.direction} {self.to} {self.status}>"

    # -- what tests read ------------------------------------------------------

    @property
    def callbacks(self) -> list[Webhook]:
        """The status callbacks sent for this call."""
        return [hook for hook in self.webhooks if hook.kind == "status"]

    @property
    def stream(self) -> MediaStream | None:
        """The most recent media stream, if any."""
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
        """Whether the call has not reached a final status."""
        return self.status not in FINAL_STATUSES

    def verbs_named(self, name: str) -> list[Verb]:
        """The executed verbs called C{name}."""
        return [verb for verb in self.verbs if verb.name == name]

    def resource(self) -> dict[str, Any]:
        """The Call resource as the REST API returns it."""
        path = f"/{API_VERSION}/Accounts/{self.account_sid}/Calls/{self.sid}"
        return {
            "sid": self.sid,
            "account_sid": self.account_sid,
            "parent_call_sid": None,
            "date_created": rfc2822(self.created_at),
            "date_updated": rfc2822(self.fake.clock.seconds()),
            "to": self.to,
            "to_formatted": self.to,
            "from": self.from_,
            "from_formatted": self.from_,
            "phone_number_sid": None,
            "status": self.status,
            "start_time": rfc2822(self.answered_at) if self.answered_at else None,
            "end_time": rfc2822(self.ended_at) if self.ended_at else None,
            "duration": str(self.duration) if self.ended_at is not None else None,
            "price": None,
            "price_unit": "USD",
            "direction": self.direction,
            "answered_by": None,
            "api_version": API_VERSION,
            "annotation": None,
            "forwarded_from": None,
            "group_sid": None,
            "caller_name": None,
            "queue_time": "0",
            "trunk_sid": None,
            "uri": path + ".json",
            "subresource_uris": {
                name: f"{path}/{name.replace('_', ' ').title().replace(' ', '')}.json"
                for name in ("notifications", "recordings", "payments", "events", "streams")
            },
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
        """Fires with the final status once the call ended and its callbacks were sent."""
        return self._waiters.wait(
            lambda: self.status if not self.is_live and self._active == 0 else None,
            persistent=True,
        )

    def when_verb(self, name: str, count: int = 1) -> Deferred:
        """Fires with the C{count}th executed verb called C{name}."""

        def check() -> Verb | None:
            found = self.verbs_named(name)
            return found[count - 1] if len(found) >= count else None

        return self._waiters.wait(check)

    def when_gathering(self) -> Deferred:
        """Fires with the attributes of the C{<Gather>} once the call waits on one."""
        return self._waiters.wait(lambda: self._gather.attrs if self._gather else None)

    def when_stream(self, index: int = 0) -> Deferred:
        """Fires with stream number C{index} once it is open (or failed to open)."""

        def check() -> MediaStream | None:
            if len(self.streams) > index and self.streams[index].state != "connecting":
                return self.streams[index]
            return None

        return self._waiters.wait(check)

    def when_webhook(self, kind: str, count: int = 1) -> Deferred:
        """Fires with the C{count}th answered webhook of C{kind} (e.g. "status")."""

        def check() -> Webhook | None:
            done = [h for h in self.webhooks if h.kind == kind and (h.code or h.error)]
            return done[count - 1] if len(done) >= count else None

        return self._waiters.wait(check)

    # -- call progress (outbound) ---------------------------------------------

    def initiate(self) -> Deferred:
        """Twilio starts dialling: the C{initiated} callback (sent anyway by L{ring})."""
        self._expect({"queued"}, "initiate")
        return self._act(self._progress_flow(self._initiate_flow))

    def ring(self) -> Deferred:
        """The callee's phone rings: C{initiated} and C{ringing} callbacks."""
        self._expect({"queued"}, "ring")
        return self._act(self._progress_flow(self._ring_flow))

    def answer(self) -> Deferred:
        """The callee picks up: C{answered} callback, then the TwiML runs."""
        self._expect({"queued", "ringing"}, "answer")
        return self._act(self._progress_flow(self._answer_flow))

    def busy(self) -> Deferred:
        """The callee is busy: the call ends C{busy}."""
        self._expect({"queued", "ringing"}, "busy")
        return self._act(self._progress_flow(self._unanswered_flow, "busy"))

    def no_answer(self) -> Deferred:
        """Nobody picks up: the call ends C{no-answer}."""
        self._expect({"queued", "ringing"}, "no_answer")
        return self._act(self._progress_flow(self._unanswered_flow, "no-answer"))

    def fail(self) -> Deferred:
        """The call cannot be connected: it ends C{failed}."""
        self._expect({"queued", "ringing"}, "fail")
        return self._act(self._progress_flow(self._unanswered_flow, "failed"))

    def caller_hangup(self) -> Deferred:
        """
        The person on the phone hangs up: open streams get C{stop} and close,
        the call ends C{completed} (C{canceled} if an inbound call was not answered yet).
        """
        if self.status != "in-progress" and not (
            self.direction == "inbound" and self.status == "ringing"
        ):
            raise FakeTwilioError(f"caller_hangup on a {self.status} call {self.sid}")
        self._finish("completed" if self.status == "in-progress" else "canceled")
        return self._act(self._status_event("completed"))

    # -- answering-machine detection -----------------------------------------

    def detect(self, callee: str, greeting: float = 0.0) -> Deferred:
        """
        Who answered, as Twilio's async AMD reports it: C{human}, C{machine},
        C{fax} or C{unknown}.  A machine's result comes C{greeting} seconds
        later on the fake's clock (the end of its greeting, the beep) under
        C{DetectMessageEnd}, at once as C{machine_start} under C{Enable}.
        Fires once the callback is answered (for a delayed one, advance the
        clock, then wait on L{when_webhook}C{("amd")}).
        """
        if self.status != "in-progress":
            raise FakeTwilioError(f"detect() on a {self.status} call {self.sid}")
        if not self.machine_detection or not self.async_amd or not self.amd_callback:
            raise FakeTwilioError(f"call {self.sid} was not created with async AMD")
        end = self.machine_detection == "DetectMessageEnd"
        answered_by = {
            "human": "human",
            "machine": "machine_end_beep" if end else "machine_start",
            "fax": "fax",
            "unknown": "unknown",
        }[callee]
        if callee == "machine" and end and greeting > 0:
            self.fake._call_later(
                greeting, lambda: self._spawn(self._amd_callback(answered_by, greeting))
            )
            return succeed(self)
        return self._act(self._amd_callback(answered_by, greeting))

    async def _amd_callback(self, answered_by: str, took: float) -> None:
        if not self.is_live:
            return
        params = [
            *self._params(),
            ("AnsweredBy", answered_by),
            ("MachineDetectionDuration", str(round(took * 1000))),
        ]
        assert self.amd_callback is not None
        await self.fake._send_webhook(
            self, "amd", self.amd_callback, self.amd_callback_method, params
        )

    # -- caller input ---------------------------------------------------------

    def gather_result(self, speech: str, confidence: float = 0.9) -> Deferred:
        """The caller said C{speech}: POST SpeechResult/Confidence to the Gather action."""
        gather = self._expect_gather("speech")
        return self._resume(gather, [("SpeechResult", speech), ("Confidence", str(confidence))])

    def gather_digits(self, digits: str, finished_on_key: str | None = None) -> Deferred:
        """The caller pressed C{digits}: POST Digits to the Gather action."""
        gather = self._expect_gather("dtmf")
        params = [("Digits", digits)]
        if finished_on_key is not None:
            params.append(("FinishedOnKey", finished_on_key))
        return self._resume(gather, params)

    def gather_timeout(self) -> Deferred:
        """The caller said nothing: Twilio moves on to the verb after C{<Gather>}."""
        gather = self._expect_gather(None)
        return self._resume(gather, None)

    def _expect_gather(self, kind: str | None) -> _Gather:
        gather = self._gather
        if gather is None or self.waiting != "gather":
            raise FakeTwilioError(f"call {self.sid} is not waiting on a <Gather>")
        if kind is not None and kind not in gather.inputs:
            raise FakeTwilioError(
                f"<Gather input={gather.attrs.get('input', 'dtmf')!r}> takes no {kind}"
            )
        return gather

    def _resume(self, gather: _Gather, params: list[tuple[str, str]] | None) -> Deferred:
        self._gather = None
        gather.result.callback(params)
        return self.when_settled()

    # -- activity bookkeeping -------------------------------------------------

    def _expect(self, statuses: set[str], what: str) -> None:
        if self.direction == "inbound":
            raise FakeTwilioError(f"{what}() is for outbound calls; {self.sid} is inbound")
        if self.status not in statuses:
            raise FakeTwilioError(f"{what}() on a {self.status} call {self.sid}")

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
        log.failure("The fake Twilio crashed on call {sid}", failure, sid=self.sid)

    def _changed(self) -> None:
        self._waiters.changed()
        if not self.is_live and self._active == 0:
            self._waiters.close(CallEnded(f"call {self.sid} ended {self.status}"))

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

    def _abandon(self) -> None:
        """Stop the running TwiML document (a redirect, or the call ended)."""
        self._gen += 1
        self._gather = None
        if self._wait is not None:
            self._wait.cancel()

    def _set_status(self, status: str) -> None:
        self.status = status
        self.status_history.append(status)

    def _finish(self, status: str) -> bool:
        """End the call now (streams get C{stop}); the caller sends the callback."""
        if not self.is_live:
            return False
        self._set_status(status)
        self.ended_at = self.fake.clock.seconds()
        self._cancel_ring_timer()
        self._abandon()
        for stream in self.streams:
            stream._close_by_provider()
        return True

    def _cancel_ring_timer(self) -> None:
        if self._ring_timer is not None and self._ring_timer.active():
            self._ring_timer.cancel()
        self._ring_timer = None

    def _redirect(self, url: str | None, method: str, twiml: str | None) -> None:
        """A REST update with new TwiML: stop what runs (streams get C{stop}), run it."""
        self._abandon()
        for stream in self.streams:
            stream._close_by_provider()
        gen = self._gen
        if url:
            self._spawn_soon(self._fetch_and_run, gen, "update", url, method, [])
        else:
            self._spawn_soon(self._run_document, gen, twiml, None)

    # -- flows ----------------------------------------------------------------

    async def _progress_flow(self, flow: Callable[..., Any], *args: Any) -> None:
        await self._progress.acquire()
        try:
            await flow(*args)
        finally:
            self._progress.release()

    async def _initiate_flow(self) -> None:
        if self._initiated or self.status != "queued":
            return
        self._initiated = True
        await self._status_event("initiated")

    async def _ring_flow(self) -> None:
        await self._initiate_flow()
        if self.status != "queued":
            return
        self._set_status("ringing")
        if self.fake.honour_timeout:
            self._ring_timer = self.fake._call_later(self.timeout, self._ring_timed_out)
        await self._status_event("ringing")

    def _ring_timed_out(self) -> None:
        self._ring_timer = None
        if self.status == "ringing" and self._finish("no-answer"):
            self._spawn(self._status_event("completed"))

    async def _answer_flow(self) -> None:
        await self._ring_flow()
        if self.status != "ringing":
            return
        self._cancel_ring_timer()
        self._set_status("in-progress")
        self.answered_at = self.fake.clock.seconds()
        gen = self._gen
        await self._status_event("answered")
        if not self._current(gen):
            return
        # The rest runs outside the progress lock: the document may block for long.
        if self.url:
            self._spawn(self._fetch_and_run(gen, "voice", self.url, self.method, []))
        else:
            self._spawn(self._run_document(gen, self.twiml, None))

    async def _unanswered_flow(self, status: str) -> None:
        if status == "no-answer":
            await self._ring_flow()
        elif status == "busy":
            await self._initiate_flow()
        if self._finish(status):
            await self._status_event("completed")

    async def _inbound_flow(self) -> None:
        await self._fetch_and_run(self._gen, "voice", self.url, self.method, [])

    async def _answer_inbound(self) -> None:
        """An inbound call's TwiML did something other than C{<Reject>}: Twilio picks up."""
        if self.direction == "inbound" and self.status == "ringing":
            self._set_status("in-progress")
            self.answered_at = self.fake.clock.seconds()
            await self._status_event("answered")

    # -- webhooks -------------------------------------------------------------

    def _params(self, call_status: str | None = None) -> list[tuple[str, str]]:
        """The parameters every voice webhook for this call carries."""
        return [
            ("AccountSid", self.account_sid),
            ("ApiVersion", API_VERSION),
            ("CallSid", self.sid),
            ("CallStatus", call_status or self.status),
            ("Called", self.to),
            ("Caller", self.from_),
            ("Direction", self.direction),
            ("From", self.from_),
            ("To", self.to),
        ]

    async def _status_event(self, event: str) -> None:
        """Send the status callback for C{event} if the app asked for it."""
        if not self.status_callback:
            return
        if event != "completed" and event not in self.status_callback_events:
            return
        call_status = {"initiated": "initiated", "ringing": "ringing", "answered": "in-progress"}
        params = self._params(call_status.get(event, self.status))
        params += [
            ("CallbackSource", "call-progress-events"),
            ("SequenceNumber", str(self._sequence)),
            ("Timestamp", rfc2822(self.fake.clock.seconds())),
        ]
        self._sequence += 1
        if event == "completed":
            params.append(("CallDuration", str(self.duration)))
        await self.fake._send_webhook(
            self, "status", self.status_callback, self.status_callback_method, params
        )

    async def _fetch(
        self, kind: str, url: str, method: str, extra: list[tuple[str, str]]
    ) -> Webhook:
        return await self.fake._send_webhook(self, kind, url, method, self._params() + extra)

    async def _fetch_and_run(
        self, gen: int, kind: str, url: str, method: str, extra: list[tuple[str, str]]
    ) -> None:
        """Fetch TwiML from C{url} and run it; an unusable answer ends the call."""
        hook = await self._fetch(kind, url, method, extra)
        if not hook.ok and kind == "voice" and self.fallback_url and self._current(gen):
            url = self.fallback_url
            hook = await self._fetch("fallback", url, self.fallback_method, extra)
        if not self._current(gen):
            return
        if not hook.ok:
            await self._application_error()
            return
        await self._run_document(gen, hook.response.decode("utf-8", "replace"), url)

    def _move_on(
        self, gen: int, kind: str, url: str, method: str, extra: list[tuple[str, str]]
    ) -> None:
        """
        Control leaves this document for C{url}: fetch and run it as new call
        work, so a long chain of actions and redirects does not nest deeper.
        """
        self._spawn(self._fetch_and_run(gen, kind, url, method, extra))

    async def _application_error(self) -> None:
        """Twilio says "an application error has occurred" and hangs up."""
        if self._finish("completed"):
            await self._status_event("completed")

    # -- TwiML ----------------------------------------------------------------

    def _current(self, gen: int) -> bool:
        return gen == self._gen and self.is_live

    async def _run_document(self, gen: int, text: str | None, url: str | None) -> None:
        """Execute a TwiML document top-down; one that runs out hangs up."""
        if not self._current(gen):
            return
        self.document_url = url
        try:
            root = ElementTree.fromstring((text or "").strip())
        except ElementTree.ParseError as e:
            self.errors.append(f"12100 Document parse failure: {e} in {text!r}")
            await self._application_error()
            return
        if root.tag != "Response":
            self.errors.append(f"12100 Document parse failure: root <{root.tag}>, not <Response>")
            await self._application_error()
            return
        for element in root:
            if not self._current(gen):
                return
            if await self._run_verb(gen, element, url):
                return
        if self._current(gen) and self._finish("completed"):
            await self._status_event("completed")

    async def _run_verb(self, gen: int, element: ElementTree.Element, url: str | None) -> bool:
        """Run one verb; C{True} when control left this document."""
        name = element.tag
        text = (element.text or "").strip()
        attributes = dict(element.attrib)
        if name == "Reject":
            self.verbs.append(Verb(name, "", attributes))
            if self.direction == "inbound" and self.status == "ringing":
                status = "busy" if attributes.get("reason") == "busy" else "no-answer"
            else:
                status = "completed"
            if self._finish(status):
                await self._status_event("completed")
            return True
        await self._answer_inbound()
        if not self._current(gen):
            return True
        if name in ("Say", "Play"):
            self.verbs.append(Verb(name, text, attributes))
            return False
        if name == "Pause":
            self.verbs.append(Verb(name, "", attributes))
            seconds = float(attributes.get("length", "1")) * self.fake.pause_scale
            if seconds > 0:
                await self._block(task.deferLater(self.fake.clock, seconds), "pause")
            return False
        if name == "Hangup":
            self.verbs.append(Verb(name, "", attributes))
            if self._finish("completed"):
                await self._status_event("completed")
            return True
        if name == "Redirect":
            self.verbs.append(Verb(name, text, attributes))
            target = self._resolve(url, text)
            if target is None:
                return await self._bad_url(f"<Redirect> to {text!r}")
            method = attributes.get("method", "POST")
            self._move_on(gen, "redirect", target, method, [])
            return True
        if name == "Gather":
            return await self._run_gather(gen, element, url)
        if name == "Connect":
            return await self._run_connect(gen, element, url)
        if name == "Dial":
            return await self._run_dial(gen, element)
        if name == "Start":
            self.verbs.append(Verb(name, "", attributes))
            for child in element:
                if child.tag == "Stream":
                    await self._open_stream(child, bidirectional=False)
            return False
        if name == "Enqueue":
            self.verbs.append(Verb(name, text, attributes))
            await self._block(Deferred(), "enqueue")
            return True
        self.verbs.append(Verb(name, text, attributes))
        self.errors.append(f"12200 the fake does not run <{name}>; skipped")
        return False

    def _resolve(self, document_url: str | None, target: str) -> str | None:
        """An absolute URL for C{target} relative to the current document."""
        if _is_http_url(target):
            return target
        if document_url is None:
            return None
        return urljoin(document_url, target)

    async def _bad_url(self, what: str) -> bool:
        self.errors.append(f"11100 Invalid URL format: {what}")
        await self._application_error()
        return True

    async def _run_gather(self, gen: int, element: ElementTree.Element, url: str | None) -> bool:
        attributes = dict(element.attrib)
        self.verbs.append(Verb("Gather", "", attributes))
        for child in element:
            self.verbs.append(Verb(child.tag, (child.text or "").strip(), dict(child.attrib)))
        inputs = frozenset(attributes.get("input", "dtmf").split())
        gather = _Gather(attributes, url, inputs, Deferred())
        self._gather = gather
        params = await self._block(gather.result, "gather")
        if not self._current(gen):
            return True
        if params is None and attributes.get("actionOnEmptyResult", "false") != "true":
            return False
        action = attributes.get("action") or url
        target = self._resolve(url, action) if action else None
        if target is None:
            return await self._bad_url(f"<Gather action={action!r}>")
        method = attributes.get("method", "POST")
        self._move_on(gen, "action", target, method, params or [])
        return True

    async def _run_dial(self, gen: int, element: ElementTree.Element) -> bool:
        """
        C{<Dial>} one number (as text or one C{<Number>}): a child leg rings
        the person until L{person_answers} / L{person_hangs_up}; then the
        verbs after the C{<Dial>} run.
        """
        attributes = dict(element.attrib)
        number_element = next((child for child in element if child.tag == "Number"), None)
        holder = number_element if number_element is not None else element
        number = (holder.text or "").strip()
        self.verbs.append(Verb("Dial", number, attributes))
        if not re.fullmatch(r"\+[1-9]\d{1,14}", number):
            self.errors.append(f"13223 Dial: invalid phone number {number!r}")
            return False
        self.dialled = Dialled(
            number=number,
            caller_id=attributes.get("callerId"),
            sid=new_sid("CA"),
            attrs=dict(number_element.attrib) if number_element is not None else {},
        )
        self._dial = Deferred()
        try:
            await self._block(self._dial, "dial")
        except CancelledError:
            return True
        return not self._current(gen)

    def person_answers(self) -> Deferred:
        """The person a C{<Dial>} rings answers: the C{<Number>}'s status callback (answered)."""
        dialled = self._expect_dial()
        dialled.answered = True
        url = dialled.attrs.get("statusCallback")
        events = set(dialled.attrs.get("statusCallbackEvent", "").replace(",", " ").split())
        if not url or "answered" not in events:
            return self.when_settled()
        params = [
            ("AccountSid", self.account_sid),
            ("ApiVersion", API_VERSION),
            ("CallSid", dialled.sid),
            ("ParentCallSid", self.sid),
            ("CallStatus", "in-progress"),
            ("Direction", "outbound-dial"),
            ("From", dialled.caller_id or self.from_),
            ("To", dialled.number),
            ("CallbackSource", "call-progress-events"),
            ("SequenceNumber", "0"),
        ]
        method = dialled.attrs.get("statusCallbackMethod", "POST")
        return self._act(self.fake._send_webhook(self, "dial-status", url, method, params))

    def person_hangs_up(self) -> Deferred:
        """The dialled person hangs up: the C{<Dial>} ends and the document carries on."""
        self._expect_dial()
        d, self._dial = self._dial, None
        self._spawn_soon(_resume, d)
        return self.when_settled()

    def _expect_dial(self) -> Dialled:
        if self.waiting != "dial" or self.dialled is None:
            raise FakeTwilioError(f"{self.sid} is not dialling anyone (waiting: {self.waiting})")
        return self.dialled

    async def _run_connect(self, gen: int, element: ElementTree.Element, url: str | None) -> bool:
        attributes = dict(element.attrib)
        self.verbs.append(Verb("Connect", "", attributes))
        stream_element = next((child for child in element if child.tag == "Stream"), None)
        if stream_element is None:
            nouns = [child.tag for child in element]
            self.errors.append(f"12200 the fake only connects <Stream>, not {nouns}")
            return False
        stream = await self._open_stream(stream_element, bidirectional=True)
        if not self._current(gen):
            return True
        if stream.state != "closed":
            await self._block(stream.when_closed(), "stream")
        if not self._current(gen):
            return True
        action = attributes.get("action")
        if not action:
            return False
        target = self._resolve(url, action)
        if target is None:
            return await self._bad_url(f"<Connect action={action!r}>")
        self._move_on(gen, "action", target, attributes.get("method", "POST"), [])
        return True

    async def _open_stream(self, element: ElementTree.Element, bidirectional: bool) -> MediaStream:
        attributes = dict(element.attrib)
        url = attributes.get("url", "")
        self.verbs.append(Verb("Stream", url, attributes))
        parameters = {
            child.get("name", ""): child.get("value", "")
            for child in element
            if child.tag == "Parameter"
        }
        track = attributes.get("track", "inbound_track")
        tracks = {"inbound_track": ["inbound"], "outbound_track": ["outbound"]}.get(
            track, ["inbound", "outbound"]
        )
        stream = MediaStream(
            self,
            url,
            parameters=parameters,
            tracks=["inbound"] if bidirectional else tracks,
            bidirectional=bidirectional,
            name=attributes.get("name"),
            status_callback=attributes.get("statusCallback"),
            status_callback_method=attributes.get("statusCallbackMethod", "POST"),
        )
        self.streams.append(stream)
        await stream._connect()
        return stream


class TwilioDialect:
    """Twilio's Media Streams messages (C{providers.md} section 1.7)."""

    provider = "twilio"
    audio = ULAW_8K

    def opening(self, stream: MediaStream) -> list[dict[str, Any]]:
        """C{connected}, then C{start} with the call, tracks and C{<Parameter>}s."""
        return [
            {"event": "connected", "protocol": "Call", "version": "1.0.0"},
            {
                "event": "start",
                "sequenceNumber": str(stream.next_seq()),
                "start": {
                    "accountSid": stream.call.account_sid,
                    "streamSid": stream.sid,
                    "callSid": stream.call.sid,
                    "tracks": list(stream.tracks),
                    "customParameters": dict(stream.parameters),
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                },
                "streamSid": stream.sid,
            },
        ]

    def media(
        self, stream: MediaStream, frame: bytes, chunk: int, timestamp: int
    ) -> dict[str, Any]:
        """One inbound-track frame, numbered and timed as strings."""
        return {
            "event": "media",
            "sequenceNumber": str(stream.next_seq()),
            "media": {
                "track": "inbound",
                "chunk": str(chunk),
                "timestamp": str(timestamp),
                "payload": base64.b64encode(frame).decode("ascii"),
            },
            "streamSid": stream.sid,
        }

    def dtmf(self, stream: MediaStream, digit: str) -> dict[str, Any]:
        """A key press on the inbound track."""
        return {
            "event": "dtmf",
            "streamSid": stream.sid,
            "sequenceNumber": str(stream.next_seq()),
            "dtmf": {"track": "inbound_track", "digit": digit},
        }

    def mark_echo(self, stream: MediaStream, name: str) -> dict[str, Any]:
        """The app's mark, sent back once played."""
        return {
            "event": "mark",
            "sequenceNumber": str(stream.next_seq()),
            "streamSid": stream.sid,
            "mark": {"name": name},
        }

    def cleared(self, stream: MediaStream) -> None:
        """Twilio does not answer a clear."""
        return None

    def stop(self, stream: MediaStream) -> dict[str, Any]:
        """The C{stop} message before Twilio closes the socket."""
        return {
            "event": "stop",
            "sequenceNumber": str(stream.next_seq()),
            "streamSid": stream.sid,
            "stop": {"accountSid": stream.call.account_sid, "callSid": stream.call.sid},
        }

    def parse(self, stream: MediaStream, message: Any) -> AppMessage:
        """C{media}, C{mark} or C{clear}, each naming the stream's C{streamSid}."""
        event = message.get("event") if isinstance(message, dict) else None
        if event not in ("media", "mark", "clear"):
            raise StreamProtocolError(f"unknown event: {json.dumps(message)[:80]!r}")
        if message.get("streamSid") != stream.sid:
            raise StreamProtocolError(
                f"{event} for streamSid {message.get('streamSid')!r}, not {stream.sid}"
            )
        if event == "media":
            try:
                return AppMessage("media", audio=decode_payload(message["media"]["payload"]))
            except (KeyError, TypeError, ValueError) as e:
                raise StreamProtocolError(f"bad media payload: {e!r}") from None
        if event == "mark":
            try:
                return AppMessage("mark", name=message["mark"]["name"])
            except (KeyError, TypeError):
                raise StreamProtocolError(f"mark without a name: {message!r}") from None
        return AppMessage("clear")


class MediaStream(MediaStreamClient):
    """
    One Media Streams WebSocket from the fake to the app, Twilio's side of it.

    Everything the shared L{MediaStreamClient} records and waits for, plus
    Twilio's rules: C{wss://} only, the query string dropped, the upgrade
    signed with C{X-Twilio-Signature}, C{dtmf} only on bidirectional streams,
    stream status callbacks, and C{closed_by} "twilio" when Twilio ends it.
    """

    usage_error = FakeTwilioError

    def __init__(
        self,
        call: FakeCall,
        url: str,
        *,
        parameters: dict[str, str],
        tracks: list[str],
        bidirectional: bool,
        name: str | None = None,
        status_callback: str | None = None,
        status_callback_method: str = "POST",
    ) -> None:
        fake = call.fake
        super().__init__(
            TWILIO_DIALECT,
            url,
            clock=fake.clock,
            reactor=fake.reactor,
            call_later=fake._call_later,
            bidirectional=bidirectional,
            sid=new_sid("MZ"),
            ws_options=fake.ws_options,
        )
        self.call = call
        self.fake = fake
        self.parameters = parameters
        self.tracks = tracks
        self.name = name
        self.status_callback = status_callback
        self.status_callback_method = status_callback_method

    @property
    def custom_parameters(self) -> dict[str, str]:
        """The C{<Parameter>}s, as sent in C{start.customParameters}."""
        return dict(self.parameters)

    def send_dtmf(self, digit: str) -> None:
        """The caller presses a key (bidirectional streams only, as on Twilio)."""
        self._expect_open("send_dtmf")
        if not self.bidirectional:
            raise FakeTwilioError("Twilio sends dtmf only on <Connect><Stream>")
        super().send_dtmf(digit)

    def send_stop(self) -> Deferred:
        """Twilio stops the stream: C{stop}, then a clean close; the TwiML moves on."""
        return super().send_stop()

    # -- Twilio around the socket ---------------------------------------------

    async def _connect(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme != "wss" or not parts.hostname:
            self._failed(f"31922 Stream URL must be wss:// (got {self.url!r})")
            return
        if parts.query:
            self.errors.append(f"Twilio drops the query string of a Stream url: {self.url!r}")
        signed = urlunsplit(("wss", parts.netloc, parts.path or "/", "", ""))
        scheme = "ws" if self.fake.insecure_ws else "wss"
        headers = self.fake._signature_header(signed, {})
        target = urlunsplit((scheme, parts.netloc, parts.path or "/", "", ""))
        await self._dial(target, headers, useragent="Twilio.TmeWs/1.0")

    def _record_error(self, error: str) -> None:
        self.errors.append(error)
        self.call.errors.append(error)

    def _describe_connect_failure(self, error: Exception) -> str:
        return f"31920 Stream - WebSocket - Connection failed: {error!r}"

    def _describe_handshake_failure(self, reason: str | None) -> str:
        return f"31920 Stream - WebSocket - Handshake Error: {reason}"

    def _started(self) -> None:
        self._stream_status("stream-started")

    def _opened_hook(self) -> None:
        self.call._changed()

    def _stopped(self) -> None:
        self._stream_status("stream-stopped")

    def _failed_hook(self, error: str) -> None:
        self._stream_status("stream-error", error)

    def _stream_status(self, event: str, error: str | None = None) -> None:
        if not self.status_callback:
            return
        params = [
            ("AccountSid", self.call.account_sid),
            ("CallSid", self.call.sid),
            ("StreamSid", self.sid),
            ("StreamName", self.name or self.sid),
            ("StreamEvent", event),
            ("Timestamp", rfc2822(self.fake.clock.seconds())),
        ]
        if error is not None:
            params.append(("StreamError", error))
        self.call._spawn(
            self.fake._send_webhook(
                self.call,
                "stream-status",
                self.status_callback,
                self.status_callback_method,
                params,
            )
        )


TWILIO_DIALECT = TwilioDialect()


class _RestResource(Resource):
    """The REST API root; every path is routed by L{FakeTwilio}."""

    isLeaf = True

    def __init__(self, fake: FakeTwilio) -> None:
        super().__init__()
        self._fake = fake

    def render(self, request: Request) -> bytes | int:
        return self._fake._render(request)


def _json(request: Request, status: int, body: dict[str, Any]) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", b"application/json; charset=utf-8")
    return json.dumps(body).encode("utf-8")


def _page(path: str, calls: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "calls": calls,
        "page": 0,
        "page_size": 50,
        "start": 0,
        "end": max(len(calls) - 1, 0),
        "uri": path,
        "first_page_uri": path,
        "next_page_uri": None,
        "previous_page_uri": None,
    }


def _is_address(value: str) -> bool:
    """An E.164-ish number (punctuation allowed), C{client:...} or C{sip:...}."""
    if value.startswith(("client:", "sip:")):
        return True
    return re.fullmatch(r"\+?[0-9]{3,15}", re.sub(r"[\s().-]", "", value)) is not None


def _is_http_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _ignore_result(f: Callable[[], Deferred]) -> Callable[[], None]:
    def run() -> None:
        try:
            f().addErrback(lambda failure: log.failure("automatic call outcome", failure))
        except FakeTwilioError:
            pass  # the test moved the call on first

    return run


async def _resume(d: Deferred) -> None:
    """Let a blocked verb go on (a dialled person hung up)."""
    d.callback(None)
