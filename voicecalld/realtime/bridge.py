"""
One media stream bridged to one realtime speech-to-speech session.

A L{RealtimeBridge} is the realtime side of a
L{voicecalld.media.session.MediaSession}: caller audio goes to the vendor
session; the model's audio goes out through the stream's pacer, one
response after another, with marks every half second so we know what the
caller heard.  When the model hears the caller start (its own turn
detection), what plays is cut at once: the pacer drops its queue, the
carrier gets its C{clear}, and the model's item is truncated to the
milliseconds the caller heard (the last echoed mark plus the time since,
never more than was sent).

What the model says of its own accord becomes a L{ModelSpeech} event (what
was heard of it, and the turn's latency stages: caller stopped, first model
audio, first frame sent); what a client asked it to say (L{say}: the
greeting, C{speak}, C{continue}'s prompt) fires that request's L{Playback}
instead, so the call core records it as it records any utterance.  Caller
turns are L{Speech} events; tool calls are L{ToolCall} events, answered
through L{tool_result}; C{openclaw_end_call} is reported only once the
model's last words have played (bounded by L{END_CALL_WAIT}).

Which response says a client's words is exact: L{IRealtimeSession.speak}
returns a token and the vendor echoes it on that response's
C{response_started}, so a response of the model's own that starts at the
same moment never takes the client's L{Playback}.

With C{realtime.consultPolicy: always} (L{RealtimeSetup.host_consult}),
a finished caller turn whose response ends without a call of
C{openclaw_agent_consult} is put to the agent by the host: a L{ToolCall} of
that tool with the caller's words and a L{HOST_CONSULT_PREFIX} id, answered
by the call core like the model's own consults.  Its answer comes back
through L{tool_result} and is handed to the model to say
(L{IRealtimeSession.relay}), unless the caller has spoken since, the
session is over or the answer is empty.

A session the vendor closes hangs the call up (a fatal L{Failed}); so does
L{NO_MEDIA_TIMEOUT} without caller audio (checked on a coarse timer from a
timestamp, never reset per frame) and L{NO_MEDIA_GRACE} more.  The
session's states are L{voicecalld.calls.realtime_table.SESSION_TABLE}.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from voicecalld.calls.machine import Machine
from voicecalld.calls.realtime_table import (
    SESSION_TABLE,
    SessionInput,
    SessionState,
)
from voicecalld.errors import ProviderError
from voicecalld.media.codec import FRAME_BYTES
from voicecalld.realtime.interface import (
    CONSULT_TOOL,
    END_CALL_TOOL,
    HOST_CONSULT_PREFIX,
    IRealtimeListener,
    IRealtimeVoice,
    RealtimeSetup,
)
from voicecalld.values import events as ev
from voicecalld.values.playback import Playback

BYTES_PER_MS = 8
MARK_EVERY_BYTES = 4000
# An end mark that never comes back must not hang the call.
MARK_GRACE = 3.0
# How long a transcript may trail the end of a cut response's audio.
TRANSCRIPT_WAIT = 2.0
# Upstream's backstop: this long without caller audio is a disconnect...
NO_MEDIA_TIMEOUT = 30.0
# ... after this much grace.
NO_MEDIA_GRACE = 2.0
NO_MEDIA_CHECK_EVERY = 5.0
# The longest openclaw_end_call waits for the model's last words to play.
END_CALL_WAIT = 15.0
# How long a client's words wait for the model to begin saying them.
SPEAK_TIMEOUT = 20.0
# How long the vendor may take to get ready before the call is given up.
READY_TIMEOUT = 15.0


class _Request:
    """Words a client asked the model to say; C{done} fires with their L{Playback}."""

    def __init__(self, text: str, at: float) -> None:
        self.text = text
        self.at = at
        self.done: Deferred[Playback] = Deferred()
        self.timer: IDelayedCall | None = None
        self.token: str | None = None  # what the vendor echoes on its response


class _CallerTurn:
    """A caller's turn, watched for C{consultPolicy: always}."""

    def __init__(self) -> None:
        self.words: list[str] = []
        self.stopped = False
        self.response: _Response | None = None  # the model's answer to it
        self.answered = False  # that response is over
        self.consulted = False  # the model called the consult tool meanwhile


