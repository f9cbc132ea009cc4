"""
The carrier's end of a media-stream WebSocket, shared by the fake providers.

Twilio, Telnyx and Plivo all stream call audio the same way: the carrier
dials the app's C{wss://} URL, sends a few opening messages, then caller
audio in 20 ms frames, and plays what the app sends back at 8000 bytes a
second, echoing the app's marks (checkpoints) once the audio queued before
them has played and dropping the queue on a clear.  What differs is the shape
of each JSON message: that is a L{StreamDialect}, one per provider.

L{MediaStreamClient} does the rest: it connects with autobahn, paces caller
audio on the injected clock, records everything the app sends with its
arrival time, times playback, and offers Deferred-based waits
(L{MediaStreamClient.when_audio}, L{MediaStreamClient.when_mark_echoed}, ...)
so tests never sleep.  A provider's fake subclasses it for what its carrier
does around the socket (status webhooks, where errors are recorded, URL rules).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import urlsplit

import attrs
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import task
from twisted.internet.defer import CancelledError, Deferred, DeferredLock
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.ssl import optionsForClientTLS

__all__ = [
    "ULAW_8K",
    "AppMessage",
    "AudioFormat",
    "FakeProviderError",
    "MediaStreamClient",
    "StreamClosed",
    "StreamDialect",
    "StreamProtocolError",
    "Waiters",
]


#: The client socket's autobahn protocol options unless a test says otherwise.
WS_OPTIONS: dict[str, Any] = {"openHandshakeTimeout": 10, "closeHandshakeTimeout": 2}


class FakeProviderError(Exception):
    """A test asked a fake carrier for something it could not do in the current state."""


class StreamClosed(Exception):
    """The media stream closed before what a test waited for arrived."""


class StreamProtocolError(Exception):
    """
    The app sent a message the carrier does not accept.

    @ivar reply: the message the carrier sends back about it, if it sends one.
    """

    def __init__(self, text: str, reply: dict[str, Any] | None = None) -> None:
        super().__init__(text)
        self.reply = reply


@attrs.frozen
class AudioFormat:
    """How a stream's audio is framed and how fast it plays."""

    frame_bytes: int = 160
    bytes_per_second: int = 8000
    silence: bytes = b"\xff"


#: G.711 mu-law, 8 kHz mono, 20 ms frames: what all three carriers use by default.
ULAW_8K = AudioFormat()


@attrs.frozen
class AppMessage:
    """
    One message from the app, as the dialect understood it.

    C{kind} is "media" (C{audio} holds the decoded bytes), "mark" (C{name}
    holds the mark's name), "clear", or "other" (accepted, nothing to play).
    """

    kind: str
    audio: bytes = b""
    name: str = ""


class StreamDialect(Protocol):
    """
    The wire format of one carrier's media stream.

    Builders return the JSON message to send, or C{None} when the carrier
    sends nothing at that point.  They may call C{stream.next_seq()} to number
    a message.  C{parse} turns an app's message into an L{AppMessage} or raises
    L{StreamProtocolError}.
    """

    #: The name recorded in C{closed_by} when the carrier ends the stream.
    provider: str
    #: Default framing of the stream's audio.
    audio: AudioFormat

    def opening(self, stream: Any) -> list[dict[str, Any]]:
        """The messages sent as soon as the socket is open (e.g. connected, start)."""

    def media(self, stream: Any, frame: bytes, chunk: int, timestamp: int) -> dict[str, Any]:
        """One frame of caller audio; C{timestamp} is in ms since the stream started."""

    def dtmf(self, stream: Any, digit: str) -> dict[str, Any]:
        """The caller pressed C{digit}."""

    def mark_echo(self, stream: Any, name: str) -> dict[str, Any]:
        """The audio before the app's mark C{name} has played."""

    def cleared(self, stream: Any) -> dict[str, Any] | None:
        """The answer to the app's clear, if the carrier sends one."""

    def stop(self, stream: Any) -> dict[str, Any] | None:
        """The last message before the carrier closes the socket, if any."""

    def parse(self, stream: Any, message: Any) -> AppMessage:
        """Understand one decoded JSON message from the app."""


