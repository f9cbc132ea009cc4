"""
A call manager on a Clock, a recording provider and a real SQLite store
whose writes finish at once, or when the test releases them (L{HeldStore}).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from tests.fakes.provider import RecordingProvider
from tests.fakes.store import HeldStore
from voicecalld.calls.hub import NoticeHub
from voicecalld.calls.manager import CallManager
from voicecalld.config import parse_config
from voicecalld.values.events import Answered


def deferred(value: Any) -> Deferred:
    """A Deferred for a coroutine (or a Deferred as it is)."""
    return value if isinstance(value, Deferred) else Deferred.fromCoroutine(value)


class Harness:
    """Everything a manager test needs, wired together."""

    def __init__(
        self,
        test: TestCase,
        config: dict[str, Any] | None = None,
        path: str | None = None,
        provider: RecordingProvider | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.test = test
        if clock is None:
            clock = Clock()
            clock.advance(1_800_000_000)
        self.clock = clock
        self.path = path or test.mktemp() + ".sqlite3"
        self.store = HeldStore(self.path)
        test.successResultOf(self.store.open())
        self.provider = provider or RecordingProvider()
        self.config = config or {}
        self.settings = parse_config(self.config, None, {}).settings
        self.hub = NoticeHub()
        self.notices: list[Any] = []
        self.hub.listen(self.notices.append)
        if not hasattr(test, "_call_ids"):
            test._call_ids = iter(f"call-{n}" for n in range(1, 10_000))
        ids = test._call_ids
        self.manager = CallManager(
            settings=self.settings,
            store=self.store,
            provider=self.provider,
            clock=self.clock,
            hub=self.hub,
            new_id=lambda: next(ids),
        )
        self.provider.start(self.manager.handle_event, self.manager.directory)
        self.ok(self.manager.restore())
        self.manager.start()

    def ok(self, work: Any) -> Any:
        """The result of work that must already have succeeded."""
        return self.test.successResultOf(deferred(work))

    def error(self, work: Any, kind: type[Exception]) -> Exception:
        """The exception of work that must already have failed with C{kind}."""
        return self.test.failureResultOf(deferred(work), kind).value

    def stored(self, call_id: str) -> Any:
        """The record as the store has it now."""
        return self.ok(self.store.load(call_id))

    def kinds(self) -> list[str]:
        """The notice kinds published so far."""
        return [n.kind for n in self.notices]

    def restart(self, provider: RecordingProvider | None = None) -> Harness:
        """A new manager over the same store file, as after a crash."""
        self.manager.stop()
        return Harness(self.test, self.config, self.path, provider, self.clock)

    def answered_call(self, mode: str = "conversation", message: str | None = "Hello") -> str:
        """Place a call and have it answered with its first words played."""
        self.provider.instant_speech = True
        record = self.ok(self.manager.initiate("+15551234567", message, mode))
        self.ok(self.provider.emit(Answered(call_id=record.call_id)))
        return record.call_id
