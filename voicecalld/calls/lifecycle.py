"""
The call lifecycle, as one machine: dialling, ringing, connected, ended.

Its inputs come from the carrier (ringing, answered, media up and down,
ended, failed, who answered), the client (hang up), the call's timers (ring timeout, max
duration, notify delay, stale) and the hang-up it asked for (hung up).  Its
phase is derived from the stored record, so a failed write leaves it where it
was; every change it makes goes through the journal before anyone sees it.
The whole table is at the bottom of this module and drawn in
C{docs/state-machines/call.dot}.  (What a connected call is doing, speaking
or listening, is the turn's business: L{voicecalld.calls.turns}.)

With answering-machine detection (C{outbound.machineDetection}) an answered
outbound call is I{screened} first: nothing is said until the carrier says who
answered.  A person (or an unknown result) gets the call as without
detection; a machine gets the message after its beep (I{at machine} until
then), once, and the call then ends as C{voicemail}; a conversation call with
C{voicemailAction: "hangup"}, or a fax, is hung up as C{voicemail} at once.
The result is stored (C{answeredBy}, C{answeredByRaw}, C{voicemail}) before
anything acts on it, and the phase is derived from it, so a repeated result,
or one after a restart, leaves no second message.

A hang-up asked for by a timer or a carrier failure is retried with backoff
and given up after L{HANGUP_ATTEMPTS} attempts; one asked for by a client
fails back to it.  The carrier's own report that the call ended, arriving
while our hang-up is under way, ends it for our reason.  An end that could
not be stored leaves the call live, visible as such, and is written again
(with backoff) until the store takes it.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import Any

import attrs
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from voicecalld.calls.hub import NoticeHub
from voicecalld.calls.journal import Journal
from voicecalld.calls.live import LiveCall
from voicecalld.calls.machine import Machine, Transition, table
from voicecalld.calls.registry import LiveRegistry
from voicecalld.calls.turns import TurnEngine
from voicecalld.config.model import HANG_UP, VoiceCallSettings
from voicecalld.errors import StoreError, provider_error
from voicecalld.providers.interface import IProvider
from voicecalld.values import events as ev
from voicecalld.values import notices
from voicecalld.values.playback import Playback
from voicecalld.values.record import NOTIFY, OUTBOUND, CallRecord
from voicecalld.values.states import CallState

HANGUP_RETRY_DELAYS = (15.0, 30.0, 60.0, 120.0)
HANGUP_ATTEMPTS = len(HANGUP_RETRY_DELAYS) + 1
# How long a transfer the carrier took may go without its confirmation
# (the hand-over's events) before the call counts as handed over anyway.
TRANSFER_CONFIRM_SECONDS = 120.0
END_RETRY_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0)
# Answering-machine detection: how long an answered call waits for the
# carrier's result before it goes on as if a person answered, and how long a
# machine's greeting may run before the message is left without a beep (some
# carriers report none).
DETECTION_WAIT = 60.0
BEEP_WAIT = 20.0

# The call record's metadata keys for answering-machine detection.
ANSWERED_BY = "answeredBy"  # human, machine, fax or unknown
ANSWERED_BY_RAW = "answeredByRaw"  # the carrier's own value
VOICEMAIL = "voicemail"  # at a machine: awaiting-beep, leaving, hangup
AWAITING_BEEP = "awaiting-beep"
LEAVING = "leaving"
NO_MESSAGE = "hangup"


class Phase(enum.Enum):
    """Where a call is in its life (derived from the stored state)."""

    DIALLING = enum.auto()
    RINGING = enum.auto()
    SCREENING = enum.auto()  # answered; waiting for who answered
    AT_MACHINE = enum.auto()  # a machine answered; waiting for its beep
    CONNECTED = enum.auto()
    ENDED = enum.auto()


class LifeInput(enum.Enum):
    """What moves a call through its life, grouped by who sends it."""

    # the carrier
    RINGING = enum.auto()
    ANSWERED = enum.auto()
    ANSWERED_SCREENING = enum.auto()  # answered, dialled with machine detection
    MEDIA_UP = enum.auto()
    MEDIA_DOWN = enum.auto()
    ENDED = enum.auto()
    FAILED = enum.auto()
    HUMAN = enum.auto()  # a person answered (or detection could not tell)
    MACHINE = enum.auto()  # a machine answered; its greeting goes on
    BEEP = enum.auto()  # a machine answered and its greeting is over
    NO_MESSAGE = enum.auto()  # a machine or fax answered; no message is left
    TRANSFERRED = enum.auto()
    # the client
    HANG_UP = enum.auto()
    TRANSFER = enum.auto()
    # the call's timers
    RING_TIMEOUT = enum.auto()
    MAX_DURATION = enum.auto()
    NOTIFY_DONE = enum.auto()
    STALE = enum.auto()
    DETECTION_TIMEOUT = enum.auto()
    TRANSFER_UNCONFIRMED = enum.auto()
    # the lifecycle itself
    PLACED = enum.auto()
    HUNG_UP = enum.auto()


class LifeOutput(enum.Enum):
    """What the lifecycle does."""

    STORE_RINGING = enum.auto()
    STORE_ANSWERED = enum.auto()
    STORE_DETECTION = enum.auto()
    ARM_RING_TIMER = enum.auto()
    ARM_MAX_DURATION = enum.auto()
    ARM_DETECTION_TIMER = enum.auto()
    GREET = enum.auto()
    GREET_UNLESS_MEDIA = enum.auto()
    GREET_WHEN_READY = enum.auto()
    LEAVE_MESSAGE = enum.auto()
    HANG_UP = enum.auto()
    TRANSFER = enum.auto()
    FINISH = enum.auto()


def phase(record: CallRecord) -> Phase:
    """The lifecycle phase of a stored call."""
    state = record.state
    if state.terminal:
        return Phase.ENDED
    if state is CallState.INITIATED:
        return Phase.DIALLING
    if state is CallState.RINGING:
        return Phase.RINGING
    if screened(record):
        if ANSWERED_BY not in record.metadata:
            return Phase.SCREENING
        if record.metadata.get(VOICEMAIL) == AWAITING_BEEP:
            return Phase.AT_MACHINE
    return Phase.CONNECTED


def screened(record: CallRecord) -> bool:
    """Whether the call was dialled with answering-machine detection."""
    return record.machine_detection


@attrs.frozen
class Why:
    """The reason and detail an input carries towards an end."""

    reason: CallState
    detail: str | None = None


class Lifecycle:
    """Runs the lifecycle table for every live call; see the module docstring."""

    log = Logger()

    def __init__(
        self,
        *,
        settings: VoiceCallSettings,
        journal: Journal,
        registry: LiveRegistry,
        provider: IProvider,
        turns: TurnEngine,
        hub: NoticeHub,
        clock: IReactorTime,
    ) -> None:
        self._settings = settings
        self._journal = journal
        self._registry = registry
        self._provider = provider
        self._turns = turns
        self._hub = hub
        self._clock = clock

    async def feed(
        self,
        live: LiveCall,
        symbol: LifeInput,
        why: Why | None = None,
        keys: Iterable[str | None] = (),
        *,
        client: bool = False,
        detection: ev.MachineDetected | None = None,
    ) -> None:
        """
        Take one input for C{live}: decide from its stored phase, write what
        changes (with the event keys C{keys}), then run the outputs.
        C{detection} is the carrier's answering-machine result, if it is one.
        """
        if symbol is LifeInput.ANSWERED and screened(live.record):
            symbol = LifeInput.ANSWERED_SCREENING
        if symbol is LifeInput.MEDIA_UP:
            live.media_up = True
            if live.resuming and phase(live.record) is Phase.CONNECTED:
                self._turns.resume(live)
        elif symbol is LifeInput.MEDIA_DOWN:
            live.media_up = False
        before = phase(live.record)
        machine = Machine(LIFE_TABLE, before, "call", live.call_id, live.lifecycle_warned)
        outputs = machine.feed(symbol)
        keys = tuple(keys)
        if symbol is LifeInput.ENDED and live.hanging_up is not None:
            why = live.hanging_up  # the carrier reports the hang-up we asked for
        elif live.transferring is not None and symbol is LifeInput.TRANSFERRED:
            why = live.transferring
        elif live.transferring is not None and symbol is LifeInput.ENDED:
            # Our leg ended before the carrier said the person answered.
            to = live.transferring.detail
            said = f": {why.detail}" if why is not None and why.detail else ""
            why = Why(CallState.TRANSFERRED, f"{to} (ended before the carrier confirmed{said})")
        if LifeOutput.FINISH in outputs:
            await self.finish(live, why or Why(CallState.COMPLETED), keys)
            return
        writes = [o for o in outputs if o in _WRITES]
        if writes or keys:
            now = self._clock.seconds()
            await self._journal.change(
                live, lambda r: _written(r, writes, now, symbol, before, detection), keys
            )
        for output in outputs:
            if output in writes:
                continue
            result = getattr(self, "_" + output.name.lower())(
                live, why or Why(CallState.ERROR), client
            )
            if isinstance(result, Deferred):
                await result

    async def detected(self, live: LiveCall, event: ev.MachineDetected, keys: tuple) -> None:
        """The carrier's answering-machine result: what it means for this call, fed."""
        why = None
        if event.answered_by in (ev.HUMAN, ev.UNKNOWN):
            symbol = LifeInput.HUMAN
        elif event.answered_by == ev.FAX:
            symbol, why = LifeInput.NO_MESSAGE, Why(CallState.VOICEMAIL, "a fax machine answered")
        elif live.record.mode != NOTIFY and self._settings.outbound.voicemail_action == HANG_UP:
            detail = "a machine answered (voicemailAction: hangup)"
            symbol, why = LifeInput.NO_MESSAGE, Why(CallState.VOICEMAIL, detail)
        elif event.message_end:
            symbol = LifeInput.BEEP
        else:
            symbol = LifeInput.MACHINE
        self.log.info(
            "call {call_id} answered by {answered_by} ({raw})",
            call_id=live.call_id,
            answered_by=event.answered_by,
            raw=event.raw,
            log_code="call.answered_by",
        )
        await self.feed(live, symbol, why, keys, detection=event)

    # -- outputs --------------------------------------------------------------

    def _arm_ring_timer(self, live: LiveCall, why: Why, client: bool) -> None:
        self.arm_timers(live)

    def _arm_max_duration(self, live: LiveCall, why: Why, client: bool) -> None:
        self.arm_timers(live)

    def _arm_detection_timer(self, live: LiveCall, why: Why, client: bool) -> None:
        self.arm_timers(live)

    def _greet_when_ready(self, live: LiveCall, why: Why, client: bool) -> None:
        self._turns.attach(live)
        if live.media_up or not self._provider.waits_for_media(live.record):
            self._turns.greet(live)

    def _leave_message(self, live: LiveCall, why: Why, client: bool) -> Deferred | None:
        if live.record.initial_message is None:
            return self._hang_up(live, Why(CallState.VOICEMAIL, "no message to leave"), False)
        self._greet_when_ready(live, why, client)
        return None

    def _greet(self, live: LiveCall, why: Why, client: bool) -> None:
        self._turns.attach(live)
        self._turns.greet(live)

    def _greet_unless_media(self, live: LiveCall, why: Why, client: bool) -> None:
        # Greet now unless the call still waits for its stream: one that came
        # up while the answer was being written was dropped as unanswered.
        self._greet_when_ready(live, why, client)

    def _hang_up(self, live: LiveCall, why: Why, client: bool) -> Deferred | None:
        work = Deferred.fromCoroutine(self.hang_up(live, why, attempt=1, client=client))
        if client:
            return work
        work.addErrback(lambda f: self.log.failure("hanging up {call_id}", f, call_id=live.call_id))
        return None

    def _transfer(self, live: LiveCall, why: Why, client: bool) -> Deferred:
        return Deferred.fromCoroutine(self.transfer(live, why))

    # -- transferring -----------------------------------------------------------

    async def transfer(self, live: LiveCall, why: Why) -> None:
        """
        Hand the call to C{why.detail} (an E.164 number the guard allowed): its
        timers and turns stop, then the carrier is asked.  The call ends as
        C{transferred} when the carrier confirms (L{LifeInput.TRANSFERRED}, or
        our leg's end), or after L{TRANSFER_CONFIRM_SECONDS} without a word.
        A refused request leaves the call as it was, and fails to the client.
        """
        to = why.detail or ""
        live.transferring = why
        live.timers.cancel_all()
        self._turns.ended(live, CallState.TRANSFERRED.value)
        try:
            await maybeDeferred(self._provider.transfer, live.record, to)
        except Exception as e:
            live.transferring = None
            self.arm_timers(live)
            error = provider_error(e)
            self.log.warn(
                "transferring {call_id} to {to} failed: {error}",
                call_id=live.call_id,
                to=to,
                error=error,
                log_code="call.transfer_failed",
            )
            raise error from None
        if live.record.ended:
            return
        await self._journal.change(live, lambda r: r.with_metadata(transferredTo=to))
        self.log.info(
            "call {call_id} handed to {to}; waiting for the carrier to confirm",
            call_id=live.call_id,
            to=to,
            log_code="call.transfer_requested",
        )
        unconfirmed = Why(
            CallState.TRANSFERRED, f"{to} (not confirmed within {TRANSFER_CONFIRM_SECONDS:.0f} s)"
        )
        live.timers.set(
            "transfer",
            TRANSFER_CONFIRM_SECONDS,
            self.timer,
            live,
            LifeInput.TRANSFER_UNCONFIRMED,
            unconfirmed,
        )

    # -- hanging up and finishing ----------------------------------------------

    async def hang_up(self, live: LiveCall, why: Why, *, attempt: int, client: bool) -> None:
        """Ask the provider to hang up; when it has, the call ends for C{why}."""
        if live.record.ended:
            return
        live.timers.cancel("hangup-retry")
        live.hanging_up = why
        try:
            await maybeDeferred(self._provider.hangup, live.record, why.reason)
        except Exception as e:
            live.hanging_up = None
            error = provider_error(e)
            if client:
                raise error from None
            if attempt >= HANGUP_ATTEMPTS:
                self.log.error(
                    "gave up hanging up {call_id} ({reason}) after {attempts} attempts: {error}",
                    call_id=live.call_id,
                    reason=why.reason.value,
                    attempts=attempt,
                    error=error,
                    log_code="call.hangup_gave_up",
                )
                detail = f"hang-up failed {attempt} times ({error}); the carrier may still have it"
                await self.finish(live, Why(CallState.ERROR, detail))
                return
            delay = HANGUP_RETRY_DELAYS[attempt - 1]
            self.log.warn(
                "hanging up {call_id} ({reason}) failed: {error}; retrying in {delay:.0f} s",
                call_id=live.call_id,
                reason=why.reason.value,
                error=error,
                delay=delay,
                log_code="call.hangup_failed",
            )
            live.timers.set("hangup-retry", delay, self._retry_hang_up, live, why, attempt + 1)
            return
        await self.feed(live, LifeInput.HUNG_UP, why, client=client)

    def _retry_hang_up(self, live: LiveCall, why: Why, attempt: int) -> None:
        Deferred.fromCoroutine(self.hang_up(live, why, attempt=attempt, client=False)).addErrback(
            lambda f: self.log.failure("hanging up {call_id}", f, call_id=live.call_id)
        )

    async def finish(self, live: LiveCall, why: Why, keys: Iterable[str | None] = ()) -> None:
        """Store the end of the call, then let it go; a failed write keeps it live."""
        if live.record.ended:
            return
        ended_at = self._clock.seconds()
        already: list[CallRecord] = []

        def ended(record: CallRecord) -> CallRecord | None:
            if record.ended:
                # Another end was stored while this one waited its turn.
                already.append(record)
                return None
            return attrs.evolve(
                record,
                state=why.reason,
                ended_at=ended_at,
                end_reason=why.reason.value,
                end_detail=why.detail,
            )

        try:
            record = await self._journal.change(live, ended, keys)
        except StoreError:
            self._end_later(live, why)
            raise
        if already:
            return
        live.end_pending = None
        self._registry.remove(live)
        live.timers.cancel_all()
        self._turns.ended(live, why.reason.value)
        self._provider.forget(record)
        self._hub.publish(
            notices.CallEnded(
                at=self._clock.seconds(),
                call_id=record.call_id,
                reason=why.reason.value,
                detail=why.detail,
            )
        )
        self.log.info(
            "call {call_id} ended: {reason}{detail}",
            call_id=record.call_id,
            reason=why.reason.value,
            detail=f" ({why.detail})" if why.detail else "",
            log_code="call.ended",
        )

    def _end_later(self, live: LiveCall, why: Why) -> None:
        """The end could not be stored: write it again, backing off, until it is."""
        tries = live.end_pending[1] + 1 if live.end_pending else 0
        live.end_pending = (why, tries)
        delay = END_RETRY_DELAYS[min(tries, len(END_RETRY_DELAYS) - 1)]

        def again() -> None:
            d = Deferred.fromCoroutine(self.finish(live, why))
            d.addErrback(lambda f: f.trap(StoreError))

        live.timers.set("end-retry", delay, again)

    # -- timers -----------------------------------------------------------------

    def arm_timers(self, live: LiveCall) -> None:
        """Start the timers the call needs in its phase, with their remaining time."""
        record = live.record
        now = self._clock.seconds()
        settings = self._settings
        if record.ended:
            return
        if record.answered_at is None:
            live.timers.cancel("max-duration")
            live.timers.cancel("detection")
            if record.direction == OUTBOUND and record.provider_call_id is not None:
                remaining = settings.ring_timeout_ms / 1000.0 - (now - record.started_at)
                why = Why(CallState.NO_ANSWER, f"not answered within {settings.ring_timeout_ms} ms")
                live.timers.set("ring", remaining, self.timer, live, LifeInput.RING_TIMEOUT, why)
            return
        live.timers.cancel("ring")
        remaining = settings.max_duration_seconds - (now - record.answered_at)
        why = Why(
            CallState.TIMEOUT, f"maxDurationSeconds ({settings.max_duration_seconds}) reached"
        )
        live.timers.set("max-duration", remaining, self.timer, live, LifeInput.MAX_DURATION, why)
        self._arm_detection(live, now)

    def _arm_detection(self, live: LiveCall, now: float) -> None:
        """The wait for who answered, or for a machine's beep; or the hang-up after the message."""
        record = live.record
        current = phase(record)
        if current is Phase.SCREENING:
            assert record.answered_at is not None
            remaining = DETECTION_WAIT - (now - record.answered_at)
        elif current is Phase.AT_MACHINE:
            since = record.metadata.get("answeredByAt")
            since = since / 1000.0 if isinstance(since, int | float) else now
            remaining = BEEP_WAIT - (now - since)
        else:
            live.timers.cancel("detection")
            if (
                record.metadata.get(VOICEMAIL) == LEAVING
                and record.initial_message is None
                and not live.timers.running("notify")
            ):
                self._hang_up_after_message(live)  # left before a restart
            return
        why = Why(CallState.ERROR, "answering-machine detection timed out")
        live.timers.set("detection", remaining, self.timer, live, LifeInput.DETECTION_TIMEOUT, why)

    def first_words_said(self, live: LiveCall, playback: Playback) -> None:
        """
        A notify call's message was delivered, or any call's message was left
        on a machine: hang up after C{notifyHangupDelaySec}.
        """
        record = live.record
        if record.ended or not playback.complete:
            return
        if record.metadata.get(VOICEMAIL) == LEAVING:
            self._hang_up_after_message(live)
            return
        if record.mode != NOTIFY:
            return
        why = Why(CallState.HANGUP_BOT, "notify message delivered")
        delay = self._settings.outbound.notify_hangup_delay_sec
        live.timers.set("notify", delay, self.timer, live, LifeInput.NOTIFY_DONE, why)

    def _hang_up_after_message(self, live: LiveCall) -> None:
        why = Why(CallState.VOICEMAIL, "message left after the beep")
        delay = self._settings.outbound.notify_hangup_delay_sec
        live.timers.set("notify", delay, self.timer, live, LifeInput.NOTIFY_DONE, why)

    def timer(self, live: LiveCall, symbol: LifeInput, why: Why) -> None:
        """A timer of the call fired."""
        self.background(self.feed(live, symbol, why))

    def background(self, work: Any) -> None:
        """Run a coroutine on its own; its failure is logged, not lost."""
        Deferred.fromCoroutine(work).addErrback(
            lambda f: self.log.failure("call work failed", f, log_code="call.work_failed")
        )


