"""The durable call store's interface."""

from __future__ import annotations

from zope.interface import Attribute, Interface


class ICallStore(Interface):
    """
    Where call records, their transcripts and processed webhook ids survive
    restarts.  Every method returns a Deferred and must not block the
    reactor; writes complete in the order they were asked for.
    """

    path = Attribute("Where the store lives, for messages (a file path).")

    def open():
        """Create or migrate the store; fires when it can be used."""

    def close():
        """Finish pending writes and release the store."""

    def commit(record, entries=(), processed=()):
        """
        Durably save C{record}, add its new transcript C{entries} and remember
        C{processed} event keys (pairs of key and expiry time), all at once.
        Transcripts load in the order their entries were said (by timestamp,
        then by when they were stored).
        """

    def load(call_id):
        """The record with its transcript, or None."""

    def find(provider, provider_call_id):
        """The newest record with this provider call id, or None."""

    def live_calls():
        """Every record not in a terminal state."""

    def recent(limit):
        """The C{limit} most recently started records, newest first."""

    def processed_keys(now):
        """The processed event keys that have not expired at C{now}: a dict key → expiry."""

    def prune(now):
        """
        Forget processed event keys that expired before C{now}, in small
        transactions; fires with how many.
        """

    def expire(before):
        """
        Delete ended calls (with their transcripts) that ended before
        C{before}, in small transactions; fires with how many.
        """

    def checkpoint():
        """Move the write-ahead log into the store and truncate it."""

    def probe():
        """Try a small write, so that L{health} learns whether space returned."""

    def health():
        """
        Whether the store takes writes, now (not a Deferred): an object with
        C{ok}, C{status} (C{"ok"} or C{"full"}) and C{detail}.
        """

    def disk_usage():
        """Bytes the store and its write-ahead log take now (not a Deferred)."""
