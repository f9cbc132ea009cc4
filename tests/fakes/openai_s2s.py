"""
A fake OpenAI Realtime speech-to-speech endpoint (GA protocol) on 127.0.0.1.

It is the transcription fake (L{FakeRealtimeServer}: headers, path, query,
every client event, decoded input audio, C{session.created} on open and
C{session.updated} per update, drops, closes, refusals, C{when}) taught the
conversation's events: it records the items, responses, cancels and
truncations a client sends, answers them as the API does, and lets a test
script the model's side: turns heard and transcribed, responses with audio
and transcripts, function calls and errors.
"""

from __future__ import annotations

import base64
from typing import Any

from tests.fakes.openai_realtime import FakeRealtimeServer, _error
from tests.fakes.ws_vendor import VendorServerProtocol


class FakeS2SServer(FakeRealtimeServer):
    """The vendor's side of an OpenAI Realtime conversation, for tests."""

    url_path = "/v1/realtime"

    def __init__(self, reactor: Any = None) -> None:
        super().__init__(reactor)
        self.items: list[dict[str, Any]] = []
        self.response_requests: list[dict[str, Any]] = []
        self.cancels = 0
        self.truncations: list[dict[str, Any]] = []
        self.active_response: str | None = None
        # The response.create requests not yet begun: the next response is theirs.
        self.unanswered: list[dict[str, Any]] = []
        self._ids = 0

    def of(self, kind: str) -> list[dict[str, Any]]:
        """Every client event of type C{kind}, in order."""
        return [e for e in self.received if e.get("type") == kind]

    def count(self, kind: str, n: int) -> Any:
        """Fires once C{n} client events of type C{kind} have arrived."""
        return self.when(lambda: len(self.of(kind)) >= n)

    # The model's side

    def speech_stopped(self, item: str = "item_1", audio_end_ms: int = 0) -> None:
        """The server VAD heard the caller stop."""
        self.send(
            {
                "type": "input_audio_buffer.speech_stopped",
                "audio_end_ms": audio_end_ms,
                "item_id": item,
            }
        )

    def start_response(self, response_id: str | None = None, *, own: bool = False) -> str:
        """
        C{response.created}: a response begins; returns its id.  It is the
        oldest unanswered C{response.create}'s (echoing its metadata) unless
        C{own} (the server VAD's).
        """
        response_id = response_id or self._id("resp")
        self.active_response = response_id
        response: dict[str, Any] = {
            "id": response_id,
            "object": "realtime.response",
            "status": "in_progress",
        }
        if not own and self.unanswered:
            asked = self.unanswered.pop(0)
            if asked.get("metadata"):
                response["metadata"] = asked["metadata"]
        self.send({"type": "response.created", "response": response})
        return response_id

    def send_audio(self, audio: bytes, chunks: int = 1, item: str = "item_out_1") -> None:
        """C{audio} (in the session's output format) as C{chunks} output_audio deltas."""
        response_id = self.active_response or ""
        size = max(1, -(-len(audio) // chunks))
        for start in range(0, len(audio), size):
            self.send(
                {
                    "type": "response.output_audio.delta",
                    "response_id": response_id,
                    "item_id": item,
                    "output_index": 0,
                    "content_index": 0,
                    "delta": base64.b64encode(audio[start : start + size]).decode("ascii"),
                }
            )

    def transcript(self, text: str, item: str = "item_out_1") -> None:
        """C{response.output_audio_transcript.done}: the words of the audio just sent."""
        self.send(
            {
                "type": "response.output_audio_transcript.done",
                "response_id": self.active_response or "",
                "item_id": item,
                "output_index": 0,
                "content_index": 0,
                "transcript": text,
            }
        )

    def finish_response(self, status: str = "completed", output: list[Any] | None = None) -> None:
        """C{response.done}: the response running now is over."""
        response_id, self.active_response = self.active_response, None
        response: dict[str, Any] = {"id": response_id, "status": status, "output": output or []}
        if status == "failed":
            response["status_details"] = {
                "type": "failed",
                "error": {"type": "server_error", "message": "the model failed"},
            }
        self.send({"type": "response.done", "response": response})

    def respond(
        self, audio: bytes, chunks: int = 4, transcript: str = "", item: str = "item_out_1"
    ) -> None:
        """A whole spoken response: created, audio deltas, transcript, done."""
        self.start_response()
        self.send_audio(audio, chunks, item)
        if transcript:
            self.transcript(transcript, item)
        self.finish_response(
            output=[{"id": item, "type": "message", "role": "assistant", "status": "completed"}]
        )

    def function_call(
        self, call_id: str, name: str, arguments: str, *, name_in_done: bool = False
    ) -> None:
        """A response that calls function C{name}: item added, arguments done, response done."""
        item_id = self._id("item_fc")
        item = {
            "id": item_id,
            "type": "function_call",
            "status": "in_progress",
            "call_id": call_id,
            "name": name,
            "arguments": "",
        }
        self.start_response()
        self.send(
            {
                "type": "response.output_item.added",
                "response_id": self.active_response,
                "output_index": 0,
                "item": item,
            }
        )
        done: dict[str, Any] = {
            "type": "response.function_call_arguments.done",
            "response_id": self.active_response,
            "item_id": item_id,
            "output_index": 0,
            "call_id": call_id,
            "arguments": arguments,
        }
        if name_in_done:
            done["name"] = name
        self.send(done)
        self.finish_response(output=[{**item, "status": "completed", "arguments": arguments}])

    # Client events the conversation takes

    def _other(self, proto: VendorServerProtocol, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "conversation.item.create":
            item = event.get("item")
            if not isinstance(item, dict):
                self.reply(proto, _error("missing_required_parameter", "Missing 'item'."))
                return
            item = {"id": self._id("item"), **item}
            self.items.append(item)
            self.reply(proto, {"type": "conversation.item.added", "item": item})
        elif kind == "response.create":
            self.response_requests.append(event.get("response") or {})
            self.unanswered.append(event.get("response") or {})
        elif kind == "response.cancel":
            self.cancels += 1
            if self.active_response is None:
                self.reply(
                    proto,
                    {
                        "type": "error",
                        "error": {
                            "type": "invalid_request_error",
                            "code": "response_cancel_not_active",
                            "message": "Cancellation failed: no active response found",
                        },
                    },
                )
            else:
                self.finish_response("cancelled")
        elif kind == "conversation.item.truncate":
            self.truncations.append(event)
            self.reply(
                proto,
                {
                    "type": "conversation.item.truncated",
                    "item_id": event.get("item_id"),
                    "content_index": event.get("content_index"),
                    "audio_end_ms": event.get("audio_end_ms"),
                },
            )
        else:
            super()._other(proto, event)

    def _id(self, prefix: str) -> str:
        self._ids += 1
        return f"{prefix}_{self._ids}"
