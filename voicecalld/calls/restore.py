"""
Restore: the calls that were live when voicecalld stopped, checked with the
provider and either driven again (with their remaining time) or ended with
a reason saying why.
"""

from __future__ import annotations

import attrs
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from voicecalld.calls.journal import Journal
from voicecalld.calls.lifecycle import Lifecycle, Phase, Why, phase
from voicecalld.calls.live import LiveCall
from voicecalld.calls.registry import LiveRegistry
from voicecalld.calls.turns import TurnEngine
from voicecalld.errors import StoreError
from voicecalld.providers.interface import IProvider
from voicecalld.values.playback import CallStatus, Liveness
from voicecalld.values.record import CallRecord
from voicecalld.values.states import CONNECTED, CallState

RESTORE_STATUS_TIMEOUT = 10.0


class Restorer:
    """Brings stored live calls back; see the module docstring."""

    log = Logger()

    def __init__(
        self,
        *,
        journal: Journal,
        registry: LiveRegistry,
        provider: IProvider,
        lifecycle: Lifecycle,
        turns: TurnEngine,
        clock: IReactorTime,
    ) -> None:
        self._journal = journal
        self._registry = registry
        self._provider = provider
        self._lifecycle = lifecycle
        self._turns = turns
        self._clock = clock

    async def restore(self, records: list[CallRecord]) -> None:
        """Check every record with the provider, all at once."""
        checks = [Deferred.fromCoroutine(self._one(r)) for r in records]
        await DeferredList(checks, consumeErrors=True)
        self.log.info(
            "restored {live} live call(s) of {seen} found in {path}",
            live=len(self._registry),
            seen=len(records),
            path=self._journal.path,
            log_code="store.restored",
        )

    async def _one(self, record: CallRecord) -> None:
        live = LiveCall(record, self._clock)
        if record.provider != self._provider.name:
            detail = f"placed through {record.provider}, but voicecalld now runs"
            await self._end(live, CallState.ERROR, f"{detail} {self._provider.name}")
            return
        if record.provider_call_id is None:
            await self._end(live, CallState.FAILED, "voicecalld stopped before the call was placed")
            return
        handed = record.metadata.get("transferredTo")
        if handed:
            # The carrier took its transfer before the stop: the caller is the person's now.
            await self._end(live, CallState.TRANSFERRED, f"{handed} (handed over before a restart)")
            return
        status = await self._status(record)
        if status.liveness is Liveness.ENDED:
            reason = status.end_reason or CallState.COMPLETED
            await self._end(live, reason, "ended while voicecalld was down")
            return
        if status.liveness is Liveness.UNKNOWN_CALL:
            detail = "the provider no longer knows this call (found after a restart)"
            await self._end(live, CallState.ERROR, detail)
            return
        if status.liveness is Liveness.UNREACHABLE:
            self.log.warn(
                "could not ask {provider} about restored call {call_id}: {detail}; keeping it live",
                provider=record.provider,
                call_id=record.call_id,
                detail=status.detail,
                log_code="store.restore_unchecked",
            )
        self._registry.add(live)
        if record.state in (CallState.SPEAKING, CallState.LISTENING):
            await self._journal.change(live, lambda r: attrs.evolve(r, state=CallState.ACTIVE))
        self._lifecycle.arm_timers(live)
        if live.record.state in CONNECTED and phase(live.record) is Phase.CONNECTED:
            self._turns.attach(live)
            if not self._provider.waits_for_media(live.record):
                self._turns.greet(live)
            else:
                # A streamed call goes on when the carrier reconnects its stream.
                live.resuming = True

    async def _end(self, live: LiveCall, reason: CallState, detail: str) -> None:
        try:
            await self._lifecycle.finish(live, Why(reason, detail))
        except StoreError:
            self._registry.add(live)

    async def _status(self, record: CallRecord) -> CallStatus:
        d = maybeDeferred(self._provider.call_status, record)
        d.addTimeout(RESTORE_STATUS_TIMEOUT, self._clock)
        try:
            return await d
        except Exception as e:
            return CallStatus(Liveness.UNREACHABLE, detail=str(e) or type(e).__name__)
