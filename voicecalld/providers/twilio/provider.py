"""
Twilio as an L{IProvider}: calls over REST, events from signed webhooks,
speech and listening over a bidirectional Media Stream (or, without one,
Twilio's own C{<Say>} and C{<Gather>}).

Which TwiML each webhook gets is decided in L{TwilioProvider.document} and
L{TwilioProvider.answer_document}; the neutral webhook pipeline
(L{voicecalld.providers.common.webhook}) verifies signatures
(C{signature.py}) and the Twilio dialect (C{dialect.py}) turns requests into
events and calls on this class.  Media streams are the neutral
L{MediaSessions}, speaking Twilio's codec (C{codec.py}).
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
from voicecalld.providers.twilio import twiml
from voicecalld.providers.twilio.codec import TwilioCodec
from voicecalld.providers.twilio.rest import TwilioRest, api_root, create_params
from voicecalld.values import events as ev
from voicecalld.values.playback import CallStatus, Liveness, Playback
from voicecalld.values.record import CONVERSATION, INBOUND, CallRecord
from voicecalld.values.states import CallState

Sink = Callable[[ev.CallEvent], Deferred]

# Twilio's CallStatus values that mean the call is over, and what we call them
# (keys lower-case: look them up with L{twilio_status}).
END_REASONS = {
    "completed": CallState.COMPLETED,
    "busy": CallState.BUSY,
    "no-answer": CallState.NO_ANSWER,
    "failed": CallState.FAILED,
    "canceled": CallState.HANGUP_BOT,
}


def twilio_status(value: Any) -> str:
    """One of Twilio's enumerated values, as we compare it: trimmed, lower-case."""
    return value.strip().lower() if isinstance(value, str) else ""


class _Say:
    """One utterance spoken with Twilio's own voice (no media stream)."""

    def __init__(self, number: int, text: str) -> None:
        self.number = number
        self.text = text
        self.done: Deferred[Playback] = Deferred()
        self.claimed = False


class _Call:
    """
    The wire state of one live call (what TwiML it runs, what is being said);
    the call itself, and Twilio's SID of it, are the call manager's.
    """

    def __init__(self, record: CallRecord) -> None:
        self.call_id = record.call_id
        self.mode = record.mode
        self.direction = record.direction
        self.initial_text = record.initial_message
        self.initial: _Say | None = None
        self.document = "pending"
        self.waiting: list[_Say] = []
        self.playing: list[_Say] = []
        self.says = 0
        self.listening = False
        self.turn: str | None = None
        self.updating = False
        self.update_again = False
        self.ended = False
        # Each <Connect><Stream> gets its own action URL: Twilio's request
        # when one stream ends must not look like a retry of the last one's.
        self.streams = 0


