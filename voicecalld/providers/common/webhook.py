"""
The webhook pipeline every carrier's requests go through, and the dialect
interface that is each carrier's part of it.

In order: POST only (405 otherwise); the body (its size capped by the
guarded site) parsed by the dialect (400 if it cannot be); the URL the
carrier requested rebuilt (L{voicecalld.web.public_url}) and the verifier
asked about every candidate (403, one log line naming every URL tried, and
nothing changed, on a refusal); a request answered before (same URL,
parameters and signature) answered the same way again without doing
anything; then the dialect reads the request (L{IWebhookDialect.read});
while the daemon stops, a request whose answer needs the call's life in this
process (L{Reading.live}: its media stream) is refused with 503 before
anything changes, so the carrier delivers it again, to the next process;
otherwise its events are applied in order, each durably, an inbound call is
accepted or refused, and only then is the answer computed and sent.  A
failure on the way is a 500 (the carrier retries), and its answer is not
remembered.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from attrs import frozen
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web import resource
from twisted.web.server import NOT_DONE_YET
from zope.interface import Attribute, Interface

from voicecalld.config.model import VoiceCallSettings
from voicecalld.providers.common.replay import Answer, ReplayCache
from voicecalld.providers.common.verify import SignedRequest
from voicecalld.values import events as ev
from voicecalld.web.public_url import UrlRules, from_twisted_request, reconstruct, redacted

Emit = Callable[[ev.CallEvent], Deferred]


class BadBody(Exception):
    """A body the dialect cannot parse; the request gets 400 with this reason."""


class Params:
    """Webhook parameters, possibly with repeated names, in the order sent."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self.pairs = tuple(pairs)

    def getall(self, name: str) -> list[str]:
        """Every value sent for C{name}."""
        return [value for key, value in self.pairs if key == name]

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value sent for C{name}."""
        for key, value in self.pairs:
            if key == name:
                return value
        return default


def form_params(body: bytes) -> Params:
    """An C{application/x-www-form-urlencoded} body's parameters (Twilio, Plivo)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadBody("body is not UTF-8 form data") from None
    return Params(parse_qsl(text, keep_blank_values=True, strict_parsing=False))


def form_float(value: str | None) -> float | None:
    """A form field as a number, or None if it is absent or not one."""
    try:
        return float(value) if value else None
    except ValueError:
        return None


@frozen
class Hook:
    """
    A verified webhook request, as a dialect reads it.

    @ivar query: the query of the URL we gave the carrier (our call id, what it reports).
    @ivar params: the carrier's parameters.
    @ivar key: the request's replay key, unique per delivery: the base of its events' dedupe keys.
    """

    query: dict[str, str]
    params: Params
    key: str


@frozen
class Reading:
    """
    What to do with a webhook: apply C{events} in order, then answer with
    C{answer()}.  For a new inbound call, C{inbound} is applied after them
    and the answer is C{accepted(call_id)} (our id of the new call, None if
    the event was a repeat) or, if it was refused, C{refused(refusal)}: the
    carrier's answer for that L{ev.Refusal}.  C{live} says that the answer
    acts on what only this process has of the call (its media stream, say, to
    start or restart), which a stopping daemon can no longer do: it is
    refused then (503), before anything changes.
    """

    answer: Callable[[], Answer] | None = None
    events: tuple[ev.CallEvent, ...] = ()
    inbound: ev.InboundCall | None = None
    accepted: Callable[[str | None], Answer] | None = None
    refused: Callable[[ev.Refusal], Answer] | None = None
    live: bool = False

    @classmethod
    def of(cls, answer: Answer, *events: ev.CallEvent) -> Reading:
        """Apply C{events}, then answer with a document known in advance."""
        return cls(answer=lambda: answer, events=events)


class IWebhookDialect(Interface):
    """A carrier's webhooks: its fields into call events, and the documents it is answered with."""

    name = Attribute("The carrier's name, for logs ('Twilio').")
    prefix = Attribute("The prefix of its replay keys ('twilio').")

    def parse(body):
        """The request body's L{Params}; raises L{BadBody}."""

    def read(hook):
        """The L{Reading} of the verified L{Hook} C{hook}."""


