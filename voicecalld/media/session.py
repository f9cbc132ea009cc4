"""
The per-call media sessions of one provider, whatever its carrier.

L{MediaSessions} owns a provider's media path: the stream tokens, the socket
factory (speaking the carrier's codec), the shared pacing clock, and one
line per live call.  A socket's start is accepted only with a token issued
for that call and carrier call id; a new stream replaces the call's old one;
speech waits a few seconds for a (re)connecting stream; a call whose stream
keeps ending gets a bounded number of restarts.

L{MediaSession} is one connected stream: caller audio to the STT session,
its transcripts and the caller's in-band keys as call events, speech out
through the L{SpeechPlayer} and L{FramePacer}, marks echoed back to the
player, and barge-in (interrupt, then the carrier's clear).

With C{realtime} set (a function opening the realtime side of one media
session, L{voicecalld.realtime.bridge.bridge_opener}), a stream opens a
realtime speech-to-speech session instead of STT: caller audio goes to it,
the model's audio comes back through the same pacer, and C{say} asks the
model to speak.

Events go out through the C{emit} function given (the provider's, which
reports them to the call manager without waiting).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from voicecalld.config.model import StreamingSettings
from voicecalld.errors import ProviderError
from voicecalld.media.pacing import DEFAULT_LEAD, FramePacer, PacingClock
from voicecalld.media.speech import SpeechPlayer
from voicecalld.media.stream import (
    CLOSE_NORMAL,
    MediaStream,
    MediaStreamFactory,
    StreamLimits,
    StreamStart,
)
from voicecalld.media.tokens import StreamTokens
from voicecalld.values import events as ev
from voicecalld.values.playback import Playback

MAX_STREAM_RESTARTS = 5
# How long speech waits for a (re)connecting media stream.
MEDIA_WAIT = 5.0
# The custom stream parameter that carries the stream token.
TOKEN_PARAMETER = "token"

Emit = Callable[[ev.CallEvent], None]


def limits_from(streaming: StreamingSettings) -> StreamLimits:
    """The socket limits the config sets (C{streaming.*})."""
    return StreamLimits(
        pre_start_timeout=streaming.pre_start_timeout_ms / 1000.0,
        max_pending=streaming.max_pending_connections,
        max_pending_per_peer=streaming.max_pending_connections_per_ip,
        max_connections=streaming.max_connections,
    )


class _Line:
    """One live call's place for a media stream."""

    def __init__(self, call_id: str, tts: Any = None) -> None:
        self.call_id = call_id
        self.tts = tts
        self.session: MediaSession | None = None
        self.waiters: list[Deferred] = []
        self.restarts = 0


