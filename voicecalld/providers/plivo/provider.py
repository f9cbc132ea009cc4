"""
Plivo as an L{IProvider}: calls over REST, events from signed callbacks,
speech and listening over a bidirectional audio stream (or, without one,
Plivo's own C{<Speak>} and C{<GetInput>}).

Which XML each callback gets is decided in L{PlivoProvider.document} and
L{PlivoProvider.answer_document}; a live call is moved to new XML by a
transfer to our C{idle} URL, which answers with the next document then.
The neutral webhook pipeline verifies signatures (C{signature.py}) and the
Plivo dialect (C{dialect.py}) turns callbacks into events and calls on this
class.  Audio streams are the neutral L{MediaSessions}, speaking Plivo's
codec (C{codec.py}).

Plivo answers a make-call request with a request UUID; the call's own UUID
comes with its first callback, whose events carry it, and the call manager
then stores it in place of the request UUID.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import treq
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from voicecalld.config.model import VoiceCallSettings
from voicecalld.errors import ProviderError
from voicecalld.media.dtmf import dtmf_audio
from voicecalld.media.pacing import DEFAULT_LEAD
from voicecalld.media.session import MediaSessions, limits_from
from voicecalld.providers.common.rest import RestError
from voicecalld.providers.interface import ICallDirectory, IProvider
from voicecalld.providers.plivo import plivoxml
from voicecalld.providers.plivo.codec import PlivoCodec
from voicecalld.providers.plivo.rest import MAX_RING, MIN_RING, PlivoRest, create_body
from voicecalld.values import events as ev
from voicecalld.values.playback import CallStatus, Liveness, Playback
from voicecalld.values.record import CONVERSATION, INBOUND, CallRecord
from voicecalld.values.states import CallState

Sink = Callable[[ev.CallEvent], Deferred]

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


def plivo_status(value: Any) -> str:
    """One of Plivo's enumerated values, as we compare it: trimmed, lower-case."""
    return value.strip().lower() if isinstance(value, str) else ""


def end_reason(status: str, source: str | None) -> CallState:
    """Why a call ended, from its final C{CallStatus} and C{HangupSource}."""
    if status == "cancel" and plivo_status(source) == "api request":
        return CallState.HANGUP_BOT
    return END_REASONS.get(status, CallState.COMPLETED)


class _Say:
    """One utterance spoken with Plivo's own voice (no audio stream)."""

    def __init__(self, number: int, text: str) -> None:
        self.number = number
        self.text = text
        self.done: Deferred[Playback] = Deferred()
        self.claimed = False


class _Call:
    """
    The wire state of one live call (what XML it runs, what is being said);
    the call itself, and Plivo's UUID of it, are the call manager's.
    """

    def __init__(self, record: CallRecord) -> None:
        self.call_id = record.call_id
        self.mode = record.mode
        self.direction = record.direction
        self.initial_text = record.initial_message
        self.initial: _Say | None = None
        self.request_uuid: str | None = None
        self.document = "pending"
        self.waiting: list[_Say] = []
        self.playing: list[_Say] = []
        self.says = 0
        self.listening = False
        self.turn: str | None = None
        self.moving = False
        self.ended = False


