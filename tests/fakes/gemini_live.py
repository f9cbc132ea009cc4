"""
A fake Gemini Live server (BidiGenerateContent) on 127.0.0.1, for tests.

It records what the client sends (the handshake's path, query and headers,
the C{setup} message, every later message, and the caller audio decoded from
C{realtimeInput.audio}), answers C{setup} with C{setupComplete}, and lets a
test script the vendor's side: model audio with its transcription, the
caller's transcription, C{interrupted}, C{turnComplete}, tool calls,
C{goAway}, a closed or dropped socket, refused handshakes.  Like Google, it
sends its messages in binary frames and closes the socket (code 1007) on a
message it cannot take.  The socket side (handshakes, refusals, drops,
L{FakeVendorServer.when}) is the shared vendor fake's.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from tests.fakes.ws_vendor import FakeVendorServer, VendorServerProtocol, close_with

PATH = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
INPUT_MIME = "audio/pcm;rate=16000"


class FakeGeminiLive(FakeVendorServer):
    """The vendor's side of a Gemini Live session, for tests."""

    url_path = PATH

    def __init__(self, reactor: Any = None) -> None:
        super().__init__(reactor)
        self.setups: list[dict[str, Any]] = []
        self.received: list[dict[str, Any]] = []
        self.audio = bytearray()
        self.audio_messages: list[int] = []
        self.rejected: list[str] = []
        self.ack_setup = True
        self.binary = True
        self._set_up: set[VendorServerProtocol] = set()
        #: The models C{GET /v1beta/models/{model}} knows (None: any).
        self.models: set[str] | None = None

    def rest(self, path: str, headers: dict[str, str], query: dict[str, str]) -> tuple[int, Any]:
        """C{GET /v1beta/models/{model}} with C{x-goog-api-key}: the model's description."""
        if not self.accepts(headers.get("x-goog-api-key") or query.get("key")):
            # Google answers a bad key with 400, not 401.
            return 400, {
                "error": {
                    "code": 400,
                    "message": "API key not valid. Please pass a valid API key.",
                    "status": "INVALID_ARGUMENT",
                }
            }
        model = path.removeprefix("/v1beta/models/")
        known = self.models is None or model in self.models
        if not path.startswith("/v1beta/models/") or not known:
            return 404, {"error": {"code": 404, "message": f"models/{model} is not found"}}
        return 200, {
            "name": f"models/{model}",
            "supportedGenerationMethods": ["bidiGenerateContent"],
        }

    def messages(self, key: str) -> list[Any]:
        """The bodies of every client message of one kind (C{clientContent}, ...), in order."""
        return [m[key] for m in self.received if key in m]

    # The vendor's side

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

    # What the base asks of a vendor

    def message(self, proto: VendorServerProtocol, payload: bytes, is_binary: bool) -> None:
        """Google takes JSON in text or binary frames; C{setup} must come first."""
        try:
            message = json.loads(payload)
        except ValueError:
            message = None
        if not isinstance(message, dict):
            self._reject(proto, "not a JSON object")
            return
        self.received.append(message)
        if proto not in self._set_up:
            if "setup" not in message:
                self._reject(proto, "the first message must be setup")
                return
            self._set_up.add(proto)
            self.setups.append(message["setup"])
            if self.ack_setup:
                self.reply(proto, {"setupComplete": {}})
        elif "realtimeInput" in message:
            self._realtime_input(proto, message["realtimeInput"])
        elif not ({"clientContent", "toolResponse"} & message.keys()):
            self._reject(proto, f"unexpected message {sorted(message)}")

    def _realtime_input(self, proto: VendorServerProtocol, body: Any) -> None:
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

    def _reject(self, proto: VendorServerProtocol, why: str) -> None:
        self.rejected.append(why)
        close_with(proto, 1007, "Request contains an invalid argument.")

    def reply(self, proto: VendorServerProtocol, message: dict[str, Any]) -> None:
        """Send C{message} as JSON, in a binary frame unless C{binary} is off (as Google does)."""
        proto.sendMessage(json.dumps(message).encode("utf-8"), isBinary=self.binary)
