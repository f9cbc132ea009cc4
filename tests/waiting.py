"""Bounded, event-loop-friendly waiting for trial tests on the real reactor."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred

POLL = 0.01


def wait_for(check: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Deferred:
    """Fire with C{check()}'s value once it is truthy (checked every 10 ms), within C{timeout}."""
    d: Deferred = Deferred()
    deadline = reactor.seconds() + timeout

    def poll() -> None:
        try:
            value = check()
        except Exception as e:
            d.errback(e)
            return
        if value:
            d.callback(value)
        elif reactor.seconds() > deadline:
            d.errback(AssertionError(f"{what} not met within {timeout} s"))
        else:
            reactor.callLater(POLL, poll)

    poll()
    return d
