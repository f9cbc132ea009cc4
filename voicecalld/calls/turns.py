"""
The conversation turn: who speaks next on a connected call, as one machine.

One engine serves every way a turn happens: the call's first words, a
caller's turn answered by the reply router, a client's C{speak}, and a
client's C{continue} (say a prompt, then wait for the caller's answer).
Its inputs come from the lifecycle (greet), the caller (speech started and
stopped, partial and final words, already durable when they arrive here),
timers, the responder (a reply, or none), the client and the speech
executor (an utterance ended).  The whole table is at the bottom of this
module and drawn in C{docs/state-machines/turn.dot}.

Barge-in: caller speech that lasts C{streaming.bargeInMinSpeechMs}, or a
partial transcript of C{streaming.bargeInMinWords} words, interrupts what the
bot says (never its first words); a short backchannel ("okay", "mm-hm") said
over the bot takes no turn.  A caller's turn said over the first words is
held and answered when they end.  A reply overtaken by a newer caller turn
is dropped.  Each answered turn is measured, stage by stage.

On a realtime call (L{IProvider.realtime}) the model hears the caller and
answers by itself: a caller's final words are C{HEARD}, never a reason to
ask the reply router, and still answer a waiting C{continue}; what the bot
is asked to say (first words, C{speak}, a prompt) is said through the model.
"""

from __future__ import annotations

import enum
import re
from collections import deque
from collections.abc import Callable
from typing import Any

from attrs import define, field, frozen
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from voicecalld.calls.hub import NoticeHub
from voicecalld.calls.journal import Journal
from voicecalld.calls.live import LiveCall
from voicecalld.calls.machine import Machine, Transition, table
from voicecalld.calls.speaking import UNSAID, Mouth, idle_state, moved
from voicecalld.errors import Busy, CallEnded, Timeout, provider_error
from voicecalld.providers.interface import IProvider
from voicecalld.values import notices
from voicecalld.values.playback import Playback
from voicecalld.values.record import CONVERSATION, NOTIFY, USER, CallRecord
from voicecalld.values.states import CallState
from voicecalld.voice.replies import ReplyRouter

APOLOGY = "Sorry, I can't answer that right now. Could you say it again?"
# Said after a restart that cut the caller off mid-sentence (their words were lost).
AGAIN = "Sorry, I missed that. Could you say it again?"
# The call record's metadata key for a caller cut off mid-sentence by a restart.
MISSED = "missedTurn"

# Words that acknowledge rather than take the turn.
BACKCHANNEL_WORDS = frozenset(
    """ok okay k mm mhm mmhm mm-hm mm-hmm hm hmm uh-huh uhhuh uh um yeah yep yes right sure
    alright aha ah oh cool nice great gotcha fine good""".split()
)
_WORD = re.compile(r"[\w'-]+")


def words(text: str) -> list[str]:
    """The words of a transcript, lower-cased, punctuation dropped."""
    return [w.lower().strip("-'") for w in _WORD.findall(text)]


@frozen
class BargeIn:
    """When caller speech is allowed to cut the bot off."""

    min_speech: float
    min_words: int

    def is_backchannel(self, text: str) -> bool:
        """Short acknowledgements ("okay", "mm-hm") that do not take the turn."""
        said = words(text)
        return len(said) < self.min_words and all(w in BACKCHANNEL_WORDS for w in said)

    def takes_turn(self, partial: str) -> bool:
        """Whether a partial transcript already shows the caller taking the turn."""
        said = words(partial)
        return len(said) >= self.min_words and not all(w in BACKCHANNEL_WORDS for w in said)


