"""
A fake Gemini Live server (BidiGenerateContent) on 127.0.0.1, for tests.

It records what the client sends (the handshake's path, query and headers,
the C{setup} message, every later message, and the caller audio decoded from
C{realtimeInput.audio}), answers C{setup} with C{setupComplete}, and lets a
test script the vendor's side: model audio with its transcription, the
caller's transcription, C{interrupted}, C{turnComplete}, tool calls,
C{goAway}, a closed or dropped socket, refused handshakes.  Like Google, it
sends its messages in binary frames and closes the socket (code 1007) on a
message it cannot take.  L{FakeGeminiLive.when} gives a Deferred that fires
once a condition on the recorded state holds, so tests wait on events.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from typing import Any

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure

PATH = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
INPUT_MIME = "audio/pcm;rate=16000"


class FakeGeminiLive:
    """The vendor's side of a Gemini Live session, for tests."""

    def __init__(self, reactor: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self._reactor = reactor
        self._port: Any = None
        self._live: list[_FakeLiveProtocol] = []
        self._sockets: set[_FakeLiveProtocol] = set()
        self._waiters: list[tuple[Callable[[], bool], Deferred]] = []
        self.url = ""
        self.requests: list[dict[str, str]] = []
        self.paths: list[str] = []
        self.queries: list[dict[str, list[str]]] = []
        self.setups: list[dict[str, Any]] = []
        self.received: list[dict[str, Any]] = []
        self.audio = bytearray()
        self.audio_messages: list[int] = []
        self.rejected: list[str] = []
        self.opened = 0
        self.closed = 0
        self.refused = 0
        self.refuse_code: int | None = None
        self.ack_setup = True
        self.binary = True

    # Running

    def start(self) -> Deferred:
        """Listen on a free port of 127.0.0.1; fires with the C{ws://} URL to use."""
        factory = WebSocketServerFactory()
        factory.protocol = _FakeLiveProtocol
        factory.noisy = False
        factory.fake = self
        endpoint = TCP4ServerEndpoint(self._reactor, 0, interface="127.0.0.1")

        def listening(port: Any) -> str:
            self._port = port
            self.url = f"ws://127.0.0.1:{port.getHost().port}{PATH}"
            return self.url

        return endpoint.listen(factory).addCallback(listening)

    def stop(self) -> Deferred:
        """Drop every connection and stop listening; fires when all are gone."""
        gone = [self.when(lambda: not self._sockets)]
        for proto in list(self._sockets):
            proto.transport.abortConnection()
        if self._port is not None:
            gone.append(self._port.stopListening())
            self._port = None
        return gatherResults(gone)

    @property
    def connected(self) -> bool:
        """Whether a client socket is open now."""
        return bool(self._live)

    def when(self, condition: Callable[[], bool]) -> Deferred:
        """A Deferred that fires (with None) as soon as C{condition()} is true."""
        if condition():
            return succeed(None)
        d: Deferred = Deferred()
        self._waiters.append((condition, d))
        return d

    def messages(self, key: str) -> list[Any]:
        """The bodies of every client message of one kind (C{clientContent}, ...), in order."""
        return [m[key] for m in self.received if key in m]

    # The vendor's side

    def send(self, message: dict[str, Any]) -> None:
        """Send a raw server message on the latest connection."""
        self._reply(self._latest(), message)

    def setup_complete(self) -> None:
        """Answer the setup (when C{ack_setup} was off)."""
        self.send({"setupComplete": {}})

    def content(self, **content: Any) -> None:
        """One C{serverContent} message with the given fields."""
        self.send({"serverContent": content})

    def model_audio(self, pcm: bytes, rate: int = 24000, text: str | None = None) -> None:
        """A model-turn part of s16le PCM at C{rate}, with its output transcription if given."""
        content: dict[str, Any] = {
            "modelTurn": {
                "parts": [
                    {
                        "inlineData": {
                            "mimeType": f"audio/pcm;rate={rate}",
                            "data": base64.b64encode(pcm).decode("ascii"),
                        }
                    }
                ]
            }
        }
        if text is not None:
            content["outputTranscription"] = {"text": text}
        self.content(**content)

    def heard(self, text: str) -> None:
        """More of the caller's words (input transcription)."""
        self.content(inputTranscription={"text": text})

    def said(self, text: str) -> None:
        """More of the model's words (output transcription)."""
        self.content(outputTranscription={"text": text})

    def interrupted(self) -> None:
        """The server's activity detection heard the caller over the model."""
        self.content(interrupted=True)

    def generation_complete(self) -> None:
        """The model is done generating (playback may still be going on)."""
        self.content(generationComplete=True)

    def turn_complete(self) -> None:
        """The model's turn is over."""
        self.content(turnComplete=True)

    def tool_call(self, call_id: str, name: str, args: Any = None) -> None:
        """The model calls function C{name}."""
        call: dict[str, Any] = {"id": call_id, "name": name}
        if args is not None:
            call["args"] = args
        self.send({"toolCall": {"functionCalls": [call]}})

    def go_away(self, time_left: str = "10s") -> None:
        """The server will end the session soon."""
        self.send({"goAway": {"timeLeft": time_left}})

    def resumption(self, handle: str) -> None:
        """A new session resumption handle."""
        self.send({"sessionResumptionUpdate": {"newHandle": handle, "resumable": True}})

    def drop(self) -> None:
        """Cut the latest connection without a closing handshake."""
        self._latest().dropConnection(abort=True)

    def close(self, code: int = 1000, reason: str | None = None) -> None:
        """Close the latest connection with a closing handshake (any code, as Google's 1011)."""
        _close(self._latest(), code, reason)

    def refuse(self, code: int = 503) -> None:
        """Answer new handshakes with HTTP C{code}."""
        self.refuse_code = code

    # From the protocol

    def _latest(self) -> _FakeLiveProtocol:
        if not self._live:
            raise RuntimeError("no client is connected to the fake")
        return self._live[-1]

    def _changed(self) -> None:
        waiting, self._waiters = self._waiters, []
        for condition, d in waiting:
            if condition():
                d.callback(None)
            else:
                self._waiters.append((condition, d))

    def _connecting(self, request: Any) -> None:
        self.requests.append(dict(request.headers))
        self.paths.append(request.path)
        self.queries.append(dict(request.params))
        if self.refuse_code is not None:
            self.refused += 1
            self._changed()
            raise ConnectionDeny(self.refuse_code, "refused by the fake")

    def _opened(self, proto: _FakeLiveProtocol) -> None:
        self._live.append(proto)
        self.opened += 1
        self._changed()

    def _message(self, proto: _FakeLiveProtocol, payload: bytes) -> None:
        try:
            message = json.loads(payload)
        except ValueError:
            message = None
        if not isinstance(message, dict):
            self._reject(proto, "not a JSON object")
            return
        self.received.append(message)
        if not proto.set_up:
            if "setup" not in message:
                self._reject(proto, "the first message must be setup")
                return
            proto.set_up = True
            self.setups.append(message["setup"])
            if self.ack_setup:
                self._reply(proto, {"setupComplete": {}})
        elif "realtimeInput" in message:
            self._realtime_input(proto, message["realtimeInput"])
        elif not ({"clientContent", "toolResponse"} & message.keys()):
            self._reject(proto, f"unexpected message {sorted(message)}")
            return
        self._changed()

    def _realtime_input(self, proto: _FakeLiveProtocol, body: Any) -> None:
        audio = body.get("audio") if isinstance(body, dict) else None
        if not isinstance(audio, dict) or audio.get("mimeType") != INPUT_MIME:
            self._reject(proto, f"unsupported realtime input {body!r:.80}")
            return
        try:
            pcm = base64.b64decode(audio.get("data", ""), validate=True)
        except (binascii.Error, TypeError):
            self._reject(proto, "audio data is not base64")
            return
        self.audio += pcm
        self.audio_messages.append(len(pcm))

    def _reject(self, proto: _FakeLiveProtocol, why: str) -> None:
        self.rejected.append(why)
        _close(proto, 1007, "Request contains an invalid argument.")
        self._changed()

    def _reply(self, proto: _FakeLiveProtocol, message: dict[str, Any]) -> None:
        proto.sendMessage(json.dumps(message).encode("utf-8"), isBinary=self.binary)

    def _gone(self, proto: _FakeLiveProtocol) -> None:
        self._sockets.discard(proto)
        if proto in self._live:
            self._live.remove(proto)
            self.closed += 1
        self._changed()


def _close(proto: WebSocketServerProtocol, code: int, reason: str | None) -> None:
    # autobahn's sendClose takes only the codes an application may send; a server
    # like Google's also sends protocol codes (1007, 1011), so go one level down.
    proto.sendCloseFrame(code=code, reasonUtf8=reason.encode("utf-8") if reason else None)


class _FakeLiveProtocol(WebSocketServerProtocol):
    """One client socket; everything goes to the L{FakeGeminiLive}."""

    set_up = False

    def connectionMade(self) -> None:
        super().connectionMade()
        self.factory.fake._sockets.add(self)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        self.factory.fake._gone(self)

    def onConnect(self, request: Any) -> None:
        self.factory.fake._connecting(request)

    def onOpen(self) -> None:
        self.factory.fake._opened(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.factory.fake._message(self, payload)
