"""
The flood summary: the same coded event from the same peer is written at
most C{burst} times per window; the rest are counted and summed up in one
line when the window closes ("… and 8,990 more webhook.bad_signature from
203.0.113.9 in the last 10 s").

Only events that carry both a C{log_code} and a C{peer} are held back: those
are the rejections a hostile or broken peer can cause at will.  Everything
else passes untouched, and so does any event logged off the reactor thread
(the windows' timers are the reactor's).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import ILogObserver, LogLevel
from twisted.python import threadable
from zope.interface import implementer

SUMMARY_CODE = "log.suppressed"
# Keys beyond this many share one bucket per code, so a spoofed-address
# flood cannot grow the table without bound.
MAX_KEYS = 4096
OTHER_PEERS = "other peers"


def _on_reactor_thread() -> bool:
    # Before the reactor has run, no I/O thread is registered: that is this one.
    return threadable.ioThread in (None, threadable.getThreadID())


class _Window:
    __slots__ = ("held", "namespace", "passed", "started", "timer")

    def __init__(self, started: float, namespace: str | None) -> None:
        self.started = started
        self.passed = 0
        self.held = 0
        self.timer: IDelayedCall | None = None
        self.namespace = namespace


@implementer(ILogObserver)
class FloodFilter:
    """
    Passes events on to C{observer}, holding back repeats per (code, peer).

    @param clock: for the windows (a C{Clock} in tests).
    @param window: seconds a window lasts, from its first event.
    @param burst: events of one key written per window before counting starts.
    """

    def __init__(
        self,
        observer: ILogObserver,
        clock: IReactorTime,
        *,
        window: float = 10.0,
        burst: int = 5,
        max_keys: int = MAX_KEYS,
    ) -> None:
        self._observer = observer
        self._clock = clock
        self._window = window
        self._burst = burst
        self._max_keys = max_keys
        self._windows: dict[tuple[str, str], _Window] = {}

    def __call__(self, event: Mapping[str, Any]) -> None:
        code = event.get("log_code")
        peer = event.get("peer")
        if not code or peer is None or code == SUMMARY_CODE or not _on_reactor_thread():
            self._observer(event)
            return
        key = (str(code), str(peer))
        if key not in self._windows and len(self._windows) >= self._max_keys:
            key = (str(code), OTHER_PEERS)
        now = self._clock.seconds()
        window = self._windows.get(key)
        if window is None or now >= window.started + self._window:
            if window is not None:
                self._close(key)
            window = self._windows[key] = _Window(now, event.get("log_namespace"))
        if window.passed < self._burst:
            window.passed += 1
            self._observer(event)
            return
        window.held += 1
        if window.timer is None:
            delay = max(0.0, window.started + self._window - now)
            window.timer = self._clock.callLater(delay, self._close, key)

    def _close(self, key: tuple[str, str]) -> None:
        window = self._windows.pop(key, None)
        if window is None:
            return
        if window.timer is not None and window.timer.active():
            window.timer.cancel()
        if window.held:
            code, peer = key
            self._observer(
                {
                    "log_level": LogLevel.warn,
                    "log_namespace": "voicecalld.logs.flood",
                    "log_time": self._clock.seconds(),
                    "log_format": "… and {count:,} more {suppressed_code} from {peer}"
                    " in the last {seconds:g} s",
                    "log_code": SUMMARY_CODE,
                    "suppressed_code": code,
                    "peer": peer,
                    "count": window.held,
                    "seconds": self._window,
                    "source_namespace": window.namespace,
                }
            )

    def flush(self) -> None:
        """Write every pending summary now (at shutdown)."""
        for key in list(self._windows):
            self._close(key)
