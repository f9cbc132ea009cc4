"""
Telnyx as an L{IProvider}: Call Control v2 commands over REST, events from
Ed25519-signed webhooks, speech and listening over a bidirectional media
stream (or, without one, Telnyx's own C{speak} and C{transcription_start}).

What is the same for every carrier (URLs, media sessions, the webhook
resource, the live calls) is L{voicecalld.providers.common.carrier}.  The
neutral webhook pipeline verifies signatures (C{signature.py}); the Telnyx
dialect (C{dialect.py}) turns webhooks into events and calls on this class.

Our call id travels as C{client_state} (Base64), which Telnyx echoes in every
webhook of the call.  Inbound calls are answered with the C{answer} command
once the call manager has accepted them.  Telnyx reports the end of each
C{speak} (C{call.speak.ended}) in the order they were queued, which is how a
spoken utterance is known to have been heard.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import treq
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from voicecalld.config.model import VoiceCallSettings
from voicecalld.errors import ProviderError
from voicecalld.media.pacing import DEFAULT_LEAD
from voicecalld.providers.common.carrier import (
    CarrierCall,
    CarrierProvider,
    configured_voice,
    polly_voice,
)
from voicecalld.providers.common.rest import RestError
from voicecalld.providers.interface import IProvider
from voicecalld.providers.telnyx.codec import TelnyxCodec
from voicecalld.providers.telnyx.rest import (
    TelnyxRest,
    call_ended,
    client_state,
    dial_params,
    stream_params,
    transfer_state,
)
from voicecalld.values import events as ev
from voicecalld.values.playback import CallStatus, Liveness, Playback
from voicecalld.values.record import INBOUND, CallRecord
from voicecalld.values.states import CallState

LANGUAGE = "en-US"
# The actions/reject cause for each refusal.
REJECT_CAUSES = {ev.Refusal.REJECTED: "CALL_REJECTED", ev.Refusal.BUSY: "USER_BUSY"}
TRANSCRIPTION_LANGUAGE = "en"
DEFAULT_VOICE = "female"


def native_voice(configured: str | None) -> str:
    """Telnyx's C{speak} voice for a configured TTS voice name."""
    if not configured:
        return DEFAULT_VOICE
    if configured.startswith("Polly."):
        return "AWS." + configured
    if "." in configured or configured in ("female", "male"):
        return configured
    polly = polly_voice(configured)
    return f"AWS.Polly.{polly}-Neural" if polly else DEFAULT_VOICE


class _Say:
    """One utterance queued with Telnyx's C{speak}."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.done: Deferred[Playback] = Deferred()
        self.started = False

    def finish(self, complete: bool) -> None:
        if not self.done.called:
            self.done.callback(Playback(self.text, self.text if complete else "", complete))


class _Call(CarrierCall):
    """The wire state of one live call; the call itself is the call manager's."""

    def __init__(self, record: CallRecord) -> None:
        super().__init__(record)
        self.dtmf_sequence = record.metadata.get("dtmfSequence")
        self.says: deque[_Say] = deque()
        # speak.ended events still due for utterances already given up on.
        self.stale_ends = 0
        self.listening = False
        self.turn: str | None = None
        self.transcribing = False
        self.machine = False
        # Our leg's call control id when it was transferred.
        self.transfer_from: str | None = None

    def release(self) -> None:
        for say in self.says:
            say.finish(complete=False)
        self.says.clear()