class MediaSessions:
    """Every media stream of one provider; see the module docstring."""

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        limits: StreamLimits,
        codec: Any,
        emit: Emit,
        *,
        tts: Any = None,
        stt: Any = None,
        realtime: Callable[[MediaSession], Any] | None = None,
        frame_lead: float = DEFAULT_LEAD,
    ) -> None:
        self.clock = clock
        self.codec = codec
        self.emit = emit
        self.tts = tts
        self.stt = stt
        self.realtime = realtime
        self.frame_lead = frame_lead
        self.tokens = StreamTokens(clock)
        self.ticker = PacingClock(clock)
        self.factory = MediaStreamFactory(clock, limits, self._started, codec)
        self._lines: dict[str, _Line] = {}

    # -- calls -------------------------------------------------------------------

    def track(self, call_id: str, tts: Any = None) -> None:
        """A live call that may get a media stream (C{tts}: its own, else ours)."""
        if call_id not in self._lines:
            self._lines[call_id] = _Line(call_id, tts)

    def tts_for(self, call_id: str) -> Any:
        """The TTS a call's speech is made with: its own, if it was tracked with one."""
        line = self._lines.get(call_id)
        return line.tts if line is not None and line.tts is not None else self.tts

    def issue(self, call_id: str, call_ref: str | None) -> str:
        """A token for one stream of the call (C{call_ref}: the carrier's id of it, if known)."""
        return self.tokens.issue(call_id, call_ref)

    def session(self, call_id: str) -> MediaSession | None:
        """The call's connected stream, if it has one."""
        line = self._lines.get(call_id)
        return line.session if line is not None else None

    def sessions(self) -> list[MediaSession]:
        """Every connected stream."""
        return [line.session for line in self._lines.values() if line.session is not None]

    def say(self, call_id: str, text: str) -> Deferred[Playback]:
        """Say C{text} on the call's stream, once it is (re)connected."""
        session = self.session(call_id)
        if session is not None:
            return session.say(text)
        return self.when_connected(call_id).addCallback(lambda s: s.say(text))

    def play(self, call_id: str, label: str, audio: bytes) -> Deferred[Playback] | None:
        """Play ready-made audio on the call's stream; None when it has no stream."""
        session = self.session(call_id)
        return session.player.play(label, audio) if session is not None else None

    def interrupt(self, call_id: str) -> None:
        """Stop what the call's stream is saying and clear the carrier's buffer."""
        session = self.session(call_id)
        if session is not None:
            session.interrupt()

    def tool_result(self, call_id: str, tool_call_id: str, output: dict[str, Any]) -> bool:
        """Answer a realtime model's function call; False when the call has no realtime stream."""
        session = self.session(call_id)
        if session is None or session.voice is None:
            return False
        session.voice.tool_result(tool_call_id, output)
        return True

    def when_connected(self, call_id: str) -> Deferred[MediaSession]:
        """The call's media stream, once it is (re)connected, within L{MEDIA_WAIT} seconds."""
        line = self._lines.get(call_id)
        waiting: Deferred = Deferred()
        if line is None:
            waiting.errback(ProviderError("the call's media stream is not connected"))
            return waiting
        line.waiters.append(waiting)

        def timed_out(failure: Any) -> None:
            failure.trap(CancelledError)
            if waiting in line.waiters:
                line.waiters.remove(waiting)
            raise ProviderError("the call's media stream is not connected")

        waiting.addTimeout(MEDIA_WAIT, self.clock)
        waiting.addErrback(timed_out)
        return waiting

    def restart(self, call_id: str, call_ref: str | None) -> bool:
        """
        The call's stream ended while the call goes on: whether another may
        start.  After L{MAX_STREAM_RESTARTS} the call fails (a L{Failed} event).
        """
        line = self._lines.get(call_id)
        if line is None:
            return False
        line.restarts += 1
        if line.restarts <= MAX_STREAM_RESTARTS:
            return True
        self.log.warn(
            "media stream of {call_id} ended {n} times; hanging up",
            call_id=call_id,
            n=line.restarts,
            log_code="media.restarts",
        )
        self.emit(
            ev.Failed(
                call_id=call_id, provider_call_id=call_ref, message="the media stream kept ending"
            )
        )
        return False

    def forget(self, call_id: str) -> None:
        """The call is over: its tokens, waiters and stream go."""
        line = self._lines.pop(call_id, None)
        self.tokens.revoke(call_id)
        if line is None:
            return
        for waiting in line.waiters:
            waiting.cancel()
        if line.session is not None:
            line.session.close("call ended")

    def stop(self, reason: str) -> None:
        """Close every stream (the daemon is stopping)."""
        for session in self.sessions():
            session.close(reason)

    # -- sockets -----------------------------------------------------------------

    def _started(self, socket: MediaStream, start: StreamStart) -> Any:
        grant = self.tokens.claim(start.parameters.get(TOKEN_PARAMETER), start.call_ref)
        line = self._lines.get(grant.call_id) if grant is not None else None
        if line is None:
            return "Unknown call"
        old = line.session
        session = MediaSession(self, line.call_id, socket)
        if old is not None and session.voice is not None and not session.voice.opened:
            # As upstream: a new realtime bridge that fails leaves the active one be.
            session.voice.discard()
            session._teardown()
            return "the realtime session could not be opened; the call keeps its stream"
        if old is not None:
            old.close("replaced by a new stream")
        line.session = session
        waiters, line.waiters = line.waiters, []
        for waiting in waiters:
            waiting.callback(session)
        self.emit(
            ev.MediaConnected(
                call_id=line.call_id,
                provider_call_id=start.call_ref,
                stream_id=start.stream_id,
            )
        )
        return session

    def _gone(self, session: MediaSession, reason: str) -> None:
        """A call's stream stopped; the call itself is not over until the carrier says so."""
        line = self._lines.get(session.call_id)
        ids = {"call_id": session.call_id, "provider_call_id": session.socket.call_ref}
        if line is not None and line.session is session:
            line.session = None
            self.emit(
                ev.MediaDisconnected(stream_id=session.socket.stream_id or "", reason=reason, **ids)
            )
        if reason.startswith("Backpressure") and line is not None:
            self.emit(ev.Failed(message=f"media stream closed: {reason}", **ids))


