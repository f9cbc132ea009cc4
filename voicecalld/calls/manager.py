"""
The call manager: the public face of the call core, as the control socket
and the providers see it.

Clients ask it to place, speak on, listen on and end calls; providers tell it
what happened (L{voicecalld.values.events}).  It holds no call logic of its
own: arguments and budgets are L{Admission}'s, the call's life is
L{Lifecycle}'s, who speaks next is the L{TurnEngine}'s, every change goes
through the L{Journal} (written, then applied, then published), the live
calls are in the L{LiveRegistry}, and a restart is the L{Restorer}'s.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall, deferLater
from twisted.logger import Logger

from voicecalld.calls import admission
from voicecalld.calls.admission import Admission
from voicecalld.calls.hub import NoticeHub
from voicecalld.calls.journal import Change, Journal
from voicecalld.calls.lifecycle import Lifecycle, LifeInput, Phase, Why, phase
from voicecalld.calls.live import LiveCall
from voicecalld.calls.registry import LiveRegistry
from voicecalld.calls.restore import Restorer
from voicecalld.calls.routes import greeting, reply_timeout, resolve, route_metadata
from voicecalld.calls.speaking import Mouth, idle_state, moved
from voicecalld.calls.tools import RealtimeTools
from voicecalld.calls.turns import BargeIn, TurnEngine
from voicecalld.config.model import VoiceCallSettings
from voicecalld.errors import (
    CallEnded,
    InvalidArgument,
    NotAllowed,
    NotConnected,
    ShuttingDown,
    StoreError,
    UnknownCall,
    provider_error,
)
from voicecalld.providers.interface import ICallDirectory, IProvider, ISimulator
from voicecalld.store.interface import ICallStore
from voicecalld.values import events as ev
from voicecalld.values import notices
from voicecalld.values.events import Accepted, Outcome, Refused
from voicecalld.values.playback import Playback
from voicecalld.values.record import (
    BOT,
    CONVERSATION,
    INBOUND,
    MACHINE_DETECTION,
    OUTBOUND,
    USER,
    CallRecord,
    TranscriptEntry,
)
from voicecalld.values.states import CONNECTED, CallState
from voicecalld.voice.replies import ReplyRouter

MOCK_FROM_NUMBER = "+15550000000"
REAPER_INTERVAL = 30.0
# How many waves of changes a stop may cause before the store closes anyway.
SETTLE_ROUNDS = 10

_LIFE_EVENTS = {
    ev.Ringing: LifeInput.RINGING,
    ev.Answered: LifeInput.ANSWERED,
    ev.MediaConnected: LifeInput.MEDIA_UP,
    ev.MediaDisconnected: LifeInput.MEDIA_DOWN,
    ev.Ended: LifeInput.ENDED,
    ev.Transferred: LifeInput.TRANSFERRED,
}


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
        self._registry = LiveRegistry()
        self._journal = Journal(store, self.hub, clock)
        self._admission = Admission(settings, self.hub, clock)
        streaming = settings.streaming
        self._turns = TurnEngine(
            journal=self._journal,
            mouth=Mouth(self._journal, provider, self.hub, clock),
            provider=provider,
            replies=self.replies,
            hub=self.hub,
            clock=clock,
            barge_in=BargeIn(
                streaming.barge_in_min_speech_ms / 1000.0, streaming.barge_in_min_words
            ),
            transcript_timeout_ms=settings.transcript_timeout_ms,
            new_id=new_id,
            first_words_said=lambda live, playback: self._lifecycle.first_words_said(
                live, playback
            ),
            reply_timeout=reply_timeout,
            realtime=provider.realtime,
        )
        self._lifecycle = Lifecycle(
            settings=settings,
            journal=self._journal,
            registry=self._registry,
            provider=provider,
            turns=self._turns,
            hub=self.hub,
            clock=clock,
        )
        self._tools = RealtimeTools(
            settings=settings.realtime,
            provider=provider,
            replies=self.replies,
            hang_up=lambda live: self._lifecycle.feed(
                live,
                LifeInput.HANG_UP,
                Why(CallState.HANGUP_BOT, "the realtime model ended the call"),
                client=True,
            ),
            hub=self.hub,
            clock=clock,
        )
        self._restorer = Restorer(
            journal=self._journal,
            registry=self._registry,
            provider=provider,
            lifecycle=self._lifecycle,
            turns=self._turns,
            clock=clock,
        )
        self._accepting = False
        self._draining = False
        self._reaper = LoopingCall(self._reap)
        self._reaper.clock = clock

    # -- lifecycle of the manager ----------------------------------------------

    async def restore(self) -> None:
        """Load what the store knows and bring back the calls that were live."""
        await self._journal.restore()
        if self.settings.outbound.max_calls_per_hour is not None:
            self._admission.seed(
                await self._store.recent(self.settings.outbound.max_calls_per_hour)
            )
        await self._restorer.restore(await self._store.live_calls())

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
        for live in self._registry:
            live.stopping = True
            live.timers.cancel_all()
            self._turns.abandon(live, ShuttingDown("voicecalld is stopping"))
            noting = self._turns.stopping(live)
            if noting is not None:
                noting.addErrback(
                    lambda f, call_id=live.call_id: self.log.failure(
                        "storing {call_id} at the stop", f, call_id=call_id
                    )
                )

    async def settle(self) -> None:
        """
        Wait until the changes the stop caused are stored (what the caller had
        heard when the streams closed), so the store can close with them.
        """
        for _ in range(SETTLE_ROUNDS):
            # One reactor turn first: a stored change may lead straight to the next.
            await deferLater(self._clock, 0, lambda: None)
            busy = [live for live in self._registry if live.changes.locked]
            if not busy:
                return
            for live in busy:
                await live.changes.acquire()
                live.changes.release()

    def begin_drain(self) -> None:
        """
        Take no new calls and let the live ones go on (C{shutdown.mode: drain}):
        outbound calls are refused with C{NOT_ALLOWED}, callers get the
        carrier's busy answer.
        """
        self._accepting = False
        self._draining = True

    async def end_all(self, reason: CallState, detail: str) -> int:
        """Hang up every live call for C{reason}; how many there were."""
        lives = list(self._registry)
        for live in lives:
            try:
                why = Why(reason, detail)
                await self._lifecycle.feed(live, LifeInput.HANG_UP, why, client=True)
            except Exception:
                self.log.failure("ending call {call_id} failed", call_id=live.record.call_id)
        return len(lives)

    # -- queries -----------------------------------------------------------

    @property
    def directory(self) -> ICallDirectory:
        """The live calls by the provider's id, for the provider (L{IProvider.start})."""
        return self._registry

    def live_calls(self) -> list[CallRecord]:
        """Every live call, oldest first."""
        return sorted((live.record for live in self._registry), key=lambda r: r.started_at)

    async def get(self, call_id: str) -> CallRecord:
        """A call by our id or the provider's, live or ended."""
        live = self._registry.find(call_id, call_id)
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
        request = self._admission.outbound(
            to, message, mode, session_key, dtmf_sequence, len(self._registry)
        )
        record = CallRecord(
            call_id=self._new_id(),
            provider=self._provider.name,
            direction=OUTBOUND,
            mode=request.mode,
            from_number=self.settings.from_number or MOCK_FROM_NUMBER,
            to_number=request.to,
            state=CallState.INITIATED,
            started_at=self._clock.seconds(),
            initial_message=request.message,
            session_key=request.session_key,
            metadata=self._dial_metadata(request.dtmf_sequence),
        )
        live = LiveCall(record, self._clock)
        await self._journal.create(live)
        self._registry.add(live)
        self._publish_created(record)
        try:
            provider_call_id = await self._provider.place_call(live.record)
        except Exception as e:
            error = provider_error(e)
            await self._lifecycle.finish(live, Why(CallState.FAILED, str(error)))
            raise error from None
        if live.record.ended:
            return live.record
        await self._adopt(live, provider_call_id)
        await self._lifecycle.feed(live, LifeInput.PLACED)
        self.log.info(
            "placed {mode} call {call_id} to {to} via {provider}",
            mode=record.mode,
            call_id=record.call_id,
            to=record.to_number,
            provider=record.provider,
            log_code="call.placed",
        )
        return live.record

    async def speak(self, call_id: str, text: str | None) -> Playback:
        """Say C{text} on a connected call; returns once it has been played."""
        live = await self._connected(call_id)
        return await self._turns.speak(live, admission.text(text))

    async def continue_call(self, call_id: str, text: str | None) -> str:
        """Say C{text}, then wait for the caller's next final words and return them."""
        live = await self._connected(call_id)
        return await self._turns.ask(live, admission.text(text))

    async def send_dtmf(self, call_id: str, digits: str | None) -> None:
        """Send touch tones on a connected call."""
        live = await self._connected(call_id)
        digits = admission.digits(digits)
        await live.speech.acquire()
        try:
            await maybeDeferred(self._provider.send_dtmf, live.record, digits)
        except Exception as e:
            raise provider_error(e) from None
        finally:
            live.speech.release()
        entry = TranscriptEntry(self._clock.seconds(), BOT, digits, kind="dtmf")
        await self._journal.change(live, lambda r: Change(r.with_entry(entry), (entry,)))

    async def transfer(
        self, call_id: str | None, to: str | None, message: str | None
    ) -> CallRecord:
        """
        Hand a connected call to a person at C{to} (a cold transfer): say
        C{message} first if given (and wait until it has been played), then
        ask the carrier; returns once the carrier took the request.  The call
        ends as C{transferred} when the carrier confirms (L{Lifecycle.transfer}).
        """
        live = await self._live(call_id)
        if live.record.state not in CONNECTED:
            raise NotAllowed(
                f"only a connected call can be transferred (state {live.record.state.value})"
            )
        if phase(live.record) is not Phase.CONNECTED:
            raise NotAllowed("who answered is not known yet (answering-machine detection)")
        if live.transferring is not None:
            raise NotAllowed(f"Call is already being transferred to {live.transferring.detail}")
        message = admission.clean(message)
        admission.check_length(message)
        to = self._admission.transfer(live.call_id, to)
        if message is not None:
            await self._turns.speak(live, message)
        if live.record.ended:
            raise CallEnded(f"Call has ended ({live.record.end_reason})")
        if live.transferring is not None:
            raise NotAllowed(f"Call is already being transferred to {live.transferring.detail}")
        await self._lifecycle.feed(
            live, LifeInput.TRANSFER, Why(CallState.TRANSFERRED, to), client=True
        )
        return live.record

    async def end(self, call_id: str) -> CallRecord:
        """
        Hang up; ending a call that already ended succeeds and changes nothing.
        A call whose end could not be stored stays live, and ending it again
        really tries again.
        """
        live = self._registry.find(call_id, call_id)
        if live is None:
            return await self.get(call_id)
        if live.end_pending is not None:
            await self._lifecycle.finish(live, live.end_pending[0])
        else:
            await self._lifecycle.feed(
                live, LifeInput.HANG_UP, Why(CallState.HANGUP_BOT), client=True
            )
        return live.record

    async def simulate(
        self,
        action: str,
        call_id: str | None = None,
        from_number: str | None = None,
        to_number: str | None = None,
        text: str | None = None,
        digits: str | None = None,
    ) -> str | None:
        """
        Play the caller on the mock provider: C{inbound} rings one of our
        numbers (returns the new call id); C{say}, C{dtmf} and C{hangup} act
        on a live call.
        """
        provider = self._provider
        if not ISimulator.providedBy(provider):
            raise NotAllowed(
                f"simulate works only with the mock provider (this daemon runs {provider.name})"
            )
        if action == "inbound":
            if not from_number:
                raise InvalidArgument("from required")
            to_number = to_number or self.settings.from_number or MOCK_FROM_NUMBER
            return await provider.simulate_inbound(from_number, to_number)
        acts = {
            "say": ("text", text, provider.simulate_say),
            "dtmf": ("digits", digits, provider.simulate_dtmf),
            "hangup": (None, None, provider.simulate_hangup),
        }
        if action not in acts:
            raise InvalidArgument(
                f"unknown simulate action {action!r} (inbound, say, dtmf, hangup)"
            )
        call_id = admission.clean(call_id)
        if call_id is None:
            raise InvalidArgument("callId required")
        name, value, act = acts[action]
        if name is not None and not value:
            raise InvalidArgument(f"{name} required")
        live = self._registry.find(call_id, call_id)
        if live is None:
            record = await self.get(call_id)
            raise CallEnded(f"Call has ended ({record.end_reason})")
        if name is None:
            await act(live.record)
        else:
            await act(live.record, value)
        return live.call_id

    # -- events from providers ---------------------------------------------

    def handle_event(self, event: ev.CallEvent) -> Deferred:
        """Apply one provider event; fires (with an outcome) once it is durable."""
        return Deferred.fromCoroutine(self._handle(event))

    async def _handle(self, event: ev.CallEvent) -> Any:
        key = event.dedupe_key
        await self._journal.settled(key)
        if self._journal.seen(key):
            self.log.debug("duplicate event {key} ignored", key=key)
            return Outcome.DUPLICATE
        done = self._journal.applying(key)
        try:
            return await self._apply(event, (key,))
        finally:
            done()

    async def _apply(self, event: ev.CallEvent, keys: tuple[str | None, ...]) -> Any:
        live = self._registry.find(event.call_id, event.provider_call_id)
        if live is None:
            if isinstance(event, ev.InboundCall):
                return await self._inbound(event, keys)
            self.log.debug("event {event!r} for no live call, ignored", event=event)
            return Outcome.IGNORED
        if event.provider_call_id and live.record.provider_call_id != event.provider_call_id:
            await self._adopt(live, event.provider_call_id)
        symbol = _LIFE_EVENTS.get(type(event))
        if symbol is not None:
            why = Why(event.reason, event.detail) if isinstance(event, ev.Ended) else None
            if isinstance(event, ev.Transferred):
                why = Why(CallState.TRANSFERRED, event.detail)
            await self._lifecycle.feed(live, symbol, why, keys)
            return Outcome.APPLIED
        if live.transferring is not None and not isinstance(event, ev.Failed):
            # handed over: what the caller says now is for the person, not us
            await self._journal.change(live, lambda r: None, keys)
            return Outcome.IGNORED
        if isinstance(event, ev.Speech):
            await self._speech(live, event, keys)
        elif isinstance(event, ev.SpeechStarted):
            await self._journal.change(live, lambda r: None, keys)
            self._turns.caller_started(live)
        elif isinstance(event, ev.SpeechStopped):
            await self._journal.change(live, lambda r: None, keys)
            self._turns.caller_stopped(live)
        elif isinstance(event, ev.Dtmf):
            entry = TranscriptEntry(self._clock.seconds(), USER, event.digits, kind="dtmf")
            await self._journal.change(live, lambda r: Change(r.with_entry(entry), (entry,)), keys)
        elif isinstance(event, ev.Failed):
            await self._failed(live, event, keys)
        elif isinstance(event, ev.MachineDetected):
            await self._lifecycle.detected(live, event, keys)
        elif isinstance(event, ev.ModelSpeaking):
            await self._journal.change(live, lambda r: moved(r, CallState.SPEAKING), keys)
        elif isinstance(event, ev.ModelSpeech):
            await self._model_speech(live, event, keys)
        elif isinstance(event, ev.ToolCall):
            await self._journal.change(live, lambda r: None, keys)
            self._tools.handle(live, event)
        else:
            await self._journal.change(live, lambda r: None, keys)
            return Outcome.IGNORED
        return Outcome.APPLIED

    async def _speech(self, live: LiveCall, event: ev.Speech, keys: tuple) -> None:
        text = event.text.strip()
        if not event.final:
            await self._journal.change(live, lambda r: None, keys)
            self.hub.publish(
                notices.PartialSpeech(at=self._clock.seconds(), call_id=live.call_id, text=text)
            )
            self._turns.partial(live, text)
            return
        if not text:
            await self._journal.change(live, lambda r: None, keys)
            return
        heard_at = self._clock.seconds()
        entry = TranscriptEntry(heard_at, USER, text)
        await self._journal.change(live, lambda r: Change(r.with_entry(entry), (entry,)), keys)
        if not self._turns.expects(live, event.turn_token):
            self.log.debug(
                "words on {call_id} answer an earlier turn ({token}); kept, not answered",
                call_id=live.call_id,
                token=event.turn_token,
                log_code="turn.stale_speech",
            )
            return
        self._turns.final(live, text, heard_at)

    async def _model_speech(self, live: LiveCall, event: ev.ModelSpeech, keys: tuple) -> None:
        """A realtime model's own line: stored (with its turn's latency), then published."""
        text = event.text.strip()
        entry = TranscriptEntry(event.at, BOT, text, interrupted=event.interrupted)
        stages = event.stages

        def said(record: CallRecord) -> Change | None:
            record = moved(record, idle_state(live))
            if stages:
                record = record.with_metadata(
                    lastTurnLatency=stages, turnCount=int(record.metadata.get("turnCount", 0)) + 1
                )
            if not text:
                return Change(record, ())
            return Change(record.with_entry(entry), (entry,))

        await self._journal.change(live, said, keys)
        if stages:
            turn = live.turn.heard if live.turn is not None else 0
            self.hub.publish(
                notices.TurnMeasured(
                    at=self._clock.seconds(), call_id=live.call_id, turn=turn, stages=stages
                )
            )

    async def _failed(self, live: LiveCall, event: ev.Failed, keys: tuple) -> None:
        await self._journal.change(live, lambda r: None, keys)
        if event.retryable:
            self.hub.publish(
                notices.Problem(
                    at=self._clock.seconds(),
                    call_id=live.call_id,
                    what="provider",
                    message=event.message,
                )
            )
            return
        await self._lifecycle.feed(live, LifeInput.FAILED, Why(CallState.ERROR, event.message))

    async def _inbound(self, event: ev.InboundCall, keys: tuple) -> Any:
        decision = self._admission.inbound(
            event.from_number,
            event.to_number,
            len(self._registry),
            self._accepting,
            stopping="voicecalld is draining" if self._draining else "voicecalld is stopping",
        )
        if not decision.allowed:
            refusal = ev.Refusal.BUSY if self._draining else ev.Refusal.REJECTED
            return await self._reject(event, decision.reason, refusal)
        route = resolve(self.settings, event.to_number)
        record = CallRecord(
            call_id=event.call_id or self._new_id(),
            provider=self._provider.name,
            direction=INBOUND,
            mode=CONVERSATION,
            from_number=event.from_number,
            to_number=event.to_number,
            state=CallState.RINGING,
            started_at=self._clock.seconds(),
            provider_call_id=event.provider_call_id,
            initial_message=greeting(self.settings, route),
            metadata=route_metadata(route),
        )
        live = LiveCall(record, self._clock)
        try:
            await self._journal.create(live, keys)
        except StoreError as e:
            # A full disk, say: the caller hears busy rather than a call we cannot keep.
            return await self._reject(event, e.message)
        self._registry.add(live)
        self._publish_created(record)
        self._lifecycle.arm_timers(live)
        try:
            await maybeDeferred(self._provider.answer, live.record)
        except Exception as e:
            await self._lifecycle.finish(live, Why(CallState.FAILED, f"answering failed: {e}"))
            return Refused(f"answering failed: {e}")
        return Accepted(record.call_id)

    # -- plumbing --------------------------------------------------------------

    async def _reject(
        self, event: ev.InboundCall, reason: str, refusal: ev.Refusal = ev.Refusal.REJECTED
    ) -> Refused:
        try:
            await maybeDeferred(self._provider.reject, event, refusal)
        except Exception:
            self.log.failure("rejecting inbound call {pid} failed", pid=event.provider_call_id)
        return Refused(reason, refusal)

    def _reap(self) -> Deferred:
        """Every 30 s: forget expired event keys; end calls unanswered for too long."""
        now = self._clock.seconds()
        limit = self.settings.stale_call_reaper_seconds
        work = [Deferred.fromCoroutine(self._journal.forget_keys(now))]
        if limit > 0:
            why = Why(
                CallState.TIMEOUT, f"stale: no answer after {limit} s (staleCallReaperSeconds)"
            )
            for live in self._registry:
                record = live.record
                if record.answered_at is None and now - record.started_at > limit:
                    work.append(
                        Deferred.fromCoroutine(self._lifecycle.feed(live, LifeInput.STALE, why))
                    )
        return DeferredList(work, consumeErrors=True)

    def _dial_metadata(self, dtmf_sequence: str | None) -> dict[str, Any]:
        """
        What an outbound call's record starts with: its digits, and whether it
        is dialled with answering-machine detection (Twilio ignores detection
        on a call that sends digits, so such a call is dialled without it).
        """
        if dtmf_sequence:
            return {"dtmfSequence": dtmf_sequence}
        if self.settings.outbound.machine_detection:
            return {MACHINE_DETECTION: True}
        return {}

    def _check_accepting(self) -> None:
        if self._draining:
            raise NotAllowed(
                "voicecalld is draining: it finishes its live calls and takes no new ones"
            )
        if not self._accepting:
            raise ShuttingDown("voicecalld is not taking calls (starting or stopping)")

    async def _adopt(self, live: LiveCall, provider_call_id: str) -> None:
        """The provider's id of the call, stored, then used to find it."""
        await self._journal.change(
            live, lambda r: attrs.evolve(r, provider_call_id=provider_call_id)
        )
        self._registry.index(live)

    async def _live(self, call_id: str | None) -> LiveCall:
        """The live call C{call_id}; fails when it is missing, unknown or over."""
        call_id = admission.clean(call_id)
        if call_id is None:
            raise InvalidArgument("callId required")
        live = self._registry.find(call_id, call_id)
        if live is None:
            record = await self.get(call_id)
            raise CallEnded(f"Call has ended ({record.end_reason})")
        return live

    async def _connected(self, call_id: str | None) -> LiveCall:
        live = await self._live(call_id)
        if live.record.state not in CONNECTED:
            raise NotConnected(f"Call not connected yet (state {live.record.state.value})")
        if live.transferring is not None:
            raise NotAllowed(f"Call is being transferred to {live.transferring.detail}")
        return live

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
