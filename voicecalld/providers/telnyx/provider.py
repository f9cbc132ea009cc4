"""
Telnyx as an L{IProvider}: Call Control v2 commands over REST, events from
Ed25519-signed webhooks, speech and listening over a bidirectional media
stream (or, without one, Telnyx's own C{speak} and C{transcription_start}).

The neutral webhook pipeline (L{voicecalld.providers.common.webhook})
verifies signatures (C{signature.py}); the Telnyx dialect (C{dialect.py})
turns webhooks into events and calls on this class.  Media streams are the
neutral L{MediaSessions}, speaking Telnyx's codec (C{codec.py}).

Our call id travels as C{client_state} (Base64), which Telnyx echoes in every
webhook of the call.  Inbound calls are answered with the C{answer} command
once the call manager has accepted them.  Telnyx reports the end of each
C{speak} (C{call.speak.ended}) in the order they were queued, which is how a
spoken utterance is known to have been heard.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

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
from voicecalld.providers.telnyx.codec import TelnyxCodec
from voicecalld.providers.telnyx.rest import (
    TelnyxRest,
    call_ended,
    client_state,
    dial_params,
    stream_params,
)
from voicecalld.values import events as ev
from voicecalld.values.playback import CallStatus, Liveness, Playback
from voicecalld.values.record import INBOUND, CallRecord
from voicecalld.values.states import CallState

Sink = Callable[[ev.CallEvent], Deferred]

LANGUAGE = "en-US"
TRANSCRIPTION_LANGUAGE = "en"
DEFAULT_VOICE = "female"
# OpenAI voice names mapped to similar Amazon Polly voices (as for Twilio).
_POLLY = {
    "alloy": "Joanna",
    "echo": "Matthew",
    "fable": "Amy",
    "onyx": "Brian",
    "nova": "Salli",
    "shimmer": "Kimberly",
}


def native_voice(configured: str | None) -> str:
    """Telnyx's C{speak} voice for a configured TTS voice name."""
    if not configured:
        return DEFAULT_VOICE
    if configured.startswith("Polly."):
        return "AWS." + configured
    if "." in configured or configured in ("female", "male"):
        return configured
    polly = _POLLY.get(configured.lower())
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


class _Call:
    """The wire state of one live call; the call itself is the call manager's."""

    def __init__(self, record: CallRecord) -> None:
        self.call_id = record.call_id
        self.direction = record.direction
        self.dtmf_sequence = record.metadata.get("dtmfSequence")
        self.says: deque[_Say] = deque()
        # speak.ended events still due for utterances already given up on.
        self.stale_ends = 0
        self.listening = False
        self.turn: str | None = None
        self.transcribing = False
        self.machine = False
        self.ended = False


