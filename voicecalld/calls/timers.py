"""Named timers of one call: (re)started, cancelled and listed by name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime


class Timers:
    """
    One call's timers on the injected clock.  Setting a name that is running
    restarts it; a timer that fired is gone.  Deadlines that must survive a
    restart (ring, max duration) are computed from the stored record's
    timestamps by whoever arms them, so they keep their remaining time.
    """

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._running: dict[str, IDelayedCall] = {}

    def set(self, name: str, delay: float, fn: Callable[..., Any], *args: Any) -> None:
        """(Re)start the timer C{name}: C{fn(*args)} after C{delay} seconds."""
        self.cancel(name)

        def fire() -> None:
            self._running.pop(name, None)
            fn(*args)

        self._running[name] = self._clock.callLater(max(0.0, delay), fire)

    def cancel(self, name: str) -> None:
        """Stop the timer C{name} if it is running."""
        timer = self._running.pop(name, None)
        if timer is not None and timer.active():
            timer.cancel()

    def running(self, name: str) -> bool:
        """Whether the timer C{name} is running."""
        return name in self._running

    def cancel_all(self) -> None:
        """Stop every timer."""
        for name in list(self._running):
            self.cancel(name)