class Waiters:
    """
    Deferreds waiting for a condition, re-checked whenever the owner says it changed.

    A check returns C{None} while the condition does not hold, else the value
    the Deferred fires with.  After L{close}, waits that do not already hold
    fail with the given error instead of waiting forever.
    """

    def __init__(self) -> None:
        self._pending: list[tuple[Callable[[], Any], Deferred, bool]] = []
        self._error: Exception | None = None

    def wait(self, check: Callable[[], Any], persistent: bool = False) -> Deferred:
        """
        A Deferred firing with C{check()} once that is not C{None}; a
        C{persistent} wait keeps waiting after L{close}.
        """

        def cancel(d: Deferred) -> None:
            self._pending = [p for p in self._pending if p[1] is not d]

        d: Deferred = Deferred(cancel)
        value = check()
        if value is not None:
            d.callback(value)
        elif self._error is not None and not persistent:
            d.errback(self._error)
        else:
            self._pending.append((check, d, persistent))
        return d

    def changed(self) -> None:
        """Fire every wait whose condition now holds."""
        ready, still = [], []
        for check, d, persistent in self._pending:
            value = check()
            if value is None:
                still.append((check, d, persistent))
            else:
                ready.append((d, value))
        self._pending = still
        for d, value in ready:
            d.callback(value)

    def reopen(self) -> None:
        """Let unmet waits wait again (the owner became busy after L{close})."""
        self._error = None

    def close(self, error: Exception) -> None:
        """Fire what holds now; fail the rest, and later unmet waits, with C{error}."""
        self.changed()
        self._error = error
        failing = [d for _, d, persistent in self._pending if not persistent]
        self._pending = [p for p in self._pending if p[2]]
        for d in failing:
            d.errback(error)