@implementer(IProvider)
class TelnyxProvider:
    """L{IProvider} for Telnyx Call Control v2."""

    name = "telnyx"
    log = Logger()

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
        frame_lead: float = DEFAULT_LEAD,
    ) -> None:
        telnyx = settings.telnyx
        self.settings = settings
        self.clock = clock
        self.public_url = public_url
        self.known_public_url = known_public_url
        self.public_key = public_key
        self.connection_id = telnyx.connection_id or ""
        self.rest = TelnyxRest(
            api_key=telnyx.api_key.reveal() if telnyx.api_key else "",
            base_url=telnyx.api_base_url,
            clock=clock,
            http=http,
        )
        self.tts = tts
        self.stt = stt
        self.streaming = settings.streaming.enabled and tts is not None and stt is not None
        self.voice = native_voice(_configured_voice(settings))
        self.media = MediaSessions(
            clock,
            limits_from(settings.streaming),
            TelnyxCodec(),
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

    def stream_url(self) -> str:
        """C{wss://<public host><streamPath>}."""
        host = urlsplit(self.public_url).netloc
        return f"wss://{host}{self.settings.streaming.stream_path}"

    # -- IProvider ---------------------------------------------------------------

    def start(self, sink: Sink, directory: ICallDirectory) -> None:
        self._sink = sink
        self._directory = directory
        if self.settings.streaming.enabled and not self.streaming:
            self.log.warn(
                "streaming.enabled is set but telephony TTS or streaming STT is not"
                " configured: calls use Telnyx's own voice and transcription",
                log_code="telnyx.no_streaming",
            )

    def stop(self) -> None:
        self._stopping = True
        self.media.stop("voicecalld is stopping")

    def emit(self, event: ev.CallEvent) -> Deferred:
        """Report an event to the call manager."""
        if self._sink is None:
            raise RuntimeError("the Telnyx provider was not started")
        return self._sink(event)

    def emit_later(self, event: ev.CallEvent) -> None:
        """Report an event without waiting for it (failures are logged)."""
        self.emit(event).addErrback(
            lambda f: self.log.failure("applying {event!r} failed", f, event=event)
        )

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
        )
        data = await self.rest.dial(params)
        ccid = data.get("call_control_id")
        if not isinstance(ccid, str) or not ccid:
            raise ProviderError("Telnyx dialled the call but sent no call_control_id")
        return ccid

    async def answer(self, record: CallRecord) -> None:
        call = self._track(record)
        ccid = _ccid(record)
        params: dict[str, Any] = {
            "client_state": client_state(call.call_id),
            "webhook_url": self.public_url,
        }
        if self.streaming:
            params.update(self._stream_params(call, ccid))
        await self.rest.command(ccid, "answer", params)

    async def reject(self, event: ev.InboundCall, reason: str) -> None:
        if not event.provider_call_id:
            return
        await self._tolerant(event.provider_call_id, "reject", {"cause": "CALL_REJECTED"})

    async def hangup(self, record: CallRecord, reason: CallState) -> None:
        if record.provider_call_id is None:
            return
        await self._tolerant(record.provider_call_id, "hangup", {})

    def speak(self, record: CallRecord, text: str) -> Deferred:
        call = self._call(record)
        if self.streaming:
            return self.media.say(call.call_id, text)
        ccid = _ccid(record)
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
        if call is None:
            return
        if self.streaming:
            self.media.interrupt(call.call_id)
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
            self.rest.command(_ccid(record), "transcription_start", params)
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

    async def send_dtmf(self, record: CallRecord, digits: str) -> None:
        call = self._call(record)
        keys = self.media.play(call.call_id, f"[keys {digits}]", dtmf_audio(digits))
        if keys is not None:
            await keys
            return
        await self.rest.command(_ccid(record), "send_dtmf", {"digits": digits})

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
        from voicecalld.providers.telnyx.dialect import TelnyxDialect
        from voicecalld.providers.telnyx.signature import TelnyxVerifier

        self._webhook = WebhookResource(
            self.settings,
            self.clock,
            TelnyxVerifier(self.public_key),
            TelnyxDialect(self),
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
        for say in call.says:
            say.finish(complete=False)
        call.says.clear()
        self.media.forget(record.call_id)

    # -- webhooks (called by the dialect) -----------------------------------------

    def call_for(self, call_id: str | None, ccid: str | None) -> _Call | None:
        """
        The live call a webhook is about: by our id (its C{client_state}), else
        by Telnyx's call control id, as the live-call registry knows it.
        """
        call = self._calls.get(call_id) if call_id else None
        if call is None and ccid and self._directory is not None:
            ours = self._directory.call_id_for(ccid)
            call = self._calls.get(ours) if ours else None
        return call

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
        if call.ended or self._stopping or not self.streaming:
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

    def _track(self, record: CallRecord) -> _Call:
        call = self._calls.get(record.call_id)
        if call is None:
            call = self._calls[record.call_id] = _Call(record)
            self.media.track(record.call_id)
        return call

    def _call(self, record: CallRecord) -> _Call:
        call = self._calls.get(record.call_id)
        if call is None or call.ended:
            raise ProviderError("Telnyx: this call is not live here")
        return call


def _ccid(record: CallRecord) -> str:
    """Telnyx's call control id of a call, as the call manager stored it."""
    if not record.provider_call_id:
        raise ProviderError("Telnyx: this call has no call_control_id yet")
    return record.provider_call_id


def _configured_voice(settings: VoiceCallSettings) -> str | None:
    tts = settings.tts
    block = tts.provider_settings(tts.provider or "openai")
    return getattr(block, "speaker_voice", None) or getattr(block, "speaker_voice_id", None)