class WebhookResource(resource.Resource):
    """One carrier's webhook at C{serve.path}: the pipeline of the module docstring."""

    isLeaf = True
    log = Logger()

    def __init__(
        self,
        settings: VoiceCallSettings,
        clock: IReactorTime,
        verifier: Any,
        dialect: Any,
        emit: Emit,
        *,
        public_url: str | None = None,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.clock = clock
        self.verifier = verifier
        self.dialect = dialect
        self.emit = emit
        self.replays = ReplayCache(clock)
        # Requests by outcome (accepted, bad_signature, replay, malformed), for metrics.
        self.outcomes: Counter[str] = Counter()
        self._skip = settings.skip_signature_verification
        self._rules = UrlRules.from_settings(settings, public_url=public_url)
        #: The daemon is stopping (set by the provider): L{Reading.live} requests get 503.
        self.stopping = False

    def use_public_url(self, known_public_url: str | None) -> None:
        """Check signatures against this public URL (or rebuild it, when None)."""
        self._rules = UrlRules.from_settings(self.settings, public_url=known_public_url)

    def render(self, request):
        """POST only; any other method gets 405 (Twisted's default is 501 for some)."""
        if request.method == b"POST":
            return self.render_POST(request)
        self.log.warn(
            "{carrier} webhook from {peer} refused: method {method} (HTTP 405)",
            carrier=self.dialect.name,
            peer=_peer(request),
            method=request.method.decode("latin-1")[:16],
            log_code="webhook.bad_method",
        )
        request.setResponseCode(405)
        request.setHeader(b"allow", b"POST")
        return b"Method Not Allowed\n"

    def render_POST(self, request):
        name = self.dialect.name
        body = request.content.read()
        try:
            params = self.dialect.parse(body)
        except BadBody as e:
            self.log.warn(
                "{carrier} webhook from {peer} refused: {why} (HTTP 400)",
                carrier=name,
                peer=_peer(request),
                why=str(e),
                log_code="webhook.malformed",
            )
            self.outcomes["malformed"] += 1
            return self._refuse(request, 400, str(e))
        checked = reconstruct(from_twisted_request(request), self._rules)
        headers = {
            raw.lower(): values[-1] for raw, values in request.requestHeaders.getAllRawHeaders()
        }
        if self._skip:
            self.log.warn(
                "{carrier} webhook for {url} accepted WITHOUT a signature check"
                " (skipSignatureVerification)",
                carrier=name,
                peer=_peer(request),
                url=redacted(checked.url),
                log_code="webhook.unverified",
            )
        else:
            verification = self.verifier.verify(
                SignedRequest(
                    urls=tuple(checked.candidates),
                    headers=headers,
                    body=body,
                    params=params.pairs,
                    now=self.clock.seconds(),
                )
            )
            if not verification.accepted:
                urls = [redacted(url) for url in checked.candidates]
                self.log.warn(
                    "{carrier} webhook from {peer} refused: {why} for any of {count} URLs:"
                    " {tried} (URL from {rule}; HTTP 403)",
                    carrier=name,
                    peer=_peer(request),
                    why=verification.why,
                    count=len(urls),
                    tried=", ".join(urls),
                    url=urls[0],
                    urls=urls,
                    rule=checked.reason,
                    log_code="webhook.bad_signature",
                )
                self.outcomes["bad_signature"] += 1
                return self._refuse(request, 403, "invalid signature")
        key = self._key(checked.url, params, body, headers)
        replay = self.replays.remembered(key)
        if replay is not None:
            self.outcomes["replay"] += 1
            self.log.info(
                "{carrier} webhook replayed by {peer}; answered as before",
                carrier=name,
                peer=_peer(request),
                log_code="webhook.replay",
            )
            return self._write(request, replay)
        query = dict(parse_qsl(urlsplit(request.uri.decode("latin-1")).query))
        try:
            reading = self.dialect.read(Hook(query, params, key))
        except Exception:
            self.log.failure("{carrier} webhook failed", carrier=name, log_code="webhook.error")
            return self._refuse(request, 500, "voicecalld could not read this webhook")
        if self.stopping and reading.live:
            return self._stopping(request)
        self.outcomes["accepted"] += 1

        def answered(answer: Answer) -> None:
            if answer.code == 200:
                self.replays.remember(key, answer)
            request.write(self._write(request, answer))
            request.finish()

        def failed(failure: Any) -> None:
            self.log.failure(
                "{carrier} webhook failed", failure, carrier=name, log_code="webhook.error"
            )
            request.setResponseCode(500)
            request.write(b"voicecalld could not apply this webhook; please retry\n")
            request.finish()

        d = Deferred.fromCoroutine(self._deliver(reading))
        d.addCallbacks(answered, failed)
        return NOT_DONE_YET

    def _key(self, url: str, params: Params, body: bytes, headers: dict[bytes, bytes]) -> str:
        """Same URL, parameters (in any order; the body, if it has none) and signature."""
        signed = "&".join(sorted(f"{k}={v}" for k, v in params.pairs)) or body.decode("latin-1")
        signature = [headers.get(h, b"").decode("latin-1") for h in self.verifier.headers]
        text = "\n".join([url, signed, *signature])
        return f"{self.dialect.prefix}:" + hashlib.sha256(text.encode()).hexdigest()

    async def _deliver(self, reading: Reading) -> Answer:
        for event in reading.events:
            await self.emit(event)
        if reading.inbound is not None:
            outcome = await self.emit(reading.inbound)
            if isinstance(outcome, ev.Refused):
                return reading.refused(outcome.refusal)
            return reading.accepted(getattr(outcome, "call_id", None))
        return reading.answer()

    def _stopping(self, request: Any) -> bytes:
        """
        503 for a request only this process could act on, now that it stops;
        on a connection that closes, so the carrier's next try reaches the
        next process (through the listen backlog) rather than this one.
        """
        self.log.warn(
            "{carrier} webhook from {peer} refused: voicecalld is stopping and the next"
            " process must answer it (HTTP 503)",
            carrier=self.dialect.name,
            peer=_peer(request),
            log_code="webhook.stopping",
        )
        self.outcomes["stopping"] += 1
        channel = getattr(request, "channel", None)
        if channel is not None:
            channel.persistent = False
        request.setHeader(b"connection", b"close")
        request.setHeader(b"retry-after", b"1")
        return self._refuse(request, 503, "voicecalld is restarting; please retry")

    def _refuse(self, request: Any, code: int, why: str) -> bytes:
        request.setResponseCode(code)
        request.setHeader(b"content-type", b"text/plain")
        return f"{why}\n".encode()

    def _write(self, request: Any, answer: Answer) -> bytes:
        request.setResponseCode(answer.code)
        if answer.content_type:
            request.setHeader(b"content-type", answer.content_type)
        return answer.body


def _peer(request: Any) -> str:
    """The address a request came from, for the log."""
    return str(getattr(request.getClientAddress(), "host", "?"))
