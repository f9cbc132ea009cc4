"""
OpenAI Realtime speech-to-speech (GA protocol) as an L{IRealtimeVoice}.

One WebSocket per call to C{<baseUrl>?model=<model>}.  On open the session
is configured (instructions, voice, audio formats, server VAD, input
transcription, tools); L{IRealtimeListener.ready} follows C{session.updated}.
Caller audio is batched into appends of about 100 ms; audio fed before the
session is ready is kept (5 s at most) and sent then.

Audio formats (C{audioFormat}): C{g711_ulaw} asks the API for C{audio/pcmu}
both ways, so the phone's bytes pass untouched; C{pcm16} asks for 24 kHz
PCM and resamples with soxr in both directions.

There is no reconnect: the conversation lives in the vendor's session, so a
lost socket ends the session (the bridge then hangs up).

Who starts a response: the server VAD, after each caller turn; L{speak},
L{relay} and L{tool_result}.  Only one response may run at a time, so a
request made while one runs waits for its C{response.done}.  A response we
ask for carries its token in C{response.metadata}, which C{response.created}
echoes: that is how the listener tells ours from the model's own, even when
the VAD's response starts first (ours is then refused as a second active
response and asked again after the VAD's).
"""

from __future__ import annotations

import binascii
import json
from base64 import b64decode
from collections import deque
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from autobahn.twisted.websocket import WebSocketClientFactory
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from voicecalld.config.model import OpenAIRealtimeSettings
from voicecalld.realtime.audio import AudioWire, Pcm16Wire, UlawWire
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
from voicecalld.voice import openai_ws, vendor_socket
from voicecalld.voice.stt import ULAW_BYTES_PER_SECOND
from voicecalld.voice.vendor_socket import VendorClientFactory, VendorClientProtocol

CONNECT_TIMEOUT = 10.0
"""Seconds from dialing to a configured session."""

BATCH_BYTES = int(ULAW_BYTES_PER_SECOND * BATCH_SECONDS)

MAX_BUFFER_BYTES = 5 * ULAW_BYTES_PER_SECOND
"""At most 5 s of audio is kept until the session is ready; older audio is dropped."""

PCM_RATE = 24000
"""The only PCM rate the Realtime API takes."""

SPEAK_INSTRUCTIONS = (
    "Say the following to the caller now, word for word, and nothing else."
    " Do not answer it, explain it or add to it:\n\n{text}"
)

RELAY_NOTE = (
    "The assistant agent answered what the caller just said. Tell the caller its answer now,"
    " in your own voice and briefly:\n\n{text}"
)

# The response.metadata key carrying our token.
TOKEN_KEY = "voicecalld"

_CANCEL_NOT_ACTIVE = "response_cancel_not_active"
_ALREADY_ACTIVE = "conversation_already_has_active_response"

_CONNECTING = CONNECTING
_READY = "ready"
_CLOSED = CLOSED


def audio_format(settings: OpenAIRealtimeSettings) -> dict[str, Any]:
    """The GA audio format object for the configured C{audioFormat}."""
    if settings.audio_format == "pcm16":
        return {"type": "audio/pcm", "rate": PCM_RATE}
    return {"type": "audio/pcmu"}


def session_update(settings: OpenAIRealtimeSettings, setup: RealtimeSetup) -> dict[str, Any]:
    """The GA C{session.update} that configures a phone conversation."""
    fmt = audio_format(settings)
    session: dict[str, Any] = {
        "type": "realtime",
        "instructions": setup.instructions,
        "output_modalities": ["audio"],
        "audio": {
            "input": {
                "format": fmt,
                "transcription": {"model": settings.transcription_model},
                "turn_detection": {
                    "type": "server_vad",
                    "threshold": settings.vad_threshold,
                    "prefix_padding_ms": settings.prefix_padding_ms,
                    "silence_duration_ms": settings.silence_duration_ms,
                    "create_response": True,
                    "interrupt_response": True,
                },
            },
            "output": {"format": fmt, "voice": settings.chosen_voice},
        },
    }
    if setup.tools:
        session["tools"] = [
            {
                "type": "function",
                "name": tool.name,
                "description": tool.description,
                "parameters": _plain(tool.parameters),
            }
            for tool in setup.tools
        ]
        session["tool_choice"] = "auto"
    if settings.reasoning_effort is not None:
        session["reasoning"] = {"effort": settings.reasoning_effort}
    return {"type": "session.update", "session": session}