@define
class TurnTiming:
    """When each stage of one answered caller turn happened (clock seconds)."""

    turn: int
    final_at: float
    speech_ended_at: float | None = None
    reply_requested_at: float | None = None
    reply_received_at: float | None = None
    playback: Playback | None = None

    def stages(self) -> dict[str, float]:
        """Milliseconds per stage; C{ours} adds up the stages voicecalld itself spends."""
        p = self.playback
        points = {
            "stt": (self.speech_ended_at, self.final_at),
            "oursBeforeReply": (self.final_at, self.reply_requested_at),
            "reply": (self.reply_requested_at, self.reply_received_at),
            "oursBeforeSpeech": (self.reply_received_at, p and p.requested_at),
            "ttsFirstByte": (p and p.requested_at, p and p.first_audio_at),
            "oursToFirstFrame": (p and p.first_audio_at, p and p.first_frame_at),
            "total": (self.speech_ended_at or self.final_at, p and p.first_frame_at),
        }
        stages = {
            name: round((end - start) * 1000, 3)
            for name, (start, end) in points.items()
            if start is not None and end is not None
        }
        ours = [
            stages[k]
            for k in ("oursBeforeReply", "oursBeforeSpeech", "oursToFirstFrame")
            if k in stages
        ]
        if ours:
            stages["ours"] = round(sum(ours), 3)
        return stages


class TurnState(enum.Enum):
    """Where the conversation on one call is."""

    START = enum.auto()  # connected; the first words have not begun
    GREETING = enum.auto()  # saying the first words
    GREETING_HELD = enum.auto()  # ... and the caller took a turn over them
    IDLE = enum.auto()  # nobody's turn is in progress
    THINKING = enum.auto()  # a reply to the caller's turn was asked for
    SPEAKING = enum.auto()  # saying a reply or a client's words
    ASKING = enum.auto()  # saying a continue's prompt
    ASKING_HELD = enum.auto()  # ... and the caller acknowledged over it
    AWAITING = enum.auto()  # a continue waits for the caller's answer


class TurnInput(enum.Enum):
    """What the turn reacts to, grouped by who sends it."""

    # the lifecycle
    GREET = enum.auto()
    # the caller (speech events; final words are durable when they arrive)
    CALLER_STARTED = enum.auto()
    CALLER_STOPPED = enum.auto()
    WORDS = enum.auto()  # a partial transcript
    PARTIAL_TURN = enum.auto()  # a partial transcript that takes the turn
    BACKCHANNEL = enum.auto()  # final words that only acknowledge
    TURN = enum.auto()  # final words
    HEARD = enum.auto()  # final words on a realtime call: the model answers them itself
    # timers
    BARGE_IN_DUE = enum.auto()
    ANSWER_TIMEOUT = enum.auto()
    # the responder
    REPLY = enum.auto()
    NO_REPLY = enum.auto()
    # the client
    SPEAK = enum.auto()
    CONTINUE = enum.auto()
    ABANDON = enum.auto()  # the continue failed or the daemon stops
    # the speech executor: an utterance ended, and then...
    SAID = enum.auto()  # ... nothing the turn asked for follows
    SAYING = enum.auto()  # ... a reply or a client's words follow
    PROMPTING = enum.auto()  # ... a continue's prompt follows
    FIRST_CUT = enum.auto()  # the first words did not play to the end (the stream went away)


class TurnOutput(enum.Enum):
    """What the turn does."""

    SAY_FIRST = enum.auto()
    SAY_REPLY = enum.auto()
    SAY_PROMPT = enum.auto()
    SAY_TEXT = enum.auto()
    HOLD = enum.auto()
    ASK_REPLY = enum.auto()
    INTERRUPT = enum.auto()
    ARM_BARGE_IN = enum.auto()
    CANCEL_BARGE_IN = enum.auto()
    START_LISTENING = enum.auto()
    NOTE_LISTENING = enum.auto()
    ARM_ANSWER_TIMEOUT = enum.auto()
    ANSWER_WAITER = enum.auto()
    ANSWER_HELD = enum.auto()
    FAIL_WAITER = enum.auto()
    STOP_LISTENING = enum.auto()


@define(eq=False)
class Waiter:
    """A C{continue} waiting for the caller's answer."""

    token: str
    started_at: float
    listening_at: float | None = None
    deferred: Deferred = field(factory=Deferred)


