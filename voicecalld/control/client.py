"""Connecting to the daemon's control socket (for the CLI and for tests)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import UNIXClientEndpoint, connectProtocol
from twisted.protocols import amp

from voicecalld.control import commands as c


class Unreachable(Exception):
    """The daemon's control socket cannot be reached."""

    def __init__(self, socket_path: str, reason: str) -> None:
        super().__init__(socket_path, reason)
        self.socket_path = socket_path
        self.reason = reason

    def __str__(self) -> str:
        return (
            f"cannot reach voicecalld at {self.socket_path} ({self.reason}); is it running?"
            " Start it with `systemctl start voicecalld` or `make run`"
        )


class ControlClient(amp.AMP):
    """The client side: sends commands, receives L{c.Event}s, L{c.GenerateReply}, L{c.Consult}."""

    def __init__(
        self,
        on_event: Callable[[dict[str, Any]], None] | None = None,
        on_reply_request: Callable[..., Any] | None = None,
        on_consult: Callable[..., Any] | None = None,
    ) -> None:
        super().__init__()
        self._on_event = on_event
        self._on_reply_request = on_reply_request
        self._on_consult = on_consult
        self.lost: Deferred[None] = Deferred()

    @c.Event.responder
    def event(self, event: dict[str, Any]) -> dict[str, Any]:
        if self._on_event is not None:
            self._on_event(event)
        return {}

    @c.GenerateReply.responder
    def generate_reply(self, callId: str, call: dict[str, Any], context: dict[str, Any]):
        if self._on_reply_request is None:
            return {"text": None}
        return self._on_reply_request(callId, call, context)

    @c.Consult.responder
    def consult(self, callId: str, call: dict[str, Any], question: str, context: dict[str, Any]):
        if self._on_consult is None:
            return {"text": None}
        return self._on_consult(callId, call, question, context)

    def connectionLost(self, reason: Any) -> None:
        super().connectionLost(reason)
        if not self.lost.called:
            self.lost.callback(None)


async def connect(
    reactor: Any, socket_path: str, protocol: ControlClient | None = None, timeout: float = 5.0
) -> ControlClient:
    """Connect to the control socket at C{socket_path}, or raise L{Unreachable}."""
    endpoint = UNIXClientEndpoint(reactor, socket_path, timeout=timeout)
    protocol = protocol or ControlClient()
    try:
        await connectProtocol(endpoint, protocol)
    except Exception as e:
        reason = getattr(e, "osError", None) or e
        text = getattr(reason, "strerror", None) or str(reason) or type(reason).__name__
        raise Unreachable(socket_path, text) from None
    return protocol
