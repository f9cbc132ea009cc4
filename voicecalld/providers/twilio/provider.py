"""
Twilio as an L{IProvider}: calls over REST, events from signed webhooks,
speech and listening over a bidirectional Media Stream (or, without one,
Twilio's own C{<Say>} and C{<Gather>}).

What is the same for every carrier (URLs, media sessions, the webhook
resource, the live calls) is L{voicecalld.providers.common.carrier}; the
say/listen/hold flow of TwiML documents is
L{voicecalld.providers.common.documents}.  This module holds what is
Twilio's: its REST calls, its C{<Connect><Stream>}, and moving a call to its
next TwiML with one REST update at a time.  The neutral webhook pipeline
verifies signatures (C{signature.py}) and the Twilio dialect (C{dialect.py})
turns requests into events and calls on this class.
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
from voicecalld.providers.twilio import twiml
from voicecalld.providers.twilio.codec import TwilioCodec
from voicecalld.providers.twilio.rest import TwilioRest, api_root, create_params
from voicecalld.values import events as ev
from voicecalld.values.playback import CallStatus, Liveness
from voicecalld.values.record import CallRecord
from voicecalld.values.states import CallState

# Twilio's CallStatus values that mean the call is over, and what we call them
# (keys lower-case: look them up with L{twilio_status}).
END_REASONS = {
    "completed": CallState.COMPLETED,
    "busy": CallState.BUSY,
    "no-answer": CallState.NO_ANSWER,
    "failed": CallState.FAILED,
    "canceled": CallState.HANGUP_BOT,
}


# Twilio's AnsweredBy values: who answered, and whether a machine's greeting is over.
ANSWERED_BY = {
    "human": (ev.HUMAN, False),
    "machine_start": (ev.MACHINE, False),
    "machine_end_beep": (ev.MACHINE, True),
    "machine_end_silence": (ev.MACHINE, True),
    "machine_end_other": (ev.MACHINE, True),
    "fax": (ev.FAX, False),
    "unknown": (ev.UNKNOWN, False),
}

# The time limit of a handed-over call: Twilio's own default (4 hours).
HANDED_OVER_TIME_LIMIT = 14400


def twilio_status(value: Any) -> str:
    """One of Twilio's enumerated values, as we compare it: trimmed, lower-case."""
    return value.strip().lower() if isinstance(value, str) else ""


class _Call(DocumentCall):
    """
    The wire state of one live call (what TwiML it runs, what is being said);
    the call itself, and Twilio's SID of it, are the call manager's.
    """

    def __init__(self, record: CallRecord) -> None:
        super().__init__(record)
        self.updating = False
        self.update_again = False
        # Each <Connect><Stream> gets its own action URL: Twilio's request
        # when one stream ends must not look like a retry of the last one's.
        self.streams = 0