@define(eq=False)
class Turn:
    """The turn state of one call, in memory only (rebuilt on restart)."""

    machine: Machine
    held: list[str] = field(factory=list)
    waiter: Waiter | None = None
    heard: int = 0  # final caller turns so far; a reply is for one of them
    queue: deque[str] = field(factory=deque)  # what is being said, then what is queued
    speech_ended_at: float | None = None
    caller_speaking: bool = False  # speech started, no final words yet


class TurnEngine:
    """Drives the turn of every connected call; see the module docstring."""

    log = Logger()

    def __init__(
        self,
        *,
        journal: Journal,
        mouth: Mouth,
        provider: IProvider,
        replies: ReplyRouter,
        hub: NoticeHub,
        clock: IReactorTime,
        barge_in: BargeIn,
        transcript_timeout_ms: int,
        new_id: Callable[[], str],
        first_words_said: Callable[[LiveCall, Playback], None],
        reply_timeout: Callable[[CallRecord], float | None] = lambda record: None,
        realtime: Callable[[CallRecord], bool] = lambda record: False,
    ) -> None:
        self._journal = journal
        self._mouth = mouth
        self._provider = provider
        self._replies = replies
        self._hub = hub
        self._clock = clock
        self.barge_in = barge_in
        self._timeout_ms = transcript_timeout_ms
        self._new_id = new_id
        self._first_words_said = first_words_said
        self._reply_timeout = reply_timeout
        self._realtime = realtime

    # -- inputs --------------------------------------------------------------

    def attach(self, live: LiveCall) -> Turn:
        """The call is connected: its turn starts (at its first words, if it has any)."""
        if live.turn is None:
            start = TurnState.START if live.record.initial_message else TurnState.IDLE
            live.turn = Turn(Machine(TURN_TABLE, start, "turn", live.call_id))
        return live.turn

    def greet(self, live: LiveCall) -> None:
        """Say the call's first words now (once); a call with none is simply idle."""
        self.attach(live)
        if live.record.initial_message is None and live.record.state is CallState.ANSWERED:
            Deferred.fromCoroutine(
                self._journal.change(live, lambda r: moved(r, idle_state(live)))
            ).addErrback(
                lambda f: self.log.failure("storing {call_id} idle", f, call_id=live.call_id)
            )
        self._feed(live, TurnInput.GREET)

    def resume(self, live: LiveCall) -> None:
        """
        A call restored after a restart has its stream back: first words the
        restart cut off are said again (whole); words of another utterance it
        cut off (C{unsaid}) are said now; a caller's turn the stored
        transcript ends with, which no reply followed, is answered now (the
        reply was lost with the process); a caller cut off mid-sentence is
        asked to say it again; otherwise the call listens on.
        """
        live.resuming = False
        turn = self.attach(live)
        if turn.machine.state is TurnState.START:
            self.greet(live)
            return
        if live.record.metadata.get(MISSED):
            Deferred.fromCoroutine(
                self._journal.change(live, lambda r: r.with_metadata(**{MISSED: None}))
            ).addErrback(lambda f: self.log.failure("storing {call_id}", f, call_id=live.call_id))
            self._say_again(live, AGAIN)
            return
        rest = live.record.metadata.get(UNSAID)
        if not rest:
            last = live.record.transcript[-1] if live.record.transcript else None
            # A realtime model hears the caller itself: the reply router is not asked.
            answerable = not self._realtime(live.record)
            if answerable and last is not None and last.speaker == USER and last.kind == "speech":
                self.log.info(
                    "call {call_id} resumed: answering the caller's last turn",
                    call_id=live.call_id,
                    log_code="turn.resumed",
                )
                self._feed(live, TurnInput.TURN, text=last.text, heard_at=self._clock.seconds())
            return
        self.log.info(
            "call {call_id} resumed: saying the {n} word(s) a restart cut off",
            call_id=live.call_id,
            n=len(rest.split()),
            log_code="turn.resumed",
        )
        Deferred.fromCoroutine(
            self._journal.change(live, lambda r: r.with_metadata(**{UNSAID: None}))
        ).addErrback(lambda f: self.log.failure("storing {call_id}", f, call_id=live.call_id))
        self._say_again(live, rest)

    def stopping(self, live: LiveCall) -> Deferred | None:
        """
        The daemon is stopping to be restarted: a caller cut off mid-sentence
        is noted (C{missed}), so the next process asks them to say it again.
        """
        turn = live.turn
        if turn is None or not turn.caller_speaking or live.record.ended:
            return None
        return Deferred.fromCoroutine(
            self._journal.change(live, lambda r: r.with_metadata(**{MISSED: True}))
        )

    def _say_again(self, live: LiveCall, rest: str) -> None:
        for said in self._feed(live, TurnInput.SPEAK, text=rest):
            said.addErrback(
                lambda f: self.log.warn(
                    "the rest of a cut utterance on {call_id} was not said: {error}",
                    call_id=live.call_id,
                    error=f.value,
                    log_code="turn.resume_failed",
                )
            )

    def caller_started(self, live: LiveCall) -> None:
        """The caller started speaking."""
        turn = self.attach(live)
        turn.caller_speaking = True
        turn.speech_ended_at = None
        self._feed(live, TurnInput.CALLER_STARTED)

    def caller_stopped(self, live: LiveCall) -> None:
        """The caller stopped speaking."""
        self.attach(live).speech_ended_at = self._clock.seconds()
        self._feed(live, TurnInput.CALLER_STOPPED)

    def partial(self, live: LiveCall, text: str) -> None:
        """Words so far: enough of them, while the caller keeps speaking, take the turn."""
        taking = live.timers.running("barge-in") and self.barge_in.takes_turn(text)
        self._feed(live, TurnInput.PARTIAL_TURN if taking else TurnInput.WORDS)

    def final(self, live: LiveCall, text: str, heard_at: float) -> None:
        """The caller finished a turn (already in the stored transcript)."""
        turn = self.attach(live)
        turn.caller_speaking = False
        turn.heard += 1
        if self._realtime(live.record):
            symbol = TurnInput.HEARD
        elif self.barge_in.is_backchannel(text):
            symbol = TurnInput.BACKCHANNEL
        else:
            symbol = TurnInput.TURN
        self._feed(live, symbol, text=text, heard_at=heard_at)

    def expects(self, live: LiveCall, token: str | None) -> bool:
        """Whether speech carrying turn C{token} belongs to the current turn."""
        if token is None:
            return True
        waiter = live.turn.waiter if live.turn is not None else None
        return waiter is not None and waiter.token == token

    async def speak(self, live: LiveCall, text: str) -> Playback:
        """A client's words, said after whatever is being said."""
        (said,) = self._feed(live, TurnInput.SPEAK, text=text)
        return await said

    async def ask(self, live: LiveCall, text: str) -> str:
        """A client's C{continue}: say C{text}, then return the caller's answer."""
        turn = self.attach(live)
        if turn.waiter is not None or turn.machine.peek(TurnInput.CONTINUE) is None:
            raise Busy("Already waiting for transcript")
        waiter = turn.waiter = Waiter(self._new_id(), self._clock.seconds())
        self._feed(live, TurnInput.CONTINUE, text=text)
        try:
            answer = await waiter.deferred
        finally:
            if turn.waiter is waiter:
                turn.waiter = None
        now = self._clock.seconds()
        listening = waiter.listening_at if waiter.listening_at is not None else now
        await self._journal.change(
            live,
            lambda r: r.with_metadata(
                turnCount=int(r.metadata.get("turnCount", 0)) + 1,
                lastTurnLatencyMs=round((now - waiter.started_at) * 1000),
                lastTurnListenWaitMs=round((now - listening) * 1000),
                lastTurnCompletedAt=round(now * 1000),
            ),
        )
        return answer

    def ended(self, live: LiveCall, reason: str) -> None:
        """The call is over: a waiting C{continue} fails."""
        live.timers.cancel_all()
        self._drop_waiter(live, CallEnded(f"Call ended: {reason}"))

    def abandon(self, live: LiveCall, error: Exception) -> None:
        """A waiting C{continue} fails with C{error} (its prompt failed, or the daemon stops)."""
        turn = live.turn
        if turn is None or turn.waiter is None:
            return
        waiter = turn.waiter
        # Listening stops before the client hears of it, so a continue it
        # starts at once keeps its own turn token.
        self._feed(live, TurnInput.ABANDON)
        self._drop_waiter(live, error, waiter)

    # -- the machine ----------------------------------------------------------

    def _feed(self, live: LiveCall, symbol: TurnInput, **data: Any) -> list[Any]:
        """Take one input; returns what the SAY_* outputs started (Deferreds)."""
        turn = self.attach(live)
        results = []
        for output in turn.machine.feed(symbol):
            result = getattr(self, "_" + output.name.lower())(live, turn, data)
            if isinstance(result, Deferred):
                results.append(result)
        return results

    # -- outputs --------------------------------------------------------------

    def _say(self, live: LiveCall, turn: Turn, text: str, kind: str) -> Deferred:
        """Queue an utterance; when it ends, the turn hears what is said next."""
        turn.queue.append(kind)
        said = Deferred.fromCoroutine(self._mouth.say(live, text, first=kind == "first"))

        def over(result: Any) -> Any:
            turn.queue.popleft()
            if not live.record.ended:
                following = turn.queue[0] if turn.queue else None
                cut = not isinstance(result, Playback) or not result.complete
                if kind == "first" and cut and following is None:
                    self._feed(live, TurnInput.FIRST_CUT)
                elif following != "first":  # the turn is greeting already
                    self._feed(live, _NEXT[following])
            return result

        return said.addBoth(over)

    def _say_first(self, live: LiveCall, turn: Turn, data: dict) -> None:
        text = live.record.initial_message
        if text is None:
            self._feed(live, TurnInput.SAID)
            return

        def said(playback: Playback) -> None:
            self._first_words_said(live, playback)

        def failed(failure: Any) -> None:
            self.log.warn(
                "first words on {call_id} not played: {error}",
                call_id=live.call_id,
                error=failure.value,
                log_code="turn.first_words_failed",
            )

        self._say(live, turn, text, "first").addCallbacks(said, failed)

    def _say_text(self, live: LiveCall, turn: Turn, data: dict) -> Deferred:
        return self._say(live, turn, data["text"], "text")

    def _say_prompt(self, live: LiveCall, turn: Turn, data: dict) -> None:
        waiter = turn.waiter

        def failed(failure: Any) -> None:
            if waiter is not None and turn.waiter is waiter:
                self.abandon(live, provider_error(failure.value))

        self._say(live, turn, data["text"], "prompt").addErrback(failed)

    def _say_reply(self, live: LiveCall, turn: Turn, data: dict) -> None:
        timing: TurnTiming = data["timing"]
        Deferred.fromCoroutine(self._reply_said(live, turn, data["text"], timing)).addErrback(
            lambda f: self.log.failure(
                "answering a turn on {call_id} failed", f, call_id=live.call_id
            )
        )

    async def _reply_said(self, live: LiveCall, turn: Turn, text: str, timing: TurnTiming) -> None:
        timing.playback = await self._say(live, turn, text, "reply")
        if live.record.ended:
            return
        stages = timing.stages()
        self._hub.publish(
            notices.TurnMeasured(
                at=self._clock.seconds(), call_id=live.call_id, turn=timing.turn, stages=stages
            )
        )
        await self._journal.change(
            live,
            lambda r: r.with_metadata(
                lastTurnLatency=stages, turnCount=int(r.metadata.get("turnCount", 0)) + 1
            ),
        )

    def _hold(self, live: LiveCall, turn: Turn, data: dict) -> None:
        turn.held.append(data["text"])

    def _ask_reply(self, live: LiveCall, turn: Turn, data: dict) -> None:
        turn.held.clear()
        if live.record.mode != CONVERSATION or not self._replies.available:
            self._feed(live, TurnInput.NO_REPLY)
            return
        heard_at = data.get("heard_at", self._clock.seconds())
        timing = TurnTiming(turn.heard, heard_at, turn.speech_ended_at)
        Deferred.fromCoroutine(self._ask(live, turn, timing)).addErrback(
            lambda f: self.log.failure(
                "asking for a reply on {call_id} failed", f, call_id=live.call_id
            )
        )

    async def _ask(self, live: LiveCall, turn: Turn, timing: TurnTiming) -> None:
        timing.reply_requested_at = self._clock.seconds()
        try:
            text = await self._replies.reply(live.record, self._reply_timeout(live.record))
        except Exception as e:
            self.log.warn(
                "no reply for {call_id}: {error}",
                call_id=live.call_id,
                error=e,
                log_code="turn.reply_failed",
            )
            self._hub.publish(
                notices.Problem(
                    at=self._clock.seconds(), call_id=live.call_id, what="reply", message=str(e)
                )
            )
            text = APOLOGY
        timing.reply_received_at = self._clock.seconds()
        if live.record.ended or turn.heard != timing.turn:
            return  # the caller spoke again: a newer turn gets its own reply
        if not text:
            self._feed(live, TurnInput.NO_REPLY)
            return
        self._feed(live, TurnInput.REPLY, text=text, timing=timing)

    def _interrupt(self, live: LiveCall, turn: Turn, data: dict) -> None:
        live.timers.cancel("barge-in")
        if live.record.mode == NOTIFY:
            return
        self.log.debug("barge-in on {call_id}", call_id=live.call_id, log_code="turn.barge_in")
        self._provider.interrupt(live.record)

    def _arm_barge_in(self, live: LiveCall, turn: Turn, data: dict) -> None:
        if self.barge_in.min_speech <= 0:
            self._interrupt(live, turn, data)
            return
        live.timers.set(
            "barge-in", self.barge_in.min_speech, self._feed, live, TurnInput.BARGE_IN_DUE
        )

    def _cancel_barge_in(self, live: LiveCall, turn: Turn, data: dict) -> None:
        live.timers.cancel("barge-in")

    def _start_listening(self, live: LiveCall, turn: Turn, data: dict) -> None:
        waiter = turn.waiter
        token = waiter.token if waiter is not None else self._new_id()
        d = Deferred.fromCoroutine(_call(self._provider.start_listening, live.record, token))

        def failed(failure: Any) -> None:
            if waiter is not None and turn.waiter is waiter:
                self.abandon(live, provider_error(failure.value))

        d.addErrback(failed)

    def _note_listening(self, live: LiveCall, turn: Turn, data: dict) -> None:
        if turn.waiter is not None:
            turn.waiter.listening_at = self._clock.seconds()

    def _arm_answer_timeout(self, live: LiveCall, turn: Turn, data: dict) -> None:
        live.timers.set(
            "transcript", self._timeout_ms / 1000.0, self._feed, live, TurnInput.ANSWER_TIMEOUT
        )

    def _answer_waiter(self, live: LiveCall, turn: Turn, data: dict) -> None:
        self._answer(live, turn, " ".join([*turn.held, data["text"]]))

    def _answer_held(self, live: LiveCall, turn: Turn, data: dict) -> None:
        self._answer(live, turn, " ".join(turn.held))

    def _answer(self, live: LiveCall, turn: Turn, text: str) -> None:
        turn.held.clear()
        live.timers.cancel("transcript")
        waiter, turn.waiter = turn.waiter, None
        self._stop_listening(live, turn, {})
        if waiter is not None and not waiter.deferred.called:
            waiter.deferred.callback(text)

    def _fail_waiter(self, live: LiveCall, turn: Turn, data: dict) -> None:
        self._drop_waiter(
            live, Timeout(f"Timed out waiting for transcript after {self._timeout_ms}ms")
        )

    def _drop_waiter(self, live: LiveCall, error: Exception, waiter: Waiter | None = None) -> bool:
        turn = live.turn
        if (
            turn is None
            or turn.waiter is None
            or (waiter is not None and turn.waiter is not waiter)
        ):
            return False
        turn.held.clear()
        live.timers.cancel("transcript")
        waiter, turn.waiter = turn.waiter, None
        if not waiter.deferred.called:
            waiter.deferred.errback(error)
        return True

    def _stop_listening(self, live: LiveCall, turn: Turn, data: dict) -> None:
        if live.record.ended:
            return
        Deferred.fromCoroutine(_call(self._provider.stop_listening, live.record)).addErrback(
            lambda f: self.log.failure(
                "stop listening on {call_id} failed", f, call_id=live.call_id
            )
        )


