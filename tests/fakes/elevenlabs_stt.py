"""
A fake ElevenLabs realtime speech-to-text endpoint
(C{/v1/speech-to-text/realtime}): an autobahn WebSocket server on 127.0.0.1
speaking the real protocol.

It records each handshake (the C{xi-api-key} header, the query with the
settings) and every C{input_audio_chunk} (its audio decoded), greets each
socket with C{session_started}, and lets a test script the vendor's side:
partial and committed transcripts (with timestamps too), the error message
family, a dropped or closed socket, refused handshakes.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from twisted.internet.defer import Deferred

from tests.fakes.ws_vendor import FakeVendorServer, VendorServerProtocol


class FakeElevenLabsSTTServer(FakeVendorServer):
    """The vendor's side of ElevenLabs realtime transcription, for tests."""

    url_path = ""

    def __init__(self, reactor: Any = None) -> None:
        super().__init__(reactor)
        self.audio = bytearray()
        self.chunks: list[dict[str, Any]] = []
        self.greet = True

    def rest(self, path: str, headers: dict[str, str], query: dict[str, str]) -> tuple[int, Any]:
        """C{GET /v1/models} with C{xi-api-key}: the models the key may use."""
        if path != "/v1/models":
            return 404, {"detail": "Not Found"}
        if not self.accepts(headers.get("xi-api-key")):
            return 401, {"detail": {"status": "invalid_api_key", "message": "Invalid API key"}}
        return 200, [{"model_id": "eleven_multilingual_v2", "name": "Eleven Multilingual v2"}]

    @property
    def api_key(self) -> str | None:
        """The C{xi-api-key} header of the latest handshake."""
        return self.header("xi-api-key")

    def audio_at_least(self, count: int) -> Deferred:
        """Fires once C{count} bytes of audio have arrived in all."""
        return self.when(lambda: len(self.audio) >= count)

    # The vendor's side

    def partial(self, text: str) -> None:
        """The words of the current segment so far."""
        self.send({"message_type": "partial_transcript", "text": text})

    def committed(self, text: str, with_timestamps: bool = False) -> None:
        """The VAD committed a segment; with timestamps the detailed message follows."""
        self.send({"message_type": "committed_transcript", "text": text})
        if with_timestamps:
            words = [
                {"text": w, "start": i * 0.4, "end": i * 0.4 + 0.3, "type": "word", "logprob": 0}
                for i, w in enumerate(text.split())
            ]
            self.send(
                {
                    "message_type": "committed_transcript_with_timestamps",
                    "text": text,
                    "language_code": self.query.get("language_code", "en"),
                    "words": words,
                }
            )

    def error(self, message_type: str, error: str) -> None:
        """One of the error family (C{auth_error}, C{quota_exceeded}, C{input_error}, ...)."""
        self.send({"message_type": message_type, "error": error})

    # The protocol

    def opened_socket(self, proto: VendorServerProtocol) -> None:
        """Every socket starts with C{session_started} echoing the settings."""
        if not self.greet:
            return
        query = self.query
        self.reply(
            proto,
            {
                "message_type": "session_started",
                "session_id": f"sess_{self.opened}",
                "config": {
                    "sample_rate": 8000,
                    "audio_format": query.get("audio_format"),
                    "language_code": query.get("language_code"),
                    "model_id": query.get("model_id"),
                    "commit_strategy": query.get("commit_strategy"),
                },
            },
        )

    def message(self, proto: VendorServerProtocol, payload: bytes, is_binary: bool) -> None:
        """Audio chunks are decoded and kept; anything else gets an C{input_error}."""
        try:
            event = None if is_binary else json.loads(payload)
        except ValueError:
            event = None
        if not isinstance(event, dict) or event.get("message_type") != "input_audio_chunk":
            self.reply(proto, {"message_type": "input_error", "error": "Invalid message"})
            return
        try:
            audio = base64.b64decode(event.get("audio_base_64", ""), validate=True)
        except (binascii.Error, TypeError):
            self.reply(proto, {"message_type": "input_error", "error": "Invalid audio_base_64"})
            return
        self.chunks.append({k: v for k, v in event.items() if k != "audio_base_64"})
        self.audio += audio
