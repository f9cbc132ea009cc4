"""Fan-out of notices to whoever listens (the control protocol's subscribers)."""

from __future__ import annotations

from collections.abc import Callable

from twisted.logger import Logger

from voicecalld.values.notices import Notice

Listener = Callable[[Notice], None]


class NoticeHub:
    """Delivers each notice to every current listener, in order, synchronously."""

    log = Logger()

    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def listen(self, listener: Listener) -> Callable[[], None]:
        """Start delivering notices to C{listener}; returns a function that stops it."""
        self._listeners.append(listener)

        def stop() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return stop

    def publish(self, notice: Notice) -> None:
        """Give C{notice} to every listener; a failing listener does not stop the others."""
        for listener in list(self._listeners):
            try:
                listener(notice)
            except Exception:
                self.log.failure("notice listener failed on {kind}", kind=notice.kind)
