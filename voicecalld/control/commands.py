"""
The control protocol's commands (AMP over the control socket).

Client → daemon: L{Initiate}, L{Continue}, L{Speak}, L{SendDtmf}, L{Transfer}, L{End},
L{Status}, L{Subscribe}, L{Simulate}, L{RegisterResponder}, L{Ping}.
Daemon → client: L{Event} (after L{Subscribe}), and L{GenerateReply} and
L{Consult} (after L{RegisterResponder}).  Every command fails with the stable codes of
L{voicecalld.errors}.  C{docs/control-protocol.md} documents each one.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.protocols import amp

from voicecalld.errors import ALL_ERRORS

MAX_VALUE = 0xFFFF

# The most bytes one box sent to the daemon may take on the wire (its keys,
# values and length prefixes).  Every request the CLI or the shim sends fits
# many times over: no argument of a client→daemon command is JSON, so each is
# one value of at most MAX_VALUE bytes.
MAX_REQUEST = 1 << 20


class JSON(amp.Argument):
    """
    A JSON value of any size.  AMP caps each value at 65,535 bytes, so the
    UTF-8 text is split across the keys C{name}, C{name.1}, C{name.2}, ...
    and joined back in that order.
    """

    def toBox(self, name: bytes, strings: dict, objects: dict, proto: Any) -> None:
        value = objects.get(str(name, "ascii"))
        if value is None:
            if not self.optional:
                raise KeyError(name)
            return
        data = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
        chunks = [data[i : i + MAX_VALUE] for i in range(0, len(data), MAX_VALUE)] or [b""]
        strings[name] = chunks[0]
        for index, chunk in enumerate(chunks[1:], start=1):
            strings[name + b"." + str(index).encode()] = chunk

    def fromBox(self, name: bytes, strings: dict, objects: dict, proto: Any) -> None:
        if name not in strings:
            if not self.optional:
                raise KeyError(name)
            objects[str(name, "ascii")] = None
            return
        parts = [strings[name]]
        index = 1
        while name + b"." + str(index).encode() in strings:
            parts.append(strings[name + b"." + str(index).encode()])
            index += 1
        objects[str(name, "ascii")] = json.loads(b"".join(parts))


ERRORS = {error: error.code.encode() for error in ALL_ERRORS}


def _text(optional: bool = False) -> amp.Unicode:
    return amp.Unicode(optional=optional)


class Ping(amp.Command):
    """Is the daemon there?  Answers its version and provider."""

    arguments: list = []
    response = [(b"version", _text()), (b"provider", _text())]
    errors = ERRORS


class Initiate(amp.Command):
    """Place an outbound call (C{to}: default C{toNumber}; C{mode}: C{outbound.defaultMode})."""

    arguments = [
        (b"to", _text(True)),
        (b"message", _text(True)),
        (b"mode", _text(True)),
        (b"sessionKey", _text(True)),
        (b"dtmfSequence", _text(True)),
    ]
    response = [(b"callId", _text()), (b"call", JSON())]
    errors = ERRORS


class Continue(amp.Command):
    """Say C{message}, then wait for the caller's next words (up to C{transcriptTimeoutMs})."""

    arguments = [(b"callId", _text()), (b"message", _text())]
    response = [(b"callId", _text()), (b"transcript", _text())]
    errors = ERRORS


class Speak(amp.Command):
    """Say C{message}; answers once it has been played."""

    arguments = [(b"callId", _text()), (b"message", _text())]
    response = [(b"played", _text()), (b"complete", amp.Boolean())]
    errors = ERRORS


class SendDtmf(amp.Command):
    """Send touch tones (C{w} is a half-second wait)."""

    arguments = [(b"callId", _text()), (b"digits", _text())]
    response: list = []
    errors = ERRORS


class Transfer(amp.Command):
    """
    Hand a connected call to a person at C{to} (a cold transfer, through the
    toll-fraud guard), after saying C{message} if given; answers once the
    carrier has taken the transfer.
    """

    arguments = [(b"callId", _text()), (b"to", _text()), (b"message", _text(True))]
    response = [(b"call", JSON())]
    errors = ERRORS


class End(amp.Command):
    """Hang up (ending an ended call succeeds)."""

    arguments = [(b"callId", _text())]
    response = [(b"call", JSON())]
    errors = ERRORS


class Status(amp.Command):
    """One call by id (live or ended), or with no id every live call (C{recent}: ended too)."""

    arguments = [(b"callId", _text(True)), (b"recent", amp.Integer(optional=True))]
    response = [(b"call", JSON(optional=True)), (b"calls", JSON(optional=True))]
    errors = ERRORS


class Subscribe(amp.Command):
    """Start receiving L{Event}s (for one call, or all)."""

    arguments = [(b"callId", _text(True))]
    response: list = []
    errors = ERRORS


class Event(amp.Command):
    """Daemon → subscriber: one notice (C{voicecalld.values.notices}) as JSON."""

    arguments = [(b"event", JSON())]
    response: list = []
    requiresAnswer = False


class Simulate(amp.Command):
    """
    Mock provider only: play the caller's side (inbound, say, dtmf, hangup),
    or put a consult question to the responder (C{consult}; answers C{text}).
    """

    arguments = [
        (b"action", _text()),
        (b"callId", _text(True)),
        (b"from", _text(True)),
        (b"to", _text(True)),
        (b"text", _text(True)),
        (b"digits", _text(True)),
    ]
    response = [(b"callId", _text(True)), (b"text", _text(True))]
    errors = ERRORS


class Expose(amp.Command):
    """Publish the webhook through Tailscale (C{funnel} or C{serve}), or stop (C{off})."""

    arguments = [(b"mode", _text())]
    response = [(b"how", _text()), (b"publicUrl", _text(True)), (b"streamUrl", _text(True))]
    errors = ERRORS


class RegisterResponder(amp.Command):
    """Make this connection the one asked for conversation replies (L{GenerateReply})."""

    arguments = [(b"name", _text(True))]
    response: list = []
    errors = ERRORS


class GenerateReply(amp.Command):
    """Daemon → responder: what should the bot say next on this call?"""

    arguments = [(b"callId", _text()), (b"call", JSON()), (b"context", JSON())]
    response = [(b"text", _text(True))]
    errors = ERRORS


class Consult(amp.Command):
    """Daemon → responder: the call's agent is asked a question (C{openclaw_agent_consult})."""

    arguments = [
        (b"callId", _text()),
        (b"call", JSON()),
        (b"question", _text()),
        (b"context", JSON()),
    ]
    response = [(b"text", _text(True))]
    errors = ERRORS


# The commands a client may send to the daemon; anything else is UNKNOWN_COMMAND.
REQUESTS: tuple[type[amp.Command], ...] = (
    Ping,
    Initiate,
    Continue,
    Speak,
    SendDtmf,
    Transfer,
    End,
    Status,
    Subscribe,
    Simulate,
    Expose,
    RegisterResponder,
)