class _Response:
    """One response of the model, as it plays."""

    def __init__(self, number: int, started: float, request: _Request | None) -> None:
        self.name = f"r{number}"
        self.started = started
        self.request = request
        self.transcript = ""
        self.queued = 0  # bytes given to the pacer
        self.first_audio_at: float | None = None
        self.first_frame_at: float | None = None
        self.base_frames = 0  # the pacer's frame count when our first frame went out
        self.mark_bytes = 0  # the last echoed mark's position
        self.mark_at: float | None = None
        self.heard_bytes: int | None = None  # set when cut off
        self.ended = False  # the vendor sent all its audio
        self.played = False  # its end mark came back (or was given up on)
        self.done = False  # the vendor's response is over (transcript known)
        self.reported = False
        self.announced = False  # a ModelSpeaking event went out for it
        self.caller_stopped_at: float | None = None
        self.timer: IDelayedCall | None = None
        # Waiting for a transcript that trails the response's end (and whether it did).
        self.late: IDelayedCall | None = None
        self.waited = False
        self.waiters: list[Deferred] = []


@implementer(IRealtimeListener)
class RealtimeBridge:
    """The realtime side of one media stream; see the module docstring."""

    log = Logger()

    def __init__(
        self, media: Any, voice: IRealtimeVoice, setup: RealtimeSetup, clock: IReactorTime
    ) -> None:
        self._media = media
        self._clock = clock
        self._pacer = media.pacer
        self._machine = Machine(SESSION_TABLE, SessionState.CONNECTING, "realtime", media.call_id)
        self._queued: deque[_Request] = deque()
        self._asked: list[_Request] = []  # sent to the model, its response not begun
        self._started_token: str | None = None  # the token of the response beginning now
        # consultPolicy "always": the caller's turn being watched, how many turns
        # the caller began (a host consult asked in an older one is stale), the
        # host consults running (id -> turn number) and the relays' tokens.
        self._host_consult = setup.host_consult
        self._turn: _CallerTurn | None = None
        self._turns = 0
        self._host_asked: dict[str, int] = {}
        self._relays: set[str] = set()
        self._current: _Response | None = None
        self._playing: list[_Response] = []  # responses whose audio is still playing out
        self._count = 0
        self._last_media = clock.seconds()
        self._caller_stopped_at: float | None = None
        # Why the session ended, when that hangs the call up.
        self._end_reason = ""
        # A response cut off whose vendor end has not come: its late audio is dropped.
        self._cut_pending = False
        self._check: IDelayedCall | None = clock.callLater(NO_MEDIA_CHECK_EVERY, self._watch)
        self._ready_timer: IDelayedCall | None = clock.callLater(READY_TIMEOUT, self._not_ready)
        self.session: Any = None
        # Whether the vendor session opened; one that did not ends the call just
        # after (unless the media layer keeps an older stream and L{discard}s this).
        self.opened = True
        self._failing: IDelayedCall | None = None
        try:
            self.session = voice.open_session(self, setup)
        except Exception as e:
            self.log.failure(
                "opening the realtime session of {call_id} failed",
                call_id=media.call_id,
                log_code="realtime.open_failed",
            )
            self.session = _NoSession()
            self.opened = False
            reason = f"the realtime session could not be opened: {e}"
            self._failing = clock.callLater(0, self.closed, reason)
            return
        self._send_speech()  # in case the vendor was ready at once

    @property
    def state(self) -> SessionState:
        """Where the session is (L{SessionState})."""
        return self._machine.state

    # -- from the media session ---------------------------------------------------

    def feed(self, ulaw: bytes) -> None:
        """Caller audio (a frame): to the model."""
        self._last_media = self._clock.seconds()
        if self._machine.state is not SessionState.CLOSED:
            self.session.feed(ulaw)

    def mark_echoed(self, name: str) -> None:
        """The carrier played our audio up to mark C{name}."""
        prefix, _, point = name.partition(":")
        for response in self._playing:
            if response.name != prefix:
                continue
            if point == "end":
                self._played(response)
            elif point.isdigit():
                response.mark_bytes = max(response.mark_bytes, int(point))
                response.mark_at = self._clock.seconds()
            return

    def say(self, text: str) -> Deferred[Playback]:
        """Have the model say C{text} as its own turn; fires once it has played (or was cut)."""
        request = _Request(text, self._clock.seconds())
        if self._machine.state is SessionState.CLOSED:
            request.done.errback(ProviderError("the realtime session is closed"))
            return request.done
        self._queued.append(request)
        self._feed(SessionInput.SPEAK)
        return request.done

    def interrupt(self) -> None:
        """Stop what the model says now (the core's barge-in or a failed write)."""
        if self._current is not None or self._playing:
            self._barge_in()

    def tool_result(self, call_id: str, output: dict[str, Any]) -> None:
        """Answer the model's function call C{call_id} (or a host consult: see the module)."""
        if call_id.startswith(HOST_CONSULT_PREFIX):
            self._host_answer(call_id, output)
            return
        if self._machine.state is not SessionState.CLOSED:
            self.session.tool_result(call_id, output)

    def close(self) -> None:
        """The stream is over: close the session (the call is not hung up for it)."""
        self._feed(SessionInput.CLOSE)

    def discard(self) -> None:
        """Drop a bridge whose session did not open, quietly (another stream goes on)."""
        if self._failing is not None and self._failing.active():
            self._failing.cancel()
        self._failing = None
        self.close()

    # -- IRealtimeListener ------------------------------------------------------------

    def ready(self) -> None:
        self._cancel_ready_timer()
        self._feed(SessionInput.READY)

    def audio(self, ulaw: bytes) -> None:
        if self._machine.state is SessionState.CLOSED or not ulaw:
            return
        response = self._current
        if response is None and self._cut_pending:
            return
        if response is None:
            # Audio without a response start: a response all the same.
            self._feed(SessionInput.RESPONSE_STARTED)
            response = self._current
            if response is None:
                return
        if response.heard_bytes is not None:
            return  # cut off: the rest of it is not played
        if response.first_audio_at is None:
            response.first_audio_at = self._clock.seconds()
            self._pacer.notify(lambda now: self._first_frame(response, now))
        # A mark every MARK_EVERY_BYTES, however the vendor chunks its audio.
        while ulaw:
            room = MARK_EVERY_BYTES - response.queued % MARK_EVERY_BYTES
            piece, ulaw = ulaw[:room], ulaw[room:]
            response.queued += len(piece)
            self._pacer.audio(piece)
            if response.queued % MARK_EVERY_BYTES == 0:
                self._pacer.mark(f"{response.name}:{response.queued}")

    def speech_started(self) -> None:
        self._caller_began()
        self._media.emit(ev.SpeechStarted(**self._media.ids()))
        self._feed(SessionInput.CALLER_STARTED)

    def speech_stopped(self) -> None:
        self._caller_stopped_at = self._clock.seconds()
        if self._turn is not None:
            self._turn.stopped = True
        self._media.emit(ev.SpeechStopped(**self._media.ids()))

    def user_transcript(self, text: str) -> None:
        if text.strip():
            if self._turn is not None:
                self._turn.words.append(text.strip())
                self._turn.stopped = True
            self._media.emit(ev.Speech(text=text, final=True, **self._media.ids()))
            self._check_turn()

    def response_started(self, token: str | None = None) -> None:
        self._started_token = token
        try:
            self._feed(SessionInput.RESPONSE_STARTED)
        finally:
            self._started_token = None

    def assistant_transcript(self, text: str) -> None:
        response = self._current or next(
            (r for r in reversed(self._playing) if not r.reported), None
        )
        if response is None:
            return
        response.transcript = f"{response.transcript} {text}".strip()
        if response.late is not None:
            # The transcript came after the response's end: report it now.
            if response.late.active():
                response.late.cancel()
            response.late = None
            self._settle(response)

    def response_done(self) -> None:
        self._feed(SessionInput.RESPONSE_DONE)

    def tool_call(self, call_id: str, name: str, arguments: dict[str, Any]) -> None:
        if name == CONSULT_TOOL and self._turn is not None:
            self._turn.consulted = True
        event = ev.ToolCall(
            tool_call_id=call_id, name=name, arguments=dict(arguments), **self._media.ids()
        )
        if name != END_CALL_TOOL:
            self._media.emit(event)
            return
        # The model's last words play out before the call is hung up.
        pending = [r for r in self._playing if not r.reported]
        if not pending:
            self._media.emit(event)
            return
        waiting: Deferred = Deferred()
        pending[-1].waiters.append(waiting)
        waiting.addTimeout(END_CALL_WAIT, self._clock)
        waiting.addBoth(lambda _: self._media.emit(event))

    def problem(self, message: str) -> None:
        self._media.emit(
            ev.Failed(message=f"realtime voice: {message}", retryable=True, **self._media.ids())
        )

    def closed(self, reason: str) -> None:
        if self._machine.state is not SessionState.CLOSED:
            self._end_reason = reason or "closed by the vendor"
        self._feed(SessionInput.VENDOR_CLOSED)

    # -- the machine ----------------------------------------------------------------

    def _feed(self, symbol: SessionInput) -> None:
        for output in self._machine.feed(symbol):
            getattr(self, "_" + output.name.lower())()

    def _send_speech(self) -> None:
        if self.session is None or self._machine.state is not SessionState.LISTENING:
            return
        if not self._queued or self._asked:
            return
        request = self._queued.popleft()
        self._asked.append(request)
        request.timer = self._clock.callLater(SPEAK_TIMEOUT, self._not_said, request)
        request.token = self.session.speak(request.text)

    def _not_said(self, request: _Request) -> None:
        request.timer = None
        if request in self._asked:
            self._asked.remove(request)
            request.done.errback(ProviderError("the realtime model did not begin speaking"))
            self._send_speech()

    def _begin_response(self) -> None:
        self._cut_pending = False
        self._count += 1
        token = self._started_token
        request = next((r for r in self._asked if token is not None and r.token == token), None)
        if request is not None:
            self._asked.remove(request)
            if request.timer is not None and request.timer.active():
                request.timer.cancel()
        response = _Response(self._count, self._clock.seconds(), request)
        relay = token is not None and token in self._relays
        self._relays.discard(token or "")
        if request is None and not relay:
            response.caller_stopped_at = self._caller_stopped_at
            self._caller_stopped_at = None
            turn = self._turn
            if turn is not None and turn.stopped and turn.response is None:
                turn.response = response
        self._current = response
        self._playing.append(response)

    def _end_response(self) -> None:
        response, self._current = self._current, None
        self._cut_pending = False
        turn = self._turn
        if response is not None and turn is not None and turn.response is response:
            turn.answered = True
            self._check_turn()
        if response is None:
            # A response cut off earlier is over at the vendor: its transcript is final.
            for cut in self._playing:
                if cut.heard_bytes is not None and not cut.done:
                    cut.done = True
                    self._settle(cut)
            return
        response.done = True
        if response.heard_bytes is not None:
            self._settle(response)
            return
        response.ended = True
        if response.queued == 0:
            response.played = True
            self._settle(response)
            return
        self._pacer.end(f"{response.name}:end")
        wait = self._pacer.backlog() + self._pacer.lead + MARK_GRACE
        response.timer = self._clock.callLater(wait, self._mark_lost, response)

    def _barge_in(self) -> None:
        cut = [r for r in self._playing if not r.played and r.heard_bytes is None]
        if not cut:
            return
        self._pacer.clear()
        self._media.socket.send_clear()
        now = self._clock.seconds()
        for response in cut:
            response.heard_bytes = self._heard_bytes(response, now)
            if response.timer is not None and response.timer.active():
                response.timer.cancel()
            response.timer = None
        first = cut[0]
        heard_ms = round((first.heard_bytes or 0) / BYTES_PER_MS)
        self.log.debug(
            "barge-in on {call_id}: the caller heard {ms} ms of {name}",
            call_id=self._media.call_id,
            ms=heard_ms,
            name=first.name,
            log_code="realtime.barge_in",
        )
        self.session.truncate(heard_ms)
        for response in cut:
            if response.done or response is not self._current:
                response.done = True
                self._settle(response)
            else:
                # Its transcript is still coming: settle on the vendor's response end.
                response.timer = self._clock.callLater(
                    TRANSCRIPT_WAIT, self._transcript_lost, response
                )
        if self._current in cut:
            self._current = None
            self._cut_pending = True

    def _late_lost(self, response: _Response) -> None:
        response.late = None
        response.waited = True
        self._settle(response)

    def _transcript_lost(self, response: _Response) -> None:
        response.timer = None
        response.done = True
        self._settle(response)

    def _drop_speech(self) -> None:
        self._turn = None
        self._host_asked.clear()
        self._relays.clear()
        requests = [*self._asked, *self._queued]
        self._asked.clear()
        self._queued.clear()
        for request in requests:
            if request.timer is not None and request.timer.active():
                request.timer.cancel()
            request.done.errback(ProviderError("the realtime session closed"))
        now = self._clock.seconds()
        for response in list(self._playing):
            if response.heard_bytes is None and not response.played:
                response.heard_bytes = self._heard_bytes(response, now)
            response.done = True
            self._settle(response)
        self._current = None

    def _hang_up(self) -> None:
        self._stop_watching()
        reason = self._end_reason
        self.log.warn(
            "realtime session of {call_id} is over ({reason}); hanging up",
            call_id=self._media.call_id,
            reason=reason,
            log_code="realtime.session_over",
        )
        self._media.emit(
            ev.Failed(message=f"realtime session ended: {reason}", **self._media.ids())
        )

    def _close_session(self) -> None:
        self._stop_watching()
        self.session.close()

    # -- consultPolicy "always" -------------------------------------------------------------

    def _caller_began(self) -> None:
        """The caller began a turn: a new one is watched; older host consults go stale."""
        self._turns += 1
        self._turn = _CallerTurn() if self._host_consult else None

    def _check_turn(self) -> None:
        """Consult the agent for the caller's turn its answer ended without consulting."""
        turn = self._turn
        if turn is None or not turn.answered or not turn.words:
            return
        self._turn = None
        if turn.consulted or self._machine.state is SessionState.CLOSED:
            return
        call_id = f"{HOST_CONSULT_PREFIX}{self._turns}"
        self._host_asked[call_id] = self._turns
        self.log.info(
            "{call_id}: the model answered without consulting the agent; the host consults it",
            call_id=self._media.call_id,
            log_code="realtime.host_consult",
        )
        self._media.emit(
            ev.ToolCall(
                tool_call_id=call_id,
                name=CONSULT_TOOL,
                arguments={"question": " ".join(turn.words)},
                **self._media.ids(),
            )
        )

    def _host_answer(self, call_id: str, output: dict[str, Any]) -> None:
        turn = self._host_asked.pop(call_id, None)
        answer = output.get("answer")
        why = ""
        if turn is None or self._machine.state is SessionState.CLOSED:
            why = "the session is over"
        elif turn != self._turns:
            why = "the caller has spoken since"
        elif not isinstance(answer, str) or not answer.strip():
            why = "the agent had no answer"
        if why:
            self.log.info(
                "{call_id}: host consult answer dropped: {why}",
                call_id=self._media.call_id,
                why=why,
                log_code="realtime.host_consult_dropped",
            )
            return
        self._relays.add(self.session.relay(answer.strip()))

    # -- playing ------------------------------------------------------------------------

    def _first_frame(self, response: _Response, now: float) -> None:
        response.first_frame_at = now
        response.base_frames = self._pacer.frames_sent
        if response.request is None and not response.reported:
            response.announced = True
            self._media.emit(ev.ModelSpeaking(**self._media.ids()))

    def _heard_bytes(self, response: _Response, now: float) -> int:
        """What the caller heard of C{response} by C{now}, capped at what was sent."""
        if response.first_frame_at is None:
            return 0
        sent = min(response.queued, (self._pacer.frames_sent - response.base_frames) * FRAME_BYTES)
        if response.mark_at is not None:
            estimate = response.mark_bytes + (now - response.mark_at) * 8000
        else:
            estimate = (now - response.first_frame_at) * 8000
        return round(max(response.mark_bytes, min(sent, estimate)))

    def _played(self, response: _Response) -> None:
        if response.played or response.heard_bytes is not None:
            return
        response.played = True
        if response.timer is not None and response.timer.active():
            response.timer.cancel()
        response.timer = None
        self._settle(response)

    def _mark_lost(self, response: _Response) -> None:
        response.timer = None
        self.log.warn(
            "end mark of {name} on {call_id} never came back; counting it as played",
            name=response.name,
            call_id=self._media.call_id,
            log_code="realtime.mark_lost",
        )
        self._played(response)

    def _settle(self, response: _Response) -> None:
        """Report a response once it has played (or was cut) and its transcript is known."""
        if response.reported or not response.done:
            return
        cut = response.heard_bytes is not None
        if not cut and not response.played:
            return
        if not cut and not response.transcript and response.request is None and response.queued:
            if response.late is None and not response.waited:
                response.late = self._clock.callLater(TRANSCRIPT_WAIT, self._late_lost, response)
            if not response.waited:
                return
        if response.late is not None and response.late.active():
            response.late.cancel()
        response.late = None
        response.reported = True
        if response.timer is not None and response.timer.active():
            response.timer.cancel()
        response.timer = None
        if response in self._playing:
            self._playing.remove(response)
        request = response.request
        said = response.transcript or (request.text if request is not None else "")
        heard = _heard_words(response, said) if cut else said
        if request is not None:
            request.done.callback(
                Playback(
                    request.text,
                    heard,
                    complete=not cut,
                    requested_at=request.at,
                    first_audio_at=response.first_audio_at,
                    first_frame_at=response.first_frame_at,
                )
            )
        elif said or response.announced:
            self._media.emit(
                ev.ModelSpeech(
                    text=heard,
                    at=response.first_frame_at or response.started,
                    interrupted=cut,
                    stages=_stages(response),
                    **self._media.ids(),
                )
            )
        for waiting in response.waiters:
            if not waiting.called:
                waiting.callback(None)

    # -- the no-media backstop ------------------------------------------------------------

    def _watch(self) -> None:
        self._check = None
        if self._machine.state is SessionState.CLOSED:
            return
        quiet = self._clock.seconds() - self._last_media
        if quiet >= NO_MEDIA_TIMEOUT + NO_MEDIA_GRACE:
            self._end_reason = f"no audio from the carrier for {NO_MEDIA_TIMEOUT:.0f} s"
            self._feed(SessionInput.NO_MEDIA)
            return
        wait = NO_MEDIA_CHECK_EVERY
        if quiet >= NO_MEDIA_TIMEOUT:
            wait = NO_MEDIA_TIMEOUT + NO_MEDIA_GRACE - quiet
        self._check = self._clock.callLater(wait, self._watch)

    def _not_ready(self) -> None:
        self._ready_timer = None
        if self._machine.state is SessionState.CONNECTING:
            self._end_reason = f"the realtime model was not ready within {READY_TIMEOUT:.0f} s"
        self._feed(SessionInput.NOT_READY)

    def _cancel_ready_timer(self) -> None:
        if self._ready_timer is not None and self._ready_timer.active():
            self._ready_timer.cancel()
        self._ready_timer = None

    def _stop_watching(self) -> None:
        self._cancel_ready_timer()
        if self._check is not None and self._check.active():
            self._check.cancel()
        self._check = None


