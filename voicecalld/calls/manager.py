"""
The call manager: the one owner of every call's state.

Clients (the control socket) ask it to place, speak on, listen on and end
calls; providers tell it what happened (L{voicecalld.values.events}).  Each
change is committed to the store before it is acknowledged to anyone, and
published as a notice for the live tail.  Time comes from an injected clock.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import attrs
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from voicecalld.calls.hub import NoticeHub
from voicecalld.calls.live import LiveCall, Waiter
from voicecalld.calls.policy import OutboundGuard, inbound_decision
from voicecalld.config.model import VoiceCallSettings
from voicecalld.errors import (
    Busy,
    CallEnded,
    InvalidArgument,
    NotAllowed,
    NotConnected,
    ProviderError,
    ShuttingDown,
    StoreError,
    Timeout,
    UnknownCall,
    VoiceCallError,
)
from voicecalld.providers.interface import IProvider
from voicecalld.store.interface import ICallStore
from voicecalld.values import events as ev
from voicecalld.values import notices
from voicecalld.values.events import Accepted, Outcome, Refused
from voicecalld.values.playback import CallStatus, Liveness, Playback
from voicecalld.values.record import (
    BOT,
    CONVERSATION,
    INBOUND,
    MODES,
    NOTIFY,
    OUTBOUND,
    USER,
    CallRecord,
    TranscriptEntry,
)
from voicecalld.values.states import CONNECTED, CallState, Move, judge
from voicecalld.voice.replies import ReplyRouter
from voicecalld.voice.turns import BargeIn, Conversation, TurnTiming

MOCK_FROM_NUMBER = "+15550000000"
DEFAULT_GREETING = "Hello! How can I help you today?"
MAX_TEXT = 4000
DTMF_PATTERN = r"[0-9A-Da-d#*wW]{1,64}"
PROCESSED_KEY_LIFETIME = 24 * 3600.0
REAPER_INTERVAL = 30.0
HANGUP_RETRY_DELAY = 15.0
RESTORE_STATUS_TIMEOUT = 10.0


class CallManager:
    """Owns every live call; see the module docstring."""

    log = Logger()

    def __init__(
        self,
        *,
        settings: VoiceCallSettings,
        store: ICallStore,
        provider: IProvider,
        clock: IReactorTime,
        hub: NoticeHub | None = None,
        replies: ReplyRouter | None = None,
        new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
    ) -> None:
        self.settings = settings
        self.hub = hub or NoticeHub()
        self.replies = replies or ReplyRouter(clock, settings.response_timeout_ms / 1000.0)
        self._store = store
        self._provider = provider
        self._clock = clock
        self._new_id = new_id
        self._live: dict[str, LiveCall] = {}
        self._by_provider_id: dict[str, str] = {}
        self._processed: dict[str, float] = {}
        self._guard = OutboundGuard(settings)
        streaming = settings.streaming
        self.conversation = Conversation(
            self,
            self.replies,
            self.hub,
            clock,
            BargeIn(streaming.barge_in_min_speech_ms / 1000.0, streaming.barge_in_min_words),
        )
        self._accepting = False
        self._reaper = LoopingCall(self._reap)
        self._reaper.clock = clock

    # -- lifecycle ---------------------------------------------------------

    async def restore(self) -> None:
        """
        Load what the store knows, then ask the provider about every call that
        was live when voicecalld stopped: calls it still has are driven again
        (with their remaining time); the others are ended with a reason.
        """
        now = self._clock.seconds()
        self._processed = dict(await self._store.processed_keys(now))
        hourly = self.settings.outbound.max_calls_per_hour
        if hourly is not None:
            recent = await self._store.recent(hourly)
            self._guard.seed(
                [
                    r.started_at
                    for r in recent
                    if r.direction == OUTBOUND and r.started_at > now - 3600
                ]
            )
        records = await self._store.live_calls()
        checks = [self._restore_one(record) for record in records]
        await DeferredList([Deferred.fromCoroutine(c) for c in checks], consumeErrors=True)
        self.log.info(
            "restored {live} live call(s) of {seen} found in {path}",
            live=len(self._live),
            seen=len(records),
            path=self._store.path,
        )

    async def _restore_one(self, record: CallRecord) -> None:
        if record.provider != self._provider.name:
            await self._finish_record(
                record,
                CallState.ERROR,
                f"placed through {record.provider}, but voicecalld now runs {self._provider.name}",
            )
            return
        if record.provider_call_id is None:
            await self._finish_record(
                record, CallState.FAILED, "voicecalld stopped before the call was placed"
            )
            return
        status = await self._status_with_timeout(record)
        if status.liveness is Liveness.ENDED:
            await self._finish_record(
                record, status.end_reason or CallState.COMPLETED, "ended while voicecalld was down"
            )
            return
        if status.liveness is Liveness.UNKNOWN_CALL:
            await self._finish_record(
                record,
                CallState.ERROR,
                "the provider no longer knows this call (found after a restart)",
            )
            return
        if status.liveness is Liveness.UNREACHABLE:
            self.log.warn(
                "could not ask {provider} about restored call {call_id}: {detail}; keeping it live",
                provider=record.provider,
                call_id=record.call_id,
                detail=status.detail,
            )
        live = self._adopt(record)
        if record.state in (CallState.SPEAKING, CallState.LISTENING):
            await self._set_state(live, CallState.ACTIVE)
        self._arm_timers(live)
        if (
            record.state in CONNECTED
            and record.initial_message is not None
            and not self._provider.waits_for_media(record)
        ):
            self._speak_initial(live)

    async def _status_with_timeout(self, record: CallRecord) -> CallStatus:
        d = maybeDeferred(self._provider.call_status, record)
        d.addTimeout(RESTORE_STATUS_TIMEOUT, self._clock)
        try:
            return await d
        except Exception as e:
            return CallStatus(Liveness.UNREACHABLE, detail=str(e) or type(e).__name__)

    def start(self) -> None:
        """Take new calls and run the periodic reaper."""
        if self.replies.fallback is not None:
            source = "the connected responder, else " + self.replies.fallback.describe()
        else:
            source = (
                "only a connected responder (the gateway shim); set OPENAI_API_KEY or"
                " responseBaseUrl for a fallback"
            )
        self.log.info("conversation replies: {source}", source=source)
        self._accepting = True
        if not self._reaper.running:
            self._reaper.start(REAPER_INTERVAL, now=False)

    def stop(self) -> None:
        """Take no new calls; live calls stay with the provider and are restored next start."""
        self._accepting = False
        if self._reaper.running:
            self._reaper.stop()
        for live in self._live.values():
            live.cancel_all()
            if live.waiter is not None:
                waiter, live.waiter = live.waiter, None
                waiter.deferred.errback(ShuttingDown("voicecalld is stopping"))

    # -- queries -----------------------------------------------------------

    def live_calls(self) -> list[CallRecord]:
        """Every live call, oldest first."""
        return sorted((lc.record for lc in self._live.values()), key=lambda r: r.started_at)

    async def get(self, call_id: str) -> CallRecord:
        """A call by our id or the provider's, live or ended."""
        live = self._find_live(call_id, call_id)
        if live is not None:
            return live.record
        record = await self._store.load(call_id)
        if record is None:
            record = await self._store.find(self._provider.name, call_id)
        if record is None:
            raise UnknownCall(f"No call with id {call_id}")
        return record

    async def recent(self, limit: int) -> list[CallRecord]:
        """The most recently started calls, newest first."""
        return await self._store.recent(limit)

    # -- client operations ---------------------------------------------------

    async def initiate(
        self,
        to: str | None,
        message: str | None,
        mode: str | None,
        session_key: str | None = None,
        dtmf_sequence: str | None = None,
    ) -> CallRecord:
        """
        Place an outbound call; returns its record once the provider accepted it.
        C{dtmf_sequence} (conversation calls only) is keyed as soon as the call connects.
        """
        self._check_accepting()
        to = _clean(to) or self.settings.to_number
        if to is None:
            raise InvalidArgument("to required (no --to given and no toNumber configured)")
        mode = _clean(mode) or self.settings.outbound.default_mode
        if mode not in MODES:
            raise InvalidArgument(f"mode must be notify or conversation, got {mode!r}")
        message = _clean(message)
        if message is None and mode == NOTIFY:
            raise InvalidArgument("message required")
        _check_text(message)
        dtmf_sequence = _clean(dtmf_sequence)
        if dtmf_sequence is not None:
            if mode != CONVERSATION:
                raise InvalidArgument('dtmfSequence is valid only with mode "conversation"')
            if re.fullmatch(DTMF_PATTERN, dtmf_sequence) is None or len(dtmf_sequence) > 32:
                raise InvalidArgument("dtmfSequence must be 1-32 of 0-9, A-D, #, * and w")
        now = self._clock.seconds()
        decision = self._guard.check(to, now)
        if decision.allowed and len(self._live) >= self.settings.max_concurrent_calls:
            decision = attrs.evolve(
                decision,
                allowed=False,
                reason=(f"Maximum concurrent calls ({self.settings.max_concurrent_calls}) reached"),
            )
        if not decision.allowed:
            self.hub.publish(
                notices.CallRefused(
                    at=now,
                    direction=OUTBOUND,
                    from_number=None,
                    to_number=to,
                    reason=decision.reason,
                )
            )
            self.log.warn("refused outbound call to {to}: {reason}", to=to, reason=decision.reason)
            raise NotAllowed(decision.reason)
        record = CallRecord(
            call_id=self._new_id(),
            provider=self._provider.name,
            direction=OUTBOUND,
            mode=mode,
            from_number=self.settings.from_number or MOCK_FROM_NUMBER,
            to_number=to,
            state=CallState.INITIATED,
            started_at=now,
            initial_message=message,
            session_key=_clean(session_key),
            metadata={"dtmfSequence": dtmf_sequence} if dtmf_sequence else {},
        )
        live = self._adopt(record)
        self._guard.placed(now)
        try:
            await self._commit(live, record)
        except StoreError:
            self._drop(live)
            raise
        self._publish_created(record)
        try:
            provider_call_id = await self._provider.place_call(record)
        except Exception as e:
            error = _provider_error(e)
            await self._finish(live, CallState.FAILED, str(error))
            raise error from None
        if live.record.ended:
            return live.record
        self._by_provider_id[provider_call_id] = record.call_id
        await self._commit(live, attrs.evolve(live.record, provider_call_id=provider_call_id))
        self._arm_timers(live)
        self.log.info(
            "placed {mode} call {call_id} to {to} via {provider}",
            mode=mode,
            call_id=record.call_id,
            to=to,
            provider=record.provider,
        )
        return live.record

    async def speak(self, call_id: str, text: str | None) -> Playback:
        """Say C{text} on a connected call; returns once it has been played."""
        live = await self._connected(call_id)
        text = _clean(text)
        if text is None:
            raise InvalidArgument("message required")
        _check_text(text)
        return await self._say(live, text)

    async def continue_call(self, call_id: str, text: str | None) -> str:
        """Say C{text}, then wait for the caller's next final words and return them."""
        live = await self._connected(call_id)
        text = _clean(text)
        if text is None:
            raise InvalidArgument("message required")
        _check_text(text)
        if live.waiter is not None:
            raise Busy("Already waiting for transcript")
        waiter = live.waiter = Waiter(self._new_id())
        timeout_ms = self.settings.transcript_timeout_ms
        live.set_timer(
            "transcript", timeout_ms / 1000.0, self._turn_timed_out, live, waiter, timeout_ms
        )
        started = self._clock.seconds()
        try:
            await self._say(live, text)
        except Exception:
            self._drop_waiter(live, waiter)
            raise
        if not waiter.deferred.called:
            await self._set_state(live, CallState.LISTENING)
            listening = self._clock.seconds()
            try:
                await maybeDeferred(self._provider.start_listening, live.record, waiter.token)
            except Exception as e:
                self._drop_waiter(live, waiter)
                raise _provider_error(e) from None
        else:
            listening = self._clock.seconds()
        try:
            words = await waiter.deferred
        finally:
            self._drop_waiter(live, waiter)
        if not live.record.ended:
            try:
                await maybeDeferred(self._provider.stop_listening, live.record)
            except Exception:
                self.log.failure("stop listening on {call_id} failed", call_id=live.call_id)
            now = self._clock.seconds()
            turns = int(live.record.metadata.get("turnCount", 0)) + 1
            await self._commit(
                live,
                live.record.with_metadata(
                    turnCount=turns,
                    lastTurnLatencyMs=round((now - started) * 1000),
                    lastTurnListenWaitMs=round((now - listening) * 1000),
                    lastTurnCompletedAt=round(now * 1000),
                ),
            )
        return words

    async def send_dtmf(self, call_id: str, digits: str | None) -> None:
        """Send touch tones on a connected call."""
        live = await self._connected(call_id)
        digits = _clean(digits)
        if digits is None or re.fullmatch(DTMF_PATTERN, digits) is None:
            raise InvalidArgument("digits must be 1-64 of 0-9, A-D, #, * and w (a pause)")
        await live.speech.acquire()
        try:
            await maybeDeferred(self._provider.send_dtmf, live.record, digits)
        except Exception as e:
            raise _provider_error(e) from None
        finally:
            live.speech.release()
        entry = TranscriptEntry(self._clock.seconds(), BOT, digits, kind="dtmf")
        await self._commit(live, live.record.with_entry(entry), [entry])

    async def end(self, call_id: str) -> CallRecord:
        """Hang up; ending a call that already ended succeeds and changes nothing."""
        live = self._find_live(call_id, call_id)
        if live is None:
            return await self.get(call_id)
        await self._hang_up(live, CallState.HANGUP_BOT, None, retry=False)
        return live.record

    # -- events from providers ---------------------------------------------

    def handle_event(self, event: ev.CallEvent) -> Deferred:
        """Apply one provider event; fires (with an outcome) once it is durable."""
        return Deferred.fromCoroutine(self._handle(event))

    async def _handle(self, event: ev.CallEvent) -> Any:
        key = event.dedupe_key
        if key is not None and key in self._processed:
            self.log.debug("duplicate event {key} ignored", key=key)
            return Outcome.DUPLICATE
        live = self._find_live(event.call_id, event.provider_call_id)
        if live is None:
            if isinstance(event, ev.InboundCall):
                return await self._inbound(event)
            self.log.debug("event {event!r} for no live call, ignored", event=event)
            return Outcome.IGNORED
        if event.provider_call_id and live.record.provider_call_id != event.provider_call_id:
            self._by_provider_id[event.provider_call_id] = live.call_id
            live.record = attrs.evolve(live.record, provider_call_id=event.provider_call_id)
        processed = self._remember(key)
        handler = _HANDLERS.get(type(event))
        if handler is None:
            await self._commit(live, live.record, processed=processed)
            return Outcome.IGNORED
        return await handler(self, live, event, processed)

    async def _on_ringing(self, live: LiveCall, event: ev.Ringing, processed) -> Any:
        await self._set_state(live, CallState.RINGING, processed)
        return Outcome.APPLIED

    async def _on_answered(self, live: LiveCall, event: ev.Answered, processed) -> Any:
        if live.record.answered_at is not None or live.record.ended:
            await self._commit(live, live.record, processed=processed)
            return Outcome.APPLIED
        answered = attrs.evolve(live.record, answered_at=self._clock.seconds())
        await self._set_state(live, CallState.ANSWERED, processed, record=answered)
        self._arm_timers(live)
        if not self._provider.waits_for_media(live.record):
            self._speak_initial(live)
        return Outcome.APPLIED

    async def _on_media_connected(self, live: LiveCall, event: ev.MediaConnected, processed) -> Any:
        await self._commit(live, live.record, processed=processed)
        if live.record.state in CONNECTED:
            self._speak_initial(live)
        return Outcome.APPLIED

    async def _on_media_disconnected(self, live: LiveCall, event, processed) -> Any:
        await self._commit(live, live.record, processed=processed)
        return Outcome.APPLIED

    async def _on_speech_started(self, live: LiveCall, event, processed) -> Any:
        self.conversation.speech_started(live)
        return Outcome.APPLIED

    async def _on_speech_stopped(self, live: LiveCall, event, processed) -> Any:
        self.conversation.speech_stopped(live)
        return Outcome.APPLIED

    async def _on_speech(self, live: LiveCall, event: ev.Speech, processed) -> Any:
        text = event.text.strip()
        if not event.final:
            self.hub.publish(
                notices.PartialSpeech(at=self._clock.seconds(), call_id=live.call_id, text=text)
            )
            self.conversation.partial(live, text)
            return Outcome.APPLIED
        if not text:
            await self._commit(live, live.record, processed=processed)
            return Outcome.APPLIED
        heard_at = self._clock.seconds()
        entry = TranscriptEntry(heard_at, USER, text)
        # The entry is in the record at once and on disk when `stored` fires:
        # barge-in and the reply request need not wait for the disk, but a
        # waiting `continue` is only answered once the words are durable.
        stored = Deferred.fromCoroutine(
            self._commit(live, live.record.with_entry(entry), [entry], processed)
        )
        live.caller_turns += 1
        takes_turn = self.conversation.final(live, text)
        waiter = live.waiter
        if waiter is not None and not waiter.deferred.called:
            await stored
            if not waiter.deferred.called:
                waiter.deferred.callback(text)
        else:
            if takes_turn and live.record.mode == CONVERSATION and not live.speaking_initial:
                self.conversation.reply(live, live.caller_turns, heard_at)
            await stored
        return Outcome.APPLIED

    async def _on_dtmf(self, live: LiveCall, event: ev.Dtmf, processed) -> Any:
        entry = TranscriptEntry(self._clock.seconds(), USER, event.digits, kind="dtmf")
        await self._commit(live, live.record.with_entry(entry), [entry], processed)
        return Outcome.APPLIED

    async def _on_ended(self, live: LiveCall, event: ev.Ended, processed) -> Any:
        await self._finish(live, event.reason, event.detail, processed)
        return Outcome.APPLIED

    async def _on_failed(self, live: LiveCall, event: ev.Failed, processed) -> Any:
        if event.retryable:
            self.hub.publish(
                notices.Problem(
                    at=self._clock.seconds(),
                    call_id=live.call_id,
                    what="provider",
                    message=event.message,
                )
            )
            await self._commit(live, live.record, processed=processed)
            return Outcome.APPLIED
        await self._commit(live, live.record, processed=processed)
        await self._hang_up(live, CallState.ERROR, event.message, retry=True)
        return Outcome.APPLIED

    async def _inbound(self, event: ev.InboundCall) -> Any:
        now = self._clock.seconds()
        decision = inbound_decision(self.settings, event.from_number)
        if decision.allowed and not self._accepting:
            decision = attrs.evolve(decision, allowed=False, reason="voicecalld is stopping")
        if decision.allowed and len(self._live) >= self.settings.max_concurrent_calls:
            decision = attrs.evolve(
                decision,
                allowed=False,
                reason=(f"Maximum concurrent calls ({self.settings.max_concurrent_calls}) reached"),
            )
        if not decision.allowed:
            self.hub.publish(
                notices.CallRefused(
                    at=now,
                    direction=INBOUND,
                    from_number=event.from_number,
                    to_number=event.to_number,
                    reason=decision.reason,
                )
            )
            self.log.info(
                "refused inbound call from {caller}: {reason}",
                caller=event.from_number,
                reason=decision.reason,
            )
            try:
                await maybeDeferred(self._provider.reject, event, decision.reason)
            except Exception:
                self.log.failure("rejecting inbound call {pid} failed", pid=event.provider_call_id)
            return Refused(decision.reason)
        route = self.settings.numbers.get(event.to_number)
        greeting = (
            (route and route.inbound_greeting) or self.settings.inbound_greeting or DEFAULT_GREETING
        )
        record = CallRecord(
            call_id=event.call_id or self._new_id(),
            provider=self._provider.name,
            direction=INBOUND,
            mode=CONVERSATION,
            from_number=event.from_number,
            to_number=event.to_number,
            state=CallState.RINGING,
            started_at=now,
            provider_call_id=event.provider_call_id,
            initial_message=greeting,
        )
        live = self._adopt(record)
        processed = self._remember(event.dedupe_key)
        try:
            await self._commit(live, record, processed=processed)
        except StoreError:
            self._drop(live)
            raise
        self._publish_created(record)
        self._arm_timers(live)
        try:
            await maybeDeferred(self._provider.answer, live.record)
        except Exception as e:
            await self._finish(live, CallState.FAILED, f"answering failed: {e}")
            return Refused(f"answering failed: {e}")
        return Accepted(record.call_id)

    # -- speaking ------------------------------------------------------------

    def _speak_initial(self, live: LiveCall) -> None:
        """Say the call's first words once, whichever trigger comes first."""
        text = live.record.initial_message
        if live.speaking_initial or live.record.ended:
            return
        if text is None:
            if live.record.state is CallState.ANSWERED:
                self._background(self._set_state(live, self._idle_state(live)))
            return
        live.speaking_initial = True
        self._background(self._say_initial(live, text))

    async def _say_initial(self, live: LiveCall, text: str) -> None:
        try:
            playback = await self._say(live, text, initial=True)
        except VoiceCallError as e:
            self.log.warn(
                "first words on {call_id} not played: {error}", call_id=live.call_id, error=e
            )
            live.speaking_initial = False
            return
        live.speaking_initial = False
        if live.record.ended:
            return
        if live.record.mode == NOTIFY and playback.complete:
            delay = self.settings.outbound.notify_hangup_delay_sec
            live.set_timer(
                "notify",
                delay,
                self._hang_up_later,
                live,
                CallState.HANGUP_BOT,
                "notify message delivered",
            )

    async def _say(self, live: LiveCall, text: str, *, initial: bool = False) -> Playback:
        await live.speech.acquire()
        try:
            if live.record.ended:
                raise CallEnded(f"Call has ended ({live.record.end_reason})")
            # Speech starts while the new state is being stored: the caller
            # should not wait for a disk write to hear us.
            stored = Deferred.fromCoroutine(self._set_state(live, CallState.SPEAKING))
            speaking = maybeDeferred(self._provider.speak, live.record, text)
            try:
                await stored
                playback = await speaking
            except Exception as e:
                error = _provider_error(e)
                self.hub.publish(
                    notices.Problem(
                        at=self._clock.seconds(),
                        call_id=live.call_id,
                        what="playback",
                        message=str(error),
                    )
                )
                if not live.record.ended:
                    await self._set_state(live, self._idle_state(live))
                raise error from None
            if live.record.ended:
                return playback
            record = live.record
            entries = []
            if playback.played:
                entry = TranscriptEntry(
                    self._clock.seconds(), BOT, playback.played, interrupted=not playback.complete
                )
                record = record.with_entry(entry)
                entries.append(entry)
            if initial and playback.complete:
                record = attrs.evolve(record, initial_message=None)
            await self._set_state(live, self._idle_state(live), record=record, entries=entries)
            return playback
        finally:
            live.speech.release()

    def _idle_state(self, live: LiveCall) -> CallState:
        if live.waiter is not None or live.record.mode == CONVERSATION:
            return CallState.LISTENING
        return CallState.ACTIVE

    # -- what the conversation asks of the manager (voicecalld.voice.turns.Speaker) --

    def interrupt(self, live: LiveCall) -> None:
        """Cut the bot off on this call, now."""
        self._provider.interrupt(live.record)

    def say(self, live: LiveCall, text: str) -> Deferred:
        """Say C{text} on the call, after whatever is being said."""
        return Deferred.fromCoroutine(self._say(live, text))

    def remember_turn(self, live: LiveCall, timing: TurnTiming) -> Deferred:
        """Store the latest turn's latency stages on the call record."""
        record = live.record.with_metadata(
            lastTurnLatency=timing.stages(),
            turnCount=int(live.record.metadata.get("turnCount", 0)) + 1,
        )
        return Deferred.fromCoroutine(self._commit(live, record))

    # -- ending ------------------------------------------------------------

    def _arm_timers(self, live: LiveCall) -> None:
        """Start the timers a call needs in its current state (with remaining time)."""
        record = live.record
        now = self._clock.seconds()
        if record.ended:
            return
        if record.answered_at is None:
            live.cancel_timer("max-duration")
            if record.direction == OUTBOUND and record.provider_call_id is not None:
                remaining = self.settings.ring_timeout_ms / 1000.0 - (now - record.started_at)
                live.set_timer(
                    "ring",
                    remaining,
                    self._hang_up_later,
                    live,
                    CallState.NO_ANSWER,
                    f"not answered within {self.settings.ring_timeout_ms} ms",
                )
        else:
            live.cancel_timer("ring")
            remaining = self.settings.max_duration_seconds - (now - record.answered_at)
            live.set_timer(
                "max-duration",
                remaining,
                self._hang_up_later,
                live,
                CallState.TIMEOUT,
                f"maxDurationSeconds ({self.settings.max_duration_seconds}) reached",
            )

    def _hang_up_later(self, live: LiveCall, reason: CallState, detail: str) -> None:
        self._background(self._hang_up(live, reason, detail, retry=True))

    async def _hang_up(
        self, live: LiveCall, reason: CallState, detail: str | None, *, retry: bool
    ) -> None:
        if live.record.ended:
            return
        try:
            await maybeDeferred(self._provider.hangup, live.record, reason)
        except Exception as e:
            error = _provider_error(e)
            self.log.error(
                "hanging up {call_id} ({reason}) failed: {error}",
                call_id=live.call_id,
                reason=reason.value,
                error=error,
            )
            if not retry:
                raise error from None
            live.set_timer(
                "hangup-retry", HANGUP_RETRY_DELAY, self._hang_up_later, live, reason, detail
            )
            return
        await self._finish(live, reason, detail)

    async def _finish(
        self,
        live: LiveCall,
        reason: CallState,
        detail: str | None,
        processed: Iterable[tuple[str, float]] = (),
    ) -> None:
        if live.record.ended:
            return
        self._drop(live)
        record = await self._finish_record(live.record, reason, detail, processed, live)
        live.record = record

    async def _finish_record(
        self,
        record: CallRecord,
        reason: CallState,
        detail: str | None,
        processed: Iterable[tuple[str, float]] = (),
        live: LiveCall | None = None,
    ) -> CallRecord:
        if not reason.terminal:
            raise ValueError(f"{reason} is not an end state")
        previous = record.state
        record = attrs.evolve(
            record,
            state=reason,
            ended_at=self._clock.seconds(),
            end_reason=reason.value,
            end_detail=detail,
        )
        if live is not None:
            live.record = record
            if live.waiter is not None and not live.waiter.deferred.called:
                live.waiter.deferred.errback(CallEnded(f"Call ended: {reason.value}"))
        self._provider.forget(record)
        try:
            await self._store.commit(record, (), processed)
        except Exception as e:
            self.log.failure("storing the end of call {call_id} failed", call_id=record.call_id)
            raise StoreError(f"could not store the end of the call: {e}") from None
        now = self._clock.seconds()
        self.hub.publish(
            notices.StateChanged(
                at=now, call_id=record.call_id, state=reason.value, previous=previous.value
            )
        )
        self.hub.publish(
            notices.CallEnded(at=now, call_id=record.call_id, reason=reason.value, detail=detail)
        )
        self.log.info(
            "call {call_id} ended: {reason}{detail}",
            call_id=record.call_id,
            reason=reason.value,
            detail=f" ({detail})" if detail else "",
        )
        return record

    def _reap(self) -> Deferred:
        """Every 30 s: end unanswered calls stuck longer than staleCallReaperSeconds."""
        now = self._clock.seconds()
        limit = self.settings.stale_call_reaper_seconds
        work = [self._store.prune(now)]
        for key in [k for k, expiry in self._processed.items() if expiry <= now]:
            del self._processed[key]
        if limit > 0:
            for live in list(self._live.values()):
                record = live.record
                if (
                    record.answered_at is None
                    and record.state not in (CallState.SPEAKING, CallState.LISTENING)
                    and now - record.started_at > limit
                ):
                    work.append(
                        Deferred.fromCoroutine(
                            self._hang_up(
                                live,
                                CallState.TIMEOUT,
                                f"stale: no answer after {limit} s (staleCallReaperSeconds)",
                                retry=True,
                            )
                        )
                    )
        return DeferredList(work, consumeErrors=True)

    # -- plumbing --------------------------------------------------------------

    def _check_accepting(self) -> None:
        if not self._accepting:
            raise ShuttingDown("voicecalld is not taking calls (starting or stopping)")

    def _adopt(self, record: CallRecord) -> LiveCall:
        live = LiveCall(record, self._clock)
        self._live[record.call_id] = live
        if record.provider_call_id is not None:
            self._by_provider_id[record.provider_call_id] = record.call_id
        return live

    def _drop(self, live: LiveCall) -> None:
        live.cancel_all()
        self._live.pop(live.call_id, None)
        if live.record.provider_call_id is not None:
            self._by_provider_id.pop(live.record.provider_call_id, None)

    def _drop_waiter(self, live: LiveCall, waiter: Waiter) -> None:
        if live.waiter is waiter:
            live.waiter = None
            live.cancel_timer("transcript")

    def _turn_timed_out(self, live: LiveCall, waiter: Waiter, timeout_ms: int) -> None:
        if live.waiter is waiter and not waiter.deferred.called:
            waiter.deferred.errback(
                Timeout(f"Timed out waiting for transcript after {timeout_ms}ms")
            )

    def _find_live(self, call_id: str | None, provider_call_id: str | None) -> LiveCall | None:
        if call_id is not None and call_id in self._live:
            return self._live[call_id]
        if provider_call_id is not None:
            ours = self._by_provider_id.get(provider_call_id)
            if ours is not None:
                return self._live.get(ours)
        return None

    async def _connected(self, call_id: str | None) -> LiveCall:
        call_id = _clean(call_id)
        if call_id is None:
            raise InvalidArgument("callId required")
        live = self._find_live(call_id, call_id)
        if live is None:
            record = await self.get(call_id)
            raise CallEnded(f"Call has ended ({record.end_reason})")
        if live.record.state not in CONNECTED:
            raise NotConnected(f"Call not connected yet (state {live.record.state.value})")
        return live

    async def _set_state(
        self,
        live: LiveCall,
        target: CallState,
        processed: Iterable[tuple[str, float]] = (),
        *,
        record: CallRecord | None = None,
        entries: Iterable[TranscriptEntry] = (),
    ) -> None:
        record = record or live.record
        move = judge(record.state, target)
        if move is Move.ILLEGAL:
            self.log.debug(
                "call {call_id}: {frm} -> {to} ignored (not a forward move)",
                call_id=live.call_id,
                frm=record.state.value,
                to=target.value,
            )
            target = record.state
        elif target.terminal:
            raise ValueError("use _finish to end a call")
        await self._commit(live, attrs.evolve(record, state=target), entries, processed)

    async def _commit(
        self,
        live: LiveCall,
        record: CallRecord,
        entries: Iterable[TranscriptEntry] = (),
        processed: Iterable[tuple[str, float]] = (),
    ) -> None:
        previous = live.record
        live.record = record
        entries = tuple(entries)
        try:
            await self._store.commit(record, entries, processed)
        except Exception as e:
            self.log.failure("storing call {call_id} failed", call_id=record.call_id)
            raise StoreError(f"could not store the call: {e}") from None
        for entry in entries:
            self.hub.publish(
                notices.Said(
                    at=entry.at,
                    call_id=record.call_id,
                    speaker=entry.speaker,
                    text=entry.text,
                    entry_kind=entry.kind,
                    interrupted=entry.interrupted or None,
                )
            )
        if previous.state is not record.state:
            self.hub.publish(
                notices.StateChanged(
                    at=self._clock.seconds(),
                    call_id=record.call_id,
                    state=record.state.value,
                    previous=previous.state.value,
                )
            )

    def _publish_created(self, record: CallRecord) -> None:
        self.hub.publish(
            notices.CallCreated(
                at=record.started_at,
                call_id=record.call_id,
                direction=record.direction,
                mode=record.mode,
                from_number=record.from_number,
                to_number=record.to_number,
                provider=record.provider,
            )
        )

    def _remember(self, key: str | None) -> list[tuple[str, float]]:
        """Mark an event key processed; the (key, expiry) pairs to store with its change."""
        if key is None:
            return []
        expiry = self._clock.seconds() + PROCESSED_KEY_LIFETIME
        self._processed[key] = expiry
        return [(key, expiry)]

    def _background(self, work: Any) -> None:
        """Run a coroutine on its own; its failure is logged, not lost."""
        Deferred.fromCoroutine(work).addErrback(lambda f: self.log.failure("call work failed", f))


_HANDLERS = {
    ev.Ringing: CallManager._on_ringing,
    ev.Answered: CallManager._on_answered,
    ev.MediaConnected: CallManager._on_media_connected,
    ev.MediaDisconnected: CallManager._on_media_disconnected,
    ev.SpeechStarted: CallManager._on_speech_started,
    ev.SpeechStopped: CallManager._on_speech_stopped,
    ev.Speech: CallManager._on_speech,
    ev.Dtmf: CallManager._on_dtmf,
    ev.Ended: CallManager._on_ended,
    ev.Failed: CallManager._on_failed,
}


def _clean(value: str | None) -> str | None:
    """Trim a client string; an empty one counts as missing (as upstream)."""
    if value is None:
        return None
    value = value.strip()
    return value or None


def _check_text(text: str | None) -> None:
    if text is not None and len(text) > MAX_TEXT:
        raise InvalidArgument(f"message too long ({len(text)} characters; at most {MAX_TEXT})")


def _provider_error(e: BaseException) -> VoiceCallError:
    if isinstance(e, VoiceCallError):
        return e
    return ProviderError(f"{type(e).__name__}: {e}" if str(e) else type(e).__name__)