@implementer(IProvider)
class TelnyxProvider(CarrierProvider):
    """L{IProvider} for Telnyx Call Control v2."""

    name = "telnyx"
    title = "Telnyx"
    native = "voice and transcription"
    call_id_name = "call_control_id"
    call_type = _Call

    def __init__(
        self,
        settings: VoiceCallSettings,
        clock: IReactorTime,
        *,
        public_url: str,
        public_key: Any = None,
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
            TelnyxCodec(),
            public_url=public_url,
            known_public_url=known_public_url,
            tts=tts,
            stt=stt,
            realtime=realtime,
            frame_lead=frame_lead,
        )
        telnyx = settings.telnyx
        self.public_key = public_key
        self.connection_id = telnyx.connection_id or ""
        self.rest = TelnyxRest(
            api_key=telnyx.api_key.reveal() if telnyx.api_key else "",
            base_url=telnyx.api_base_url,
            clock=clock,
            http=http,
        )
        self.voice = native_voice(configured_voice(settings))

    def verifier(self) -> Any:
        from voicecalld.providers.telnyx.signature import TelnyxVerifier

        return TelnyxVerifier(self.public_key)

    def dialect(self) -> Any:
        from voicecalld.providers.telnyx.dialect import TelnyxDialect

        return TelnyxDialect(self)

    # -- IProvider ---------------------------------------------------------------

    async def place_call(self, record: CallRecord) -> str:
        self._track(record)
        params = dial_params(
            connection_id=self.connection_id,
            to=record.to_number,
            from_=record.from_number,
            webhook_url=self.public_url,
            call_id=record.call_id,
            ring_seconds=math.ceil(self.settings.ring_timeout_ms / 1000),
            # A backstop if voicecalld is gone when the call should end.
            time_limit=self.settings.max_duration_seconds + 60,
            machine_detection=record.machine_detection,
        )
        data = await self.rest.dial(params)
        ccid = data.get("call_control_id")
        if not isinstance(ccid, str) or not ccid:
            raise ProviderError("Telnyx dialled the call but sent no call_control_id")
        return ccid

    async def answer(self, record: CallRecord) -> None:
        call = self._track(record)
        ccid = self.carrier_id(record)
        params: dict[str, Any] = {
            "client_state": client_state(call.call_id),
            "webhook_url": self.public_url,
        }
        if self.streaming:
            params.update(self._stream_params(call, ccid))
        await self.rest.command(ccid, "answer", params)

    async def reject(self, event: ev.InboundCall, refusal: ev.Refusal) -> None:
        if not event.provider_call_id:
            return
        cause = REJECT_CAUSES[refusal]
        await self._tolerant(event.provider_call_id, "reject", {"cause": cause})

    async def hangup(self, record: CallRecord, reason: CallState) -> None:
        if record.provider_call_id is None:
            return
        await self._tolerant(record.provider_call_id, "hangup", {})

    def speak(self, record: CallRecord, text: str) -> Deferred:
        call = self._call(record)
        if self.streaming:
            return self.media.say(call.call_id, text)
        ccid = self.carrier_id(record)
        say = _Say(text)
        call.says.append(say)
        params = {
            "payload": text,
            "payload_type": "text",
            "voice": self.voice,
            "language": LANGUAGE,
        }
        sent = Deferred.fromCoroutine(self.rest.command(ccid, "speak", params))

        def failed(failure: Any) -> None:
            if say in call.says:
                call.says.remove(say)
            if not say.done.called:
                say.done.errback(failure)

        sent.addErrback(failed)
        return say.done

    def interrupt(self, record: CallRecord) -> None:
        call = self._calls.get(record.call_id)
        if call is None or self.streaming:
            super().interrupt(record)
            return
        if not call.says or record.provider_call_id is None:
            return
        # Telnyx reports the end of what is playing now (cancelled), not of the rest.
        call.stale_ends += sum(1 for say in call.says if say.started)
        for say in call.says:
            say.finish(complete=False)
        call.says.clear()
        self._background(self._tolerant(record.provider_call_id, "playback_stop", {"stop": "all"}))

    def start_listening(self, record: CallRecord, turn_token: str) -> Deferred:
        call = self._call(record)
        call.listening = True
        call.turn = turn_token
        if self.streaming or call.transcribing:
            return succeed(None)
        call.transcribing = True
        params = {"language": TRANSCRIPTION_LANGUAGE, "transcription_tracks": "inbound"}
        started = Deferred.fromCoroutine(
            self.rest.command(self.carrier_id(record), "transcription_start", params)
        )

        def failed(failure: Any) -> Any:
            call.transcribing = False
            return failure

        return started.addErrback(failed)

    def stop_listening(self, record: CallRecord) -> Deferred:
        call = self._calls.get(record.call_id)
        if call is None:
            return succeed(None)
        call.listening = False
        call.turn = None
        if not call.transcribing or call.ended or record.provider_call_id is None:
            return succeed(None)
        call.transcribing = False
        return Deferred.fromCoroutine(
            self._tolerant(record.provider_call_id, "transcription_stop", {})
        )

    async def transfer(self, record: CallRecord, to: str) -> None:
        ccid = self.carrier_id(record)
        call = self._call(record)
        call.transfer_from = ccid
        params = {
            "to": to,
            "from": call.our_number,
            # the new leg's webhooks name our call, so that its end can be told apart
            "target_leg_client_state": transfer_state(record.call_id),
        }
        await self.hand_over(record, to, lambda call: self.rest.command(ccid, "transfer", params))

    def transfer_failed(self, call: _Call, cause: str) -> None:
        """
        The leg a transfer dialled ended before the person answered; Telnyx
        leaves our caller's leg up, alone.  A cold transfer ends there (as on
        the other carriers): hang it up.
        """
        self.log.warn(
            "transfer of {call_id} to {to} failed ({cause}): hanging up the caller",
            call_id=call.call_id,
            to=call.handed_over,
            cause=cause,
            log_code="telnyx.transfer_failed",
        )
        if call.transfer_from is not None:
            self._background(
                self._tolerant(call.transfer_from, "hangup", {}),
                "hanging up after a failed transfer",
            )

    async def dial_digits(self, call: _Call, record: CallRecord, digits: str) -> None:
        await self.rest.command(self.carrier_id(record), "send_dtmf", {"digits": digits})

    async def call_status(self, record: CallRecord) -> CallStatus:
        self._track(record)
        if record.provider_call_id is None:
            return CallStatus(Liveness.UNKNOWN_CALL)
        data = await self.rest.fetch_call(record.provider_call_id)
        if data is None:
            return CallStatus(Liveness.UNKNOWN_CALL)
        alive = data.get("is_alive")
        if alive is False:
            return CallStatus(
                Liveness.ENDED, CallState.COMPLETED, detail="Telnyx: the call has ended"
            )
        if alive is True:
            return CallStatus(Liveness.ALIVE)
        return CallStatus(Liveness.UNREACHABLE, detail="Telnyx sent no is_alive for the call")

    # -- webhooks (called by the dialect) -----------------------------------------

    def answered(self, call: _Call, ccid: str) -> None:
        """C{call.answered}: open the media stream of an outbound call; send its digits."""
        if call.ended:
            return
        if self.streaming and call.direction != INBOUND:
            self._start_stream(call, ccid)
        if call.dtmf_sequence:
            self._background(self.rest.command(ccid, "send_dtmf", {"digits": call.dtmf_sequence}))
            call.dtmf_sequence = None

    def speak_started(self, call: _Call) -> None:
        """C{call.speak.started}: the oldest utterance not started is playing."""
        for say in call.says:
            if not say.started:
                say.started = True
                return

    def speak_ended(self, call: _Call, status: str) -> None:
        """C{call.speak.ended}: the oldest queued utterance is over (or was cut off)."""
        if call.stale_ends:
            call.stale_ends -= 1
            return
        if call.says:
            call.says.popleft().finish(complete=status == "completed")

    def speech(self, call: _Call) -> str | None:
        """The turn a transcript answers, if a turn is listening."""
        return call.turn if call.listening else None

    def stream_stopped(self, call: _Call, ccid: str, stream_id: str | None) -> None:
        """A media stream stopped while the call goes on: start another, a few times."""
        if call.ended or self._stopping or not self.streaming or call.handed_over is not None:
            return
        session = self.media.session(call.call_id)
        if session is not None and stream_id and session.socket.stream_id != stream_id:
            return
        if self.media.restart(call.call_id, ccid):
            self._start_stream(call, ccid)

    # -- plumbing ----------------------------------------------------------------------

    def _stream_params(self, call: _Call, ccid: str) -> dict[str, Any]:
        token = self.media.issue(call.call_id, ccid)
        return stream_params(self.stream_url(), token, call.call_id)

    def _start_stream(self, call: _Call, ccid: str) -> None:
        self._background(
            self._tolerant(ccid, "streaming_start", self._stream_params(call, ccid)),
            f"starting the media stream of {call.call_id}",
        )

    async def _tolerant(self, ccid: str, name: str, params: dict[str, Any]) -> None:
        """A command that has nothing left to do once the call is over."""
        try:
            await self.rest.command(ccid, name, params)
        except RestError as e:
            if not call_ended(e):
                raise

    def _background(self, work: Any, what: str = "a Telnyx command") -> None:
        Deferred.fromCoroutine(work).addErrback(
            lambda f: self.log.warn(
                "{what} failed: {error}",
                what=what,
                error=f.getErrorMessage(),
                log_code="telnyx.command_failed",
            )
        )
