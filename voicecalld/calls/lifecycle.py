"""
The call lifecycle, as one machine: dialling, ringing, connected, ended.

Its inputs come from the carrier (ringing, answered, media up and down,
ended, failed), the client (hang up), the call's timers (ring timeout, max
duration, notify delay, stale) and the hang-up it asked for (hung up).  Its
phase is derived from the stored record, so a failed write leaves it where it
was; every change it makes goes through the journal before anyone sees it.
The whole table is at the bottom of this module and drawn in
C{docs/state-machines/call.dot}.  (What a connected call is doing, speaking
or listening, is the turn's business: L{voicecalld.calls.turns}.)

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
from voicecalld.config.model import VoiceCallSettings
from voicecalld.errors import StoreError, provider_error
from voicecalld.providers.interface import IProvider
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


class Phase(enum.Enum):
    """Where a call is in its life (derived from the stored state)."""

    DIALLING = enum.auto()
    RINGING = enum.auto()
    CONNECTED = enum.auto()
    ENDED = enum.auto()


class LifeInput(enum.Enum):
    """What moves a call through its life, grouped by who sends it."""

    # the carrier
    RINGING = enum.auto()
    ANSWERED = enum.auto()
    MEDIA_UP = enum.auto()
    MEDIA_DOWN = enum.auto()
    ENDED = enum.auto()
    FAILED = enum.auto()
    TRANSFERRED = enum.auto()
    # the client
    HANG_UP = enum.auto()
    TRANSFER = enum.auto()
    # the call's timers
    RING_TIMEOUT = enum.auto()
    MAX_DURATION = enum.auto()
    NOTIFY_DONE = enum.auto()
    STALE = enum.auto()
    TRANSFER_UNCONFIRMED = enum.auto()
    # the lifecycle itself
    PLACED = enum.auto()
    HUNG_UP = enum.auto()


class LifeOutput(enum.Enum):
    """What the lifecycle does."""

    STORE_RINGING = enum.auto()
    STORE_ANSWERED = enum.auto()
    ARM_RING_TIMER = enum.auto()
    ARM_MAX_DURATION = enum.auto()
    GREET = enum.auto()
    GREET_UNLESS_MEDIA = enum.auto()
    HANG_UP = enum.auto()
    TRANSFER = enum.auto()
    FINISH = enum.auto()


def phase(state: CallState) -> Phase:
    """The lifecycle phase of a stored call state."""
    if state.terminal:
        return Phase.ENDED
    if state is CallState.INITIATED:
        return Phase.DIALLING
    if state is CallState.RINGING:
        return Phase.RINGING
    return Phase.CONNECTED


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
    ) -> None:
        """
        Take one input for C{live}: decide from its stored phase, write what
        changes (with the event keys C{keys}), then run the outputs.
        """
        machine = Machine(
            LIFE_TABLE, phase(live.record.state), "call", live.call_id, live.lifecycle_warned
        )
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
        writes = [o for o in outputs if o in (LifeOutput.STORE_RINGING, LifeOutput.STORE_ANSWERED)]
        if writes or keys:
            await self._journal.change(live, lambda r: _written(r, writes, self._clock), keys)
        for output in outputs:
            if output in writes:
                continue
            result = getattr(self, "_" + output.name.lower())(
                live, why or Why(CallState.ERROR), client
            )
            if isinstance(result, Deferred):
                await result

    # -- outputs --------------------------------------------------------------

    def _arm_ring_timer(self, live: LiveCall, why: Why, client: bool) -> None:
        self.arm_timers(live)

    def _arm_max_duration(self, live: LiveCall, why: Why, client: bool) -> None:
        self.arm_timers(live)

    def _greet(self, live: LiveCall, why: Why, client: bool) -> None:
        self._turns.attach(live)
        self._turns.greet(live)

    def _greet_unless_media(self, live: LiveCall, why: Why, client: bool) -> None:
        self._turns.attach(live)
        if not self._provider.waits_for_media(live.record):
            self._turns.greet(live)

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

        def ended(record: CallRecord) -> CallRecord:
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

    def first_words_said(self, live: LiveCall, playback: Playback) -> None:
        """A notify call's message was delivered: hang up after C{notifyHangupDelaySec}."""
        if live.record.ended or live.record.mode != NOTIFY or not playback.complete:
            return
        why = Why(CallState.HANGUP_BOT, "notify message delivered")
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


def _written(record: CallRecord, writes: list[LifeOutput], clock: IReactorTime) -> CallRecord:
    for output in writes:
        if output is LifeOutput.STORE_RINGING:
            record = attrs.evolve(record, state=CallState.RINGING)
        elif output is LifeOutput.STORE_ANSWERED:
            record = attrs.evolve(record, state=CallState.ANSWERED, answered_at=clock.seconds())
    return record


# -- the lifecycle table -------------------------------------------------------------

P = Phase
I = LifeInput  # noqa: E741
O = LifeOutput  # noqa: E741
T = Transition
STAY = None
LIVE = (P.DIALLING, P.RINGING, P.CONNECTED)
UNANSWERED = (P.DIALLING, P.RINGING)
ANSWER = (O.STORE_ANSWERED, O.ARM_MAX_DURATION, O.GREET_UNLESS_MEDIA)

LIFE_TABLE = table(
    [
        # the carrier
        ((P.DIALLING,), I.PLACED, T(STAY, (O.ARM_RING_TIMER,))),
        ((P.DIALLING,), I.RINGING, T(P.RINGING, (O.STORE_RINGING,))),
        ((P.RINGING, P.CONNECTED), I.RINGING, None),  # late, out of order
        (UNANSWERED, I.ANSWERED, T(P.CONNECTED, ANSWER)),
        ((P.CONNECTED,), I.ANSWERED, None),
        ((P.CONNECTED,), I.MEDIA_UP, T(STAY, (O.GREET,))),
        (UNANSWERED, I.MEDIA_UP, None),
        (LIVE, I.MEDIA_DOWN, None),
        (LIVE, I.ENDED, T(P.ENDED, (O.FINISH,))),
        (LIVE, I.FAILED, T(STAY, (O.HANG_UP,))),
        ((P.CONNECTED,), I.TRANSFERRED, T(P.ENDED, (O.FINISH,))),
        (UNANSWERED, I.TRANSFERRED, None),  # we transfer only connected calls
        # the client
        (LIVE, I.HANG_UP, T(STAY, (O.HANG_UP,))),
        ((P.CONNECTED,), I.TRANSFER, T(STAY, (O.TRANSFER,))),
        (UNANSWERED, I.TRANSFER, None),  # refused before it gets here
        # timers
        (UNANSWERED, I.RING_TIMEOUT, T(STAY, (O.HANG_UP,))),
        ((P.CONNECTED,), I.RING_TIMEOUT, None),
        ((P.CONNECTED,), I.MAX_DURATION, T(STAY, (O.HANG_UP,))),
        ((P.CONNECTED,), I.NOTIFY_DONE, T(STAY, (O.HANG_UP,))),
        (UNANSWERED, I.STALE, T(STAY, (O.HANG_UP,))),
        ((P.CONNECTED,), I.TRANSFER_UNCONFIRMED, T(P.ENDED, (O.FINISH,))),
        (UNANSWERED, I.TRANSFER_UNCONFIRMED, None),
        # the hang-up asked for
        (LIVE, I.HUNG_UP, T(P.ENDED, (O.FINISH,))),
        # an ended call never moves again
        *(((P.ENDED,), symbol, None) for symbol in LifeInput),
    ]
)
