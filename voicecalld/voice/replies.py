"""
Who writes the daemon's side of a conversation.

A responder (the OpenClaw gateway shim, over the control socket) registers
itself; each caller turn in conversation mode asks it for a reply, bounded by
C{responseTimeoutMs}.  A realtime call's model may also consult it with a
question (C{openclaw_agent_consult}), bounded the same way but never by less
than L{MIN_CONSULT_TIMEOUT}, since a consult runs the whole agent.  With no
responder connected, the fallback (if any) answers instead.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import Interface

from voicecalld.errors import Timeout
from voicecalld.values.record import CallRecord

MIN_CONSULT_TIMEOUT = 60.0


class IResponder(Interface):
    """Writes replies for conversation turns.  Must not block the reactor."""

    def generate_reply(record):
        """
        Fire with the text to say after the caller's last words in
        C{record.transcript} (None or empty: say nothing).
        """

    def consult(record, question):
        """
        Fire with the agent's answer to C{question}, asked during the call
        C{record} (None or empty: no answer); fail when it cannot answer (a
        consult cancelled on the responder's side fails with L{Cancelled}).
        """

    def describe():
        """Who writes the replies, in a few words for the log (never a secret)."""


class ReplyRouter:
    """Routes reply requests to the newest connected responder, else the fallback."""

    log = Logger()

    def __init__(
        self, clock: IReactorTime, timeout: float, fallback: IResponder | None = None
    ) -> None:
        self._clock = clock
        self._timeout = timeout
        self._responders: list[IResponder] = []
        self.fallback = fallback

    @property
    def available(self) -> bool:
        """Whether anyone can write a reply now."""
        return bool(self._responders) or self.fallback is not None

    @property
    def connected(self) -> int:
        """How many responders are registered."""
        return len(self._responders)

    def register(self, responder: IResponder) -> Callable[[], None]:
        """Make C{responder} the one asked; returns a function that unregisters it."""
        self._responders.append(responder)
        self.log.info("responder registered ({count} connected)", count=len(self._responders))

        def unregister() -> None:
            if responder in self._responders:
                self._responders.remove(responder)
                self.log.info("responder gone ({count} connected)", count=len(self._responders))

        return unregister

    def reply(self, record: CallRecord, timeout: float | None = None) -> Deferred:
        """
        Ask for a reply; fails with L{Timeout} after C{timeout} seconds (by
        default C{responseTimeoutMs}).
        """
        timeout = self._timeout if timeout is None else timeout
        return self._ask(lambda r: r.generate_reply(record), timeout, "responseTimeoutMs")

    def consult(self, record: CallRecord, question: str, timeout: float | None = None) -> Deferred:
        """
        Ask the responder C{question} about the call; fires with the answer
        (None: none).  Fails with L{Timeout} after C{timeout} seconds (by
        default the reply timeout, at least L{MIN_CONSULT_TIMEOUT}).
        """
        if timeout is None:
            timeout = max(self._timeout, MIN_CONSULT_TIMEOUT)
        return self._ask(lambda r: r.consult(record, question), timeout, "the consult timeout")

    def _ask(self, ask: Callable[[IResponder], object], timeout: float, what: str) -> Deferred:
        responder = self._responders[-1] if self._responders else self.fallback
        if responder is None:
            return Deferred.fromCoroutine(_none())
        d = maybeDeferred(ask, responder)
        timeout_ms = int(timeout * 1000)
        d.addTimeout(
            timeout,
            self._clock,
            onTimeoutCancel=lambda result, timeout: _raise_timeout(what, timeout_ms),
        )
        return d


def _raise_timeout(what: str, timeout_ms: int) -> None:
    raise Timeout(f"no reply within {what} ({timeout_ms} ms)")


async def _none() -> None:
    return None
