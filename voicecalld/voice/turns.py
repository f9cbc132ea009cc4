"""
The conversation side of a call: when the caller's speech interrupts ours,
when a turn gets a reply, and how long each turn took.

The call manager hands every speech event to L{Conversation}.  Barge-in is
decided here: caller speech that lasts C{streaming.bargeInMinSpeechMs}, or a
partial transcript of C{streaming.bargeInMinWords} words, interrupts the
bot (never its greeting); short backchannels ("okay", "mm-hm") do not, and
get no reply.  A finished caller turn with no C{continue} waiting is answered
by the reply router; a reply overtaken by the caller speaking again is
dropped.  Each answered turn is measured, stage by stage.
"""

from __future__ import annotations

import re
from typing import Protocol

from attrs import define
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from voicecalld.calls.hub import NoticeHub
from voicecalld.calls.live import LiveCall
from voicecalld.values import notices
from voicecalld.values.playback import Playback
from voicecalld.values.record import CONVERSATION
from voicecalld.values.states import CallState
from voicecalld.voice.replies import ReplyRouter

APOLOGY = "Sorry, I can't answer that right now. Could you say it again?"

# Words that acknowledge rather than take the turn.
BACKCHANNEL_WORDS = frozenset(
    {
        "ok",
        "okay",
        "k",
        "mm",
        "mhm",
        "mmhm",
        "mm-hm",
        "mm-hmm",
        "hm",
        "hmm",
        "uh-huh",
        "uhhuh",
        "uh",
        "um",
        "yeah",
        "yep",
        "yes",
        "right",
        "sure",
        "alright",
        "aha",
        "ah",
        "oh",
        "cool",
        "nice",
        "great",
        "gotcha",
        "fine",
        "good",
    }
)
_WORD = re.compile(r"[\w'-]+")


def words(text: str) -> list[str]:
    """The words of a transcript, lower-cased, punctuation dropped."""
    return [w.lower().strip("-'") for w in _WORD.findall(text)]


@define(frozen=True)
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


class Speaker(Protocol):
    """What the conversation needs from the call manager."""

    def interrupt(self, live: LiveCall) -> None:
        """Cut the bot off now (clear, drop queued audio, cancel synthesis)."""

    def say(self, live: LiveCall, text: str) -> Deferred:
        """Say C{text} on the call (queued behind anything being said)."""

    def remember_turn(self, live: LiveCall, timing: TurnTiming) -> Deferred:
        """Store a turn's latency on the call record."""


class Conversation:
    """Barge-in and replies for every call of one manager."""

    log = Logger()

    def __init__(
        self,
        speaker: Speaker,
        replies: ReplyRouter,
        hub: NoticeHub,
        clock: IReactorTime,
        barge_in: BargeIn,
    ) -> None:
        self._speaker = speaker
        self._replies = replies
        self._hub = hub
        self._clock = clock
        self.barge_in = barge_in

    def _interruptible(self, live: LiveCall) -> bool:
        return (
            live.record.state is CallState.SPEAKING
            and live.record.mode == CONVERSATION
            and not live.speaking_initial
        )

    def speech_started(self, live: LiveCall) -> None:
        """The caller started speaking: interrupt once it has lasted long enough."""
        live.speech_ended_at = None
        if not self._interruptible(live):
            return
        if self.barge_in.min_speech <= 0:
            self._barge_in(live, "caller speech")
            return
        live.set_timer(
            "barge-in", self.barge_in.min_speech, self._barge_in, live, "caller kept speaking"
        )

    def speech_stopped(self, live: LiveCall) -> None:
        """The caller stopped speaking: a short burst was a backchannel, not a turn."""
        live.speech_ended_at = self._clock.seconds()
        live.cancel_timer("barge-in")

    def partial(self, live: LiveCall, text: str) -> None:
        """Words so far: enough of them take the turn at once."""
        if live.has_timer("barge-in") and self.barge_in.takes_turn(text):
            self._barge_in(live, "caller words")

    def _barge_in(self, live: LiveCall, why: str) -> None:
        live.cancel_timer("barge-in")
        if self._interruptible(live):
            self.log.info(
                "barge-in on {call_id} ({why})",
                call_id=live.call_id,
                why=why,
                log_code="turn.barge_in",
            )
            self._speaker.interrupt(live)

    def final(self, live: LiveCall, text: str) -> bool:
        """
        The caller finished a turn (already in the transcript).  Returns whether
        it is a turn that deserves an answer (a backchannel said over the bot
        is not).
        """
        live.cancel_timer("barge-in")
        if self._interruptible(live):
            if self.barge_in.is_backchannel(text):
                return False
            self._barge_in(live, "caller turn")
        return True

    def reply(self, live: LiveCall, turn: int, heard_at: float) -> None:
        """
        Ask for a reply to the caller's turn C{turn} (whose final transcript
        arrived at C{heard_at}) and say it, timing each stage.
        """
        if not self._replies.available:
            return
        timing = TurnTiming(turn, heard_at, live.speech_ended_at)
        Deferred.fromCoroutine(self._answer(live, timing)).addErrback(
            lambda f: self.log.failure(
                "answering a turn on {call_id} failed", f, call_id=live.call_id
            )
        )

    async def _answer(self, live: LiveCall, timing: TurnTiming) -> None:
        timing.reply_requested_at = self._clock.seconds()
        try:
            text = await self._replies.reply(live.record)
        except Exception as e:
            self.log.warn("no reply for {call_id}: {error}", call_id=live.call_id, error=e)
            self._hub.publish(
                notices.Problem(
                    at=self._clock.seconds(), call_id=live.call_id, what="reply", message=str(e)
                )
            )
            text = APOLOGY
        timing.reply_received_at = self._clock.seconds()
        if live.record.ended or live.caller_turns != timing.turn or not text:
            return
        timing.playback = await self._speaker.say(live, text)
        if live.record.ended:
            return
        stages = timing.stages()
        self._hub.publish(
            notices.TurnMeasured(
                at=self._clock.seconds(), call_id=live.call_id, turn=timing.turn, stages=stages
            )
        )
        await self._speaker.remember_turn(live, timing)
