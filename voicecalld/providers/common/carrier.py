"""
What every carrier's L{IProvider} shares, whatever its wire format: the
public URLs, the media sessions speaking the carrier's codec, the webhook
resource with the carrier's verifier and dialect, starting and stopping, and
the wire state of each live call, keyed by our call id.

A carrier's provider subclasses L{CarrierProvider}, names itself and its
call ids, and supplies its verifier, dialect and per-call wire state; what
remains in its package is how it talks to the carrier.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar
from urllib.parse import urlencode, urlsplit, urlunsplit

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from voicecalld.config.model import VoiceCallSettings
from voicecalld.errors import ProviderError
from voicecalld.media.dtmf import dtmf_audio
from voicecalld.media.pacing import DEFAULT_LEAD
from voicecalld.media.session import MediaSessions, limits_from
from voicecalld.media.stream import IStreamCodec
from voicecalld.providers.interface import ICallDirectory
from voicecalld.values import events as ev
from voicecalld.values.record import CallRecord
from voicecalld.voice.tts_factory import CallVoices

Sink = Callable[[ev.CallEvent], Deferred]


class CarrierCall:
    """The wire state of one live call; the call itself is the call manager's."""

    def __init__(self, record: CallRecord) -> None:
        self.call_id = record.call_id
        self.direction = record.direction
        self.ended = False
        # Our side of the call: the number we dialled from, or the one dialled.
        self.our_number = record.from_number if record.direction == "outbound" else record.to_number
        # The E.164 number the call was handed to (a transfer the carrier took).
        self.handed_over: str | None = None

    def release(self) -> None:
        """The call is over here: settle whatever still waits on the carrier."""


