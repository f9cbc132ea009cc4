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
from collections.abc import Callable
from typing import Any

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure


class FakeRealtimeServer:
    """The vendor's side of OpenAI Realtime transcription, for tests."""

    PATH = "/v1/realtime?intent=transcription"
    """What L{start}'s URL asks for after the port."""

    def __init__(self, reactor: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self._reactor = reactor
        self._port: Any = None
        self._live: list[_FakeRealtimeProtocol] = []
        self._sockets: set[_FakeRealtimeProtocol] = set()
        self._waiters: list[tuple[Callable[[], bool], Deferred]] = []
        self._events = 0
        self.url = ""
        self.requests: list[dict[str, str]] = []
        self.paths: list[str] = []
        self.queries: list[dict[str, list[str]]] = []
        self.received: list[dict[str, Any]] = []
        self.session_updates: list[dict[str, Any]] = []
        self.audio = bytearray()
        self.opened = 0
        self.closed = 0
        self.refused = 0
        self.refuse_code: int | None = None
        self.ack_updates = True

    # Running

    def start(self) -> Deferred:
        """Listen on a free port of 127.0.0.1; fires with the C{ws://} URL to use."""
        factory = WebSocketServerFactory()
        factory.protocol = _FakeRealtimeProtocol
        factory.noisy = False
        factory.fake = self
        endpoint = TCP4ServerEndpoint(self._reactor, 0, interface="127.0.0.1")

        def listening(port: Any) -> str:
            self._port = port
            self.url = f"ws://127.0.0.1:{port.getHost().port}{self.PATH}"
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
    def authorization(self) -> str | None:
        """The C{Authorization} header of the latest connection."""
        return self.requests[-1].get("authorization") if self.requests else None

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

    def audio_at_least(self, count: int) -> Deferred:
        """Fires once C{count} bytes of audio have arrived in all."""
        return self.when(lambda: len(self.audio) >= count)

    def nth_update(self, n: int) -> Deferred:
        """Fires once the C{n}th C{session.update} (from 1) has arrived."""
        return self.when(lambda: len(self.session_updates) >= n)

    # The vendor's side

    def send(self, event: dict[str, Any]) -> None:
        """Send a raw server event on the latest connection."""
        self._reply(self._latest(), event)

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

    def drop(self) -> None:
        """Cut the latest connection without a closing handshake."""
        self._latest().dropConnection(abort=True)

    def close(self, code: int = 1000, reason: str | None = None) -> None:
        """Close the latest connection with a closing handshake (as on an idle timeout)."""
        self._latest().sendClose(code=code, reason=reason)

    def refuse(self, code: int = 503) -> None:
        """Answer new handshakes with HTTP C{code} until L{accept}."""
        self.refuse_code = code

    def accept(self) -> None:
        """Accept new connections again."""
        self.refuse_code = None

    # From the protocol

    def _latest(self) -> _FakeRealtimeProtocol:
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

    def _connecting(
        self, headers: dict[str, str], path: str, query: dict[str, list[str]] | None = None
    ) -> None:
        self.requests.append(headers)
        self.paths.append(path)
        self.queries.append(query or {})
        if self.refuse_code is not None:
            self.refused += 1
            self._changed()
            raise ConnectionDeny(self.refuse_code, "refused by the fake")

    def _opened(self, proto: _FakeRealtimeProtocol) -> None:
        self._live.append(proto)
        self.opened += 1
        self.send({"type": "session.created", "session": {"id": f"sess_{self.opened}"}})
        self._changed()

    def _message(self, proto: _FakeRealtimeProtocol, payload: bytes, is_binary: bool) -> None:
        try:
            event = json.loads(payload)
        except ValueError:
            event = None
        if is_binary or not isinstance(event, dict):
            self._reply(proto, _error("invalid_json", "Expected a JSON object in a text message."))
            return
        self.received.append(event)
        kind = event.get("type")
        if kind in ("session.update", "transcription_session.update"):
            self.session_updates.append(event)
            if self.ack_updates:
                updated = kind.replace("update", "updated")
                self._reply(proto, {"type": updated, "session": event.get("session", {})})
        elif kind == "input_audio_buffer.append":
            try:
                self.audio += base64.b64decode(event.get("audio", ""), validate=True)
            except (binascii.Error, TypeError):
                self._reply(proto, _error("invalid_value", "Invalid 'audio': not base64."))
        else:
            self._other(proto, event)
        self._changed()

    def _other(self, proto: _FakeRealtimeProtocol, event: dict[str, Any]) -> None:
        """A client event other than an update or an append: transcription takes none."""
        self._reply(proto, _error("invalid_value", f"Invalid value: {event.get('type')!r}."))

    def _reply(self, proto: _FakeRealtimeProtocol, event: dict[str, Any]) -> None:
        self._events += 1
        event = {"event_id": f"event_{self._events}", **event}
        proto.sendMessage(json.dumps(event).encode("utf-8"), isBinary=False)

    def _gone(self, proto: _FakeRealtimeProtocol) -> None:
        self._sockets.discard(proto)
        if proto in self._live:
            self._live.remove(proto)
            self.closed += 1
        self._changed()


def _error(code: str, message: str) -> dict[str, Any]:
    return {
        "type": "error",
        "error": {"type": "invalid_request_error", "code": code, "message": message},
    }


class _FakeRealtimeProtocol(WebSocketServerProtocol):
    """One client socket; everything goes to the L{FakeRealtimeServer}."""

    def connectionMade(self) -> None:
        super().connectionMade()
        self.factory.fake._sockets.add(self)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        self.factory.fake._gone(self)

    def onConnect(self, request: Any) -> None:
        self.factory.fake._connecting(dict(request.headers), request.path, dict(request.params))

    def onOpen(self) -> None:
        self.factory.fake._opened(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.factory.fake._message(self, payload, isBinary)
