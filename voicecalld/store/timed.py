"""A call store that reports how long each commit took, and whether it failed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from zope.interface import implementer

from voicecalld.store.interface import ICallStore


@implementer(ICallStore)
class TimedStore:
    """
    Wraps a call store: each commit's duration (on C{clock}) and its error
    (None when it succeeded) go to C{observe}; everything else is the inner
    store's, unchanged.
    """

    def __init__(
        self,
        inner: Any,
        clock: IReactorTime,
        observe: Callable[[float, BaseException | None], object],
    ) -> None:
        self.inner = inner
        self._clock = clock
        self._observe = observe

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def commit(self, record, entries=(), processed=()) -> Deferred:
        started = self._clock.seconds()

        def done(result: Any) -> Any:
            error = result.value if isinstance(result, Failure) else None
            self._observe(self._clock.seconds() - started, error)
            return result

        return self.inner.commit(record, entries, processed).addBoth(done)
