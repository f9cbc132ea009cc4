"""
Twilio's webhooks: signature first, then status callbacks, answers, and the
TwiML that keeps each call doing what the call manager asked.

Every request's signature is checked before anything else, against every
URL Twilio could have signed (listed by L{voicecalld.web.public_url}); a
bad or missing signature gets 403, one log line naming every URL tried, and
changes nothing.  Twilio's enumerated values (C{CallStatus}, C{Direction},
C{AnsweredBy}) are read case-insensitively.  Events are applied (and
stored) before Twilio gets its answer; a retried request is answered the
same way without repeating anything.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web import resource
from twisted.web.server import NOT_DONE_YET

from voicecalld.providers.twilio import twiml
from voicecalld.providers.twilio.provider import END_REASONS, TwilioProvider, twilio_status
from voicecalld.providers.twilio.signature import HEADER, TwilioSignature
from voicecalld.values import events as ev
from voicecalld.values.states import CallState
from voicecalld.web.public_url import UrlRules, from_twisted_request, reconstruct, redacted
from voicecalld.web.signatures import check

REPLAY_MEMORY = 10 * 60.0
REPLAY_ENTRIES = 10_000
XML = b"application/xml"


class _Params:
    """Form parameters, possibly with repeated names."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self._pairs = pairs

    def getall(self, name: str) -> list[str]:
        return [value for key, value in self._pairs if key == name]

    def get(self, name: str, default: str | None = None) -> str | None:
        values = self.getall(name)
        return values[0] if values else default


class _Answer:
    def __init__(self, code: int, body: bytes, content_type: bytes | None) -> None:
        self.code = code
        self.body = body
        self.content_type = content_type