@implementer(IProvider)
class TwilioProvider:
    """L{IProvider} for Twilio Programmable Voice."""

    name = "twilio"
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
        twilio = settings.twilio
        self.settings = settings
        self.clock = clock
        self.public_url = public_url
        self.known_public_url = known_public_url
        self.rest = TwilioRest(
            account_sid=twilio.account_sid,
            auth_token=twilio.auth_token.reveal(),
            base_url=api_root(twilio.region, twilio.api_base_url),
            clock=clock,
            http=http,
        )
        self.tts = tts
        self.stt = stt
        self.streaming = settings.streaming.enabled and tts is not None and stt is not None
        self.voice = twiml.native_voice(_configured_voice(settings))
        self.media = MediaSessions(
            clock,
            limits_from(settings.streaming),
            TwilioCodec(),
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
        """C{wss://<public host><streamPath>} (Twilio requires wss and drops queries)."""
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
                " use Twilio's own voice and speech recognition",
                missing=missing,
            )

    def stop(self) -> None:
        self._stopping = True
        self.media.stop("voicecalld is stopping")

    def emit(self, event: ev.CallEvent) -> Deferred:
        """Report an event to the call manager."""
        if self._sink is None:
            raise RuntimeError("the Twilio provider was not started")
        return self._sink(event)

    def emit_later(self, event: ev.CallEvent) -> None:
        """Report an event without waiting for it (failures are logged)."""
        self.emit(event).addErrback(
            lambda f: self.log.failure("applying {event!r} failed", f, event=event)
        )

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
        )
        resource = await self.rest.create_call(params)
        sid = resource.get("sid")
        if not isinstance(sid, str) or not sid:
            raise ProviderError("Twilio created the call but sent no call SID")
        return sid

    def answer(self, record: CallRecord) -> Deferred:
        self._track(record)
        return succeed(None)

    def reject(self, event: ev.InboundCall, reason: str) -> Deferred:
        # The webhook answers refused calls with <Reject/>; nothing else to do.
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
        await self.rest.update_call(
            _sid(record),
            [("Twiml", twiml.play_digits(digits, self.url(callId=call.call_id, type="idle")))],
        )
        call.document = "digits"

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
        from voicecalld.providers.twilio.dialect import TwilioDialect
        from voicecalld.providers.twilio.signature import twilio_verifier

        self._webhook = WebhookResource(
            self.settings,
            self.clock,
            twilio_verifier(self.settings.twilio.auth_token.reveal()),
            TwilioDialect(self),
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

    # -- webhooks (called by the resource) ----------------------------------------

    def call_for(self, call_id: str | None, sid: str | None) -> _Call | None:
        """
        The live call a webhook is about: by our id (in the URLs we give
        Twilio), else by Twilio's SID, as the live-call registry knows it.
        """
        call = self._calls.get(call_id) if call_id else None
        if call is None and sid and self._directory is not None:
            ours = self._directory.call_id_for(sid)
            call = self._calls.get(ours) if ours else None
        return call

    def answer_document(self, call: _Call, sid: str | None) -> str:
        """
        The TwiML for a call that was just answered (or a stream that ended);
        C{sid} is the call's, from Twilio's request.
        """
        if call.ended:
            return twiml.hangup()
        if self.streaming:
            call.document = "stream"
            call.streams += 1
            token = self.media.issue(call.call_id, sid)
            return twiml.stream(
                self.stream_url(),
                {"token": token, "callId": call.call_id},
                self.url(callId=call.call_id, type="stream-ended", stream=str(call.streams)),
            )
        if call.initial_text is not None and call.initial is None:
            call.says += 1
            call.initial = _Say(call.says, call.initial_text)
            call.waiting.insert(0, call.initial)
        return self.document(call)

    def document(self, call: _Call) -> str:
        """The next TwiML for a call without a media stream: say, listen or hold."""
        if call.ended:
            return twiml.hangup()
        if call.waiting:
            call.playing.extend(call.waiting)
            last = call.waiting[-1].number
            texts = [s.text for s in call.waiting]
            call.waiting = []
            call.document = "say"
            return twiml.say(
                texts, self.voice, self.url(callId=call.call_id, type="played", utt=str(last))
            )
        if call.mode == CONVERSATION or call.listening or call.direction == INBOUND:
            call.document = "listen"
            query = {"callId": call.call_id, "type": "gather"}
            if call.turn:
                query["turn"] = call.turn
            return twiml.listen(self.url(**query), self.url(callId=call.call_id, type="idle"))
        call.document = "hold"
        return twiml.hold(self.url(callId=call.call_id, type="idle"))

    def played(self, call: _Call, number: int) -> None:
        """Twilio finished the C{<Say>}s up to utterance C{number}."""
        still = []
        for say in call.playing:
            if say.number <= number:
                if not say.done.called:
                    say.done.callback(Playback(say.text, say.text))
            else:
                still.append(say)
        call.playing = still

    def restart_stream(self, call: _Call, sid: str | None) -> str:
        """A media stream ended while the call goes on: start another, a few times."""
        if call.ended or self._stopping:
            return twiml.hangup()
        if not self.streaming:
            return self.document(call)
        if not self.media.restart(call.call_id, sid):
            return twiml.hangup()
        return self.answer_document(call, sid)

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
            raise ProviderError("Twilio: this call is not live here")
        return call

    def _redirect(self, call: _Call, record: CallRecord) -> None:
        """
        Replace the TwiML running on the call with the next document, over
        REST.  One update at a time: Twilio may apply concurrent ones in any
        order, so a redirect asked for meanwhile is sent after this one, if it
        is still needed then.
        """
        if call.updating:
            call.update_again = True
            return
        moved = list(call.waiting)
        try:
            sid = _sid(record)
        except ProviderError as e:
            self._update_failed(call, moved, e)
            return
        document = self.document(call)
        call.updating = True
        d = Deferred.fromCoroutine(self.rest.update_call(sid, [("Twiml", document)]))

        def failed(failure: Any) -> None:
            error = (
                failure.value
                if failure.check(ProviderError)
                else ProviderError(failure.getErrorMessage())
            )
            self._update_failed(call, moved, error)

        def sent(_: Any) -> None:
            call.updating = False
            if call.update_again:
                call.update_again = False
                if not call.ended and (
                    call.waiting or (call.listening and call.document == "hold")
                ):
                    self._redirect(call, record)

        d.addErrback(failed)
        d.addBoth(sent)

    def _update_failed(self, call: _Call, moved: list[_Say], error: ProviderError) -> None:
        """A TwiML update failed: what it would have said fails too."""
        for say in moved:
            for queue in (call.waiting, call.playing):
                if say in queue:
                    queue.remove(say)
            if not say.done.called:
                say.done.errback(error)
        if not moved:
            self.log.warn(
                "updating the TwiML of {call_id} failed: {error}",
                call_id=call.call_id,
                error=error,
                log_code="twilio.update_failed",
            )


def _sid(record: CallRecord) -> str:
    """Twilio's SID of a call, as the call manager stored it."""
    if not record.provider_call_id:
        raise ProviderError("Twilio: this call has no call SID yet")
    return record.provider_call_id


def _configured_voice(settings: VoiceCallSettings) -> str | None:
    tts = settings.tts
    block = tts.provider_settings(tts.provider or "openai")
    return getattr(block, "speaker_voice", None) or getattr(block, "speaker_voice_id", None)