_NEXT = {
    None: TurnInput.SAID,
    "text": TurnInput.SAYING,
    "reply": TurnInput.SAYING,
    "prompt": TurnInput.PROMPTING,
}


async def _call(fn: Callable[..., Any], *args: Any) -> Any:
    """Call a provider method that may return a Deferred, as a coroutine."""
    result = fn(*args)
    if isinstance(result, Deferred):
        result = await result
    return result


# -- the turn table ---------------------------------------------------------------

S = TurnState
I = TurnInput  # noqa: E741
O = TurnOutput  # noqa: E741
T = Transition
STAY = None
EVERY = tuple(TurnState)
ASKED = (S.ASKING, S.ASKING_HELD, S.AWAITING)
ASK = (O.START_LISTENING, O.SAY_PROMPT, O.ARM_ANSWER_TIMEOUT)
NOT_SPEAKING = tuple(s for s in EVERY if s not in (S.SPEAKING, S.ASKING))

TURN_TABLE = table(
    [
        # the first words (a turn said over them is held, then answered)
        ((S.START,), I.GREET, T(S.GREETING, (O.SAY_FIRST,))),
        (tuple(s for s in EVERY if s is not S.START), I.GREET, None),
        ((S.GREETING, S.GREETING_HELD), I.TURN, T(S.GREETING_HELD, (O.HOLD,))),
        ((S.GREETING,), I.BACKCHANNEL, None),
        ((S.GREETING_HELD,), I.BACKCHANNEL, T(STAY, (O.HOLD,))),
        ((S.GREETING,), I.SAID, T(S.IDLE)),
        ((S.GREETING,), I.SAYING, T(S.SPEAKING)),
        ((S.GREETING,), I.PROMPTING, T(S.ASKING)),
        ((S.GREETING_HELD,), I.SAID, T(S.THINKING, (O.ASK_REPLY,))),
        ((S.GREETING_HELD,), I.SAYING, T(S.THINKING, (O.ASK_REPLY,))),
        ((S.GREETING_HELD,), I.PROMPTING, T(S.ASKING_HELD)),
        ((S.GREETING,), I.FIRST_CUT, T(S.START)),  # said again at the next greet
        ((S.GREETING_HELD,), I.FIRST_CUT, T(S.THINKING, (O.ASK_REPLY,))),
        (tuple(s for s in EVERY if s not in (S.GREETING, S.GREETING_HELD)), I.FIRST_CUT, None),
        # the caller's turns and their replies
        ((S.IDLE, S.THINKING), I.TURN, T(S.THINKING, (O.ASK_REPLY,))),
        ((S.IDLE, S.THINKING), I.BACKCHANNEL, T(S.THINKING, (O.ASK_REPLY,))),
        ((S.THINKING,), I.REPLY, T(S.SPEAKING, (O.SAY_REPLY,))),
        ((S.SPEAKING,), I.REPLY, T(STAY, (O.SAY_REPLY,))),
        ((S.THINKING,), I.NO_REPLY, T(S.IDLE)),
        ((S.SPEAKING,), I.TURN, T(S.THINKING, (O.INTERRUPT, O.ASK_REPLY))),
        ((S.SPEAKING,), I.BACKCHANNEL, None),
        ((S.SPEAKING,), I.SAID, T(S.IDLE)),
        ((S.SPEAKING,), I.SAYING, None),
        ((S.SPEAKING, S.IDLE, S.THINKING), I.PROMPTING, T(S.ASKING)),
        # a realtime call: the model answers the caller; a continue still gets the words
        ((S.START, S.GREETING, S.GREETING_HELD, S.IDLE, S.THINKING, S.SPEAKING), I.HEARD, None),
        ((S.ASKING, S.ASKING_HELD, S.AWAITING), I.HEARD, T(S.IDLE, (O.ANSWER_WAITER,))),
        # barge-in: the caller cuts off what the bot says (never its first words)
        ((S.SPEAKING, S.ASKING), I.CALLER_STARTED, T(STAY, (O.ARM_BARGE_IN,))),
        ((S.SPEAKING, S.ASKING), I.BARGE_IN_DUE, T(STAY, (O.INTERRUPT,))),
        ((S.SPEAKING, S.ASKING), I.PARTIAL_TURN, T(STAY, (O.INTERRUPT,))),
        (NOT_SPEAKING, I.CALLER_STARTED, None),
        (NOT_SPEAKING, I.BARGE_IN_DUE, None),
        (NOT_SPEAKING, I.PARTIAL_TURN, None),
        (EVERY, I.CALLER_STOPPED, T(STAY, (O.CANCEL_BARGE_IN,))),
        (EVERY, I.WORDS, None),
        # the client's words, said now or after what is being said
        ((S.IDLE, S.THINKING), I.SPEAK, T(S.SPEAKING, (O.SAY_TEXT,))),
        (
            (S.START, S.GREETING, S.GREETING_HELD, S.SPEAKING, *ASKED),
            I.SPEAK,
            T(STAY, (O.SAY_TEXT,)),
        ),
        # the client's continue: a prompt, then the caller's answer
        ((S.IDLE, S.THINKING), I.CONTINUE, T(S.ASKING, ASK)),
        ((S.GREETING, S.GREETING_HELD, S.SPEAKING), I.CONTINUE, T(STAY, ASK)),
        ((S.ASKING,), I.SAID, T(S.AWAITING, (O.NOTE_LISTENING,))),
        ((S.ASKING,), I.SAYING, T(S.AWAITING, (O.NOTE_LISTENING,))),
        ((S.ASKING,), I.BACKCHANNEL, T(S.ASKING_HELD, (O.HOLD,))),
        ((S.ASKING_HELD,), I.BACKCHANNEL, T(STAY, (O.HOLD,))),
        ((S.ASKING, S.ASKING_HELD), I.TURN, T(S.IDLE, (O.INTERRUPT, O.ANSWER_WAITER))),
        ((S.ASKING_HELD,), I.SAID, T(S.IDLE, (O.ANSWER_HELD,))),
        ((S.ASKING_HELD,), I.SAYING, T(S.IDLE, (O.ANSWER_HELD,))),
        ((S.AWAITING,), I.TURN, T(S.IDLE, (O.ANSWER_WAITER,))),
        ((S.AWAITING,), I.BACKCHANNEL, T(S.IDLE, (O.ANSWER_WAITER,))),
        (ASKED, I.ANSWER_TIMEOUT, T(S.IDLE, (O.STOP_LISTENING, O.FAIL_WAITER))),
        (ASKED, I.ABANDON, T(S.IDLE, (O.STOP_LISTENING,))),
        (ASKED, I.REPLY, None),  # the client took the turn: an older reply is not said
        (ASKED, I.NO_REPLY, None),
        ((S.AWAITING,), I.SAID, None),
        ((S.AWAITING,), I.SAYING, None),
        # late or stale inputs, expected and harmless
        ((S.START, S.IDLE, S.THINKING), I.SAID, None),
        ((S.START, S.IDLE, S.THINKING), I.SAYING, None),
        (tuple(s for s in EVERY if s not in ASKED), I.ANSWER_TIMEOUT, None),
        (tuple(s for s in EVERY if s not in ASKED), I.ABANDON, None),
        ((S.START, S.GREETING, S.GREETING_HELD, S.IDLE), I.REPLY, None),
        ((S.START, S.GREETING, S.GREETING_HELD, S.IDLE, S.SPEAKING), I.NO_REPLY, None),
    ]
)