class _StreamClientProtocol(WebSocketClientProtocol):
    """The carrier's end of the WebSocket; hands everything to its stream."""

    def onOpen(self) -> None:
        self.factory.stream._on_open(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.factory.stream._on_message(payload, isBinary)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.factory.stream._on_close(wasClean, code, reason)


class MediaStreamClient:
    """
    One media-stream WebSocket from a fake carrier to the app.

    Readable state: C{state} ("connecting", "open", "closed"), C{sent} (messages
    the fake sent), C{received} (C{(time, message)} from the app), C{frames}
    (C{(arrival time, audio bytes)} of the app's media), C{marks_received},
    C{marks_echoed} (C{(time, name)}), C{clears} (C{(time, unplayed bytes dropped)}),
    C{errors} (protocol mistakes by the app), C{closed_by} (the dialect's
    C{provider} name, "app", "dropped", "lost" or "failed") and C{close_code}.

    Subclasses name the stream (C{sid}), choose the URL and headers
    (L{_dial}) and react to the hooks L{_started}, L{_stopped},
    L{_failed_hook}, L{_record_error} and L{_opened_hook}.

    @param dialect: the carrier's wire format.
    @param url: the app's stream URL, as the app gave it.
    @param clock: times pacing and playback.
    @param reactor: runs the connection.
    @param call_later: C{(delay, f, *args) -> timer} on C{clock} that the fake
        cancels when it stops (default: C{clock.callLater}).
    @param bidirectional: whether the app may send audio back.
    @param audio: the framing, if not the dialect's default.
    @param ws_options: autobahn protocol options for the client socket, over
        L{WS_OPTIONS} (e.g. zero timeouts, so a test's reactor keeps no
        handshake timers).
    """

    #: Raised when a test asks for something the stream cannot do now.
    usage_error: type[Exception] = FakeProviderError

    def __init__(
        self,
        dialect: StreamDialect,
        url: str,
        *,
        clock: Any,
        reactor: Any,
        call_later: Callable[..., Any] | None = None,
        bidirectional: bool = True,
        audio: AudioFormat | None = None,
        sid: str = "",
        ws_options: dict[str, Any] | None = None,
    ) -> None:
        self.dialect = dialect
        self.url = url
        self.clock = clock
        self.reactor = reactor
        self._call_later = call_later if call_later is not None else clock.callLater
        self.bidirectional = bidirectional
        self.audio = audio if audio is not None else dialect.audio
        self.sid = sid
        self.ws_options = {**WS_OPTIONS, **(ws_options or {})}
        self.state = "connecting"
        self.closed_by: str | None = None
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self.started_at: float | None = None
        self.sent: list[dict[str, Any]] = []
        self.received: list[tuple[float, dict[str, Any]]] = []
        self.frames: list[tuple[float, bytes]] = []
        self.marks_received: list[tuple[float, str]] = []
        self.marks_echoed: list[tuple[float, str]] = []
        self.clears: list[tuple[float, int]] = []
        self.errors: list[str] = []
        #: Headers the fake sent with the WebSocket upgrade.
        self.upgrade_headers: dict[str, str] = {}
        self._protocol: _StreamClientProtocol | None = None
        self._connecting: Deferred | None = None
        self._opened: Deferred = Deferred()
        self._seq = 0
        self._chunk = 0
        self._last_timestamp: int | None = None
        self._play_end = 0.0
        self._pending_marks: list[tuple[float, str]] = []
        self._mark_timer: Any = None
        self._pacing: Deferred | None = None
        self._send_lock = DeferredLock()
        self._provider_closing = False
        self._dropping = False
        self._waiters = Waiters()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.sid} {self.url} {self.state}>"

    # -- what tests read ------------------------------------------------------

    @property
    def outbound_audio(self) -> bytes:
        """All audio the app sent, concatenated."""
        return b"".join(data for _, data in self.frames)

    @property
    def start_message(self) -> dict[str, Any] | None:
        """The C{start} message the fake sent."""
        return next((m for m in self.sent if m.get("event") == "start"), None)

    def messages(self, event: str) -> list[dict[str, Any]]:
        """The messages of type C{event} the app sent."""
        return [m for _, m in self.received if m.get("event") == event]

    def when_open(self) -> Deferred:
        """Fires with the stream once it is open (fails if it closes first)."""
        return self._waiters.wait(lambda: self if self.state == "open" else None)

    def when_audio(self, nbytes: int) -> Deferred:
        """Fires with all outbound audio once at least C{nbytes} of it arrived."""
        return self._waiters.wait(
            lambda: self.outbound_audio if sum(len(d) for _, d in self.frames) >= nbytes else None
        )

    def when_frames(self, count: int) -> Deferred:
        """Fires with the C{(time, bytes)} frames once C{count} media messages arrived."""
        return self._waiters.wait(lambda: list(self.frames) if len(self.frames) >= count else None)

    def when_mark(self, name: str) -> Deferred:
        """Fires with the arrival time of the app's mark called C{name}."""
        return self._waiters.wait(lambda: _time_of(self.marks_received, name))

    def when_mark_echoed(self, name: str) -> Deferred:
        """Fires with the time the fake echoed the mark called C{name}."""
        return self._waiters.wait(lambda: _time_of(self.marks_echoed, name))

    def when_clear(self, count: int = 1) -> Deferred:
        """Fires with the C{count}th C{(time, dropped bytes)} clear."""
        return self._waiters.wait(
            lambda: self.clears[count - 1] if len(self.clears) >= count else None
        )

    def when_message(self, event: str, count: int = 1) -> Deferred:
        """Fires with the C{count}th message of type C{event} from the app."""

        def check() -> dict[str, Any] | None:
            found = self.messages(event)
            return found[count - 1] if len(found) >= count else None

        return self._waiters.wait(check)

    def when_closed(self) -> Deferred:
        """Fires with C{closed_by} once the WebSocket is closed."""
        return self._waiters.wait(
            lambda: self.closed_by if self.state == "closed" else None, persistent=True
        )

    # -- what tests do (as the caller / the carrier) --------------------------

    def send_audio(
        self, audio: bytes, *, realtime: bool = False, out_of_order: bool = False
    ) -> Deferred:
        """
        The caller speaks: send C{audio} as C{media} frames (the last one padded
        with silence), all at once or one per frame's worth of C{clock}.

        With C{out_of_order}, each pair of frames goes out later one first (the
        messages keep their own numbers and timestamps), as a carrier that does
        not promise order may deliver them.  Fires with the number of bytes sent.
        """
        self._expect_open("send_audio")
        return Deferred.fromCoroutine(self._send_audio(audio, realtime, out_of_order))

    def send_dtmf(self, digit: str) -> None:
        """The caller presses a key."""
        self._expect_open("send_dtmf")
        self._send(self.dialect.dtmf(self, digit))

    def send_message(self, message: Any) -> None:
        """Send any JSON message as is (for protocol edge cases)."""
        self._expect_open("send_message")
        self._send(message)

    def send_raw(self, payload: bytes, is_binary: bool = False) -> None:
        """Send any WebSocket frame as is (not JSON, binary, ...)."""
        self._expect_open("send_raw")
        self._protocol.sendMessage(payload, isBinary=is_binary)

    def send_stop(self) -> Deferred:
        """The carrier ends the stream: its stop message, then a clean close."""
        self._expect_open("send_stop")
        self._close_by_provider()
        return self.when_closed()

    def drop(self) -> Deferred:
        """Cut the connection without a stop message or a close handshake."""
        if self.state == "closed":
            return self.when_closed()
        self._dropping = True
        self._abort()
        return self.when_closed()

    def next_seq(self) -> int:
        """The next sequence number of a message the carrier sends (1, 2, ...)."""
        self._seq += 1
        return self._seq

    # -- hooks for the carrier's fake -----------------------------------------

    def _record_error(self, error: str) -> None:
        """A connection problem the carrier would report (the stream keeps it)."""
        self.errors.append(error)

    def _opened_hook(self) -> None:
        """The opening messages went out."""

    def _started(self) -> None:
        """The stream is open and started (e.g. send a "stream started" webhook)."""

    def _stopped(self) -> None:
        """An open stream closed (e.g. send a "stream stopped" webhook)."""

    def _failed_hook(self, error: str) -> None:
        """The stream never opened, for C{error}."""

    def _describe_connect_failure(self, error: Exception) -> str:
        """How the carrier reports a connection it could not make."""
        return f"WebSocket connection failed: {error!r}"

    def _describe_handshake_failure(self, reason: str | None) -> str:
        """How the carrier reports an upgrade the app refused."""
        return f"WebSocket handshake failed: {reason}"

    # -- internals: connecting ------------------------------------------------

    def _expect_open(self, what: str) -> None:
        if self.state != "open":
            raise self.usage_error(f"{what}() on a {self.state} stream {self.sid}")

    async def _dial(
        self, connect_url: str, headers: dict[str, str], useragent: str | None = None
    ) -> None:
        """
        Connect to C{connect_url} (C{ws://} plain, C{wss://} over TLS) with the
        upgrade C{headers}; returns once the stream is open or has failed.
        """
        parts = urlsplit(connect_url)
        self.upgrade_headers = dict(headers)
        factory = WebSocketClientFactory(connect_url, headers=headers, useragent=useragent)
        factory.protocol = _StreamClientProtocol
        factory.stream = self
        factory.setProtocolOptions(**self.ws_options)
        tls = parts.scheme == "wss"
        port = parts.port or (443 if tls else 80)
        endpoint: Any = HostnameEndpoint(self.reactor, parts.hostname, port)
        if tls:
            endpoint = wrapClientTLS(optionsForClientTLS(parts.hostname), endpoint)
        self._connecting = endpoint.connect(factory)
        try:
            self._protocol = await self._connecting
        except Exception as e:
            if self._provider_closing or self._dropping:
                self._on_close(False, None, "the carrier gave up connecting")
            else:
                self._failed(self._describe_connect_failure(e))
            return
        finally:
            self._connecting = None
        await self._opened

    def _abort(self) -> None:
        """Cut the TCP connection, or give up connecting."""
        if self._protocol is not None:
            self._protocol.dropConnection(abort=True)
        elif self._connecting is not None:
            self._connecting.cancel()

    def _failed(self, error: str) -> None:
        """The stream could not be opened at all."""
        self._record_error(error)
        self.state = "closed"
        self.closed_by = "failed"
        if not self._opened.called:
            self._opened.callback(None)
        self._waiters.close(StreamClosed(error))
        self._failed_hook(error)

    def _on_open(self, protocol: _StreamClientProtocol) -> None:
        self._protocol = protocol
        self.state = "open"
        self.started_at = self.clock.seconds()
        self._play_end = self.started_at
        for message in self.dialect.opening(self):
            self._send(message)
        self._started()
        self._opened.callback(None)
        self._waiters.changed()
        self._opened_hook()

    def _on_close(self, was_clean: bool, code: int | None, reason: str | None) -> None:
        if self.state == "closed":
            return
        opened = self.state == "open"
        self.state = "closed"
        self.close_code = code
        self.close_reason = reason
        if self._provider_closing:
            self.closed_by = self.dialect.provider
        elif self._dropping:
            self.closed_by = "dropped"
        elif not opened:
            self.closed_by = "failed"
        else:
            self.closed_by = "app" if was_clean else "lost"
        self._cancel_timers()
        if not opened and not (self._provider_closing or self._dropping):
            error = self._describe_handshake_failure(reason)
            self._record_error(error)
            self._failed_hook(error)
        elif opened:
            self._stopped()
        if not self._opened.called:
            self._opened.callback(None)
        self._waiters.close(StreamClosed(f"stream {self.sid} closed by {self.closed_by}"))

    def _close_by_provider(self) -> None:
        """The carrier ends the stream: its stop message, then a close handshake."""
        if self.state == "closed" or self._provider_closing:
            return
        self._provider_closing = True
        if self.state == "connecting":
            self._abort()
            return
        stop = self.dialect.stop(self)
        if stop is not None:
            self._send(stop)
        self._cancel_timers()
        self._protocol.sendClose(1000)

    # -- internals: sending ---------------------------------------------------

    def _send(self, message: Any) -> None:
        if self._protocol is None or self.state != "open":
            return
        self.sent.append(message)
        self._protocol.sendMessage(json.dumps(message).encode("utf-8"), isBinary=False)

    async def _send_audio(self, audio: bytes, realtime: bool, out_of_order: bool) -> int:
        await self._send_lock.acquire()
        try:
            step = self.audio.frame_bytes
            t0 = self.clock.seconds()
            sent = 0
            held: dict[str, Any] | None = None
            for i in range(0, len(audio), step):
                if self.state != "open":
                    break
                if realtime and i:
                    delay = t0 + (i // step) * step / self.audio.bytes_per_second
                    delay -= self.clock.seconds()
                    if delay > 0:
                        self._pacing = task.deferLater(self.clock, delay)
                        try:
                            await self._pacing
                        except CancelledError:
                            break
                        finally:
                            self._pacing = None
                frame = audio[i : i + step].ljust(step, self.audio.silence)
                message = self._media_message(frame)
                sent += len(frame)
                if out_of_order and held is None:
                    held = message
                    continue
                self._send(message)
                if held is not None:
                    self._send(held)
                    held = None
            if held is not None:
                self._send(held)
            return sent
        finally:
            self._send_lock.release()

    def _media_message(self, frame: bytes) -> dict[str, Any]:
        self._chunk += 1
        elapsed = round((self.clock.seconds() - (self.started_at or 0.0)) * 1000)
        if self._last_timestamp is not None:
            elapsed = max(elapsed, self._last_timestamp + 20)
        self._last_timestamp = elapsed
        return self.dialect.media(self, frame, self._chunk, elapsed)

    # -- internals: what the app sends ----------------------------------------

    def _on_message(self, payload: bytes, is_binary: bool) -> None:
        now = self.clock.seconds()
        if is_binary:
            self.errors.append("binary frame (the carrier expects JSON text)")
            return
        try:
            message = json.loads(payload)
        except ValueError:
            self.errors.append(f"not JSON: {payload[:80]!r}")
            return
        self.received.append((now, message))
        try:
            parsed = self.dialect.parse(self, message)
        except StreamProtocolError as e:
            self.errors.append(str(e))
            if e.reply is not None:
                self._send(e.reply)
            self._waiters.changed()
            return
        if parsed.kind != "other" and not self.bidirectional:
            self.errors.append(f"{parsed.kind} on a unidirectional stream is ignored")
        elif parsed.kind == "media":
            self._on_media(now, parsed.audio)
        elif parsed.kind == "mark":
            self._on_mark(now, parsed.name)
        elif parsed.kind == "clear":
            self._on_clear(now)
        self._waiters.changed()

    def _on_media(self, now: float, data: bytes) -> None:
        self.frames.append((now, data))
        start = max(now, self._play_end)
        self._play_end = start + len(data) / self.audio.bytes_per_second

    def _on_mark(self, now: float, name: str) -> None:
        self.marks_received.append((now, name))
        self._pending_marks.append((max(now, self._play_end), name))
        self._marks_due()

    def _on_clear(self, now: float) -> None:
        dropped = max(0, round((self._play_end - now) * self.audio.bytes_per_second))
        self._play_end = now
        self.clears.append((now, dropped))
        pending, self._pending_marks = self._pending_marks, []
        for _, name in pending:
            self._echo_mark(name)
        answer = self.dialect.cleared(self)
        if answer is not None:
            self._send(answer)
        self._arm_mark_timer()

    def _marks_due(self) -> None:
        now = self.clock.seconds()
        while self._pending_marks and self._pending_marks[0][0] <= now + 1e-9:
            _, name = self._pending_marks.pop(0)
            self._echo_mark(name)
        self._arm_mark_timer()

    def _arm_mark_timer(self) -> None:
        if self._mark_timer is not None and self._mark_timer.active():
            self._mark_timer.cancel()
        self._mark_timer = None
        if self._pending_marks and self.state == "open":
            delay = max(0.0, self._pending_marks[0][0] - self.clock.seconds())
            self._mark_timer = self._call_later(delay, self._mark_timer_fired)

    def _mark_timer_fired(self) -> None:
        self._mark_timer = None
        self._marks_due()
        self._waiters.changed()

    def _echo_mark(self, name: str) -> None:
        self.marks_echoed.append((self.clock.seconds(), name))
        self._send(self.dialect.mark_echo(self, name))

    def _cancel_timers(self) -> None:
        if self._mark_timer is not None and self._mark_timer.active():
            self._mark_timer.cancel()
        self._mark_timer = None
        self._pending_marks = []
        if self._pacing is not None:
            self._pacing.cancel()


def decode_payload(value: Any) -> bytes:
    """Strict base64 (the carriers refuse anything else); raises C{ValueError}."""
    if not isinstance(value, str):
        raise ValueError(f"payload is {type(value).__name__}, not a base64 string")
    return base64.b64decode(value, validate=True)


def _time_of(events: list[tuple[float, str]], name: str) -> float | None:
    return next((when for when, n in events if n == name), None)
