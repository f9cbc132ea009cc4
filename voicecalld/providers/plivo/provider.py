"""
Plivo as an L{IProvider}: calls over REST, events from signed callbacks,
speech and listening over a bidirectional audio stream (or, without one,
Plivo's own C{<Speak>} and C{<GetInput>}).

What is the same for every carrier is
L{voicecalld.providers.common.carrier}; the say/listen/hold flow of XML
documents is L{voicecalld.providers.common.documents}.  What is Plivo's: a
live call is moved to new XML by a transfer to our C{idle} URL, which answers
with the next document then.  The neutral webhook pipeline verifies
signatures (C{signature.py}) and the Plivo dialect (C{dialect.py}) turns
callbacks into events and calls on this class.

Plivo answers a make-call request with a request UUID; the call's own UUID
comes with its first callback, whose events carry it, and the call manager
then stores it in place of the request UUID.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import treq
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from voicecalld.config.model import VoiceCallSettings
from voicecalld.errors import ProviderError
from voicecalld.media.pacing import DEFAULT_LEAD
from voicecalld.providers.common.carrier import configured_voice
from voicecalld.providers.common.documents import DocumentCall, DocumentProvider
from voicecalld.providers.common.rest import RestError
from voicecalld.providers.interface import IProvider
from voicecalld.providers.plivo import plivoxml
from voicecalld.providers.plivo.codec import PlivoCodec
from voicecalld.providers.plivo.rest import (
    DETECTION_MS,
    MAX_RING,
    MIN_RING,
    PlivoRest,
    create_body,
    plivo_number,
)
from voicecalld.values import events as ev
from voicecalld.values.playback import CallStatus, Liveness
from voicecalld.values.record import CallRecord
from voicecalld.values.states import CallState

# Plivo's final CallStatus values and what we call them ("cancel" depends on who cancelled).
END_REASONS = {
    "completed": CallState.COMPLETED,
    "busy": CallState.BUSY,
    "no-answer": CallState.NO_ANSWER,
    "timeout": CallState.NO_ANSWER,
    "failed": CallState.FAILED,
    "cancel": CallState.NO_ANSWER,
}
LIVE_STATUSES = ("queued", "ringing", "in-progress")
# Plivo posts to machine_detection_url only when it finds a machine: a
# screened call with no report this long after its answer has a person on it.
NO_MACHINE_AFTER = DETECTION_MS / 1000.0 + 1.0


def plivo_status(value: Any) -> str:
    """One of Plivo's enumerated values, as we compare it: trimmed, lower-case."""
    return value.strip().lower() if isinstance(value, str) else ""


def end_reason(status: str, source: str | None) -> CallState:
    """Why a call ended, from its final C{CallStatus} and C{HangupSource}."""
    if status == "cancel" and plivo_status(source) == "api request":
        return CallState.HANGUP_BOT
    return END_REASONS.get(status, CallState.COMPLETED)


class _Call(DocumentCall):
    """
    The wire state of one live call (what XML it runs, what is being said);
    the call itself, and Plivo's UUID of it, are the call manager's.
    """

    def __init__(self, record: CallRecord) -> None:
        super().__init__(record)
        self.request_uuid: str | None = None
        self.moving = False
        self.no_machine: Any = None  # the timer that reports a person

    def release(self) -> None:
        super().release()
        self.machine_reported()

    def machine_reported(self) -> None:
        """Plivo reported a machine (or the call is over): no person to report."""
        if self.no_machine is not None and self.no_machine.active():
            self.no_machine.cancel()
        self.no_machine = None


