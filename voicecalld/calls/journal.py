"""
The journal: every change to a call is written, then applied, then published.

Nothing sees a change before the store holds it: not C{status}, not the
tail, not the turn logic, not the carrier's answer.  A change is built from
the record the store holds (changes to one call are written one at a time),
a change that changes nothing is not written, and a failed write leaves the
call as it was and fails with L{StoreError}, so that the carrier retries or
the client sees C{STORE_ERROR}.  Processed event keys are remembered only
once the write that records their event has returned.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from attrs import frozen
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from voicecalld.calls.hub import NoticeHub
from voicecalld.calls.live import LiveCall
from voicecalld.errors import StoreError
from voicecalld.store.interface import ICallStore
from voicecalld.values import notices
from voicecalld.values.record import CallRecord, TranscriptEntry

PROCESSED_KEY_LIFETIME = 24 * 3600.0


@frozen
class Change:
    """A call's next record and the transcript entries it adds."""

    record: CallRecord
    entries: tuple[TranscriptEntry, ...] = ()


Update = Callable[[CallRecord], Change | CallRecord | None]


class Journal:
    """Writes call changes through an L{ICallStore}; see the module docstring."""

    log = Logger()

    def __init__(self, store: ICallStore, hub: NoticeHub, clock: IReactorTime) -> None:
        self._store = store
        self._hub = hub
        self._clock = clock
        self._processed: dict[str, float] = {}
        self._pending: dict[str, list[Deferred]] = {}

    @property
    def path(self) -> str:
        """Where the store lives, for messages."""
        return self._store.path

    async def restore(self) -> None:
        """Load the processed event keys that have not expired."""
        self._processed = dict(await self._store.processed_keys(self._clock.seconds()))

    def seen(self, key: str | None) -> bool:
        """Whether the event with C{key} was durably applied already."""
        return key is not None and key in self._processed

    async def settled(self, key: str | None) -> None:
        """Wait until an event with C{key} that is being applied now is stored or failed."""
        while key is not None and key in self._pending:
            waiting: Deferred = Deferred()
            self._pending[key].append(waiting)
            await waiting

    def applying(self, key: str | None) -> Callable[[], None]:
        """Mark C{key} as being applied; returns the function that clears the mark."""
        if key is None:
            return lambda: None
        waiters: list[Deferred] = []
        self._pending[key] = waiters

        def clear() -> None:
            if self._pending.get(key) is waiters:
                del self._pending[key]
            for waiting in waiters:
                waiting.callback(None)

        return clear

    async def create(self, live: LiveCall, keys: Iterable[str | None] = ()) -> None:
        """Write a new call's first record (nobody else can see the call yet)."""
        await self._write(live.record, live.record.transcript, self._expiries(keys))
        self._remember(keys)

    async def change(
        self, live: LiveCall, update: Update, keys: Iterable[str | None] = ()
    ) -> CallRecord:
        """
        Apply C{update} to the call's stored record: write its result, then
        make it the call's record, then publish it.  Returns the record the
        call has afterwards.
        """
        keys = tuple(k for k in keys if k is not None)
        await live.changes.acquire()
        try:
            previous = live.record
            change = update(previous)
            if change is None:
                change = Change(previous)
            elif isinstance(change, CallRecord):
                change = Change(change)
            processed = self._expiries(keys)
            if change.record == previous and not change.entries and not processed:
                return previous
            await self._write(change.record, change.entries, processed)
            live.record = change.record
            self._remember(keys)
        finally:
            live.changes.release()
        self._publish(previous, change)
        return change.record

    async def forget_keys(self, now: float) -> None:
        """Drop expired processed keys, in memory and in the store."""
        for key in [k for k, expiry in self._processed.items() if expiry <= now]:
            del self._processed[key]
        await self._store.prune(now)

    def _expiries(self, keys: Iterable[str | None]) -> tuple[tuple[str, float], ...]:
        expiry = self._clock.seconds() + PROCESSED_KEY_LIFETIME
        return tuple((k, expiry) for k in keys if k is not None and k not in self._processed)

    def _remember(self, keys: Iterable[str | None]) -> None:
        expiry = self._clock.seconds() + PROCESSED_KEY_LIFETIME
        for key in keys:
            if key is not None:
                self._processed.setdefault(key, expiry)

    async def _write(
        self,
        record: CallRecord,
        entries: Iterable[TranscriptEntry],
        processed: Iterable[tuple[str, float]],
    ) -> None:
        try:
            await self._store.commit(record, tuple(entries), tuple(processed))
        except Exception as e:
            self.log.failure(
                "storing call {call_id} failed", call_id=record.call_id, log_code="store.failed"
            )
            raise StoreError(f"could not store the call: {e}") from None

    def _publish(self, previous: CallRecord, change: Change) -> None:
        record = change.record
        for entry in change.entries:
            self._hub.publish(
                notices.Said(
                    at=entry.at,
                    call_id=record.call_id,
                    speaker=entry.speaker,
                    text=entry.text,
                    entry_kind=entry.kind,
                    interrupted=entry.interrupted or None,
                )
            )
        if previous.state is not record.state:
            self._hub.publish(
                notices.StateChanged(
                    at=self._clock.seconds(),
                    call_id=record.call_id,
                    state=record.state.value,
                    previous=previous.state.value,
                )
            )
