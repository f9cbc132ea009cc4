"""
Gemini Live as the realtime voice: one C{BidiGenerateContent} WebSocket per call.

The client speaks first: a C{setup} message (model, voice, instructions,
tools, activity detection, transcription of both sides), then waits for
C{setupComplete}.  Caller audio goes up as C{realtimeInput.audio}, 16 kHz
s16le PCM in batches of about 100 ms; the model's audio comes down in
C{serverContent.modelTurn} parts as 24 kHz PCM.  This module converts both
ways so that its listener sees only 8 kHz mu-law.

The API key travels in the C{x-goog-api-key} header (as Google's own client
sends it), not in the URL, and log lines name only the host.

Gemini reports turns differently from OpenAI, and the listener's events are
derived from what it does send:

  - C{interrupted}: the caller barged in; Google has already cut its own
    response and keeps in its context only what was played (it paces as if
    played in real time).  The listener hears C{speech_started}, and the
    cut response ends (C{assistant_transcript} so far, C{response_done}).
    Anything more of that response until its C{turnComplete} is dropped.
  - C{inputTranscription}: words of the caller's turn.  The first words of a
    turn are also C{speech_started} when no interruption announced it.  The
    words are joined and given as one C{user_transcript} (after
    C{speech_stopped}) once the model starts answering, or at
    C{turnComplete} for words that came late.
  - the first audio or output transcription of a turn is C{response_started};
    C{turnComplete} ends it (C{assistant_transcript}, C{response_done}).
  - C{goAway} or a lost socket: with session resumption on and a handle
    from the server, the session carries on over a new socket (set up with
    that handle; audio and requests wait meanwhile, C{ready} is not said
    again, and a response cut by the move ends for the listener).  Without a
    handle, or when that fails, and on any other failure: C{closed}, once.

C{truncate} sends nothing: see L{GeminiLiveSession.truncate}.

L{speak} and L{relay} are C{clientContent} user turns.  Gemini echoes no
id for them, but it answers turns in order, so each one's token goes to the
first response that begins after it was sent (never to one already
running).
"""

from __future__ import annotations

import json
from base64 import b64decode, b64encode
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from autobahn.twisted.websocket import WebSocketClientFactory
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from voicecalld.config.model import GoogleRealtimeSettings
from voicecalld.realtime.audio import PHONE_RATE, PcmToPhone, PhoneToPcm
from voicecalld.realtime.interface import (
    IRealtimeListener,
    IRealtimeSession,
    IRealtimeVoice,
    RealtimeSetup,
)
from voicecalld.realtime.socket_session import (
    BATCH_SECONDS,
    CLOSED,
    CONNECTING,
    RealtimeSocketSession,
)
from voicecalld.voice import vendor_socket
from voicecalld.voice.vendor_socket import VendorClientFactory, VendorClientProtocol

INPUT_RATE = 16000
OUTPUT_RATE = 24000
"""Gemini Live hears 16 kHz PCM and speaks 24 kHz PCM (the rate in each part's mimeType wins)."""

BATCH_BYTES = int(PHONE_RATE * BATCH_SECONDS)
"""Caller audio goes up once 100 ms (800 mu-law bytes) has gathered, or 100 ms after it began."""

MAX_BUFFER_BYTES = 5 * PHONE_RATE
"""At most 5 s of caller audio is kept before the session is ready; older audio is dropped."""

MAX_QUEUED_MESSAGES = 32
"""Requests (speak, tool results) held before the session is ready."""

MAX_RESUMES = 3
RESUME_WINDOW = 60.0
"""A session that needs a new socket more than 3 times within 60 s ends instead."""

CONNECT_TIMEOUT = 10.0
"""Seconds from dialling to C{setupComplete}."""

SPEAK_PROMPT = "Say exactly the following words, as they are, and nothing else:\n\n"
"""How L{GeminiLiveSession.speak} asks the model to say a given text."""

