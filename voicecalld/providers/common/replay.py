"""
The webhook replay cache: a carrier that retries a request it already got
an answer to is given the same answer again, and nothing is done twice.
"""

from __future__ import annotations

from collections import OrderedDict

from attrs import frozen
from twisted.internet.interfaces import IReactorTime

REPLAY_MEMORY = 10 * 60.0
REPLAY_ENTRIES = 10_000


@frozen
class Answer:
    """A webhook's HTTP answer: status, body and content type (None: no header)."""

    code: int
    body: bytes = b""
    content_type: bytes | None = None


class ReplayCache:
    """Answers by replay key, each kept for L{REPLAY_MEMORY} seconds, the newest few thousand."""

    def __init__(
        self,
        clock: IReactorTime,
        memory: float = REPLAY_MEMORY,
        entries: int = REPLAY_ENTRIES,
    ) -> None:
        self._clock = clock
        self._memory = memory
        self._entries = entries
        self._answers: OrderedDict[str, tuple[float, Answer]] = OrderedDict()

    def remembered(self, key: str) -> Answer | None:
        """The answer given to C{key} within the memory, if any."""
        now = self._clock.seconds()
        while self._answers:
            oldest = next(iter(self._answers))
            if self._answers[oldest][0] > now - self._memory:
                break
            del self._answers[oldest]
        entry = self._answers.get(key)
        return entry[1] if entry else None

    def remember(self, key: str, answer: Answer) -> None:
        """Keep C{answer} for C{key}."""
        self._answers[key] = (self._clock.seconds(), answer)
        while len(self._answers) > self._entries:
            self._answers.popitem(last=False)