@implementer(IProvider)
class TwilioProvider(DocumentProvider):
    """L{IProvider} for Twilio Programmable Voice."""

    name = "twilio"
    title = "Twilio"
    native = "voice and speech recognition"
    call_id_name = "call SID"
    call_type = _Call
    markup = twiml
    input_type = "gather"
    update_failed_message = "updating the TwiML of {call_id} failed: {error}"
    update_failed_code = "twilio.update_failed"

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
            TwilioCodec(),
            public_url=public_url,
            known_public_url=known_public_url,
            tts=tts,
            stt=stt,
            realtime=realtime,
            frame_lead=frame_lead,
        )
        twilio = settings.twilio
        self.rest = TwilioRest(
            account_sid=twilio.account_sid,
            auth_token=twilio.auth_token.reveal(),
            base_url=api_root(twilio.region, twilio.api_base_url),
            clock=clock,
            http=http,
        )
        self.voice = twiml.native_voice(configured_voice(settings))

    def verifier(self) -> Any:
        from voicecalld.providers.twilio.signature import twilio_verifier

        return twilio_verifier(self.settings.twilio.auth_token.reveal())

    def dialect(self) -> Any:
        from voicecalld.providers.twilio.dialect import TwilioDialect

        return TwilioDialect(self)

    # -- IProvider ---------------------------------------------------------------

    async def place_call(self, record: CallRecord) -> str:
        self._track(record)
        ring = max(5, min(600, math.ceil(self.settings.ring_timeout_ms / 1000)))
        params = create_params(
            to=record.to_number,
            from_=record.from_number,
            answer_url=self.url(callId=record.call_id, type="answer"),
            status_url=self.url(callId=record.call_id, type="status"),
            ring_seconds=ring,
            # A backstop if voicecalld is gone when the call should end.
            time_limit=self.settings.max_duration_seconds + 60,
            send_digits=record.metadata.get("dtmfSequence"),
            detection_url=(
                self.url(callId=record.call_id, type="amd") if record.machine_detection else None
            ),
        )
        resource = await self.rest.create_call(params)
        sid = resource.get("sid")
        if not isinstance(sid, str) or not sid:
            raise ProviderError("Twilio created the call but sent no call SID")
        return sid

    def answer(self, record: CallRecord) -> Deferred:
        self._track(record)
        return succeed(None)

    def reject(self, event: ev.InboundCall, refusal: ev.Refusal) -> Deferred:
        # The webhook answers refused calls with <Reject reason=...>; nothing else to do.
        return succeed(None)

    async def hangup(self, record: CallRecord, reason: CallState) -> None:
        sid = record.provider_call_id
        if sid is None:
            return
        if record.answered_at is None:
            # Twilio ends a queued or ringing call with "canceled", which does
            # nothing to a call that has been answered meanwhile; "completed"
            # then ends that one.
            await self._update_status(sid, "canceled")
            with contextlib.suppress(ProviderError):
                await self._update_status(sid, "completed")
            return
        await self._update_status(sid, "completed")

    async def _update_status(self, sid: str, status: str) -> None:
        try:
            await self.rest.update_call(sid, [("Status", status)])
        except RestError as e:
            if not e.gone:
                raise

    async def dial_digits(self, call: _Call, record: CallRecord, digits: str) -> None:
        await self.rest.update_call(
            self.carrier_id(record),
            [("Twiml", twiml.play_digits(digits, self.url(callId=call.call_id, type="idle")))],
        )
        call.document = "digits"

    async def transfer(self, record: CallRecord, to: str) -> None:
        sid = self.carrier_id(record)
        await self.hand_over(
            record,
            to,
            lambda call: self.rest.update_call(
                sid,
                [
                    ("Twiml", self.handover_document(call)),
                    # Our backstop (maxDurationSeconds + 60) is not the person's limit.
                    ("TimeLimit", str(HANDED_OVER_TIME_LIMIT)),
                ],
            ),
        )

    def handover_document(self, call: _Call) -> str:
        """C{<Dial>} the person; Twilio reports their answer to our C{transfer} URL."""
        return twiml.transfer(
            call.handed_over, call.our_number, self.url(callId=call.call_id, type="transfer")
        )

    async def call_status(self, record: CallRecord) -> CallStatus:
        self._track(record)
        if record.provider_call_id is None:
            return CallStatus(Liveness.UNKNOWN_CALL)
        resource = await self.rest.fetch_call(record.provider_call_id)
        if resource is None:
            return CallStatus(Liveness.UNKNOWN_CALL)
        status = twilio_status(resource.get("status"))
        if status in END_REASONS:
            return CallStatus(Liveness.ENDED, END_REASONS[status], detail=f"Twilio: {status}")
        return CallStatus(Liveness.ALIVE, answered=status == "in-progress")

    # -- webhooks (called by the dialect) ----------------------------------------

    def stream_document(self, call: _Call, sid: str | None) -> str:
        """C{<Connect><Stream>}: a new stream of the call, its own action URL."""
        call.streams += 1
        token = self.media.issue(call.call_id, sid)
        return twiml.stream(
            self.stream_url(),
            {"token": token, "callId": call.call_id},
            self.url(callId=call.call_id, type="stream-ended", stream=str(call.streams)),
        )

    def redirect(self, call: _Call, record: CallRecord) -> None:
        """
        Replace the TwiML running on the call with the next document, over
        REST.  One update at a time: Twilio may apply concurrent ones in any
        order, so a redirect asked for meanwhile is sent after this one, if it
        is still needed then.
        """
        if call.handed_over is not None:
            return
        if call.updating:
            call.update_again = True
            return
        moved = list(call.waiting)
        try:
            sid = self.carrier_id(record)
        except ProviderError as e:
            self._update_failed(call, moved, e)
            return
        document = self.document(call)
        call.updating = True
        d = Deferred.fromCoroutine(self.rest.update_call(sid, [("Twiml", document)]))

        def sent(_: Any) -> None:
            call.updating = False
            if call.update_again:
                call.update_again = False
                if not call.ended and (
                    call.waiting or (call.listening and call.document == "hold")
                ):
                    self.redirect(call, record)

        d.addErrback(lambda failure: self._update_failed(call, moved, failure))
        d.addBoth(sent)