RELAY_PROMPT = (
    "(From the assistant agent, not the caller.) Here is the agent's answer to what the caller"
    " just said; tell the caller now, in your own voice and briefly:\n\n"
)
"""How L{GeminiLiveSession.relay} hands the model the agent's answer."""

_AUDIO_HEAD = b'{"realtimeInput":{"audio":{"mimeType":"audio/pcm;rate=16000","data":"'
_AUDIO_TAIL = b'"}}}'

_CONNECTING = CONNECTING
_RESUMING = "resuming"
_OPEN = "open"
_CLOSED = CLOSED
_SETTING_UP = (_CONNECTING, _RESUMING)


def model_path(model: str) -> str:
    """Gemini names models C{models/<id>}; a bare id gets the prefix."""
    return model if model.startswith(("models/", "tunedModels/")) else f"models/{model}"


def _wire_enum(value: str | None, prefix: str = "") -> str | None:
    """A config enum (Google's spelling or its short lower-case form) as Google spells it."""
    if value is None:
        return None
    name = value.upper().replace("-", "_")
    return name if name.startswith(prefix) else prefix + name


def setup_message(settings: GoogleRealtimeSettings, setup: RealtimeSetup) -> dict[str, Any]:
    """The C{setup} message that opens a phone-call session."""
    generation: dict[str, Any] = {
        "responseModalities": ["AUDIO"],
        "speechConfig": {
            "voiceConfig": {"prebuiltVoiceConfig": {"voiceName": settings.voice_name}}
        },
    }
    if settings.temperature is not None and settings.temperature > 0:
        generation["temperature"] = settings.temperature
    detection: dict[str, Any] = {}
    if settings.automatic_activity_detection_disabled:
        detection["disabled"] = True
    start = _wire_enum(settings.start_sensitivity, "START_SENSITIVITY_")
    if start is not None:
        detection["startOfSpeechSensitivity"] = start
    end = _wire_enum(settings.end_sensitivity, "END_SENSITIVITY_")
    if end is not None:
        detection["endOfSpeechSensitivity"] = end
    if settings.silence_duration_ms is not None:
        detection["silenceDurationMs"] = settings.silence_duration_ms
    realtime_input: dict[str, Any] = {}
    if detection:
        realtime_input["automaticActivityDetection"] = detection
    if settings.activity_handling is not None:
        realtime_input["activityHandling"] = _wire_enum(settings.activity_handling)
    if settings.turn_coverage is not None:
        realtime_input["turnCoverage"] = _wire_enum(settings.turn_coverage)
    body: dict[str, Any] = {
        "model": model_path(settings.model),
        "generationConfig": generation,
        "inputAudioTranscription": {},
        "outputAudioTranscription": {},
    }
    if setup.instructions:
        body["systemInstruction"] = {"parts": [{"text": setup.instructions}]}
    if setup.tools:
        body["tools"] = [
            {
                "functionDeclarations": [
                    {
                        "name": tool.name,
                        "description": tool.description,
                        "parametersJsonSchema": dict(tool.parameters),
                    }
                    for tool in setup.tools
                ]
            }
        ]
    if realtime_input:
        body["realtimeInputConfig"] = realtime_input
    if settings.session_resumption:
        body["sessionResumption"] = {}
    if settings.context_window_compression:
        body["contextWindowCompression"] = {"slidingWindow": {}}
    return {"setup": body}


@implementer(IRealtimeVoice)
class GeminiLiveVoice:
    """Opens Gemini Live sessions: one WebSocket per call."""

    name = "google"

    def __init__(
        self,
        settings: GoogleRealtimeSettings,
        reactor: Any,
        clock: IReactorTime | None = None,
    ) -> None:
        self.settings = settings
        self.url = settings.base_url
        self.reactor = reactor
        self.clock: IReactorTime = clock if clock is not None else reactor

    def open_session(self, listener: IRealtimeListener, setup: RealtimeSetup) -> GeminiLiveSession:
        """Start a session for one call; it connects at once."""
        return GeminiLiveSession(self, listener, setup)

    def client_factory(self, session: GeminiLiveSession) -> VendorClientFactory:
        """The autobahn client factory for C{session}'s socket."""
        headers = {}
        if self.settings.api_key is not None:
            headers["x-goog-api-key"] = self.settings.api_key.reveal()
        # The connect timeout runs on our clock, covering the handshake and setup too.
        return vendor_socket.client_factory(session, self.url, headers, self.reactor)

    def connect(self, factory: WebSocketClientFactory) -> Deferred:
        """Open a TCP (TLS for C{wss}) connection for C{factory}; fire with its protocol."""
        return vendor_socket.connect(self.reactor, factory, CONNECT_TIMEOUT)