@implementer(IProvider)
class PlivoProvider(DocumentProvider):
    """L{IProvider} for the Plivo Voice API."""

    name = "plivo"
    title = "Plivo"
    native = "voice and speech recognition"
    call_id_name = "call UUID"
    call_type = _Call
    markup = plivoxml
    input_type = "input"
    update_failed_message = "moving {call_id} to new XML failed: {error}"
    update_failed_code = "plivo.transfer_failed"

    def __init__(
        self,
        settings: VoiceCallSettings,
        clock: IReactorTime,
        *,
        public_url: str,
        known_public_url: str | None = None,
        http: Any = treq,
        tts: Any = None,
        stt: Any = None,
        realtime: Any = None,
        frame_lead: float = DEFAULT_LEAD,
    ) -> None:
        super().__init__(
            settings,
            clock,
            PlivoCodec(),
            public_url=public_url,
            known_public_url=known_public_url,
            tts=tts,
            stt=stt,
            realtime=realtime,
            frame_lead=frame_lead,
        )
        plivo = settings.plivo
        self.auth_token = plivo.auth_token.reveal() if plivo.auth_token else ""
        self.rest = PlivoRest(
            auth_id=plivo.auth_id or "",
            auth_token=self.auth_token,
            base_url=plivo.api_base_url,
            clock=clock,
            http=http,
        )
        self.voice = plivoxml.native_voice(configured_voice(settings))

    def verifier(self) -> Any:
        from voicecalld.providers.plivo.signature import PlivoVerifier

        return PlivoVerifier(self.auth_token)

    def dialect(self) -> Any:
        from voicecalld.providers.plivo.dialect import PlivoDialect

        return PlivoDialect(self)

    # -- IProvider ---------------------------------------------------------------

    async def place_call(self, record: CallRecord) -> str:
        call = self._track(record)
        ring = max(MIN_RING, min(MAX_RING, math.ceil(self.settings.ring_timeout_ms / 1000)))
        body = create_body(
            to=record.to_number,
            from_=record.from_number,
            answer_url=self.url(callId=record.call_id, type="answer"),
            hangup_url=self.url(callId=record.call_id, type="hangup"),
            ring_url=self.url(callId=record.call_id, type="ring"),
            ring_seconds=ring,
            # A backstop if voicecalld is gone when the call should end.
            time_limit=self.settings.max_duration_seconds + 60,
            send_digits=record.metadata.get("dtmfSequence"),
            detection_url=(
                self.url(callId=record.call_id, type="amd") if record.machine_detection else None
            ),
        )
        answer = await self.rest.create_call(body)
        request_uuid = answer.get("request_uuid")
        if isinstance(request_uuid, list) and len(request_uuid) == 1:
            request_uuid = request_uuid[0]
        if not isinstance(request_uuid, str) or not request_uuid:
            raise ProviderError("Plivo made the call but sent no request_uuid")
        call.request_uuid = request_uuid
        return request_uuid

    def answer(self, record: CallRecord) -> Deferred:
        self._track(record)
        return succeed(None)

    def reject(self, event: ev.InboundCall, refusal: ev.Refusal) -> Deferred:
        # The callback answers refused calls with <Hangup reason="rejected|busy"/>.
        return succeed(None)

    async def hangup(self, record: CallRecord, reason: CallState) -> None:
        uuid = record.provider_call_id
        if uuid is None:
            return
        if record.answered_at is None:
            # Not answered: cancel the request (by its UUID, which the call
            # manager holds until the first callback brings the call's own);
            # a call answered meanwhile is then hung up by its UUID.
            call = self._calls.get(record.call_id)
            request = call.request_uuid if call and call.request_uuid else uuid
            await _ignoring_gone(self.rest.cancel(request))
            if uuid != request:
                with contextlib.suppress(ProviderError):
                    await _ignoring_gone(self.rest.hangup(uuid))
            return
        await _ignoring_gone(self.rest.hangup(uuid))

    async def dial_digits(self, call: _Call, record: CallRecord, digits: str) -> None:
        await self.rest.send_digits(self.carrier_id(record), digits)

    async def call_status(self, record: CallRecord) -> CallStatus:
        call = self._track(record)
        uuid = record.provider_call_id
        if uuid is None:
            return CallStatus(Liveness.UNKNOWN_CALL)
        live = await self.rest.live_call(uuid)
        if live is not None:
            status = plivo_status(live.get("call_status"))
            if status in END_REASONS:
                return CallStatus(Liveness.ENDED, END_REASONS[status], detail=f"Plivo: {status}")
            if status == "in-progress" and call.document == "pending":
                # Some XML of ours runs on the call: move it when there is news.
                call.document = "restored"
            return CallStatus(Liveness.ALIVE, answered=status == "in-progress")
        if record.answered_at is None and await self.rest.queued_call(uuid) is not None:
            return CallStatus(Liveness.ALIVE, answered=False)
        ended = await self.rest.call_record(uuid)
        if ended is None:
            return CallStatus(Liveness.UNKNOWN_CALL)
        cause = ended.get("hangup_cause_name") or "ended"
        reason = CallState.COMPLETED if ended.get("answer_time") else CallState.NO_ANSWER
        return CallStatus(Liveness.ENDED, reason, detail=f"Plivo: {cause}")

    async def transfer(self, record: CallRecord, to: str) -> None:
        uuid = self.carrier_id(record)
        await self.hand_over(
            record,
            to,
            lambda call: self.rest.transfer(uuid, self.url(callId=call.call_id, type="transfer")),
        )

    # -- callbacks (called by the dialect) ----------------------------------------

    def answer_document(self, call: _Call, carrier_id: str | None) -> str:
        if call.screening and call.no_machine is None and carrier_id:
            person = ev.MachineDetected(
                call_id=call.call_id,
                provider_call_id=carrier_id,
                answered_by=ev.HUMAN,
                raw=f"no machine reported in {DETECTION_MS} ms",
                dedupe_key=f"plivo:amd:{carrier_id}:none",
            )
            call.no_machine = self.clock.callLater(NO_MACHINE_AFTER, self.emit_later, person)
        return super().answer_document(call, carrier_id)

    def handover_document(self, call: _Call) -> str:
        """C{<Dial>} the person the call is handed to, from our number."""
        return plivoxml.transfer(plivo_number(call.handed_over), plivo_number(call.our_number))

    def stream_document(self, call: _Call, uuid: str | None) -> str:
        """C{<Stream>}: the call's audio stream, and our URL for when it ends."""
        token = self.media.issue(call.call_id, uuid)
        return plivoxml.stream(
            self.stream_url(),
            {"token": token, "callId": call.call_id},
            self.url(callId=call.call_id, type="stream-ended"),
        )

    def document(self, call: _Call) -> str:
        # A transfer to our idle URL has fetched its document: the next one may go.
        call.moving = False
        return super().document(call)

    def redirect(self, call: _Call, record: CallRecord) -> None:
        """
        Move the call to the next document: transfer it to our C{idle} URL,
        which answers with whatever is to be said or done by then.  While a
        transfer's fetch is still to come, it will pick up anything queued
        meanwhile, so no second transfer is sent.
        """
        if call.moving or call.handed_over is not None:
            return
        moved = list(call.waiting)
        try:
            uuid = self.carrier_id(record)
        except ProviderError as e:
            self._update_failed(call, moved, e)
            return
        call.moving = True
        d = Deferred.fromCoroutine(
            self.rest.transfer(uuid, self.url(callId=call.call_id, type="idle"))
        )

        def failed(failure: Any) -> None:
            call.moving = False
            self._update_failed(call, moved, failure)

        d.addErrback(failed)


async def _ignoring_gone(request: Any) -> None:
    """Await a request; Plivo not knowing the call or request any more counts as done."""
    try:
        await request
    except RestError as e:
        if not e.gone:
            raise
