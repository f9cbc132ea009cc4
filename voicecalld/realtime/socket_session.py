"""
What every realtime voice's session does the same way, whatever the vendor:
its state, caller audio through one L{AudioBatcher}, the sockets it dialled,
and listener calls that never raise into the vendor's message handling.

A vendor's session subclasses L{RealtimeSocketSession}, names the state in
which audio goes out (C{sending_state}), frames a batch (C{_send_audio}) and
keeps its own message handling, connect rules and ending.
"""

from __future__ import annotations

from typing import Any, ClassVar

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from voicecalld.realtime.interface import IRealtimeListener
from voicecalld.voice import vendor_socket
from voicecalld.voice.audio_batch import AudioBatcher
from voicecalld.voice.vendor_socket import VendorClientProtocol

CONNECTING = "connecting"
CLOSED = "closed"

BATCH_SECONDS = 0.1
"""Caller audio goes up once 100 ms has gathered, or 100 ms after the oldest unsent frame."""


class RealtimeSocketSession:
    """The vendor-independent half of a realtime session over a WebSocket."""

    log = Logger()

    sending_state: ClassVar[str]
    """The state in which caller audio goes out (before it, audio is held)."""

    def __init__(
        self,
        listener: IRealtimeListener,
        call: str | None,
        clock: IReactorTime,
        max_buffer_bytes: int,
        chunked: bool = False,
    ) -> None:
        self._listener = listener
        self._call = call
        self._clock = clock
        self._state = CONNECTING
        self._attempt: Deferred | None = None
        self._proto: VendorClientProtocol | None = None
        self._sockets = vendor_socket.SocketSet()
        self._audio = AudioBatcher(
            clock,
            self._send_audio,
            lambda: vendor_socket.is_open(self._proto),
            BATCH_SECONDS,
            max_buffer_bytes,
            chunked=chunked,
        )
        self._fault_logged = False

    @property
    def state(self) -> str:
        """The session's state (C{connecting} and C{closed}, and the vendor's own)."""
        return self._state

    def feed(self, ulaw: bytes) -> None:
        """Queue caller audio: sent in ~100 ms batches once ready, kept (5 s at most) before."""
        try:
            state = self._state
            if state == CLOSED:
                return
            self._audio.add(ulaw, state == self.sending_state)
        except Exception:
            self._fault("could not take audio")

    def _send_audio(self, ulaw: bytes) -> None:
        """Send one batch of caller audio on the open socket, framed for the vendor."""
        raise NotImplementedError

    def _connected(self, proto: VendorClientProtocol) -> None:
        self._attempt = None
        self._sockets.add(proto)
        if self._state == CLOSED:
            vendor_socket.close_socket(proto)
            return
        self._proto = proto

    def _tell(self, method: str, *args: Any) -> None:
        """Call the listener's C{method}, unless closed; its errors are logged, not raised."""
        if self._state == CLOSED:
            return
        try:
            getattr(self._listener, method)(*args)
        except Exception:
            self.log.failure(
                "realtime listener failed in {method}",
                method=method,
                call=self._call,
                code="realtime.listener_error",
            )

    def _fault(self, what: str) -> None:
        """Log our own failure once a session (the call goes on)."""
        if not self._fault_logged:
            self._fault_logged = True
            self.log.failure(
                "realtime session {what}", what=what, call=self._call, code="realtime.fault"
            )
