"""
Twilio's webhooks, as an L{IWebhookDialect}: form-encoded fields into call
events, answered with TwiML (or 204 for status callbacks).

Which webhook it is comes from the C{type} in the URLs we give Twilio (the
voice URL of an inbound call has none).  Twilio's enumerated values
(C{CallStatus}, C{Direction}, C{AnsweredBy}) are read case-insensitively.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger
from zope.interface import implementer

from voicecalld.providers.common.documents import flow_reading
from voicecalld.providers.common.replay import Answer
from voicecalld.providers.common.webhook import (
    Hook,
    IWebhookDialect,
    Params,
    Reading,
    form_float,
    form_params,
)
from voicecalld.providers.twilio import twiml
from voicecalld.providers.twilio.provider import (
    ANSWERED_BY,
    END_REASONS,
    TwilioProvider,
    twilio_status,
)
from voicecalld.values import events as ev
from voicecalld.values.states import CallState

XML = b"application/xml"
NO_CONTENT = Answer(204)
# <Reject reason=...> for each refusal.
REJECT_REASONS = {ev.Refusal.REJECTED: "rejected", ev.Refusal.BUSY: "busy"}


def document(text: str) -> Answer:
    """A TwiML answer."""
    return Answer(200, text.encode(), XML)


@implementer(IWebhookDialect)
class TwilioDialect:
    """Reads Twilio's webhooks for one L{TwilioProvider}."""

    name = "Twilio"
    prefix = "twilio"
    log = Logger()

    def __init__(self, provider: TwilioProvider) -> None:
        self.provider = provider

    def parse(self, body: bytes) -> Params:
        return form_params(body)

    def read(self, hook: Hook) -> Reading:
        provider = self.provider
        query, params = hook.query, hook.params
        kind = query.get("type")
        sid = params.get("CallSid")
        call = provider.call_for(query.get("callId"), sid)
        ids = {"call_id": call.call_id if call else query.get("callId"), "provider_call_id": sid}
        status = twilio_status(params.get("CallStatus"))
        if kind == "status" or (kind is None and status in END_REASONS):
            return Reading.of(NO_CONTENT, *self._status(status, params, ids))
        if kind is None:
            return self._voice_url(call, hook)
        if kind == "amd":
            return Reading.of(NO_CONTENT, *self._detected(params, ids))
        if call is None:
            return Reading.of(document(twiml.hangup()))
        if kind == "answer":
            return Reading(
                answer=lambda: document(provider.answer_document(call, sid)),
                events=(ev.Answered(dedupe_key=f"twilio:answered:{sid}", **ids),),
            )
        if kind == "transfer":
            return Reading.of(NO_CONTENT, *self._handed_over(call, status, params))
        if kind == "gather":
            return Reading(
                answer=lambda: document(provider.document(call)),
                events=self._gathered(hook, ids),
            )
        flow = flow_reading(provider, call, kind, query, sid, document)
        if flow is not None:
            return flow
        return Reading.of(Answer(400, f"unknown webhook type {kind!r}\n".encode(), b"text/plain"))

    def _status(self, status: str, params: Params, ids: dict[str, Any]) -> list[ev.CallEvent]:
        sid = ids["provider_call_id"]
        sequence = params.get("SequenceNumber") or params.get("Timestamp") or ""
        dedupe = f"twilio:status:{sid}:{status}:{sequence}"
        if status == "ringing":
            return [ev.Ringing(dedupe_key=dedupe, **ids)]
        if status == "in-progress":
            return [ev.Answered(dedupe_key=f"twilio:answered:{sid}", **ids)]
        if status in END_REASONS:
            reason = END_REASONS[status]
            if status == "completed" and twilio_status(params.get("AnsweredBy")).startswith(
                "machine"
            ):
                reason = CallState.VOICEMAIL
            return [ev.Ended(reason=reason, detail=f"Twilio: {status}", dedupe_key=dedupe, **ids)]
        return []

    def _detected(self, params: Params, ids: dict[str, Any]) -> list[ev.CallEvent]:
        """The asynchronous AMD callback: C{AnsweredBy}, unknown values as C{unknown}."""
        raw = twilio_status(params.get("AnsweredBy"))
        answered_by, message_end = ANSWERED_BY.get(raw, (ev.UNKNOWN, False))
        return [
            ev.MachineDetected(
                answered_by=answered_by,
                message_end=message_end,
                raw=raw,
                dedupe_key=f"twilio:amd:{ids['provider_call_id']}:{raw}",
                **ids,
            )
        ]

    def _handed_over(self, call: Any, status: str, params: Params) -> list[ev.CallEvent]:
        # The status callback of the leg our <Dial> placed: its own SID, our call as its parent.
        if call.handed_over is None or status not in ("in-progress", "answered"):
            return []
        leg = params.get("CallSid")
        return [
            ev.Transferred(
                call_id=call.call_id,
                detail=f"{call.handed_over} answered (Twilio leg {leg})",
                dedupe_key=f"twilio:transferred:{leg}",
            )
        ]

    def _voice_url(self, call: Any, hook: Hook) -> Reading:
        provider, params = self.provider, hook.params
        if call is not None:
            return Reading(answer=lambda: document(provider.document(call)))
        sid = params.get("CallSid")
        if twilio_status(params.get("Direction")) != "inbound":
            self.log.warn(
                "Twilio call {sid} ({direction}) was not placed by voicecalld; hanging up",
                sid=sid,
                direction=params.get("Direction"),
                log_code="webhook.foreign_call",
            )
            return Reading.of(document(twiml.hangup()))

        def accepted(call_id: str | None) -> Answer:
            call = provider.call_for(call_id, sid)
            if call is None:
                return document(twiml.reject())
            provider.emit_later(
                ev.Answered(
                    call_id=call.call_id, provider_call_id=sid, dedupe_key=f"twilio:answered:{sid}"
                )
            )
            return document(provider.answer_document(call, sid))

        return Reading(
            inbound=ev.InboundCall(
                provider_call_id=sid,
                from_number=params.get("From") or "",
                to_number=params.get("To") or "",
                dedupe_key=hook.key,
            ),
            accepted=accepted,
            refused=lambda refusal: document(twiml.reject(REJECT_REASONS[refusal])),
        )

    def _gathered(self, hook: Hook, ids: dict[str, Any]) -> tuple[ev.CallEvent, ...]:
        params, key = hook.params, hook.key
        speech = (params.get("SpeechResult") or "").strip()
        digits = (params.get("Digits") or "").strip()
        events: list[ev.CallEvent] = []
        if speech:
            events.append(
                ev.Speech(
                    text=speech,
                    confidence=form_float(params.get("Confidence")),
                    turn_token=hook.query.get("turn"),
                    dedupe_key=key + ":speech",
                    **ids,
                )
            )
        if digits:
            events.append(ev.Dtmf(digits=digits, dedupe_key=key + ":dtmf", **ids))
        return tuple(events)