_WRITES = (LifeOutput.STORE_RINGING, LifeOutput.STORE_ANSWERED, LifeOutput.STORE_DETECTION)
# What each detection input leaves in the record's C{voicemail} key.
_VOICEMAIL = {
    LifeInput.HUMAN: None,
    LifeInput.MACHINE: AWAITING_BEEP,
    LifeInput.BEEP: LEAVING,
    LifeInput.NO_MESSAGE: NO_MESSAGE,
}


def _written(
    record: CallRecord,
    writes: list[LifeOutput],
    now: float,
    symbol: LifeInput,
    before: Phase,
    detection: ev.MachineDetected | None,
) -> CallRecord:
    for output in writes:
        if output is LifeOutput.STORE_RINGING:
            record = attrs.evolve(record, state=CallState.RINGING)
        elif output is LifeOutput.STORE_ANSWERED:
            record = attrs.evolve(record, state=CallState.ANSWERED, answered_at=now)
        elif output is LifeOutput.STORE_DETECTION:
            record = _detection_written(record, now, symbol, before, detection)
    return record


def _detection_written(
    record: CallRecord,
    now: float,
    symbol: LifeInput,
    before: Phase,
    detection: ev.MachineDetected | None,
) -> CallRecord:
    """The detection result in the record: who answered, and what is left for a machine."""
    if symbol is LifeInput.DETECTION_TIMEOUT:
        if before is Phase.AT_MACHINE:
            return record.with_metadata(voicemail=LEAVING)
        return record.with_metadata(
            answeredBy=ev.UNKNOWN,
            answeredByRaw=f"no result in {DETECTION_WAIT:.0f} s",
            answeredByAt=round(now * 1000),
        )
    assert detection is not None
    voicemail = _VOICEMAIL[symbol]
    return record.with_metadata(
        answeredBy=detection.answered_by,
        answeredByRaw=detection.raw,
        answeredByAt=round(now * 1000),
        **({VOICEMAIL: voicemail} if voicemail else {}),
    )


