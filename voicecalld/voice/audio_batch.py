"""
Caller audio on its way to a vendor socket: batched while the socket can
take it, kept (bounded, oldest dropped first) while it cannot.

Phone frames come every 20 ms; vendors want fewer, larger messages.  The
owner says how to send a batch and whether the socket can take one now; the
batcher decides when.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from voicecalld.voice.stt import ULAW_BYTES_PER_SECOND
from voicecalld.voice.vendor_socket import cancel


class AudioBatcher:
    """
    One session's unsent caller audio (8 kHz mu-law).

    A batch goes out once C{batch_seconds} of audio has gathered, or
    C{batch_seconds} after the oldest unsent frame.  With C{chunked}, a
    flush sends at most one batch and the rest follows a batch later (for
    vendors that want even-sized messages); otherwise it sends all.
    """

    def __init__(
        self,
        clock: IReactorTime,
        send: Callable[[bytes], object],
        can_send: Callable[[], bool],
        batch_seconds: float,
        max_buffer_bytes: int,
        chunked: bool = False,
    ) -> None:
        self._clock = clock
        self._send = send
        self._can_send = can_send
        self.batch_seconds = batch_seconds
        self.batch_bytes = int(ULAW_BYTES_PER_SECOND * batch_seconds)
        self._max_buffer = max_buffer_bytes
        self._chunked = chunked
        self._call: IDelayedCall | None = None
        self.pending = bytearray()
        self.dropped = 0
        """Bytes dropped while held, since the owner last reset this."""

    def add(self, ulaw: bytes, sending: bool) -> None:
        """Take caller audio: batched when C{sending}, else held (the oldest dropped)."""
        pending = self.pending
        pending += ulaw
        if sending:
            if len(pending) >= self.batch_bytes:
                self.flush()
            elif self._call is None:
                self._call = self._clock.callLater(self.batch_seconds, self.flush)
            return
        excess = len(pending) - self._max_buffer
        if excess > 0:
            del pending[:excess]
            self.dropped += excess

    def flush(self) -> None:
        """Send what has gathered now, if the socket can take it."""
        call, self._call = self._call, None
        cancel(call)
        if not self.pending or not self._can_send():
            return
        if self._chunked:
            chunk = bytes(self.pending[: self.batch_bytes])
            del self.pending[: self.batch_bytes]
        else:
            chunk = bytes(self.pending)
            self.pending.clear()
        self._send(chunk)
        if self._chunked and self.pending and self._call is None:
            self._call = self._clock.callLater(self.batch_seconds, self.flush)

    def release(self) -> None:
        """The socket became ready: send what was held (when chunked, the rest a batch later)."""
        if not self._chunked:
            if self.pending:
                self.flush()
            return
        while len(self.pending) >= self.batch_bytes and self._can_send():
            self.flush()
        if self.pending and self._call is None and self._can_send():
            self._call = self._clock.callLater(self.batch_seconds, self.flush)

    def stop(self) -> None:
        """Stop the batch timer (the socket went away); what is held stays."""
        cancel(self._call)
        self._call = None

    def clear(self) -> None:
        """Stop the timer and forget what is held."""
        self.stop()
        self.pending.clear()
