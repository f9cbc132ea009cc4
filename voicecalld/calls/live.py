"""The run-time side of a live call: its timers, its waiting turn, its speech queue."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, DeferredLock
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from voicecalld.values.record import CallRecord


class Waiter:
    """A C{continue} waiting for the caller's next final words."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.deferred: Deferred[str] = Deferred()


class LiveCall:
    """
    One call the manager is driving.  The manager alone changes C{record};
    everything here lives only in memory and is rebuilt on restart.
    """

    def __init__(self, record: CallRecord, clock: IReactorTime) -> None:
        self.record = record
        self._clock = clock
        self._timers: dict[str, IDelayedCall] = {}
        self.waiter: Waiter | None = None
        self.speech = DeferredLock()
        self.speaking_initial = False
        self.caller_turns = 0
        self.speech_ended_at: float | None = None

    @property
    def call_id(self) -> str:
        """Our id of the call."""
        return self.record.call_id

    def set_timer(self, name: str, delay: float, fn: Callable[..., Any], *args: Any) -> None:
        """(Re)start the timer C{name}: C{fn(*args)} after C{delay} seconds."""
        self.cancel_timer(name)

        def fire() -> None:
            self._timers.pop(name, None)
            fn(*args)

        self._timers[name] = self._clock.callLater(max(0.0, delay), fire)

    def cancel_timer(self, name: str) -> None:
        """Stop the timer C{name} if it is running."""
        timer = self._timers.pop(name, None)
        if timer is not None and timer.active():
            timer.cancel()

    def has_timer(self, name: str) -> bool:
        """Whether the timer C{name} is running."""
        return name in self._timers

    def cancel_all(self) -> None:
        """Stop every timer of this call."""
        for name in list(self._timers):
            self.cancel_timer(name)
