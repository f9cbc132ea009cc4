"""A call store whose writes finish when the test says so."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail
from zope.interface import implementer

from voicecalld.store.interface import ICallStore
from voicecalld.store.sqlite import SQLiteCallStore, SynchronousRunner


@implementer(ICallStore)
class HeldStore:
    """
    A real (synchronous) SQLite store behind a gate.  While C{holding}, each
    commit waits in C{held} and reaches the file only when L{release} lets it
    through, in order; a held commit never released is a write lost to
    C{kill -9}.  L{fail_next} makes the next commits fail, as a full disk does.
    Reads answer at once from what reached the file.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._real = SQLiteCallStore(path, SynchronousRunner())
        self.holding = False
        self.held: list[tuple[Deferred, tuple[Any, ...]]] = []
        self.failing = 0
        self.commits = 0

    def open(self) -> Deferred:
        return self._real.open()

    def close(self) -> Deferred:
        return self._real.close()

    def commit(self, record, entries=(), processed=()) -> Deferred:
        if self.failing:
            self.failing -= 1
            return fail(OSError(28, "No space left on device"))
        args = (record, tuple(entries), tuple(processed))
        if not self.holding:
            return self._write(args)
        done: Deferred = Deferred()
        self.held.append((done, args))
        return done

    def _write(self, args: tuple[Any, ...]) -> Deferred:
        self.commits += 1
        return self._real.commit(*args)

    def release(self, count: int | None = None) -> None:
        """Let the oldest C{count} held commits (all by default) reach the file."""
        count = len(self.held) if count is None else count
        for _ in range(count):
            done, args = self.held.pop(0)
            self._write(args).chainDeferred(done)

    def release_all(self) -> None:
        """Stop holding, and let every held commit through (also those they cause)."""
        self.holding = False
        while self.held:
            self.release(1)

    def fail_next(self, count: int = 1) -> None:
        """The next C{count} commits fail with ENOSPC and write nothing."""
        self.failing = count

    def load(self, call_id):
        return self._real.load(call_id)

    def find(self, provider, provider_call_id):
        return self._real.find(provider, provider_call_id)

    def live_calls(self):
        return self._real.live_calls()

    def recent(self, limit):
        return self._real.recent(limit)

    def processed_keys(self, now):
        return self._real.processed_keys(now)

    def prune(self, now):
        return self._real.prune(now)

    def expire(self, before):
        return self._real.expire(before)

    def checkpoint(self):
        return self._real.checkpoint()

    def probe(self):
        return self._real.probe()

    def health(self):
        return self._real.health()

    def disk_usage(self):
        return self._real.disk_usage()