def session_url(settings: OpenAIRealtimeSettings) -> str:
    """C{baseUrl} with the model in its query."""
    base = settings.base_url
    return base + ("&" if "?" in base else "?") + urlencode({"model": settings.model})


@implementer(IRealtimeVoice)
class OpenAIRealtimeVoice:
    """Opens OpenAI Realtime conversations: one WebSocket per call."""

    name = "openai"

    def __init__(
        self, settings: OpenAIRealtimeSettings, reactor: Any, clock: IReactorTime | None = None
    ) -> None:
        self.settings = settings
        self.url = session_url(settings)
        self.reactor = reactor
        self.clock: IReactorTime = clock if clock is not None else reactor

    def open_session(
        self, listener: IRealtimeListener, setup: RealtimeSetup
    ) -> OpenAIRealtimeConversation:
        """Start a session for one call; it connects at once."""
        return OpenAIRealtimeConversation(self, listener, setup)

    def client_factory(self, session: OpenAIRealtimeConversation) -> VendorClientFactory:
        """The autobahn client factory for C{session}'s socket."""
        headers = openai_ws.bearer_headers(self.settings.api_key)
        return vendor_socket.client_factory(session, self.url, headers, self.reactor)

    def connect(self, factory: WebSocketClientFactory) -> Deferred:
        """Open a TCP (TLS for C{wss}) connection for C{factory}; fire with its protocol."""
        return vendor_socket.connect(self.reactor, factory, CONNECT_TIMEOUT)

    def audio_wire(self) -> AudioWire:
        """A fresh converter for one session's audio."""
        if self.settings.audio_format == "pcm16":
            return Pcm16Wire(PCM_RATE)
        return UlawWire()


