"""
Retention: ended calls are kept C{retentionDays}, then deleted.

Every L{SWEEP_SECONDS} (and once at start) a sweep deletes ended calls
older than the retention, with their transcripts, and expired processed
event keys, each in batches of a few hundred per transaction on the store's
own thread, so that calls' writes are never held up for long; then it
checkpoints and truncates the write-ahead log.  While the store reports a
full disk, each sweep also tries a small write, so that the store notices
when space has returned even when no call is placed.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from voicecalld.store.interface import ICallStore
from voicecalld.store.sqlite import StoreFull

DAY = 24 * 3600.0
SWEEP_SECONDS = 300.0


class Retention:
    """Sweeps an L{ICallStore} on a timer; see the module docstring."""

    log = Logger()

    def __init__(
        self,
        store: ICallStore,
        clock: IReactorTime,
        retention_days: int,
        interval: float = SWEEP_SECONDS,
    ) -> None:
        self._store = store
        self._clock = clock
        self._days = retention_days
        self._interval = interval
        self._loop: LoopingCall | None = None
        self._running: Deferred | None = None

    def start(self) -> None:
        """Sweep now and then every interval."""
        loop = LoopingCall(self._tick)
        loop.clock = self._clock
        self._loop = loop
        loop.start(self._interval, now=True)

    def stop(self) -> Deferred:
        """Stop the timer; fires once a sweep under way has finished."""
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        done: Deferred = Deferred()
        if self._running is None:
            done.callback(None)
        else:
            self._running.addBoth(lambda _: done.callback(None))
        return done

    def _tick(self) -> None:
        if self._running is not None:
            return
        d = Deferred.fromCoroutine(self.sweep())
        self._running = d
        d.addErrback(self._failed)
        d.addBoth(self._finished)

    def _finished(self, _: object) -> None:
        self._running = None

    def _failed(self, failure: Failure) -> None:
        if failure.check(StoreFull):
            return  # the store logged it once, and says so in health()
        self.log.failure(
            "retention sweep of the call store failed", failure, log_code="store.sweep_failed"
        )

    async def sweep(self) -> int:
        """One sweep; returns how many calls it deleted."""
        now = self._clock.seconds()
        removed = 0
        if self._days > 0:
            removed = await self._store.expire(now - self._days * DAY)
            if removed:
                self.log.info(
                    "retention: deleted {count} ended calls older than {days} days (retentionDays)",
                    count=removed,
                    days=self._days,
                    log_code="store.expired",
                )
        await self._store.prune(now)
        await self._store.checkpoint()
        if not self._store.health().ok:
            try:
                await self._store.probe()
            except Exception:
                pass  # still full: the store logged it once and says so in health()
        return removed
