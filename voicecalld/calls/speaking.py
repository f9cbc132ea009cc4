"""
Saying one utterance on a call, in the journal's order.

The provider starts speaking while the call is stored as C{speaking} (the
call shows it once stored; a failed write stops the speech), and the bot's
transcript entry (what the caller heard of it) is stored when the
utterance ends, stamped with the time its audio started, so the transcript
reads in the order things were said even when the caller talked over it.
Utterances on one call are said one after another.

An utterance cut off because the daemon is stopping (a restart) keeps what
the caller heard as an interrupted entry, and stores the words not yet heard
as C{unsaid}: the next process says them once the stream is back, so
nothing is lost and nothing heard is said twice.  (The first words are not
split: a cut greeting keeps C{initialMessage} and is said again whole.)
"""

from __future__ import annotations

import attrs
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IReactorTime

from voicecalld.calls.hub import NoticeHub
from voicecalld.calls.journal import Change, Journal
from voicecalld.calls.live import LiveCall
from voicecalld.errors import CallEnded, StoreError, provider_error
from voicecalld.providers.interface import IProvider
from voicecalld.values import notices
from voicecalld.values.playback import Playback
from voicecalld.values.record import BOT, CONVERSATION, CallRecord, TranscriptEntry
from voicecalld.values.states import CallState

# The call record's metadata key for words a restart cut off before the caller heard them.
UNSAID = "unsaid"


def idle_state(live: LiveCall) -> CallState:
    """What a connected call that is saying nothing is doing: listening, or just active."""
    turn = live.turn
    if live.record.mode == CONVERSATION or (turn is not None and turn.waiter is not None):
        return CallState.LISTENING
    return CallState.ACTIVE


class Mouth:
    """Says utterances on calls through the provider; see the module docstring."""

    def __init__(
        self, journal: Journal, provider: IProvider, hub: NoticeHub, clock: IReactorTime
    ) -> None:
        self._journal = journal
        self._provider = provider
        self._hub = hub
        self._clock = clock

    async def say(self, live: LiveCall, text: str, *, first: bool = False) -> Playback:
        """Say C{text} after whatever is being said; fires with how it went."""
        await live.speech.acquire()
        try:
            return await self._say(live, text, first)
        finally:
            live.speech.release()

    async def _say(self, live: LiveCall, text: str, first: bool) -> Playback:
        if live.record.ended:
            raise CallEnded(f"Call has ended ({live.record.end_reason})")
        # The caller need not wait for a disk write to hear us: speech starts
        # while "speaking" is stored, and the call shows it once it is stored.
        requested = self._clock.seconds()
        stored = Deferred.fromCoroutine(
            self._journal.change(live, lambda r: moved(r, CallState.SPEAKING))
        )
        speaking = maybeDeferred(self._provider.speak, live.record, text)
        try:
            await stored
        except StoreError:
            self._provider.interrupt(live.record)
            speaking.addErrback(lambda f: None)
            raise
        try:
            playback = await speaking
        except Exception as e:
            error = provider_error(e)
            self._hub.publish(
                notices.Problem(
                    at=self._clock.seconds(),
                    call_id=live.call_id,
                    what="playback",
                    message=str(error),
                )
            )
            if not live.record.ended:
                await self._journal.change(live, lambda r: moved(r, idle_state(live)))
            raise error from None
        if live.record.ended:
            return playback
        started = playback.first_frame_at or playback.requested_at or requested

        def played(record: CallRecord) -> Change:
            entries: tuple[TranscriptEntry, ...] = ()
            if playback.played:
                entry = TranscriptEntry(
                    started, BOT, playback.played, interrupted=not playback.complete
                )
                record = record.with_entry(entry)
                entries = (entry,)
            if first and playback.complete:
                record = attrs.evolve(record, initial_message=None)
            rest = unheard(playback)
            if live.stopping and not first and rest:
                record = record.with_metadata(**{UNSAID: rest})
            return Change(moved(record, idle_state(live)), entries)

        await self._journal.change(live, played)
        return playback


def unheard(playback: Playback) -> str:
    """The words of an utterance after those the caller heard ("" when it played whole)."""
    if playback.complete:
        return ""
    words = playback.text.split()
    return " ".join(words[len(playback.played.split()) :])


def moved(record: CallRecord, state: CallState) -> CallRecord:
    """C{record} in C{state}, unless it has ended meanwhile."""
    if record.ended or record.state is state:
        return record
    return attrs.evolve(record, state=state)