class _NoSession:
    """Stands for a session that could not be opened: takes everything, does nothing."""

    def feed(self, ulaw: bytes) -> None:
        pass

    def speak(self, text: str) -> str:
        return ""

    def relay(self, text: str) -> str:
        return ""

    def truncate(self, heard_ms: int) -> None:
        pass

    def tool_result(self, call_id: str, output: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


def _heard_words(response: _Response, said: str) -> str:
    """The words of a cut response the caller heard, by the share of its audio played."""
    heard = response.heard_bytes or 0
    words = said.split()
    if heard <= 0 or not words or response.queued <= 0:
        return ""
    share = min(1.0, heard / response.queued)
    return " ".join(words[: int(len(words) * share)])


def _stages(response: _Response) -> dict[str, float] | None:
    """A realtime turn's latency stages (ms): caller stopped, first model audio, first frame."""
    stopped, audio, frame = (
        response.caller_stopped_at,
        response.first_audio_at,
        response.first_frame_at,
    )
    if stopped is None or audio is None:
        return None
    stages = {"modelFirstAudio": round((audio - stopped) * 1000, 3)}
    if frame is not None:
        stages["oursToFirstFrame"] = round((frame - audio) * 1000, 3)
        stages["total"] = round((frame - stopped) * 1000, 3)
        stages["ours"] = stages["oursToFirstFrame"]
    return stages


def bridge_opener(
    voice: IRealtimeVoice, setup_for: Callable[[str], RealtimeSetup], clock: IReactorTime
) -> Callable[[Any], RealtimeBridge]:
    """What L{MediaSessions} is given as C{realtime}: opens a bridge for each media session."""

    def open_bridge(media: Any) -> RealtimeBridge:
        return RealtimeBridge(media, voice, setup_for(media.call_id), clock)

    return open_bridge