class TwilioWebhook(resource.Resource):
    """The webhook at C{serve.path} for C{provider: "twilio"}."""

    isLeaf = True
    log = Logger()

    def __init__(self, provider: TwilioProvider) -> None:
        super().__init__()
        self.provider = provider
        settings = provider.settings
        self._token = settings.twilio.auth_token.reveal()
        self._skip = settings.skip_signature_verification
        self._rules = UrlRules.from_settings(settings, public_url=provider.known_public_url)
        self._answers: OrderedDict[str, tuple[float, _Answer]] = OrderedDict()

    def use_public_url(self, known_public_url: str | None) -> None:
        """Check signatures against this public URL (or rebuild it, when None)."""
        self._rules = UrlRules.from_settings(self.provider.settings, public_url=known_public_url)

    def render(self, request):
        """POST only; any other method gets 405 (Twisted's default is 501 for some)."""
        if request.method == b"POST":
            return self.render_POST(request)
        request.setResponseCode(405)
        request.setHeader(b"allow", b"POST")
        return b"Method Not Allowed\n"

    def render_POST(self, request):
        body = request.content.read()
        try:
            pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
        except UnicodeDecodeError:
            return self._refuse(request, 400, "body is not UTF-8 form data")
        params = _Params(pairs)
        signature = request.getHeader(HEADER)
        checked = reconstruct(from_twisted_request(request), self._rules)
        if self._skip:
            self.log.warn(
                "Twilio webhook for {url} accepted WITHOUT a signature check"
                " (skipSignatureVerification)",
                url=redacted(checked.url),
                log_code="webhook.unverified",
            )
        elif not signature or not self._signed(checked.candidates, pairs, signature):
            urls = [redacted(url) for url in checked.candidates]
            self.log.warn(
                "Twilio webhook refused: {why} for any of {count} URLs: {tried} (URL from {rule})",
                why="invalid signature" if signature else "no X-Twilio-Signature",
                count=len(urls),
                tried=", ".join(urls),
                url=urls[0],
                urls=urls,
                rule=checked.reason,
                log_code="webhook.bad_signature",
            )
            return self._refuse(request, 403, "invalid signature")
        key = (
            "twilio:"
            + hashlib.sha256(
                "\n".join(
                    [
                        checked.url,
                        "&".join(sorted(f"{k}={v}" for k, v in pairs)),
                        (signature or b"").decode("latin-1"),
                    ]
                ).encode()
            ).hexdigest()
        )
        replay = self._remembered(key)
        if replay is not None:
            self.log.info("Twilio webhook replayed; answered as before", log_code="webhook.replay")
            return self._write(request, replay)
        query = dict(parse_qsl(urlsplit(request.uri.decode("latin-1")).query))

        def answered(answer: _Answer) -> None:
            if answer.code == 200:
                self._remember(key, answer)
            request.write(self._write(request, answer))
            request.finish()

        def failed(failure: Any) -> None:
            self.log.failure("Twilio webhook failed", failure, log_code="webhook.error")
            request.setResponseCode(500)
            request.write(b"voicecalld could not apply this webhook; please retry\n")
            request.finish()

        d = Deferred.fromCoroutine(self._handle(query, params, key))
        d.addCallbacks(answered, failed)
        return NOT_DONE_YET

    def _signed(self, candidates: Any, pairs: list[tuple[str, str]], signature: bytes) -> bool:
        return check(candidates, TwilioSignature(self._token, pairs, signature)).accepted

    async def _handle(self, query: dict[str, str], params: _Params, key: str) -> _Answer:
        provider = self.provider
        kind = query.get("type")
        sid = params.get("CallSid")
        call = provider.call_for(query.get("callId"), sid)
        ids = {"call_id": call.call_id if call else query.get("callId"), "provider_call_id": sid}
        status = twilio_status(params.get("CallStatus"))
        if kind == "status" or (kind is None and status in END_REASONS):
            await self._status(status, params, ids)
            return _Answer(204, b"", None)
        if kind is None:
            return await self._voice_url(call, params, key)
        if call is None:
            return _twiml(twiml.hangup())
        if kind == "answer":
            await provider.emit(ev.Answered(dedupe_key=f"twilio:answered:{sid}", **ids))
            return _twiml(provider.answer_document(call, sid))
        if kind == "played":
            provider.played(call, _number(query.get("utt")))
            return _twiml(provider.document(call))
        if kind == "gather":
            await self._gathered(params, query, key, ids)
            return _twiml(provider.document(call))
        if kind == "idle":
            return _twiml(provider.document(call))
        if kind == "stream-ended":
            return _twiml(provider.restart_stream(call, sid))
        return _Answer(400, f"unknown webhook type {kind!r}\n".encode(), b"text/plain")

    async def _status(self, status: str, params: _Params, ids: dict[str, Any]) -> None:
        sid = ids["provider_call_id"]
        sequence = params.get("SequenceNumber") or params.get("Timestamp") or ""
        dedupe = f"twilio:status:{sid}:{status}:{sequence}"
        if status == "ringing":
            await self.provider.emit(ev.Ringing(dedupe_key=dedupe, **ids))
        elif status == "in-progress":
            await self.provider.emit(ev.Answered(dedupe_key=f"twilio:answered:{sid}", **ids))
        elif status in END_REASONS:
            reason = END_REASONS[status]
            if status == "completed" and twilio_status(params.get("AnsweredBy")).startswith(
                "machine"
            ):
                reason = CallState.VOICEMAIL
            await self.provider.emit(
                ev.Ended(reason=reason, detail=f"Twilio: {status}", dedupe_key=dedupe, **ids)
            )

    async def _voice_url(self, call: Any, params: _Params, key: str) -> _Answer:
        provider = self.provider
        if call is not None:
            return _twiml(provider.document(call))
        if twilio_status(params.get("Direction")) != "inbound":
            self.log.warn(
                "Twilio call {sid} ({direction}) was not placed by voicecalld; hanging up",
                sid=params.get("CallSid"),
                direction=params.get("Direction"),
                log_code="webhook.foreign_call",
            )
            return _twiml(twiml.hangup())
        sid = params.get("CallSid")
        outcome = await provider.emit(
            ev.InboundCall(
                provider_call_id=sid,
                from_number=params.get("From") or "",
                to_number=params.get("To") or "",
                dedupe_key=key,
            )
        )
        if isinstance(outcome, ev.Refused):
            return _twiml(twiml.reject())
        call = provider.call_for(getattr(outcome, "call_id", None), sid)
        if call is None:
            return _twiml(twiml.reject())
        provider.emit_later(
            ev.Answered(
                call_id=call.call_id, provider_call_id=sid, dedupe_key=f"twilio:answered:{sid}"
            )
        )
        return _twiml(provider.answer_document(call, sid))

    async def _gathered(
        self, params: _Params, query: dict[str, str], key: str, ids: dict[str, Any]
    ) -> None:
        speech = (params.get("SpeechResult") or "").strip()
        digits = (params.get("Digits") or "").strip()
        if speech:
            confidence = _float(params.get("Confidence"))
            await self.provider.emit(
                ev.Speech(
                    text=speech,
                    confidence=confidence,
                    turn_token=query.get("turn"),
                    dedupe_key=key + ":speech",
                    **ids,
                )
            )
        if digits:
            await self.provider.emit(ev.Dtmf(digits=digits, dedupe_key=key + ":dtmf", **ids))

    def _refuse(self, request: Any, code: int, why: str) -> bytes:
        request.setResponseCode(code)
        request.setHeader(b"content-type", b"text/plain")
        return f"{why}\n".encode()

    def _write(self, request: Any, answer: _Answer) -> bytes:
        request.setResponseCode(answer.code)
        if answer.content_type:
            request.setHeader(b"content-type", answer.content_type)
        return answer.body

    def _remembered(self, key: str) -> _Answer | None:
        now = self.provider.clock.seconds()
        while self._answers:
            oldest = next(iter(self._answers))
            if self._answers[oldest][0] > now - REPLAY_MEMORY:
                break
            del self._answers[oldest]
        entry = self._answers.get(key)
        return entry[1] if entry else None

    def _remember(self, key: str, answer: _Answer) -> None:
        self._answers[key] = (self.provider.clock.seconds(), answer)
        while len(self._answers) > REPLAY_ENTRIES:
            self._answers.popitem(last=False)


def _twiml(document: str) -> _Answer:
    return _Answer(200, document.encode(), XML)


def _number(value: str | None) -> int:
    try:
        return int(value or "0")
    except ValueError:
        return 0


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None