@implementer(IRealtimeSession)
class GeminiLiveSession(RealtimeSocketSession):
    """
    One call's conversation with Gemini Live, over one WebSocket at a time.
    Its state is C{connecting}, C{open}, C{resuming} (on a new socket) or C{closed}.
    """

    log = Logger()

    sending_state = _OPEN

    def __init__(
        self, voice: GeminiLiveVoice, listener: IRealtimeListener, setup: RealtimeSetup
    ) -> None:
        super().__init__(listener, setup.call_id, voice.clock, MAX_BUFFER_BYTES, chunked=True)
        self._voice = voice
        self._setup = setup_message(voice.settings, setup)
        self._factory = voice.client_factory(self)
        self._host = urlsplit(voice.url).hostname or "?"
        self._told_closed = False
        self._connect_timeout: IDelayedCall | None = None
        self._queued: list[bytes] = []
        # Converters are made when audio first flows, and dropped at the end.
        self._up: PhoneToPcm | None = None
        self._down: PcmToPhone | None = None
        # The turn in progress.
        self._heard: list[str] = []
        self._said: list[str] = []
        self._caller_speaking = False
        self._responding = False
        self._discarding = False
        self._tool_names: dict[str, str] = {}
        self._unnamed_calls = 0
        # Tokens of our turns sent, whose responses have not begun.
        self._asked: list[str] = []
        self._tokens = 0
        self.resumption_handle: str | None = None
        self._resumed_at: list[float] = []
        self._connect()

    # IRealtimeSession

    def speak(self, text: str) -> str:
        """Ask the model, as a user turn, to say C{text} word for word."""
        return self._ask(SPEAK_PROMPT, text)

    def relay(self, text: str) -> str:
        """Give the model, as a user turn, the agent's answer C{text} to tell the caller."""
        return self._ask(RELAY_PROMPT, text)

    def _ask(self, prompt: str, text: str) -> str:
        self._tokens += 1
        token = f"s{self._tokens}"
        if not text.strip() or self._state == _CLOSED:
            return token
        self._asked.append(token)
        self._send_json(
            {
                "clientContent": {
                    "turns": [{"role": "user", "parts": [{"text": prompt + text}]}],
                    "turnComplete": True,
                }
            }
        )
        return token

    def truncate(self, heard_ms: int) -> None:
        """
        The caller cut the model off.  Gemini needs nothing sent: with its
        activity detection on, it cuts the response itself when it hears
        the caller (C{interrupted}), and it paces its output as if played in
        real time, so its context holds what was heard.  Here the response in
        progress, if any, ends for the listener and the rest of its audio is
        dropped.
        """
        if self._state == _CLOSED:
            return
        self.log.debug(
            "realtime response truncated at {heard_ms} ms (nothing to send to Gemini)",
            heard_ms=heard_ms,
            call=self._call,
            code="realtime.truncate",
        )
        self._cut_response()

    def tool_result(self, call_id: str, output: Any) -> None:
        """Answer the function call C{call_id}; the model goes on."""
        name = self._tool_names.pop(call_id, None)
        if name is None:
            self.log.warn(
                "realtime tool result for an unknown call {call_id}",
                call_id=call_id,
                call=self._call,
                code="realtime.tool_unknown",
            )
        response = dict(output) if isinstance(output, Mapping) else {"output": output}
        answer: dict[str, Any] = {"id": call_id, "response": response}
        if name is not None:
            answer["name"] = name
        self._send_json({"toolResponse": {"functionResponses": [answer]}})

    def close(self) -> Deferred:
        """Stop for good; fires once the socket is gone."""
        self._end("closed by voicecalld", level="info")
        return self._sockets.gone()

    # Connecting

    def _connect(self) -> None:
        self._connect_timeout = self._clock.callLater(CONNECT_TIMEOUT, self._timed_out)
        self.log.debug(
            "realtime connecting to {host}",
            host=self._host,
            call=self._call,
            code="realtime.connect",
        )
        attempt = maybeDeferred(self._voice.connect, self._factory)
        self._attempt = attempt
        attempt.addCallbacks(self._connected, self._connect_failed)

    def _connect_failed(self, failure: Any) -> None:
        self._attempt = None
        if self._state != _CLOSED:
            self._end(f"could not {self._doing} to {self._host}: {failure.getErrorMessage()}")

    def _timed_out(self) -> None:
        self._connect_timeout = None
        self._end(f"no session from {self._host} within {CONNECT_TIMEOUT:g} s")

    @property
    def _doing(self) -> str:
        return "reconnect" if self._state == _RESUMING else "connect"

    def _can_resume(self) -> bool:
        if not self._voice.settings.session_resumption or self.resumption_handle is None:
            return False
        now = self._clock.seconds()
        self._resumed_at = [t for t in self._resumed_at if now - t < RESUME_WINDOW]
        return len(self._resumed_at) < MAX_RESUMES

    def _resume(self, why: str) -> None:
        """Carry the session on over a new socket, with the latest resumption handle."""
        self._resumed_at.append(self._clock.seconds())
        old, self._proto = self._proto, None
        if old is not None:
            vendor_socket.close_socket(old)
        self._audio.stop()
        # What the old socket was saying is lost; the listener hears its end now.
        self._cut_response()
        self._discarding = False
        self._state = _RESUMING
        self.log.info(
            "realtime session moving to a new socket ({why})",
            why=why,
            call=self._call,
            code="realtime.resuming",
        )
        self._connect()

    def _setup_bytes(self) -> bytes:
        setup = self._setup
        if self._state == _RESUMING and self.resumption_handle is not None:
            body = dict(setup["setup"], sessionResumption={"handle": self.resumption_handle})
            setup = {"setup": body}
        return json.dumps(setup).encode("utf-8")

    def _ready(self) -> None:
        vendor_socket.cancel(self._connect_timeout)
        self._connect_timeout = None
        resumed = self._state == _RESUMING
        self._state = _OPEN
        self.log.info(
            "realtime session {how} ({host}, {model})",
            how="resumed" if resumed else "open",
            host=self._host,
            model=self._voice.settings.model,
            call=self._call,
            code="realtime.resumed" if resumed else "realtime.open",
        )
        if self._audio.dropped:
            self.log.warn(
                "realtime session dropped {dropped_ms} ms of caller audio while connecting",
                dropped_ms=self._audio.dropped * 1000 // PHONE_RATE,
                call=self._call,
                code="realtime.dropped",
            )
            self._audio.dropped = 0
        if not resumed:
            self._tell("ready")
        self._audio.release()
        queued, self._queued = self._queued, []
        for message in queued:
            self._send(message)

    def _end(self, reason: str, level: str = "warn") -> None:
        """Stop for good (once): timers, socket, and C{closed} for the listener."""
        if self._state == _CLOSED:
            return
        self._state = _CLOSED
        vendor_socket.cancel(self._connect_timeout)
        self._connect_timeout = None
        attempt, self._attempt = self._attempt, None
        if attempt is not None:
            attempt.cancel()
        self._sockets.close_all()
        self._audio.clear()
        self._queued.clear()
        self._up = self._down = None
        getattr(self.log, level)(
            "realtime session closed ({host}): {reason}",
            host=self._host,
            reason=reason,
            call=self._call,
            code="realtime.closed",
        )
        if not self._told_closed:
            self._told_closed = True
            try:
                self._listener.closed(reason)
            except Exception:
                self.log.failure("realtime listener failed in closed", call=self._call)

    # Sending

    def _send_audio(self, ulaw: bytes) -> None:
        if self._up is None:
            self._up = PhoneToPcm(INPUT_RATE)
        pcm = self._up.convert(ulaw)
        if pcm:
            self._proto.sendMessage(_AUDIO_HEAD + b64encode(pcm) + _AUDIO_TAIL, isBinary=False)

    def _send_json(self, message: dict[str, Any]) -> None:
        if self._state == _CLOSED:
            return
        try:
            data = json.dumps(message).encode("utf-8")
        except (TypeError, ValueError) as e:
            self._tell("problem", f"realtime request could not be encoded: {e}")
            return
        if self._state != _OPEN:
            if len(self._queued) >= MAX_QUEUED_MESSAGES:
                self._tell("problem", "realtime session not ready: request dropped")
                return
            self._queued.append(data)
            return
        self._send(data)

    def _send(self, data: bytes) -> None:
        proto = self._proto
        if vendor_socket.is_open(proto):
            proto.sendMessage(data, isBinary=False)

    # Called by the protocol

    def _opened(self, proto: VendorClientProtocol) -> None:
        if proto is self._proto and self._state in _SETTING_UP:
            proto.sendMessage(self._setup_bytes(), isBinary=False)

    def _received(self, proto: VendorClientProtocol, payload: bytes, is_binary: bool) -> None:
        # Google sends its JSON in binary frames as often as in text ones.
        if proto is not self._proto or self._state == _CLOSED:
            return
        try:
            message = json.loads(payload)
        except ValueError:
            message = None
        if not isinstance(message, dict):
            self.log.warn(
                "realtime server sent something that is not a JSON object",
                call=self._call,
                code="realtime.bad_message",
            )
            self._tell("problem", "realtime server sent a message that is not JSON")
            return
        try:
            self._handle(message)
        except Exception:
            self.log.failure(
                "realtime server message could not be handled",
                call=self._call,
                code="realtime.fault",
            )

    def _lost(self, proto: VendorClientProtocol, detail: str) -> None:
        self._sockets.discard(proto)
        if proto is self._proto:
            self._proto = None
            if self._state == _OPEN and self._can_resume():
                self._tell("problem", f"realtime socket lost ({detail}); resuming the session")
                self._resume(detail)
            elif self._state == _RESUMING:
                self._end(f"could not reconnect to {self._host}: {detail}")
            else:
                self._end(detail)

    # Server messages

    def _handle(self, message: dict[str, Any]) -> None:
        if "setupComplete" in message:
            if self._state in _SETTING_UP:
                self._ready()
        content = message.get("serverContent")
        if isinstance(content, dict):
            self._content(content)
        tool_call = message.get("toolCall")
        if isinstance(tool_call, dict):
            self._tool_calls(tool_call)
        cancelled = message.get("toolCallCancellation")
        if isinstance(cancelled, dict):
            self.log.info(
                "realtime model cancelled tool calls {ids}",
                ids=cancelled.get("ids"),
                call=self._call,
                code="realtime.tool_cancelled",
            )
        update = message.get("sessionResumptionUpdate")
        if isinstance(update, dict) and update.get("resumable") and update.get("newHandle"):
            self.resumption_handle = str(update["newHandle"])
        go_away = message.get("goAway")
        if isinstance(go_away, dict) and self._state != _CLOSED:
            left = go_away.get("timeLeft")
            why = "the server is ending the session (goAway" + (
                f", {left} left)" if isinstance(left, str) else ")"
            )
            if self._state == _OPEN and self._can_resume():
                self._resume(why)
            else:
                self._end(why)

    def _content(self, content: dict[str, Any]) -> None:
        heard = _text(content.get("inputTranscription"))
        if heard:
            self._heard.append(heard)
            if not self._responding and not self._caller_speaking:
                self._caller_speaking = True
                self._tell("speech_started")
        if content.get("interrupted"):
            self._barge_in()
        turn = content.get("modelTurn")
        if isinstance(turn, dict) and not self._discarding:
            for part in turn.get("parts") or ():
                if isinstance(part, dict):
                    self._part(part)
        said = _text(content.get("outputTranscription"))
        if said and not self._discarding:
            self._start_response()
            self._said.append(said)
        if content.get("turnComplete"):
            self._turn_complete()

    def _part(self, part: dict[str, Any]) -> None:
        blob = part.get("inlineData")
        if not isinstance(blob, dict) or self._state == _CLOSED:
            return
        mime = blob.get("mimeType")
        data = blob.get("data")
        if (
            not isinstance(mime, str)
            or not mime.startswith("audio/pcm")
            or not isinstance(data, str)
        ):
            return
        try:
            pcm = b64decode(data, validate=True)
        except ValueError:
            self._tell("problem", "realtime server sent audio that is not base64")
            return
        rate = _rate(mime)
        if self._down is None or rate != self._down.rate:
            self._down = PcmToPhone(rate)
        down = self._down
        self._start_response()
        ulaw = down.convert(pcm)
        if ulaw:
            self._tell("audio", ulaw)

    def _tool_calls(self, tool_call: dict[str, Any]) -> None:
        for call in tool_call.get("functionCalls") or ():
            if not isinstance(call, dict):
                continue
            name = call.get("name")
            if not isinstance(name, str) or not name:
                self._tell("problem", "realtime model called a tool without a name")
                continue
            call_id = call.get("id")
            if not isinstance(call_id, str) or not call_id:
                self._unnamed_calls += 1
                call_id = f"call_{self._unnamed_calls}"
            args = call.get("args")
            self._end_caller_turn()
            self._tool_names[call_id] = name
            self.log.info(
                "realtime model called {name}",
                name=name,
                call=self._call,
                code="realtime.tool_call",
            )
            self._tell("tool_call", call_id, name, args if isinstance(args, dict) else {})

    # Turns

    def _start_response(self) -> None:
        if self._responding:
            return
        self._end_caller_turn()
        self._responding = True
        token = self._asked.pop(0) if self._asked else None
        self._tell("response_started", token)

    def _end_caller_turn(self) -> None:
        if self._caller_speaking:
            self._caller_speaking = False
            self._tell("speech_stopped")
        text = "".join(self._heard).strip()
        self._heard.clear()
        if text:
            self._tell("user_transcript", text)

    def _barge_in(self) -> None:
        was_speaking = self._caller_speaking
        self._caller_speaking = True
        if not was_speaking:
            self._tell("speech_started")
        self._cut_response()

    def _cut_response(self) -> None:
        """End the response in progress for the listener; drop the rest of its audio."""
        if self._down is not None:
            self._down.discard()
        if not self._responding:
            return
        self._responding = False
        self._discarding = True
        self._finish_response()

    def _turn_complete(self) -> None:
        if self._discarding:
            # The cut response's own end; the caller's turn goes on.
            self._discarding = False
            self._said.clear()
            return
        self._end_caller_turn()
        if not self._responding:
            return
        self._responding = False
        tail = self._down.finish() if self._down is not None else b""
        if tail:
            self._tell("audio", tail)
        self._finish_response()

    def _finish_response(self) -> None:
        text = "".join(self._said).strip()
        self._said.clear()
        if text:
            self._tell("assistant_transcript", text)
        self._tell("response_done")


def _text(transcription: Any) -> str:
    if isinstance(transcription, dict):
        text = transcription.get("text")
        if isinstance(text, str):
            return text
    return ""


def _rate(mime: str) -> int:
    """The C{rate=} of an C{audio/pcm;rate=24000} type (24 kHz when it names none)."""
    for param in mime.split(";")[1:]:
        key, _, value = param.strip().partition("=")
        if key == "rate" and value.isdigit() and 4000 <= int(value) <= 96000:
            return int(value)
    return OUTPUT_RATE
