"""
Plivo's callbacks, as an L{IWebhookDialect}: form-encoded fields into call
events, answered with Plivo XML (or an empty 200 for the hangup callback).

Which callback it is comes from the C{type} in the URLs we give Plivo; the
answer and hangup URLs of a Plivo application (inbound calls) carry none,
and are told apart by C{Event} and C{CallStatus}.  Dedupe keys of
progress events are stable per call (C{plivo:answered:<CallUUID>}); those
of input are the delivery's replay key, so a callback replayed after a
restart changes nothing.
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
from voicecalld.providers.plivo import plivoxml
from voicecalld.providers.plivo.provider import END_REASONS, PlivoProvider, end_reason, plivo_status
from voicecalld.values import events as ev

XML = b"application/xml"
EMPTY = Answer(200, b"", b"text/plain")
# <Hangup reason=...> for each refusal.
HANGUP_REASONS = {ev.Refusal.REJECTED: "rejected", ev.Refusal.BUSY: "busy"}


def document(text: str) -> Answer:
    """A Plivo XML answer."""
    return Answer(200, text.encode(), XML)


def e164(number: str | None) -> str:
    """A number as Plivo sends it (digits, no C{+}) in E.164; SIP URIs as they are."""
    if not number:
        return ""
    if number.startswith("sip:") or number.startswith("+"):
        return number
    return "+" + number if number.isdigit() else number


@implementer(IWebhookDialect)
class PlivoDialect:
    """Reads Plivo's callbacks for one L{PlivoProvider}."""

    name = "Plivo"
    prefix = "plivo"
    log = Logger()

    def __init__(self, provider: PlivoProvider) -> None:
        self.provider = provider

    def parse(self, body: bytes) -> Params:
        return form_params(body)

    def read(self, hook: Hook) -> Reading:
        provider = self.provider
        query, params = hook.query, hook.params
        kind = query.get("type")
        uuid = params.get("CallUUID")
        call = provider.call_for(query.get("callId"), uuid)
        ids = {"call_id": call.call_id if call else query.get("callId"), "provider_call_id": uuid}
        status = plivo_status(params.get("CallStatus"))
        event = plivo_status(params.get("Event"))
        if kind == "hangup" or (kind is None and (event == "hangup" or status in END_REASONS)):
            return Reading.of(EMPTY, *self._ended(status, params, ids))
        if kind == "ring":
            return Reading.of(EMPTY, ev.Ringing(dedupe_key=f"plivo:ring:{uuid}", **ids))
        if kind is None:
            return self._application(call, hook)
        if kind == "amd":
            if call is not None:
                call.machine_reported()
            return Reading.of(EMPTY, self._detected(params, ids))
        if call is None:
            return Reading.of(document(plivoxml.hangup()))
        if kind == "answer":
            return Reading(
                answer=lambda: document(provider.answer_document(call, uuid)),
                events=(ev.Answered(dedupe_key=f"plivo:answered:{uuid}", **ids),),
            )
        if kind == "transfer":
            # Plivo fetched the Dial document of the transfer: the call is handed over.
            return Reading(
                answer=lambda: document(provider.document(call)),
                events=(
                    ev.Transferred(
                        call_id=call.call_id,
                        detail=f"{call.handed_over} (Plivo)",
                        dedupe_key=f"plivo:transferred:{uuid}",
                    ),
                )
                if call.handed_over is not None
                else (),
            )
        if kind == "input":
            return Reading(
                answer=lambda: document(provider.document(call)),
                events=self._input(hook, ids),
            )
        flow = flow_reading(provider, call, kind, query, uuid, document)
        if flow is not None:
            return flow
        return Reading.of(Answer(400, f"unknown callback type {kind!r}\n".encode(), b"text/plain"))

    def _ended(self, status: str, params: Params, ids: dict[str, Any]) -> list[ev.CallEvent]:
        reason = end_reason(status, params.get("HangupSource"))
        cause = params.get("HangupCauseName") or params.get("HangupCause") or status
        return [
            ev.Ended(
                reason=reason,
                detail=f"Plivo: {status} ({cause})",
                dedupe_key=f"plivo:hangup:{ids['provider_call_id']}",
                **ids,
            )
        ]

    def _detected(self, params: Params, ids: dict[str, Any]) -> ev.MachineDetected:
        """
        The machine-detection callback: C{Machine=true} (C{false} read as a
        person, though Plivo reports machines only; the provider reports a
        person when none came).  Plivo reports no end of a machine's greeting,
        so the message waits out the call core's beep wait.
        """
        raw = plivo_status(params.get("Machine"))
        answered_by = {"true": ev.MACHINE, "false": ev.HUMAN}.get(raw, ev.UNKNOWN)
        return ev.MachineDetected(
            answered_by=answered_by,
            raw=f"Machine={raw}",
            dedupe_key=f"plivo:amd:{ids['provider_call_id']}:{raw}",
            **ids,
        )

    def _application(self, call: Any, hook: Hook) -> Reading:
        """The answer URL of a Plivo application: a new inbound call (or one of ours again)."""
        provider, params = self.provider, hook.params
        uuid = params.get("CallUUID")
        if call is not None:
            return Reading(answer=lambda: document(provider.document(call)))
        if plivo_status(params.get("Direction")) != "inbound":
            self.log.warn(
                "Plivo call {uuid} ({direction}) was not placed by voicecalld; hanging up",
                uuid=uuid,
                direction=params.get("Direction"),
                log_code="webhook.foreign_call",
            )
            return Reading.of(document(plivoxml.hangup()))

        def accepted(call_id: str | None) -> Answer:
            call = provider.call_for(call_id, uuid)
            if call is None:
                return document(plivoxml.reject())
            provider.emit_later(
                ev.Answered(
                    call_id=call.call_id,
                    provider_call_id=uuid,
                    dedupe_key=f"plivo:answered:{uuid}",
                )
            )
            return document(provider.answer_document(call, uuid))

        return Reading(
            inbound=ev.InboundCall(
                provider_call_id=uuid,
                from_number=e164(params.get("From")),
                to_number=e164(params.get("To")),
                dedupe_key=hook.key,
            ),
            accepted=accepted,
            refused=lambda refusal: document(plivoxml.reject(HANGUP_REASONS[refusal])),
        )

    def _input(self, hook: Hook, ids: dict[str, Any]) -> tuple[ev.CallEvent, ...]:
        params, key = hook.params, hook.key
        kind = plivo_status(params.get("InputType"))
        speech = (params.get("Speech") or "").strip()
        digits = (params.get("Digits") or "").strip()
        events: list[ev.CallEvent] = []
        if speech and kind != "dtmf":
            events.append(
                ev.Speech(
                    text=speech,
                    confidence=form_float(params.get("SpeechConfidenceScore")),
                    turn_token=hook.query.get("turn"),
                    dedupe_key=key + ":speech",
                    **ids,
                )
            )
        if digits:
            events.append(ev.Dtmf(digits=digits, dedupe_key=key + ":dtmf", **ids))
        return tuple(events)
