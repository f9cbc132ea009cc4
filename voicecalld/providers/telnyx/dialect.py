"""
Telnyx's webhooks, as an L{IWebhookDialect}: JSON envelopes
(C{data.event_type}, C{data.id}, C{data.payload}) into call events, each
answered with 200 once applied.

The call is found by the Base64 C{client_state} we set (our call id), else
by its C{call_control_id}.  Events are deduplicated on Telnyx's event id
(C{data.id}), which stays the same when Telnyx delivers an event again.
Hang-up causes map to end reasons as upstream maps them, plus the causes
Telnyx documents that upstream leaves out (C{timeout}, C{time_limit},
C{not_found}).  What opens a media stream (C{call.answered},
C{streaming.stopped}) is L{Reading.live}: a stopping daemon answers it 503,
and Telnyx delivers it again (to the connection's failover URL, which is
the same webhook) to the next process.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.logger import Logger
from zope.interface import implementer

from voicecalld.providers.common.replay import Answer
from voicecalld.providers.common.webhook import BadBody, Hook, IWebhookDialect, Params, Reading
from voicecalld.providers.telnyx.provider import TelnyxProvider
from voicecalld.providers.telnyx.rest import TRANSFER_LEG, call_id_from_state
from voicecalld.values import events as ev
from voicecalld.values.record import INBOUND
from voicecalld.values.states import CallState

OK = Answer(200, b"OK\n", b"text/plain")

HANGUP_CAUSES = {
    "normal_clearing": CallState.COMPLETED,
    "normal_unspecified": CallState.COMPLETED,
    "originator_cancel": CallState.HANGUP_BOT,
    "call_rejected": CallState.BUSY,
    "user_busy": CallState.BUSY,
    "no_answer": CallState.NO_ANSWER,
    "no_user_response": CallState.NO_ANSWER,
    "destination_out_of_order": CallState.FAILED,
    "network_out_of_order": CallState.FAILED,
    "service_unavailable": CallState.FAILED,
    "recovery_on_timer_expire": CallState.FAILED,
    "machine_detected": CallState.VOICEMAIL,
    "fax_detected": CallState.VOICEMAIL,
    "user_hangup": CallState.HANGUP_USER,
    "subscriber_absent": CallState.HANGUP_USER,
    # Documented by Telnyx, absent from upstream's table.
    "timeout": CallState.NO_ANSWER,
    "time_limit": CallState.TIMEOUT,
    "not_found": CallState.FAILED,
}
MACHINE_RESULTS = frozenset({"machine", "fax_detected"})
# Telnyx's detection results (standard and premium AMD): who answered.
ANSWERED_BY = {
    "human": ev.HUMAN,
    "human_residence": ev.HUMAN,
    "human_business": ev.HUMAN,
    "machine": ev.MACHINE,
    "fax_detected": ev.FAX,
    "not_sure": ev.UNKNOWN,
    "silence": ev.UNKNOWN,
}
DETECTION_ENDED = ("call.machine.detection.ended", "call.machine.premium.detection.ended")
GREETING_ENDED = ("call.machine.greeting.ended", "call.machine.premium.greeting.ended")


def end_reason(cause: Any) -> CallState:
    """What we call a Telnyx C{hangup_cause} (unknown causes count as completed)."""
    return HANGUP_CAUSES.get(str(cause or "").strip().lower(), CallState.COMPLETED)


class Envelope(Params):
    """A Telnyx webhook body: no form parameters, the decoded JSON envelope."""

    def __init__(self, data: dict[str, Any]) -> None:
        super().__init__([])
        self.event_type = str(data.get("event_type") or "")
        self.event_id = str(data.get("id") or "")
        payload = data.get("payload")
        self.payload: dict[str, Any] = payload if isinstance(payload, dict) else {}


@implementer(IWebhookDialect)
class TelnyxDialect:
    """Reads Telnyx's webhooks for one L{TelnyxProvider}."""

    name = "Telnyx"
    prefix = "telnyx"
    log = Logger()

    def __init__(self, provider: TelnyxProvider) -> None:
        self.provider = provider

    def parse(self, body: bytes) -> Envelope:
        try:
            envelope = json.loads(body)
        except (ValueError, RecursionError):
            raise BadBody("body is not JSON") from None
        data = envelope.get("data") if isinstance(envelope, dict) else None
        if not isinstance(data, dict) or not isinstance(data.get("event_type"), str):
            raise BadBody("not a Telnyx event (no data.event_type)")
        return Envelope(data)

    def read(self, hook: Hook) -> Reading:
        provider = self.provider
        body: Envelope = hook.params  # type: ignore[assignment]
        kind, payload = body.event_type, body.payload
        dedupe = f"telnyx:{body.event_id}" if body.event_id else hook.key
        ccid = payload.get("call_control_id")
        ccid = ccid if isinstance(ccid, str) and ccid else None
        ours = call_id_from_state(payload.get("client_state"))
        if ours is not None and ours.startswith(TRANSFER_LEG):
            return self._transfer_leg(kind, ours[len(TRANSFER_LEG) :], payload, dedupe)
        call = provider.call_for(ours, ccid)
        ids = {"call_id": call.call_id if call else ours, "provider_call_id": ccid}
        if kind == "call.initiated":
            if call is None and payload.get("direction") == "incoming":
                return self._inbound(payload, ccid, dedupe)
            if call is None or call.direction == INBOUND:
                return Reading.of(OK)
            return Reading.of(OK, ev.Ringing(dedupe_key=dedupe, **ids))
        if kind == "call.hangup":
            reason = end_reason(payload.get("hangup_cause"))
            if call is not None and call.machine and reason is CallState.COMPLETED:
                reason = CallState.VOICEMAIL
            detail = f"Telnyx: {payload.get('hangup_cause') or 'hangup'}"
            source = payload.get("hangup_source")
            if source:
                detail += f" (by {source})"
            return Reading.of(OK, ev.Ended(reason=reason, detail=detail, dedupe_key=dedupe, **ids))
        if call is None or ccid is None:
            return Reading.of(OK)
        if kind == "call.answered":

            def answered() -> Answer:
                provider.answered(call, ccid)
                return OK

            # Its answer opens the media stream, with a token of this process.
            return Reading(
                answer=answered,
                events=(ev.Answered(dedupe_key=f"telnyx:answered:{ccid}", **ids),),
                live=provider.streaming or bool(call.dtmf_sequence),
            )
        if kind == "call.speak.started":
            return Reading(answer=lambda: (provider.speak_started(call), OK)[1])
        if kind == "call.speak.ended":
            status = str(payload.get("status") or "")
            return Reading(answer=lambda: (provider.speak_ended(call, status), OK)[1])
        if kind == "call.transcription":
            return Reading.of(OK, *self._transcript(payload, provider.speech(call), dedupe, ids))
        if kind == "call.dtmf.received":
            digit = payload.get("digit")
            if not isinstance(digit, str) or not digit:
                return Reading.of(OK)
            return Reading.of(OK, ev.Dtmf(digits=digit, dedupe_key=dedupe, **ids))
        if kind in ("streaming.stopped", "streaming.failed"):
            stream_id = payload.get("stream_id")
            if kind == "streaming.failed":
                self.log.warn(
                    "Telnyx media stream of {call_id} failed: {why}",
                    call_id=call.call_id,
                    why=payload.get("failure_reason"),
                    log_code="telnyx.stream_failed",
                )
            return Reading(
                answer=lambda: (provider.stream_stopped(call, ccid, stream_id), OK)[1],
                live=provider.streaming,
            )
        if kind == "call.bridged" and call.handed_over is not None:
            # Our leg is bridged to the one the transfer dialled: the person answered.
            return Reading.of(
                OK,
                ev.Transferred(
                    call_id=call.call_id,
                    detail=f"{call.handed_over} answered (Telnyx)",
                    dedupe_key=dedupe,
                ),
            )
        if kind in DETECTION_ENDED or kind in GREETING_ENDED:
            return Reading.of(OK, self._detected(call, kind, payload, dedupe, ids))
        return Reading.of(OK)

    def _detected(
        self, call: Any, kind: str, payload: dict[str, Any], dedupe: str, ids: dict[str, Any]
    ) -> ev.MachineDetected:
        """Who answered (C{detection.ended}), or a machine's greeting ended (C{greeting.ended})."""
        raw = str(payload.get("result") or "").strip().lower()
        if kind in GREETING_ENDED:
            call.machine = True
            return ev.MachineDetected(
                answered_by=ev.MACHINE, message_end=True, raw=raw, dedupe_key=dedupe, **ids
            )
        call.machine = raw in MACHINE_RESULTS
        answered_by = ANSWERED_BY.get(raw, ev.UNKNOWN)
        return ev.MachineDetected(answered_by=answered_by, raw=raw, dedupe_key=dedupe, **ids)

    def _transfer_leg(
        self, kind: str, call_id: str, payload: dict[str, Any], dedupe: str
    ) -> Reading:
        """The leg a transfer dialled: its answer confirms the transfer, its early end fails it."""
        call = self.provider.call_for(call_id, None)
        if call is None or call.handed_over is None:
            return Reading.of(OK)
        if kind == "call.answered":
            detail = f"{call.handed_over} answered (Telnyx)"
            return Reading.of(
                OK, ev.Transferred(call_id=call.call_id, detail=detail, dedupe_key=dedupe)
            )
        if kind == "call.hangup":
            cause = str(payload.get("hangup_cause") or "hangup")
            return Reading(answer=lambda: (self.provider.transfer_failed(call, cause), OK)[1])
        return Reading.of(OK)

    def _inbound(self, payload: dict[str, Any], ccid: str | None, dedupe: str) -> Reading:
        return Reading(
            inbound=ev.InboundCall(
                provider_call_id=ccid,
                from_number=str(payload.get("from") or ""),
                to_number=str(payload.get("to") or ""),
                dedupe_key=dedupe,
            ),
            accepted=lambda call_id: OK,
            # The refusal itself is a command (see TelnyxProvider.reject).
            refused=lambda _refusal: OK,
        )

    def _transcript(
        self, payload: dict[str, Any], turn: str | None, dedupe: str, ids: dict[str, Any]
    ) -> tuple[ev.CallEvent, ...]:
        data = payload.get("transcription_data")
        if not isinstance(data, dict):
            data = payload
        if data.get("transcription_track", "inbound") != "inbound":
            return ()
        text = data.get("transcript")
        if not isinstance(text, str):
            text = payload.get("transcription")
        if not isinstance(text, str) or not text.strip():
            return ()
        final = data.get("is_final", True) is not False
        confidence = data.get("confidence")
        return (
            ev.Speech(
                text=text.strip(),
                final=final,
                confidence=float(confidence) if isinstance(confidence, int | float) else None,
                turn_token=turn,
                dedupe_key=dedupe,
                **ids,
            ),
        )