@implementer(IProvider)
class PlivoProvider:
    """L{IProvider} for the Plivo Voice API."""

    name = "plivo"
    log = Logger()

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
        frame_lead: float = DEFAULT_LEAD,
    ) -> None:
        plivo = settings.plivo
        self.settings = settings
        self.clock = clock
        self.public_url = public_url
        self.known_public_url = known_public_url
        self.auth_token = plivo.auth_token.reveal() if plivo.auth_token else ""
        self.rest = PlivoRest(
            auth_id=plivo.auth_id or "",
            auth_token=self.auth_token,
            base_url=plivo.api_base_url,
            clock=clock,
            http=http,
        )
        self.tts = tts
        self.stt = stt
        self.streaming = settings.streaming.enabled and tts is not None and stt is not None
        self.voice = plivoxml.native_voice(_configured_voice(settings))
        self.media = MediaSessions(
            clock,
            limits_from(settings.streaming),
            PlivoCodec(),
            self.emit_later,
            tts=tts,
            stt=stt,
            frame_lead=frame_lead,
        )
        self._sink: Sink | None = None
        self._directory: ICallDirectory | None = None
        self._stopping = False
        self._webhook: Any = None
        self._calls: dict[str, _Call] = {}

    # -- URLs ------------------------------------------------------------------

    def url(self, **query: str) -> str:
        """Our webhook URL (the public one) with a query."""
        parts = urlsplit(self.public_url)
        return urlunsplit(parts._replace(query=urlencode(query)))

    def stream_url(self) -> str:
        """C{wss://<public host><streamPath>}."""
        host = urlsplit(self.public_url).netloc
        return f"wss://{host}{self.settings.streaming.stream_path}"

    # -- IProvider ---------------------------------------------------------------

    def start(self, sink: Sink, directory: ICallDirectory) -> None:
        self._sink = sink
        self._directory = directory
        if self.settings.streaming.enabled and not self.streaming:
            missing = " and ".join(
                n
                for n, v in (("telephony TTS", self.tts), ("streaming STT", self.stt))
                if v is None
            )
            self.log.warn(
                "streaming.enabled is set but {missing} is not configured: calls"
                " use Plivo's own voice and speech recognition",
                missing=missing,
            )

    def stop(self) -> None:
        self._stopping = True
        self.media.stop("voicecalld is stopping")

    def emit(self, event: ev.CallEvent) -> Deferred:
        """Report an event to the call manager."""
        if self._sink is None:
            raise RuntimeError("the Plivo provider was not started")
        return self._sink(event)

    def emit_later(self, event: ev.CallEvent) -> None:
        """Report an event without waiting for it (failures are logged)."""
        self.emit(event).addErrback(
            lambda f: self.log.failure("applying {event!r} failed", f, event=event)
        )

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

    def reject(self, event: ev.InboundCall, reason: str) -> Deferred:
        # The callback answers refused calls with <Hangup reason="rejected"/>.
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

    def speak(self, record: CallRecord, text: str) -> Deferred:
        call = self._call(record)
        if self.streaming:
            return self.media.say(call.call_id, text)
        if call.initial is not None and not call.initial.claimed and text == call.initial.text:
            call.initial.claimed = True
            return call.initial.done
        call.says += 1
        say = _Say(call.says, text)
        call.waiting.append(say)
        if text == call.initial_text and call.initial is None:
            call.initial, say.claimed = say, True
        if call.document != "pending":
            self._redirect(call, record)
        return say.done

    def interrupt(self, record: CallRecord) -> None:
        if record.call_id in self._calls:
            self.media.interrupt(record.call_id)

    def start_listening(self, record: CallRecord, turn_token: str) -> Deferred:
        call = self._call(record)
        call.listening = True
        call.turn = turn_token
        if not self.streaming and call.document == "hold":
            self._redirect(call, record)
        return succeed(None)

    def stop_listening(self, record: CallRecord) -> Deferred:
        call = self._calls.get(record.call_id)
        if call is not None:
            call.listening = False
            call.turn = None
        return succeed(None)

    async def send_dtmf(self, record: CallRecord, digits: str) -> None:
        call = self._call(record)
        keys = self.media.play(call.call_id, f"[keys {digits}]", dtmf_audio(digits))
        if keys is not None:
            await keys
            return
        await self.rest.send_digits(_uuid(record), digits)

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

    def waits_for_media(self, record: CallRecord) -> bool:
        return self.streaming

    def use_public_url(self, url: str | None, known: bool) -> None:
        if url:
            self.public_url = url
        self.known_public_url = url if known else None
        if self._webhook is not None:
            self._webhook.use_public_url(self.known_public_url)

    def web_resources(self) -> dict[str, Any]:
        from autobahn.twisted.resource import WebSocketResource

        from voicecalld.providers.common.webhook import WebhookResource
        from voicecalld.providers.plivo.dialect import PlivoDialect
        from voicecalld.providers.plivo.signature import PlivoVerifier

        self._webhook = WebhookResource(
            self.settings,
            self.clock,
            PlivoVerifier(self.auth_token),
            PlivoDialect(self),
            self.emit,
            public_url=self.known_public_url,
        )
        resources: dict[str, Any] = {self.settings.serve.path: self._webhook}
        if self.settings.streaming.enabled:
            resources[self.settings.streaming.stream_path] = WebSocketResource(self.media.factory)
        return resources

    def forget(self, record: CallRecord) -> None:
        call = self._calls.pop(record.call_id, None)
        if call is None:
            return
        call.ended = True
        for say in [*call.playing, *call.waiting]:
            if not say.done.called:
                say.done.callback(Playback(say.text, "", complete=False))
        self.media.forget(record.call_id)

    # -- callbacks (called by the dialect) ----------------------------------------

    def call_for(self, call_id: str | None, uuid: str | None) -> _Call | None:
        """
        The live call a callback is about: by our id (in the URLs we give
        Plivo), else by Plivo's UUID, as the live-call registry knows it.
        """
        call = self._calls.get(call_id) if call_id else None
        if call is None and uuid and self._directory is not None:
            ours = self._directory.call_id_for(uuid)
            call = self._calls.get(ours) if ours else None
        return call

    def answer_document(self, call: _Call, uuid: str | None) -> str:
        """
        The XML for a call that was just answered (or whose stream ended);
        C{uuid} is the call's, from Plivo's request.
        """
        if call.ended:
            return plivoxml.hangup()
        if self.streaming:
            call.document = "stream"
            token = self.media.issue(call.call_id, uuid)
            return plivoxml.stream(
                self.stream_url(),
                {"token": token, "callId": call.call_id},
                self.url(callId=call.call_id, type="stream-ended"),
            )
        if call.initial_text is not None and call.initial is None:
            call.says += 1
            call.initial = _Say(call.says, call.initial_text)
            call.waiting.insert(0, call.initial)
        return self.document(call)

    def document(self, call: _Call) -> str:
        """The next XML for a call without an audio stream: speak, listen or hold."""
        call.moving = False
        if call.ended:
            return plivoxml.hangup()
        if call.waiting:
            call.playing.extend(call.waiting)
            last = call.waiting[-1].number
            texts = [s.text for s in call.waiting]
            call.waiting = []
            call.document = "say"
            return plivoxml.say(
                texts, self.voice, self.url(callId=call.call_id, type="played", utt=str(last))
            )
        if call.mode == CONVERSATION or call.listening or call.direction == INBOUND:
            call.document = "listen"
            query = {"callId": call.call_id, "type": "input"}
            if call.turn:
                query["turn"] = call.turn
            return plivoxml.listen(self.url(**query), self.url(callId=call.call_id, type="idle"))
        call.document = "hold"
        return plivoxml.hold(self.url(callId=call.call_id, type="idle"))

    def played(self, call: _Call, number: int) -> None:
        """Plivo finished the C{<Speak>}s up to utterance C{number}."""
        still = []
        for say in call.playing:
            if say.number <= number:
                if not say.done.called:
                    say.done.callback(Playback(say.text, say.text))
            else:
                still.append(say)
        call.playing = still

    def restart_stream(self, call: _Call, uuid: str | None) -> str:
        """An audio stream ended while the call goes on: start another, a few times."""
        if call.ended or self._stopping:
            return plivoxml.hangup()
        if not self.streaming:
            return self.document(call)
        if not self.media.restart(call.call_id, uuid):
            return plivoxml.hangup()
        return self.answer_document(call, uuid)

    # -- plumbing ----------------------------------------------------------------------

    def _track(self, record: CallRecord) -> _Call:
        call = self._calls.get(record.call_id)
        if call is None:
            call = self._calls[record.call_id] = _Call(record)
            self.media.track(record.call_id)
        return call

    def _call(self, record: CallRecord) -> _Call:
        call = self._calls.get(record.call_id)
        if call is None or call.ended:
            raise ProviderError("Plivo: this call is not live here")
        return call

    def _redirect(self, call: _Call, record: CallRecord) -> None:
        """
        Move the call to the next document: transfer it to our C{idle} URL,
        which answers with whatever is to be said or done by then.  While a
        transfer's fetch is still to come, it will pick up anything queued
        meanwhile, so no second transfer is sent.
        """
        if call.moving:
            return
        moved = list(call.waiting)
        try:
            uuid = _uuid(record)
        except ProviderError as e:
            self._update_failed(call, moved, e)
            return
        call.moving = True
        d = Deferred.fromCoroutine(
            self.rest.transfer(uuid, self.url(callId=call.call_id, type="idle"))
        )

        def failed(failure: Any) -> None:
            call.moving = False
            error = (
                failure.value
                if failure.check(ProviderError)
                else ProviderError(failure.getErrorMessage())
            )
            self._update_failed(call, moved, error)

        d.addErrback(failed)

    def _update_failed(self, call: _Call, moved: list[_Say], error: ProviderError) -> None:
        """A transfer failed: what it would have said fails too."""
        for say in moved:
            for queue in (call.waiting, call.playing):
                if say in queue:
                    queue.remove(say)
            if not say.done.called:
                say.done.errback(error)
        if not moved:
            self.log.warn(
                "moving {call_id} to new XML failed: {error}",
                call_id=call.call_id,
                error=error,
                log_code="plivo.transfer_failed",
            )


async def _ignoring_gone(request: Any) -> None:
    """Await a request; Plivo not knowing the call or request any more counts as done."""
    try:
        await request
    except RestError as e:
        if not e.gone:
            raise


def _uuid(record: CallRecord) -> str:
    """Plivo's UUID of a call, as the call manager stored it."""
    if not record.provider_call_id:
        raise ProviderError("Plivo: this call has no call UUID yet")
    return record.provider_call_id


def _configured_voice(settings: VoiceCallSettings) -> str | None:
    tts = settings.tts
    block = tts.provider_settings(tts.provider or "openai")
    return getattr(block, "speaker_voice", None) or getattr(block, "speaker_voice_id", None)
