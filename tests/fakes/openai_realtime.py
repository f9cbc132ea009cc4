"""
A fake OpenAI Realtime transcription endpoint: an autobahn WebSocket server
on 127.0.0.1 speaking the real protocol (GA, and the beta session events).

It records each connection's request headers, every C{session.update} and
all appended audio (decoded), answers C{session.created} on open and
C{session.updated} to each update, and lets a test script the vendor's side:
speech started, transcript deltas and completions, errors, a dropped or
closed socket, refused connections.  L{FakeRealtimeServer.when} gives a
Deferred that fires once a condition on the recorded state holds, so tests
wait on events, never on time.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from twisted.internet.defer import Deferred

from tests.fakes.ws_vendor import FakeVendorServer, VendorServerProtocol


class FakeRealtimeServer(FakeVendorServer):
    """The vendor's side of OpenAI Realtime transcription, for tests."""

    url_path = "/v1/realtime?intent=transcription"

    def __init__(self, reactor: Any = None) -> None:
        super().__init__(reactor)
        self._events = 0
        self.received: list[dict[str, Any]] = []
        self.session_updates: list[dict[str, Any]] = []
        self.audio = bytearray()
        self.ack_updates = True
        #: The models C{GET /v1/models/{model}} knows (None: any).
        self.models: set[str] | None = None

    def rest(self, path: str, headers: dict[str, str], query: dict[str, str]) -> tuple[int, Any]:
        """C{GET /v1/models/{model}} with C{Authorization: Bearer <key>}: the model."""
        scheme, _, key = (headers.get("authorization") or "").partition(" ")
        if scheme != "Bearer" or not self.accepts(key):
            return 401, {
                "error": {
                    "message": "Incorrect API key provided.",
                    "type": "invalid_request_error",
                    "code": "invalid_api_key",
                }
            }
        model = path.removeprefix("/v1/models/")
        if not path.startswith("/v1/models/") or (
            self.models is not None and model not in self.models
        ):
            return 404, {
                "error": {
                    "message": f"The model '{model}' does not exist",
                    "code": "model_not_found",
                }
            }
        return 200, {"id": model, "object": "model", "owned_by": "system"}

    @property
    def authorization(self) -> str | None:
        """The C{Authorization} header of the latest connection."""
        return self.header("authorization")

    def audio_at_least(self, count: int) -> Deferred:
        """Fires once C{count} bytes of audio have arrived in all."""
        return self.when(lambda: len(self.audio) >= count)

    def nth_update(self, n: int) -> Deferred:
        """Fires once the C{n}th C{session.update} (from 1) has arrived."""
        return self.when(lambda: len(self.session_updates) >= n)

    # The vendor's side

    def speech_started(self, item: str = "item_1", audio_start_ms: int = 0) -> None:
        """The server VAD heard the caller start speaking."""
        self.send(
            {
                "type": "input_audio_buffer.speech_started",
                "audio_start_ms": audio_start_ms,
                "item_id": item,
            }
        )

    def committed(self, item: str, previous: str | None = None) -> None:
        """The server VAD closed a turn as C{item}."""
        self.send(
            {"type": "input_audio_buffer.committed", "item_id": item, "previous_item_id": previous}
        )

    def delta(self, item: str, text: str) -> None:
        """More words of the turn C{item}."""
        self.send(
            {
                "type": "conversation.item.input_audio_transcription.delta",
                "item_id": item,
                "content_index": 0,
                "delta": text,
            }
        )

    def completed(self, item: str, transcript: str) -> None:
        """The whole transcript of the turn C{item}."""
        self.send(
            {
                "type": "conversation.item.input_audio_transcription.completed",
                "item_id": item,
                "content_index": 0,
                "transcript": transcript,
            }
        )

    def failed(self, item: str, message: str) -> None:
        """Transcribing the turn C{item} failed."""
        self.send(
            {
                "type": "conversation.item.input_audio_transcription.failed",
                "item_id": item,
                "content_index": 0,
                "error": {"type": "transcription_error", "message": message},
            }
        )

    def error(self, message: str, code: str = "server_error") -> None:
        """An C{error} event, as the server sends for bad requests and its own trouble."""
        self.send({"type": "error", "error": {"type": code, "code": code, "message": message}})

    # The protocol

    def opened_socket(self, proto: VendorServerProtocol) -> None:
        """OpenAI greets every socket with C{session.created}."""
        self.reply(proto, {"type": "session.created", "session": {"id": f"sess_{self.opened}"}})

    def message(self, proto: VendorServerProtocol, payload: bytes, is_binary: bool) -> None:
        """Session updates are acknowledged, appends decoded, anything else refused."""
        try:
            event = json.loads(payload)
        except ValueError:
            event = None
        if is_binary or not isinstance(event, dict):
            self.reply(proto, _error("invalid_json", "Expected a JSON object in a text message."))
            return
        self.received.append(event)
        kind = event.get("type")
        if kind in ("session.update", "transcription_session.update"):
            self.session_updates.append(event)
            if self.ack_updates:
                updated = kind.replace("update", "updated")
                self.reply(proto, {"type": updated, "session": event.get("session", {})})
        elif kind == "input_audio_buffer.append":
            try:
                self.audio += base64.b64decode(event.get("audio", ""), validate=True)
            except (binascii.Error, TypeError):
                self.reply(proto, _error("invalid_value", "Invalid 'audio': not base64."))
        else:
            self._other(proto, event)

    def _other(self, proto: VendorServerProtocol, event: dict[str, Any]) -> None:
        """A client event this fake does not know: refused, as the vendor does."""
        kind = event.get("type")
        self.reply(proto, _error("invalid_value", f"Invalid value: {kind!r}."))

    def reply(self, proto: VendorServerProtocol, event: dict[str, Any]) -> None:
        """Every OpenAI server event carries an C{event_id}."""
        self._events += 1
        super().reply(proto, {"event_id": f"event_{self._events}", **event})


def _error(code: str, message: str) -> dict[str, Any]:
    return {
        "type": "error",
        "error": {"type": "invalid_request_error", "code": code, "message": message},
    }
