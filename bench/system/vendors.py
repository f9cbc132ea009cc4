"""
The AI vendors the real daemon talks to during the system benchmark, in one
cheap process on 127.0.0.1: OpenAI speech (C{POST /v1/audio/speech}), chat
completions (C{POST /v1/chat/completions}) and Realtime transcription (a
WebSocket on C{/v1/realtime}), plus C{GET /stats}.

Run as C{python -m bench.system.vendors [--cpu N] [--port 0] [--turn-every S]
[--utterance-seconds S] ...}; it prints one JSON line with the URLs to
configure and serves until SIGTERM or, when stdin is a pipe, its EOF.

The transcription side is a minimal RFC 6455 server: appends are recognised
by unmasking their first bytes only and counted, never decoded.  Each
session follows a script so the daemon speaks nearly all the time: a caller
turn (speech started, partials, completed) once C{--turn-every} seconds of
audio have arrived since the last one and the bot's reply to it has played
out; every C{--barge-in-every}th turn instead starts while the reply plays
(a barge-in).  Replies carry a C{(ref cS.tK)} tag from the transcript through
chat to speech, so each speech request is tied to its session and turn.
Speech is sliced from one prebuilt 24 kHz PCM tone, in irregular chunks, a
fixed delay to the first byte, faster than real time.  Timestamps are
C{time.monotonic()} (system-wide on Linux), so another process can pair them
with its own.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import math
import os
import random
import re
import resource
import stat
import sys
import time
from array import array
from collections import deque
from typing import Any

import attrs
from twisted.internet import reactor as global_reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from bench._common import pin

PCM_RATE = 24000
PCM_BYTES_PER_SECOND = PCM_RATE * 2
CHARS_PER_SECOND = 15.0
"""Spoken length of text when speech length follows the text."""
EVENTS_KEPT = 100_000
"""Each timestamp list keeps at most this many of the newest entries."""
SESSIONS_KEPT = 5_000
"""Closed sessions kept in the per-session statistics."""
TICK = 0.04
"""How often speech streams are topped up, in seconds."""

_TAG = re.compile(rb"\(ref c(\d+)\.t(\d+)\)")
_TAG_START = b"(ref c"
_APPEND_PREFIX = b'{"type":"input_audio_buffer.append","audio":"'
_APPEND_PREFIX_INT = int.from_bytes(_APPEND_PREFIX[:36], "big")
_APPEND_OVERHEAD = len(_APPEND_PREFIX) + len(b'"}')
_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_FILLER = (
    "We have tables free all evening, the kitchen is open late, the specials today are"
    " the mushroom risotto and the grilled sea bass, and dessert is on the house for two. "
)


@attrs.frozen
class Script:
    """How the vendors behave (the command line's options)."""

    turn_every: float = 8.0
    """Seconds of received audio from one completed caller turn to the next (at least)."""
    utterance_seconds: float | None = None
    """Length of every speech answer; None follows the text (default: C{turn_every})."""
    barge_in_every: int = 10
    """Every this many-th caller turn is a barge-in over the reply (0: none); sessions are
    staggered, so that a share of them barge in at any time."""
    barge_in_at: float = 0.5
    """How far into the reply a barge-in starts (a fraction of its length)."""
    barge_in_speech: float = 0.2
    """Seconds from a barge-in's speech_started to its completed transcript."""
    turn_gap: float = 0.25
    """
    Seconds the next caller turn waits after the reply's length has passed since
    its first byte.  The carrier finishes playing 30-160 ms after that (the
    daemon sends silence, 60 ms ahead, while it waits for the first byte, and
    catches up on its frame schedule after a short pause), so the turn lands
    right after the bot stopped, never on it.
    """
    first_byte: float = 0.02
    """Seconds from a speech request to its first byte."""
    speedup: float = 3.0
    """How much faster than real time speech streams."""

    def speech_seconds(self, text: str) -> float:
        """How long the speech for C{text} is."""
        if self.utterance_seconds:
            return self.utterance_seconds
        return max(0.5, len(text) / CHARS_PER_SECOND)

    def reply_text(self, tag: str) -> str:
        """A chat reply carrying C{tag}: short, or as long as a turn when speech follows text."""
        head = f"Certainly {tag}, "
        if self.utterance_seconds:
            return head + _FILLER.split(",")[0] + "."
        want = max(0, int((self.turn_every - self.turn_gap) * CHARS_PER_SECOND) - len(head))
        body = (_FILLER * (want // len(_FILLER) + 1))[:want].rsplit(" ", 1)[0]
        return head + body + "."


def tone(seconds: int) -> bytes:
    """C{seconds} of a two-tone, slowly pulsing s16le signal at 24 kHz (one second, repeated)."""
    one = array(
        "h",
        (
            round(
                (5000 + 3000 * math.sin(2 * math.pi * 3 * i / PCM_RATE))
                * (
                    math.sin(2 * math.pi * 220 * i / PCM_RATE)
                    + 0.5 * math.sin(2 * math.pi * 660 * i / PCM_RATE)
                )
                / 1.5
            )
            for i in range(PCM_RATE)
        ),
    )
    if sys.byteorder != "little":
        one.byteswap()
    return one.tobytes() * seconds


def chunk_sizes(seed: int = 6455, count: int = 97) -> list[int]:
    """Irregular chunk sizes of a few KB, odd, so samples straddle chunks as they do live."""
    rng = random.Random(seed)
    return [rng.randrange(1500, 6500) | 1 for _ in range(count)]


class Stats:
    """Counters and bounded lists of C{time.monotonic()} timestamps."""

    LISTS = ("speech_started", "barge_in", "completed", "chat", "tts_request", "tts_first_byte")

    def __init__(self) -> None:
        self.counts: dict[str, int] = dict.fromkeys(
            (
                "sessions_opened",
                "sessions_closed",
                "session_updates",
                "appends",
                "audio_bytes",
                "pings",
                "speech_started",
                "barge_in",
                "completed",
                "chat",
                "tts_request",
                "tts_first_byte",
                "tts_done",
                "tts_lost",
                "tts_bytes",
                "tts_chunks",
            ),
            0,
        )
        self.events: dict[str, deque[tuple[float, int | None, int | None]]] = {
            name: deque(maxlen=EVENTS_KEPT) for name in self.LISTS
        }

    def note(self, name: str, session: int | None = None, turn: int | None = None) -> float:
        """Count C{name} and keep its time (with session and turn); returns the time."""
        now = time.monotonic()
        self.counts[name] += 1
        self.events[name].append((now, session, turn))
        return now


class Vendors:
    """The shared state: the script, the statistics, the live sessions, the speech streams."""

    def __init__(self, script: Script, reactor: Any = global_reactor) -> None:
        self.script = script
        self.reactor = reactor
        self.stats = Stats()
        self.sessions: dict[int, SttSession] = {}
        self.closed: deque[SttSession] = deque(maxlen=SESSIONS_KEPT)
        self._next_session = 0
        longest = script.utterance_seconds or script.turn_every * 2
        self.audio = tone(max(60, math.ceil(longest) + 1))
        self.chunks = chunk_sizes()
        self.streams: list[SpeechStream] = []
        self._ticker = LoopingCall(self._tick)
        self._ticker.clock = reactor

    def stop(self) -> None:
        """Cancel every timer (the sessions' and the speech ticker)."""
        for session in self.sessions.values():
            session.cancel_timer()
        if self._ticker.running:
            self._ticker.stop()

    def new_session_id(self) -> int:
        """A fresh session number."""
        self._next_session += 1
        return self._next_session

    # Speech

    def speak(self, request: Request, session: int | None, turn: int | None, text: str) -> None:
        """Stream speech for C{text} as the answer to C{request}."""
        seconds = self.script.speech_seconds(text)
        size = min(len(self.audio), round(seconds * PCM_RATE) * 2)
        stream = SpeechStream(self, request, session, turn, size, seconds)
        stream.due = self.reactor.callLater(self.script.first_byte, stream.begin)

    def _tick(self) -> None:
        now = time.monotonic()
        live = []
        for stream in self.streams:
            if stream.top_up(now):
                live.append(stream)
        self.streams = live
        if not live:
            self._ticker.stop()

    def streaming(self, stream: SpeechStream) -> None:
        """C{stream} has sent its first byte; it is topped up every L{TICK}."""
        self.streams.append(stream)
        if not self._ticker.running:
            self._ticker.start(TICK, now=False)

    # Statistics

    def snapshot(self, since: float | None = None) -> dict[str, Any]:
        """The statistics as JSON-able data (events after C{since} only, if given)."""
        usage = resource.getrusage(resource.RUSAGE_SELF)
        events = {}
        for name, entries in self.stats.events.items():
            if since is None:
                events[name] = [list(e) for e in entries]
                continue
            newer = []
            for entry in reversed(entries):
                if entry[0] <= since:
                    break
                newer.append(list(entry))
            events[name] = newer[::-1]
        sessions = {str(s.id): s.describe() for s in (*self.closed, *self.sessions.values())}
        return {
            "now": time.monotonic(),
            "pid": os.getpid(),
            "cpu": {"user": usage.ru_utime, "system": usage.ru_stime},
            "script": attrs.asdict(self.script),
            "counts": {**self.stats.counts, "sessions_open": len(self.sessions)},
            "events": events,
            "sessions": sessions,
        }


class SpeechStream:
    """One speech answer: the prebuilt audio's first C{size} bytes, chunked, ahead of time."""

    def __init__(
        self,
        vendors: Vendors,
        request: Request,
        session: int | None,
        turn: int | None,
        size: int,
        seconds: float,
    ) -> None:
        self._vendors = vendors
        self._seconds = seconds
        self._request = request
        self._session = session
        self._turn = turn
        self._size = size
        self._sent = 0
        self._chunk = (session or 0) * 7 + (turn or 0)
        self._started = 0.0
        self._gone = False
        self.due: Any = None
        request.notifyFinish().addErrback(self._lost)

    def _lost(self, _: Failure) -> None:
        if self.due is not None and self.due.active():
            self.due.cancel()
        if not self._gone:
            self._gone = True
            self._vendors.stats.counts["tts_lost"] += 1

    def begin(self) -> None:
        """Send the headers and the first chunk."""
        if self._gone:
            return
        self._request.setResponseCode(200)
        self._request.setHeader(b"content-type", b"audio/pcm")
        self._started = self._vendors.stats.note("tts_first_byte", self._session, self._turn)
        owner = self._vendors.sessions.get(self._session)
        if owner is not None:
            owner.reply_started(self._turn, self._seconds)
        self._write_chunk()
        if self._more():
            self._vendors.streaming(self)

    def top_up(self, now: float) -> bool:
        """Send what is due by now at C{speedup} times real time; False once finished."""
        if self._gone:
            return False
        due = (now - self._started) * self._vendors.script.speedup * PCM_BYTES_PER_SECOND
        while self._sent < due and self._write_chunk():
            pass
        return self._more()

    def _write_chunk(self) -> bool:
        chunks = self._vendors.chunks
        size = chunks[self._chunk % len(chunks)]
        self._chunk += 1
        data = self._vendors.audio[self._sent : min(self._size, self._sent + size)]
        self._sent += len(data)
        self._request.write(data)
        counts = self._vendors.stats.counts
        counts["tts_chunks"] += 1
        counts["tts_bytes"] += len(data)
        return self._more()

    def _more(self) -> bool:
        if self._gone:
            return False
        if self._sent < self._size:
            return True
        self._gone = True
        self._vendors.stats.counts["tts_done"] += 1
        self._request.finish()
        return False


# --- realtime transcription: a minimal RFC 6455 server -------------------------------------


def _unmask(payload: bytes, mask: bytes) -> bytes:
    n = len(payload)
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")


def _frame(payload: bytes, opcode: int = 1) -> bytes:
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 127)) + n.to_bytes(8, "big")
    return head + payload


class SttSession(Protocol):
    """One Realtime transcription socket: the handshake, the frames and the turn script."""

    def __init__(self, vendors: Vendors, gone: Any = None) -> None:
        self.vendors = vendors
        self._gone = gone
        self.id = vendors.new_session_id()
        self._buffer = b""
        self._open = False
        self._message: bytearray | None = None
        self._message_is_append = False
        self._events = 0
        self._bps = 8000
        self.opened_at = 0.0
        self.closed_at: float | None = None
        self.first_audio = ""
        self.appends = 0
        self.audio_bytes = 0
        self.turn = 0
        self.barge_ins = 0
        # The next normal turn is due once both hold.
        self._due_bytes = 0
        self._reply_done = True
        self._reply_deadline = math.inf
        self._timer: Any = None

    # Connection

    def connectionMade(self) -> None:
        self.opened_at = time.monotonic()

    def cancel_timer(self) -> None:
        """Drop the pending step of the script, if any."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._closed()
        if self._gone is not None:
            gone, self._gone = self._gone, None
            gone(self)

    def _closed(self) -> None:
        self.cancel_timer()
        if self._open:
            self._open = False
            self.closed_at = time.monotonic()
            self.vendors.sessions.pop(self.id, None)
            self.vendors.closed.append(self)
            self.vendors.stats.counts["sessions_closed"] += 1

    def dataReceived(self, data: bytes) -> None:
        if self.closed_at is not None:
            return
        if self._buffer:
            data = self._buffer + data
            self._buffer = b""
        if not self._open:
            end = data.find(b"\r\n\r\n")
            if end < 0:
                if len(data) > 16384:
                    self.transport.abortConnection()
                else:
                    self._buffer = data
                return
            if not self._handshake(data[:end]):
                return
            data = data[end + 4 :]
        pos, n = 0, len(data)
        while n - pos >= 2:
            b1 = data[pos + 1]
            length = b1 & 0x7F
            head = 2
            if length == 126:
                if n - pos < 4:
                    break
                length = int.from_bytes(data[pos + 2 : pos + 4], "big")
                head = 4
            elif length == 127:
                if n - pos < 10:
                    break
                length = int.from_bytes(data[pos + 2 : pos + 10], "big")
                head = 10
            masked = b1 & 0x80
            if masked:
                head += 4
            start = pos + head
            if start + length > n:
                break
            mask = data[start - 4 : start] if masked else b"\0\0\0\0"
            self._frame_in(data[pos], mask, data, start, length)
            if not self._open:
                return
            pos = start + length
        if pos < n:
            self._buffer = data[pos:]

    def _handshake(self, head: bytes) -> bool:
        lines = head.split(b"\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        key = headers.get(b"sec-websocket-key")
        if key is None or headers.get(b"upgrade", b"").lower() != b"websocket":
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            self.transport.loseConnection()
            return False
        accept = base64.b64encode(hashlib.sha1(key + _WS_GUID).digest())
        self.transport.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        self._open = True
        self.vendors.sessions[self.id] = self
        self.vendors.stats.counts["sessions_opened"] += 1
        self._due_bytes = self._turn_bytes()
        self.send({"type": "session.created", "session": {"id": f"sess_{self.id}"}})
        return True

    def _frame_in(self, b0: int, mask: bytes, data: bytes, start: int, length: int) -> None:
        opcode = b0 & 0x0F
        fin = b0 & 0x80
        if opcode in (1, 2):
            if length >= 40 and self._is_append(mask, data, start):
                self._append(mask, data, start, length, fin)
                self._message_is_append = not fin
            elif fin:
                self._control_event(_unmask(data[start : start + length], mask))
            else:
                self._message = bytearray(_unmask(data[start : start + length], mask))
        elif opcode == 0:
            if self._message_is_append:
                self.audio_bytes += length * 3 // 4
                self.vendors.stats.counts["audio_bytes"] += length * 3 // 4
                self._message_is_append = not fin
            elif self._message is not None:
                self._message += _unmask(data[start : start + length], mask)
                if fin:
                    message, self._message = bytes(self._message), None
                    self._control_event(message)
        elif opcode == 8:
            self.transport.write(_frame(b"\x03\xe8", 8))
            self.transport.loseConnection()
            self._closed()
        elif opcode == 9:
            self.vendors.stats.counts["pings"] += 1
            self.transport.write(_frame(_unmask(data[start : start + length], mask), 10))

    @staticmethod
    def _is_append(mask: bytes, data: bytes, start: int) -> bool:
        head = int.from_bytes(data[start : start + 36], "big")
        return head ^ int.from_bytes(mask * 9, "big") == _APPEND_PREFIX_INT

    def _append(self, mask: bytes, data: bytes, start: int, length: int, fin: int) -> None:
        chars = length - _APPEND_OVERHEAD
        if fin:
            # Padding: the last two base64 characters, before the closing '"}'.
            end = start + length
            last = end - 3
            pad = (data[last] ^ mask[(last - start) & 3] == 0x3D) + (
                data[last - 1] ^ mask[(last - 1 - start) & 3] == 0x3D
            )
        else:
            pad = 0
        count = chars * 3 // 4 - pad
        if not self.appends:
            tail = _unmask(data[start : start + 48 + 8], mask)[len(_APPEND_PREFIX) :][:8]
            try:
                self.first_audio = base64.b64decode(tail).hex()
            except ValueError:
                self.first_audio = ""
        self.appends += 1
        self.audio_bytes += count
        counts = self.vendors.stats.counts
        counts["appends"] += 1
        counts["audio_bytes"] += count
        if self._reply_done:
            if self.audio_bytes >= self._due_bytes:
                self._caller_turn()
        elif time.monotonic() > self._reply_deadline:
            self._reply_done = True

    def _control_event(self, payload: bytes) -> None:
        try:
            event = json.loads(payload)
        except ValueError:
            event = None
        if not isinstance(event, dict):
            self._error("invalid_json", "Expected a JSON object in a text message.")
            return
        kind = event.get("type")
        if kind in ("session.update", "transcription_session.update"):
            self.vendors.stats.counts["session_updates"] += 1
            session = event.get("session")
            self._bps = _bytes_per_second(session)
            self._due_bytes = self.audio_bytes + self._turn_bytes()
            self.send({"type": kind.replace("update", "updated"), "session": session})
        elif kind in ("input_audio_buffer.commit", "input_audio_buffer.clear"):
            pass
        else:
            self._error("invalid_value", f"Invalid value: {kind!r}.")

    def _error(self, code: str, message: str) -> None:
        self.send(
            {
                "type": "error",
                "error": {"type": "invalid_request_error", "code": code, "message": message},
            }
        )

    # Sending

    def send(self, *events: dict[str, Any]) -> None:
        """Send C{events}, one text frame each, in one write."""
        frames = []
        for event in events:
            self._events += 1
            body = {"event_id": f"event_{self.id}_{self._events}", **event}
            frames.append(_frame(json.dumps(body, separators=(",", ":")).encode()))
        self.transport.writeSequence(frames)

    # The script

    def _turn_bytes(self) -> int:
        return round(self.vendors.script.turn_every * self._bps)

    def _item(self, turn: int) -> str:
        return f"item_{self.id}_{turn}"

    def _caller_turn(self) -> None:
        """A normal turn: the caller speaks right after the bot finished."""
        turn = self.turn + 1
        item = self._item(turn)
        stats = self.vendors.stats
        stats.note("speech_started", self.id, turn)
        words = f"I would like a table for two at eight (ref c{self.id}.t{turn})."
        started = self._speech_started(item)
        self._finish(turn, item, words, [started, _delta(item, "I would like ")])

    def _speech_started(self, item: str) -> dict[str, Any]:
        ms = self.audio_bytes * 1000 // self._bps
        return {"type": "input_audio_buffer.speech_started", "audio_start_ms": ms, "item_id": item}

    def _finish(self, turn: int, item: str, words: str, before: list[dict[str, Any]]) -> None:
        ms = self.audio_bytes * 1000 // self._bps
        previous = self._item(self.turn) if self.turn else None
        self.send(
            *before,
            _delta(item, "a table for two "),
            {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": ms, "item_id": item},
            {"type": "input_audio_buffer.committed", "item_id": item, "previous_item_id": previous},
            {
                "type": "conversation.item.input_audio_transcription.completed",
                "item_id": item,
                "content_index": 0,
                "transcript": words,
            },
        )
        self.vendors.stats.note("completed", self.id, turn)
        self.turn = turn
        self._reply_done = False
        self._due_bytes = self.audio_bytes + self._turn_bytes()
        self._reply_deadline = time.monotonic() + 2 * self.vendors.script.turn_every + 5

    def _barge_in(self) -> None:
        """The caller talks over the reply: speech started and two words, then the rest."""
        self._timer = None
        if not self._open:
            return
        turn = self.turn + 1
        item = self._item(turn)
        self.vendors.stats.note("speech_started", self.id, turn)
        self.vendors.stats.note("barge_in", self.id, turn)
        self.barge_ins += 1
        self.send(self._speech_started(item), _delta(item, "Wait, sorry "))
        self._timer = self.vendors.reactor.callLater(
            self.vendors.script.barge_in_speech, self._barge_in_said, turn, item
        )

    def _barge_in_said(self, turn: int, item: str) -> None:
        self._timer = None
        if self._open:
            self._finish(turn, item, f"Wait, sorry, one more thing (ref c{self.id}.t{turn}).", [])

    def reply_started(self, turn: int | None, seconds: float) -> None:
        """The first byte of the speech answering our turn C{turn}, C{seconds} long, is out."""
        if turn != self.turn or not self._open:
            return
        script = self.vendors.script
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        # Sessions are staggered by their id, so some barge in within any window.
        following = turn + self.id
        if script.barge_in_every and following % script.barge_in_every == 0 and turn >= 1:
            delay = seconds * script.barge_in_at
            self._timer = self.vendors.reactor.callLater(delay, self._barge_in)
        else:
            delay = seconds + script.turn_gap
            self._timer = self.vendors.reactor.callLater(delay, self._reply_over)

    def _reply_over(self) -> None:
        self._timer = None
        self._reply_done = True
        if self._open and self.audio_bytes >= self._due_bytes:
            self._caller_turn()

    def describe(self) -> dict[str, Any]:
        """This session for C{/stats}."""
        return {
            "opened": self.opened_at,
            "closed": self.closed_at,
            "appends": self.appends,
            "audio_bytes": self.audio_bytes,
            "turns": self.turn,
            "barge_ins": self.barge_ins,
            "first_audio": self.first_audio,
        }


def _delta(item: str, text: str) -> dict[str, Any]:
    return {
        "type": "conversation.item.input_audio_transcription.delta",
        "item_id": item,
        "content_index": 0,
        "delta": text,
    }


def _bytes_per_second(session: Any) -> int:
    """Audio bytes per second of the format a session update asks for (mu-law if unsure)."""
    try:
        fmt = session["audio"]["input"]["format"]
    except (KeyError, TypeError):
        fmt = session.get("input_audio_format") if isinstance(session, dict) else None
    if isinstance(fmt, dict) and fmt.get("type") == "audio/pcm":
        return int(fmt.get("rate", PCM_RATE)) * 2
    if fmt == "pcm16":
        return PCM_RATE * 2
    return 8000


# --- HTTP --------------------------------------------------------------------------------------


def _tag_of(body: bytes) -> tuple[int | None, int | None]:
    """The session and turn of the last C{(ref cS.tK)} tag in C{body}."""
    at = body.rfind(_TAG_START)
    if at < 0:
        return None, None
    match = _TAG.match(body, at)
    if match is None:
        return None, None
    return int(match.group(1)), int(match.group(2))


class _Speech(Resource):
    isLeaf = True

    def __init__(self, vendors: Vendors) -> None:
        super().__init__()
        self._vendors = vendors

    def render_POST(self, request: Request) -> Any:
        raw = request.content.read()
        try:
            text = json.loads(raw)["input"]
        except (ValueError, KeyError, TypeError):
            request.setResponseCode(400)
            return b'{"error": {"message": "input is required", "type": "invalid_request_error"}}'
        session, turn = _tag_of(text.encode())
        self._vendors.stats.note("tts_request", session, turn)
        self._vendors.speak(request, session, turn, text)
        return NOT_DONE_YET


class _Chat(Resource):
    isLeaf = True

    def __init__(self, vendors: Vendors) -> None:
        super().__init__()
        self._vendors = vendors

    def render_POST(self, request: Request) -> bytes:
        raw = request.content.read()
        session, turn = _tag_of(raw)
        self._vendors.stats.note("chat", session, turn)
        tag = f"(ref c{session}.t{turn})" if session is not None else "again"
        answer = {
            "id": f"chatcmpl-{session}-{turn}",
            "object": "chat.completion",
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": self._vendors.script.reply_text(tag),
                    },
                    "finish_reason": "stop",
                }
            ],
        }
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(answer).encode()


class _Models(Resource):
    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        model = "/".join(p.decode() for p in request.postpath)
        return json.dumps({"id": model, "object": "model"}).encode()


class _Stats(Resource):
    isLeaf = True

    def __init__(self, vendors: Vendors) -> None:
        super().__init__()
        self._vendors = vendors

    def render_GET(self, request: Request) -> bytes:
        since = request.args.get(b"since")
        request.setHeader(b"content-type", b"application/json")
        snapshot = self._vendors.snapshot(float(since[0]) if since else None)
        return json.dumps(snapshot).encode()


class _QuietSite(Site):
    """No access log: one line per request would cost more than the request."""

    def log(self, request: Request) -> None:
        pass


def site(vendors: Vendors) -> Site:
    """The HTTP resources: speech, chat, models and stats."""
    audio = Resource()
    audio.putChild(b"speech", _Speech(vendors))
    chat = Resource()
    chat.putChild(b"completions", _Chat(vendors))
    v1 = Resource()
    v1.putChild(b"audio", audio)
    v1.putChild(b"chat", chat)
    v1.putChild(b"models", _Models())
    root = Resource()
    root.putChild(b"v1", v1)
    root.putChild(b"stats", _Stats(vendors))
    web = _QuietSite(root)
    web.protocol = _Channel
    web.noisy = False
    return web


class _Channel(HTTPChannel):
    """An HTTP connection that tells the factory when it is gone."""

    gone: Any = None

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        if self.gone is not None:
            self.gone(self)


class _Front(Protocol):
    """Reads the first request line, then hands the connection to the WebSocket or the web."""

    def __init__(self, factory: VendorsFactory) -> None:
        self._factory = factory
        self._buffer = b""

    def connectionMade(self) -> None:
        self._factory.live.add(self)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._factory.forget(self)

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        if b"\r\n" not in self._buffer and len(self._buffer) < 4096:
            return
        factory = self._factory
        if self._buffer.startswith(b"GET /v1/realtime"):
            proto: Any = SttSession(factory.vendors, factory.forget)
        else:
            proto = factory.web.buildProtocol(self.transport.getPeer())
            proto.gone = factory.forget
        factory.live.discard(self)
        factory.live.add(proto)
        self.transport.protocol = proto
        proto.makeConnection(self.transport)
        proto.dataReceived(self._buffer)


class VendorsFactory(Factory):
    """Every connection to the vendors' port; L{stop} ends them all."""

    noisy = False

    def __init__(self, vendors: Vendors) -> None:
        self.vendors = vendors
        self.web = site(vendors)
        self.live: set[Any] = set()
        self._emptied: list[Deferred[None]] = []

    def buildProtocol(self, addr: Any) -> Protocol:
        return _Front(self)

    def forget(self, proto: Any) -> None:
        """C{proto}'s connection is gone."""
        self.live.discard(proto)
        if not self.live:
            waiting, self._emptied = self._emptied, []
            for d in waiting:
                d.callback(None)

    def stop(self) -> Deferred[None]:
        """Abort every connection; fires once all are gone."""
        self.vendors.stop()
        if not self.live:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._emptied.append(d)
        for proto in list(self.live):
            proto.transport.abortConnection()
        return d


def urls(port: int) -> dict[str, str]:
    """What the daemon's config needs, for a server on C{port}."""
    base = f"http://127.0.0.1:{port}"
    return {
        "openai_base": f"{base}/v1",
        "realtime_url": f"ws://127.0.0.1:{port}/v1/realtime?intent=transcription",
        "stats": f"{base}/stats",
    }


def listen(vendors: Vendors, port: int = 0) -> tuple[Any, VendorsFactory]:
    """Listen on 127.0.0.1:C{port}; the listening port and the factory (to stop it)."""
    factory = VendorsFactory(vendors)
    listening = vendors.reactor.listenTCP(port, factory, interface="127.0.0.1", backlog=1024)
    return listening, factory


class _StdinWatch(Protocol):
    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if global_reactor.running:
            global_reactor.stop()


def _stdin_is_pipe() -> bool:
    try:
        mode = os.fstat(0).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    d = Script()
    p = argparse.ArgumentParser(prog="python -m bench.system.vendors", description=__doc__)
    p.add_argument("--cpu", type=int, default=None, help="pin to this core")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--turn-every", type=float, default=d.turn_every)
    p.add_argument(
        "--utterance-seconds",
        type=float,
        default=None,
        help="length of every speech answer (default: --turn-every; 0: follows the text)",
    )
    p.add_argument("--barge-in-every", type=int, default=d.barge_in_every)
    p.add_argument("--barge-in-at", type=float, default=d.barge_in_at)
    p.add_argument("--barge-in-speech", type=float, default=d.barge_in_speech)
    p.add_argument("--turn-gap", type=float, default=d.turn_gap)
    p.add_argument("--first-byte-ms", type=float, default=d.first_byte * 1000)
    p.add_argument("--speedup", type=float, default=d.speedup)
    return p.parse_args(argv)


def script_of(args: argparse.Namespace) -> Script:
    """The script the command line asks for."""
    utterance = args.turn_every if args.utterance_seconds is None else args.utterance_seconds
    return Script(
        turn_every=args.turn_every,
        utterance_seconds=utterance or None,
        barge_in_every=args.barge_in_every,
        barge_in_at=args.barge_in_at,
        barge_in_speech=args.barge_in_speech,
        turn_gap=args.turn_gap,
        first_byte=args.first_byte_ms / 1000,
        speedup=args.speedup,
    )


def main(argv: list[str] | None = None) -> None:
    """Serve the vendors until SIGTERM or stdin's EOF."""
    args = parse_args(argv)
    pin(args.cpu)
    vendors = Vendors(script_of(args))
    port = listen(vendors, args.port)[0].getHost().port
    sys.stdout.write(json.dumps(urls(port)) + "\n")
    sys.stdout.flush()
    if _stdin_is_pipe():
        from twisted.internet.stdio import StandardIO

        StandardIO(_StdinWatch())
    global_reactor.run()


if __name__ == "__main__":
    main()