# -- the lifecycle table -------------------------------------------------------------

P = Phase
I = LifeInput  # noqa: E741
O = LifeOutput  # noqa: E741
T = Transition
STAY = None
LIVE = (P.DIALLING, P.RINGING, P.SCREENING, P.AT_MACHINE, P.CONNECTED)
UNANSWERED = (P.DIALLING, P.RINGING)
ANSWERED = (P.SCREENING, P.AT_MACHINE, P.CONNECTED)
DETECTING = (P.SCREENING, P.AT_MACHINE)
ANSWER = (O.STORE_ANSWERED, O.ARM_MAX_DURATION, O.GREET_UNLESS_MEDIA)
SCREEN = (O.STORE_ANSWERED, O.ARM_MAX_DURATION, O.ARM_DETECTION_TIMER)
RESULTS = (I.HUMAN, I.MACHINE, I.BEEP, I.NO_MESSAGE)

LIFE_TABLE = table(
    [
        # the carrier
        ((P.DIALLING,), I.PLACED, T(STAY, (O.ARM_RING_TIMER,))),
        ((P.DIALLING,), I.RINGING, T(P.RINGING, (O.STORE_RINGING,))),
        ((P.RINGING, *ANSWERED), I.RINGING, None),  # late, out of order
        (UNANSWERED, I.ANSWERED, T(P.CONNECTED, ANSWER)),
        (UNANSWERED, I.ANSWERED_SCREENING, T(P.SCREENING, SCREEN)),
        (ANSWERED, I.ANSWERED, None),
        (ANSWERED, I.ANSWERED_SCREENING, None),
        ((P.CONNECTED,), I.MEDIA_UP, T(STAY, (O.GREET,))),
        (DETECTING, I.MEDIA_UP, None),  # greeted once who answered is known
        (UNANSWERED, I.MEDIA_UP, None),  # greeted at the answer (LiveCall.media_up)
        (LIVE, I.MEDIA_DOWN, None),
        (LIVE, I.ENDED, T(P.ENDED, (O.FINISH,))),
        (LIVE, I.FAILED, T(STAY, (O.HANG_UP,))),
        # who answered (answering-machine detection)
        ((P.SCREENING,), I.HUMAN, T(P.CONNECTED, (O.STORE_DETECTION, O.GREET_WHEN_READY))),
        ((P.SCREENING,), I.MACHINE, T(P.AT_MACHINE, (O.STORE_DETECTION, O.ARM_DETECTION_TIMER))),
        (DETECTING, I.BEEP, T(P.CONNECTED, (O.STORE_DETECTION, O.LEAVE_MESSAGE))),
        (DETECTING, I.NO_MESSAGE, T(P.CONNECTED, (O.STORE_DETECTION, O.HANG_UP))),
        ((P.AT_MACHINE,), I.HUMAN, None),  # late: the machine is what answered
        ((P.AT_MACHINE,), I.MACHINE, None),  # repeated
        # repeated or late: never a second message
        *(((P.CONNECTED,), symbol, None) for symbol in RESULTS),
        # before the answer (out of order): dropped, and the wait times out
        *((UNANSWERED, symbol, None) for symbol in RESULTS),
        # a transfer taken (we transfer only connected calls)
        ((P.CONNECTED,), I.TRANSFERRED, T(P.ENDED, (O.FINISH,))),
        ((*UNANSWERED, *DETECTING), I.TRANSFERRED, None),
        # the client
        (LIVE, I.HANG_UP, T(STAY, (O.HANG_UP,))),
        ((P.CONNECTED,), I.TRANSFER, T(STAY, (O.TRANSFER,))),
        ((*UNANSWERED, *DETECTING), I.TRANSFER, None),  # refused before it gets here
        # timers
        (UNANSWERED, I.RING_TIMEOUT, T(STAY, (O.HANG_UP,))),
        (ANSWERED, I.RING_TIMEOUT, None),
        (ANSWERED, I.MAX_DURATION, T(STAY, (O.HANG_UP,))),
        (ANSWERED, I.NOTIFY_DONE, T(STAY, (O.HANG_UP,))),
        (UNANSWERED, I.STALE, T(STAY, (O.HANG_UP,))),
        (
            (P.SCREENING,),
            I.DETECTION_TIMEOUT,
            T(P.CONNECTED, (O.STORE_DETECTION, O.GREET_WHEN_READY)),
        ),
        (
            (P.AT_MACHINE,),
            I.DETECTION_TIMEOUT,
            T(P.CONNECTED, (O.STORE_DETECTION, O.LEAVE_MESSAGE)),
        ),
        ((P.CONNECTED,), I.DETECTION_TIMEOUT, None),  # the result came first
        ((P.CONNECTED,), I.TRANSFER_UNCONFIRMED, T(P.ENDED, (O.FINISH,))),
        ((*UNANSWERED, *DETECTING), I.TRANSFER_UNCONFIRMED, None),
        # the hang-up asked for
        (LIVE, I.HUNG_UP, T(P.ENDED, (O.FINISH,))),
        # an ended call never moves again
        *(((P.ENDED,), symbol, None) for symbol in LifeInput),
    ]
)
