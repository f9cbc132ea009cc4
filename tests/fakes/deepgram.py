"""
A fake Deepgram live transcription endpoint (listen v1): an autobahn
WebSocket server on 127.0.0.1 speaking the real protocol.

It records each handshake (the C{Authorization} header, the query that
carries the settings), all binary audio, and the control messages the
client sends (C{KeepAlive}, C{Finalize}, C{CloseStream}), answers
C{CloseStream} with C{Metadata} and a clean close as Deepgram does, and
lets a test script the vendor's side: C{SpeechStarted}, interim and final
C{Results}, C{UtteranceEnd}, a dropped or closed socket, refused handshakes.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred

from tests.fakes.ws_vendor import FakeVendorServer, VendorServerProtocol, close_with

CONTROL_TYPES = frozenset({"KeepAlive", "Finalize", "CloseStream"})


class FakeDeepgramServer(FakeVendorServer):
    """The vendor's side of Deepgram live transcription, for tests."""

    url_path = "/v1/listen"

    def __init__(self, reactor: Any = None) -> None:
        super().__init__(reactor)
        self.audio = bytearray()
        self.frames: list[int] = []
        self.controls: list[str] = []
        self.bad_messages: list[bytes] = []
        self._cursor = 0.0

    def rest(self, path: str, headers: dict[str, str], query: dict[str, str]) -> tuple[int, Any]:
        """C{GET /v1/projects} with C{Authorization: Token <key>}: the key's projects."""
        if path != "/v1/projects":
            return 404, {"err_code": "NOT_FOUND", "err_msg": f"{path} not found"}
        scheme, _, key = (headers.get("authorization") or "").partition(" ")
        if scheme != "Token" or not self.accepts(key):
            return 401, {"err_code": "INVALID_AUTH", "err_msg": "Invalid credentials."}
        return 200, {"projects": [{"project_id": "p-fake", "name": "fake project"}]}

    @property
    def authorization(self) -> str | None:
        """The C{Authorization} header of the latest handshake."""
        return self.header("authorization")

    def audio_at_least(self, count: int) -> Deferred:
        """Fires once C{count} bytes of audio have arrived in all."""
        return self.when(lambda: len(self.audio) >= count)

    def control_count(self, kind: str, n: int) -> Deferred:
        """Fires once the client has sent C{kind} C{n} times."""
        return self.when(lambda: self.controls.count(kind) >= n)

    # The vendor's side

    def speech_started(self, timestamp: float = 0.0) -> None:
        """The server's VAD heard speech (sent only with C{vad_events=true})."""
        self.send({"type": "SpeechStarted", "channel": [0], "timestamp": timestamp})

    def results(
        self, transcript: str, *, is_final: bool = False, speech_final: bool = False
    ) -> None:
        """A C{Results} message for the next stretch of audio."""
        start, duration = self._cursor, 0.5
        if is_final:
            self._cursor += duration
        words = [
            {"word": w.lower().strip(".,?!"), "start": start, "end": start + duration}
            for w in transcript.split()
        ]
        self.send(
            {
                "type": "Results",
                "channel_index": [0, 1],
                "duration": duration,
                "start": start,
                "is_final": is_final,
                "speech_final": speech_final,
                "from_finalize": False,
                "channel": {
                    "alternatives": [{"transcript": transcript, "confidence": 0.98, "words": words}]
                },
                "metadata": {
                    "request_id": f"req-{self.opened}",
                    "model_info": {"name": "general-nova-3", "version": "fake", "arch": "nova-3"},
                },
            }
        )

    def interim(self, transcript: str) -> None:
        """Words so far (C{is_final} false)."""
        self.results(transcript)

    def final_segment(self, transcript: str, speech_final: bool = False) -> None:
        """A settled segment; C{speech_final} when endpointing saw the pause."""
        self.results(transcript, is_final=True, speech_final=speech_final)

    def utterance_end(self) -> None:
        """The gap after the last word exceeded C{utterance_end_ms}."""
        self.send({"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": self._cursor})

    def metadata(self) -> dict[str, Any]:
        """The C{Metadata} message Deepgram sends when a stream ends."""
        return {
            "type": "Metadata",
            "transaction_key": "deprecated",
            "request_id": f"req-{self.opened}",
            "sha256": "0" * 64,
            "created": "2026-01-01T00:00:00.000Z",
            "duration": len(self.audio) / 8000,
            "channels": 1,
        }

    # The protocol

    def message(self, proto: VendorServerProtocol, payload: bytes, is_binary: bool) -> None:
        """Binary frames are audio; text frames are control messages."""
        if is_binary:
            self.audio += payload
            self.frames.append(len(payload))
            return
        try:
            event = json.loads(payload)
        except ValueError:
            event = None
        kind = event.get("type") if isinstance(event, dict) else None
        if kind not in CONTROL_TYPES:
            # Deepgram closes the stream on a text frame it does not understand.
            self.bad_messages.append(payload)
            close_with(proto, 1008, "DATA-0000")
            return
        self.controls.append(kind)
        if kind == "CloseStream":
            self.reply(proto, self.metadata())
            proto.sendClose(code=1000)