class CarrierProvider:
    """
    The provider-neutral part of a carrier's L{IProvider}.  Subclasses set
    C{name}, C{title}, C{native}, C{call_id_name} and C{call_type}, and
    supply L{verifier}, L{dialect} and L{dial_digits}.
    """

    name: ClassVar[str]
    # The carrier's name in messages ("Twilio").
    title: ClassVar[str]
    # What the carrier does for us without a media stream (in a warning).
    native: ClassVar[str]
    # What the carrier calls its id of a call ("call SID").
    call_id_name: ClassVar[str]
    call_type: ClassVar[type[CarrierCall]] = CarrierCall
    log = Logger()

    def __init__(
        self,
        settings: VoiceCallSettings,
        clock: IReactorTime,
        codec: IStreamCodec,
        *,
        public_url: str,
        known_public_url: str | None,
        tts: Any,
        stt: Any,
        realtime: Any = None,
        frame_lead: float = DEFAULT_LEAD,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.public_url = public_url
        self.known_public_url = known_public_url
        # A CallVoices gives each call its route's TTS; a bare ITTS serves every call.
        self.voices = tts if isinstance(tts, CallVoices) else None
        self.tts = self.voices.default if self.voices is not None else tts
        self.stt = stt
        # A realtime voice (IRealtimeVoice): every call is one model session on its stream.
        self.realtime_voice = realtime
        # Whether calls run over a media stream (streaming STT + TTS, or realtime).
        self.streaming = realtime is not None or (
            settings.streaming.enabled and tts is not None and stt is not None
        )
        opener = None
        if realtime is not None:
            from voicecalld.realtime.bridge import bridge_opener
            from voicecalld.realtime.setup import realtime_setup

            opener = bridge_opener(
                realtime, lambda call_id: realtime_setup(settings.realtime, call_id), clock
            )
        self.media = MediaSessions(
            clock,
            limits_from(settings.streaming),
            codec,
            self.emit_later,
            tts=self.tts,
            stt=stt,
            realtime=opener,
            frame_lead=frame_lead,
        )
        self._sink: Sink | None = None
        self._directory: ICallDirectory | None = None
        self._stopping = False
        self._webhook: Any = None
        self._calls: dict[str, Any] = {}

    # -- what the carrier supplies ------------------------------------------------

    def verifier(self) -> Any:
        """The L{IWebhookVerifier} of the carrier's signed requests."""
        raise NotImplementedError

    def dialect(self) -> Any:
        """The L{IWebhookDialect} that reads the carrier's requests for this provider."""
        raise NotImplementedError

    async def dial_digits(self, call: Any, record: CallRecord, digits: str) -> None:
        """Have the carrier play key presses on a call without a media stream."""
        raise NotImplementedError

    # -- URLs ----------------------------------------------------------------------

    def url(self, **query: str) -> str:
        """Our webhook URL (the public one) with a query."""
        parts = urlsplit(self.public_url)
        return urlunsplit(parts._replace(query=urlencode(query)))

    def stream_url(self) -> str:
        """C{wss://<public host><streamPath>} (carriers require wss; some drop queries)."""
        host = urlsplit(self.public_url).netloc
        return f"wss://{host}{self.media_path()}"

    def media_path(self) -> str:
        """Where media streams connect: C{realtime.streamPath} for realtime calls."""
        if self.realtime_voice is not None:
            from voicecalld.realtime.setup import realtime_stream_path

            return realtime_stream_path(self.settings)
        return self.settings.streaming.stream_path

    # -- IProvider -------------------------------------------------------------------

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
                " use {carrier}'s own {native}",
                missing=missing,
                carrier=self.title,
                native=self.native,
                log_code=f"{self.name}.no_streaming",
            )

    def stop(self) -> None:
        self._stopping = True
        if self._webhook is not None:
            self._webhook.stopping = True
        self.media.stop("voicecalld is stopping")

    def emit(self, event: ev.CallEvent) -> Deferred:
        """Report an event to the call manager."""
        if self._sink is None:
            raise RuntimeError(f"the {self.title} provider was not started")
        return self._sink(event)

    def emit_later(self, event: ev.CallEvent) -> None:
        """Report an event without waiting for it (failures are logged)."""
        self.emit(event).addErrback(
            lambda f: self.log.failure("applying {event!r} failed", f, event=event)
        )

    def interrupt(self, record: CallRecord) -> None:
        if record.call_id in self._calls:
            self.media.interrupt(record.call_id)

    async def send_dtmf(self, record: CallRecord, digits: str) -> None:
        call = self._call(record)
        keys = self.media.play(call.call_id, f"[keys {digits}]", dtmf_audio(digits))
        if keys is not None:
            await keys
            return
        await self.dial_digits(call, record, digits)

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

        self._webhook = WebhookResource(
            self.settings,
            self.clock,
            self.verifier(),
            self.dialect(),
            self.emit,
            public_url=self.known_public_url,
        )
        resources: dict[str, Any] = {self.settings.serve.path: self._webhook}
        if self.settings.streaming.enabled or self.realtime_voice is not None:
            resources[self.media_path()] = WebSocketResource(self.media.factory)
        return resources

    def realtime(self, record: CallRecord) -> bool:
        return self.realtime_voice is not None

    def tool_result(self, record: CallRecord, tool_call_id: str, output: dict[str, Any]) -> None:
        if not self.media.tool_result(record.call_id, tool_call_id, output):
            self.log.info(
                "result of tool call {tool} on {call_id} dropped: no realtime stream",
                tool=tool_call_id,
                call_id=record.call_id,
                log_code="realtime.result_dropped",
            )

    def forget(self, record: CallRecord) -> None:
        call = self._calls.pop(record.call_id, None)
        if call is None:
            return
        call.ended = True
        call.release()
        self.media.forget(record.call_id)

    # -- the live calls ----------------------------------------------------------------

    def call_for(self, call_id: str | None, carrier_id: str | None) -> Any:
        """
        The live call a webhook is about: by our id (which travels in what we
        give the carrier), else by the carrier's id of it, as the live-call
        registry knows it.
        """
        call = self._calls.get(call_id) if call_id else None
        if call is None and carrier_id and self._directory is not None:
            ours = self._directory.call_id_for(carrier_id)
            call = self._calls.get(ours) if ours else None
        return call

    def carrier_id(self, record: CallRecord) -> str:
        """The carrier's id of a call, as the call manager stored it."""
        if not record.provider_call_id:
            raise ProviderError(f"{self.title}: this call has no {self.call_id_name} yet")
        return record.provider_call_id

    def _track(self, record: CallRecord) -> Any:
        call = self._calls.get(record.call_id)
        if call is None:
            call = self._calls[record.call_id] = self.call_type(record)
            voice = self.voices.for_record(record) if self.voices is not None else None
            self.media.track(record.call_id, voice)
        return call

    async def hand_over(self, record: CallRecord, to: str, request: Callable[[Any], Any]) -> None:
        """
        Transfer the call to C{to} with the carrier's C{request(call)}: from
        now on nothing of ours runs on it (its documents dial C{to}), and once
        the carrier took the request its media stream stops.  A refused
        request leaves the call ours.
        """
        call = self._call(record)
        call.handed_over = to
        try:
            await request(call)
        except Exception:
            call.handed_over = None
            raise
        self.media.forget(record.call_id)

    def _call(self, record: CallRecord) -> Any:
        call = self._calls.get(record.call_id)
        if call is None or call.ended:
            raise ProviderError(f"{self.title}: this call is not live here")
        return call


def configured_voice(settings: VoiceCallSettings) -> str | None:
    """The voice name configured for our TTS, which a carrier's own voice is chosen by."""
    tts = settings.tts
    block = tts.provider_settings(tts.provider or "openai")
    return getattr(block, "speaker_voice", None) or getattr(block, "speaker_voice_id", None)


# OpenAI voice names mapped to similar Amazon Polly voices, which the
# carriers' own voices include (each names them its own way).
_POLLY = {
    "alloy": "Joanna",
    "echo": "Matthew",
    "fable": "Amy",
    "onyx": "Brian",
    "nova": "Salli",
    "shimmer": "Kimberly",
}


def polly_voice(configured: str) -> str | None:
    """The Amazon Polly voice (bare: C{Joanna}) like a configured OpenAI voice, if any."""
    return _POLLY.get(configured.lower())