@implementer(IRealtimeSession)
class OpenAIRealtimeConversation(RealtimeSocketSession):
    """One call's conversation with an OpenAI Realtime model."""

    log = Logger()

    sending_state = _READY

    def __init__(
        self, voice: OpenAIRealtimeVoice, listener: IRealtimeListener, setup: RealtimeSetup
    ) -> None:
        super().__init__(listener, setup.call_id, voice.clock, MAX_BUFFER_BYTES)
        self._voice = voice
        self._wire = voice.audio_wire()
        self._update = openai_ws.encode_event(session_update(voice.settings, setup))
        self._factory = voice.client_factory(self)
        self._host = self._factory.host
        self._connect_timeout: IDelayedCall | None = self._clock.callLater(
            CONNECT_TIMEOUT, self._timed_out
        )
        # Responses: one runs at a time; what was asked meanwhile waits for its end.
        self._responding = False
        self._requested = False
        self._muted = False
        # What we asked to say, each [token, kind ("speak" or "relay"), text].
        self._speeches: deque[list[str]] = deque()
        self._asking: list[str] | None = None  # the one whose response.create is out
        self._tokens = 0
        self._want_response = False
        # The audio item playing now and how many milliseconds of it arrived.
        self._audio_item: str | None = None
        self._audio_content = 0
        self._audio_bytes = 0
        self._tool_names: dict[str, str] = {}
        self._tools_told: set[str] = set()
        self.log.debug(
            "realtime session for call {call} connecting to {host}",
            call=self._call,
            host=self._host,
            code="realtime.connect",
        )
        self._attempt = maybeDeferred(voice.connect, self._factory)
        self._attempt.addCallbacks(self._connected, self._connect_failed)

    # IRealtimeSession

    def speak(self, text: str) -> str:
        """Have the model say C{text} as its own response, after any response running now."""
        return self._ask("speak", text)

    def relay(self, text: str) -> str:
        """Have the model tell the caller the agent's answer C{text}, as its own response."""
        return self._ask("relay", text)

    def _ask(self, kind: str, text: str) -> str:
        self._tokens += 1
        token = f"s{self._tokens}"
        text = text.strip()
        if self._state != _CLOSED and text:
            self._speeches.append([token, kind, text])
            self._next_response()
        return token

    def truncate(self, heard_ms: int) -> None:
        """Cancel the response running now and cut its audio item at C{heard_ms}."""
        if self._state != _READY:
            return
        if self._responding or self._requested:
            self._send({"type": "response.cancel"})
        item = self._audio_item
        if item is not None:
            arrived = self._audio_bytes // self._wire.bytes_per_ms
            end = max(0, min(int(heard_ms), arrived))
            self._send(
                {
                    "type": "conversation.item.truncate",
                    "item_id": item,
                    "content_index": self._audio_content,
                    "audio_end_ms": end,
                }
            )
            self._audio_item = None
        self._muted = True
        self._wire.drop_output()

    def tool_result(self, call_id: str, output: Mapping[str, Any]) -> None:
        """Give the model C{output} for C{call_id}, then let it respond."""
        if self._state == _CLOSED:
            return
        self._send(
            {
                "type": "conversation.item.create",
                "item": {
                    "type": "function_call_output",
                    "call_id": call_id,
                    "output": json.dumps(_plain(output)),
                },
            }
        )
        self._want_response = True
        self._next_response()

    def close(self) -> Deferred:
        """Stop for good: C{closed} follows once; fires when the socket is gone."""
        if self._state != _CLOSED:
            self._end("closed by voicecalld")
            self.log.info(
                "realtime session for call {call} closed", call=self._call, code="realtime.closed"
            )
        return self._sockets.gone()

    # Connecting

    def _connect_failed(self, failure: Any) -> None:
        self._attempt = None
        if self._state == _CLOSED:
            return
        self._failed(f"could not connect: {failure.getErrorMessage()}")

    def _timed_out(self) -> None:
        self._connect_timeout = None
        self._failed(f"no session within {CONNECT_TIMEOUT:g} s")

    def _failed(self, detail: str) -> None:
        self.log.warn(
            "realtime session for call {call} failed ({host}): {detail}",
            call=self._call,
            host=self._host,
            detail=detail,
            code="realtime.connect_failed",
        )
        self._end(f"realtime session failed: {detail}")

    def _ready(self) -> None:
        vendor_socket.cancel(self._connect_timeout)
        self._connect_timeout = None
        self._state = _READY
        self.log.info(
            "realtime session for call {call} ready ({host}, {dropped_ms} ms of early audio"
            " dropped)",
            call=self._call,
            host=self._host,
            dropped_ms=self._audio.dropped * 1000 // ULAW_BYTES_PER_SECOND,
            code="realtime.ready",
        )
        self._tell("ready")
        self._audio.release()
        self._next_response()

    def _end(self, reason: str) -> None:
        """Become closed: stop timers, close the socket, tell the listener once."""
        self._state = _CLOSED
        vendor_socket.cancel(self._connect_timeout)
        self._connect_timeout = None
        attempt, self._attempt = self._attempt, None
        if attempt is not None:
            attempt.cancel()
        proto, self._proto = self._proto, None
        if proto is not None:
            vendor_socket.close_socket(proto)
        self._audio.clear()
        self._speeches.clear()
        self._asking = None
        try:
            self._listener.closed(reason)
        except Exception:
            self.log.failure("realtime listener failed in closed", code="realtime.listener_error")

    # Sending

    def _send_audio(self, ulaw: bytes) -> None:
        audio = self._wire.to_vendor(ulaw)
        if audio:
            self._proto.sendMessage(openai_ws.append_message(audio), isBinary=False)

    def _send(self, event: dict[str, Any]) -> None:
        if vendor_socket.is_open(self._proto):
            self._proto.sendMessage(openai_ws.encode_event(event), isBinary=False)

    def _next_response(self) -> None:
        """Ask for the next wanted response, unless one runs or the session is not ready."""
        if self._state != _READY or self._responding or self._requested:
            return
        if self._speeches:
            speech = self._asking = self._speeches.popleft()
            token, kind, text = speech
            response: dict[str, Any] = {"metadata": {TOKEN_KEY: token}}
            if kind == "speak":
                response["instructions"] = SPEAK_INSTRUCTIONS.format(text=text)
            elif kind == "relay":
                self._send(
                    {
                        "type": "conversation.item.create",
                        "item": {
                            "type": "message",
                            "role": "system",
                            "content": [
                                {"type": "input_text", "text": RELAY_NOTE.format(text=text)}
                            ],
                        },
                    }
                )
                speech[1] = "relayed"  # a second ask must not add the note again
            self._send({"type": "response.create", "response": response})
        elif self._want_response:
            self._want_response = False
            self._send({"type": "response.create"})
        else:
            return
        self._requested = True

    # Called by the protocol

    def _opened(self, proto: VendorClientProtocol) -> None:
        if self._state == _CLOSED:
            vendor_socket.close_socket(proto)
            return
        self._proto = proto
        proto.sendMessage(self._update, isBinary=False)

    def _received(self, proto: VendorClientProtocol, payload: bytes, is_binary: bool) -> None:
        if proto is not self._proto or self._state == _CLOSED:
            return
        event = openai_ws.decode_event(payload, is_binary)
        if event is None:
            self.log.warn(
                "realtime server sent something that is not a JSON object",
                code="realtime.bad_message",
            )
            return
        try:
            self._handle(event)
        except Exception:
            self._fault(f"could not handle a {event.get('type')!r} event")

    def _lost(self, proto: VendorClientProtocol, detail: str) -> None:
        self._sockets.discard(proto)
        if self._state == _CLOSED:
            return
        self._proto = None
        if self._state == _CONNECTING:
            self._failed(detail)
            return
        self.log.warn(
            "realtime session for call {call} lost ({host}): {detail}",
            call=self._call,
            host=self._host,
            detail=detail,
            code="realtime.lost",
        )
        self._end(f"realtime session lost: {detail}")

    # Server events

    def _handle(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "response.output_audio.delta":
            self._audio_delta(event)
        elif kind == "session.updated":
            if self._state == _CONNECTING:
                self._ready()
        elif kind == "input_audio_buffer.speech_started":
            self._tell("speech_started")
        elif kind == "input_audio_buffer.speech_stopped":
            self._tell("speech_stopped")
        elif kind == "conversation.item.input_audio_transcription.completed":
            self._tell_text("user_transcript", event.get("transcript"))
        elif kind == "response.created":
            token = _token(event)
            if self._asking is None or (token is not None and token == self._asking[0]):
                self._asking, self._requested = None, False
            else:
                token = None  # the model's own, begun before ours: ours is still out
            self._responding, self._muted = True, False
            self._tell("response_started", token)
        elif kind == "response.output_item.added":
            item = event.get("item")
            if isinstance(item, dict) and item.get("type") == "function_call":
                call_id, name = item.get("call_id"), item.get("name")
                if isinstance(call_id, str) and isinstance(name, str):
                    self._tool_names[call_id] = name
        elif kind == "response.output_audio_transcript.done":
            self._tell_text("assistant_transcript", event.get("transcript"))
        elif kind == "response.function_call_arguments.done":
            self._tool_call(event.get("call_id"), event.get("name"), event.get("arguments"))
        elif kind == "response.done":
            self._response_done(event)
        elif kind == "error":
            self._vendor_error(event)

    def _audio_delta(self, event: dict[str, Any]) -> None:
        if self._muted:
            return
        try:
            raw = b64decode(event.get("delta", ""), validate=True)
        except (binascii.Error, TypeError, ValueError):
            self._tell("problem", "realtime model audio was not base64; dropped")
            return
        item = event.get("item_id")
        if isinstance(item, str) and item != self._audio_item:
            self._audio_item = item
            content = event.get("content_index")
            self._audio_content = content if isinstance(content, int) else 0
            self._audio_bytes = 0
        self._audio_bytes += len(raw)
        ulaw = self._wire.from_vendor(raw)
        if ulaw:
            self._tell("audio", ulaw)

    def _response_done(self, event: dict[str, Any]) -> None:
        response = event.get("response")
        response = response if isinstance(response, dict) else {}
        if not self._muted:
            tail = self._wire.end_output()
            if tail:
                self._tell("audio", tail)
        for item in response.get("output") or ():
            if isinstance(item, dict) and item.get("type") == "function_call":
                self._tool_call(item.get("call_id"), item.get("name"), item.get("arguments"))
        if response.get("status") == "failed":
            self._tell("problem", f"realtime response failed: {_status_error(response)}")
        self._responding = False
        if self._asking is None:
            self._requested = False
        self._tell("response_done")
        self._next_response()

    def _tool_call(self, call_id: Any, name: Any, arguments: Any) -> None:
        if not isinstance(call_id, str) or call_id in self._tools_told:
            return
        if not isinstance(name, str) or not name:
            name = self._tool_names.get(call_id)
            if name is None:
                # The name comes with the item; response.done will carry it.
                return
        self._tools_told.add(call_id)
        self._tool_names.pop(call_id, None)
        self._tell("tool_call", call_id, name, _arguments(arguments))

    def _vendor_error(self, event: dict[str, Any]) -> None:
        code = openai_ws.error_code(event)
        message = openai_ws.error_message(event)
        if code == _CANCEL_NOT_ACTIVE:
            # The server VAD had already cancelled the response we cut off.
            self.log.debug("realtime cancel found no response", code="realtime.cancel_idle")
            return
        if code == _ALREADY_ACTIVE and self._asking is not None:
            # Ours came while the VAD's response ran: ask again after that one.
            self._speeches.appendleft(self._asking)
            self._asking, self._requested = None, False
            self.log.debug(
                "realtime response asked again after the running one",
                code="realtime.ask_again",
            )
            self._next_response()  # at once if that one's response.done came first
            return
        if self._requested and not self._responding:
            # A response.create of ours was refused: let the next one go.
            self._asking, self._requested = None, False
        self.log.warn(
            "realtime server error for call {call}: {message}",
            call=self._call,
            message=message,
            error_code=code,
            code="realtime.vendor_error",
        )
        self._tell("problem", f"realtime error: {message}")

    # Helpers

    def _tell_text(self, method: str, text: Any) -> None:
        if isinstance(text, str) and text.strip():
            self._tell(method, text.strip())


def _arguments(raw: Any) -> dict[str, Any]:
    """A function call's arguments as a dict: C{{}} for none, bad JSON or a non-object."""
    if isinstance(raw, dict):
        return raw
    if not isinstance(raw, str) or not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _status_error(response: dict[str, Any]) -> str:
    details = response.get("status_details")
    if isinstance(details, dict):
        error = details.get("error")
        if isinstance(error, dict):
            return openai_ws.error_message({"error": error})
    return "no reason given"


def _plain(value: Any) -> Any:
    """Mappings and sequences as plain dicts and lists, for JSON."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _token(event: Mapping[str, Any]) -> str | None:
    """Our token in a C{response.created}'s C{response.metadata}, if it has one."""
    response = event.get("response")
    metadata = response.get("metadata") if isinstance(response, Mapping) else None
    token = metadata.get(TOKEN_KEY) if isinstance(metadata, Mapping) else None
    return token if isinstance(token, str) else None
