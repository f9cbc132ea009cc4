"""
Caller audio back into order, for carriers that number their media frames
but do not promise to deliver them in order.

A few frames are held at most (L{DEPTH}): a frame that is next is passed on
at once, with any held ones that follow it; one that arrives early waits
until what comes before it arrives or the hold is full, when the gap is
given up.  Frames older than what was passed on, and repeats, are dropped.
"""

from __future__ import annotations

from collections.abc import Callable

DEPTH = 3


class Reorder:
    """Puts numbered frames back in order before handing them to C{deliver}."""

    def __init__(self, deliver: Callable[[bytes], None], depth: int = DEPTH) -> None:
        self._deliver = deliver
        self._depth = depth
        self._next: int | None = None
        self._held: dict[int, bytes] = {}

    def frame(self, number: int, audio: bytes) -> None:
        """Frame C{number} arrived."""
        if self._next is not None and number < self._next:
            return
        self._held.setdefault(number, audio)
        if self._next is None and len(self._held) <= self._depth:
            return
        if self._next not in self._held and len(self._held) > self._depth:
            self._next = min(self._held)
        self._drain()

    def flush(self) -> None:
        """Pass on everything held, in order (the stream is ending)."""
        for number in sorted(self._held):
            self._deliver(self._held[number])
            self._next = number + 1
        self._held.clear()

    def _drain(self) -> None:
        while self._next in self._held:
            self._deliver(self._held.pop(self._next))
            self._next += 1