class MediaSession:
    """One call's connected media stream: audio in to STT, speech out through the pacer."""

    def __init__(self, sessions: MediaSessions, call_id: str, socket: MediaStream) -> None:
        self.sessions = sessions
        self.call_id = call_id
        self.socket = socket
        self.pacer = FramePacer(
            sessions.clock,
            sessions.ticker,
            socket.send_frame,
            socket.send_mark,
            lead=sessions.frame_lead,
        )
        self.player = SpeechPlayer(
            sessions.clock, self.pacer, socket.send_clear, sessions.tts_for(call_id), self._problem
        )
        self._ids = {"call_id": call_id, "provider_call_id": socket.call_ref}
        self._closed = False
        self.voice = sessions.realtime(self) if sessions.realtime is not None else None
        self.stt = (
            sessions.stt.open_session(_Transcripts(self))
            if sessions.stt is not None and self.voice is None
            else None
        )

    # -- what the socket reports (a StreamHandler) -------------------------------

    def media(self, audio: bytes) -> None:
        if self.voice is not None:
            self.voice.feed(audio)
        elif self.stt is not None:
            self.stt.feed(audio)

    def dtmf(self, digit: str) -> None:
        self.emit(ev.Dtmf(digits=digit, **self._ids))

    def mark(self, name: str) -> None:
        self.player.mark_echoed(name)
        if self.voice is not None:
            self.voice.mark_echoed(name)

    def stopped(self, reason: str) -> None:
        self._teardown()
        self.sessions._gone(self, reason)

    # -- ours ------------------------------------------------------------------------

    def say(self, text: str) -> Deferred[Playback]:
        """Say C{text}: through the realtime model, or synthesized by the TTS."""
        if self.voice is not None:
            return self.voice.say(text)
        return self.player.say(text)

    def interrupt(self) -> None:
        """Stop what is being said now and clear the carrier's buffer."""
        self.player.interrupt()
        if self.voice is not None:
            self.voice.interrupt()

    def emit(self, event: ev.CallEvent) -> None:
        """Report an event of this call."""
        self.sessions.emit(event)

    def ids(self) -> dict[str, Any]:
        """Our id and the carrier's of this session's call, for its events."""
        return dict(self._ids)

    def close(self, reason: str) -> None:
        """Close the stream from our side."""
        self._teardown()
        self.socket.close(CLOSE_NORMAL, reason)

    def _teardown(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.player.stop()
        if self.stt is not None:
            self.stt.close()
        if self.voice is not None:
            self.voice.close()

    def _problem(self, message: str) -> None:
        self.emit(ev.Failed(message=message, retryable=True, **self._ids))


class _Transcripts:
    """Turns the STT's callbacks into call events."""

    def __init__(self, session: MediaSession) -> None:
        self._session = session

    def _emit(self, event: ev.CallEvent) -> None:
        self._session.emit(event)

    def speech_started(self) -> None:
        self._emit(ev.SpeechStarted(**self._session.ids()))

    def speech_stopped(self) -> None:
        self._emit(ev.SpeechStopped(**self._session.ids()))

    def partial(self, text: str) -> None:
        self._emit(ev.Speech(text=text, final=False, **self._session.ids()))

    def final(self, text: str) -> None:
        self._emit(ev.Speech(text=text, final=True, **self._session.ids()))

    def problem(self, message: str) -> None:
        self._emit(
            ev.Failed(
                message=f"speech recognition: {message}", retryable=True, **self._session.ids()
            )
        )
