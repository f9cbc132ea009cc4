"""The run-time side of a live call: its durable record, its timers and its locks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.defer import DeferredLock
from twisted.internet.interfaces import IReactorTime

from voicecalld.calls.timers import Timers
from voicecalld.values.record import CallRecord

if TYPE_CHECKING:
    from voicecalld.calls.turns import Turn


class LiveCall:
    """
    One call being driven.  C{record} is always what the store holds: only
    the journal replaces it, after the write.  Everything else here lives
    only in memory and is rebuilt on restart.
    """

    def __init__(self, record: CallRecord, clock: IReactorTime) -> None:
        self.record = record
        self.timers = Timers(clock)
        # Changes to the record are written one at a time, each built on the
        # record the previous one stored.
        self.changes = DeferredLock()
        # Utterances are said one after another.
        self.speech = DeferredLock()
        self.turn: Turn | None = None
        self.lifecycle_warned: set = set()
        self.hanging_up: Any = None  # the lifecycle's reason, while a hang-up is under way
        self.transferring: Any = None  # the lifecycle's reason, once a transfer is asked for
        self.end_pending: tuple | None = None  # an end that is still to be stored
        self.media_up = False  # the carrier's media stream is connected
        # The daemon is stopping to be restarted: what its closing stream cuts
        # off is left for the next process (L{voicecalld.calls.speaking}).
        self.stopping = False
        # Restored by this process and waiting for its stream to come back
        # (L{voicecalld.calls.turns.TurnEngine.resume}).
        self.resuming = False

    @property
    def call_id(self) -> str:
        """Our id of the call."""
        return self.record.call_id
