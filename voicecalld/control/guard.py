"""
The control server's box layer: what it does with input it cannot use.

A box bigger than L{commands.MAX_REQUEST} is not kept: its bytes are dropped
as they arrive and the request is answered C{TOO_LARGE}.  An unknown command
is answered C{UNKNOWN_COMMAND}; a missing or malformed argument
C{INVALID_ARGUMENT} naming it; a failure no responder expected C{INTERNAL}
(the traceback goes to the log).  A box that is no request (with C{_ask})
and no answer to one ends the connection, with a log line.  AMP's own codes (C{UNHANDLED},
C{UNKNOWN}) never reach a client, and no bad box closes a connection that
could go on.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from twisted.internet.defer import Deferred, fail, maybeDeferred
from twisted.logger import Logger
from twisted.protocols import amp
from twisted.python.failure import Failure

from voicecalld.control import commands as c
from voicecalld.errors import InvalidArgument, TooLarge, UnknownCommand, VoiceCallError

# Keys an oversized box keeps, so that it can still be answered.
_ROUTING = frozenset({amp.COMMAND, amp.ASK, amp.ANSWER, amp.ERROR})

_EXPECTED: list[tuple[type, str]] = [
    (amp.Integer, "an integer in ASCII decimal"),
    (amp.Boolean, "True or False"),
    (amp.Unicode, "UTF-8 text"),
    (c.JSON, "UTF-8 JSON text"),
]

_BUG = "voicecalld failed on this request (its log says why)"


def argument_problem(command: type[amp.Command], box: amp.AmpBox, proto: Any) -> str | None:
    """Why C{box} is not a valid request for C{command}, naming the argument; or None."""
    strings = dict(box)
    for name, argument in command.arguments:
        try:
            argument.fromBox(name, strings, {}, proto)
        except KeyError:
            return f"{command.__name__}: argument {name.decode()} is required"
        except (ValueError, TypeError):
            expected = next((t for k, t in _EXPECTED if isinstance(argument, k)), "another value")
            return f"{command.__name__}: argument {name.decode()} must be {expected}"
    return None


def _error_box(ask: bytes, error: VoiceCallError) -> amp.AmpBox:
    return amp.AmpBox(
        {
            amp.ERROR: ask,
            amp.ERROR_CODE: error.code.encode(),
            amp.ERROR_DESCRIPTION: error.message.encode(),
        }
    )


def _remote(error: VoiceCallError) -> amp.RemoteAmpError:
    return amp.RemoteAmpError(error.code.encode(), error.message)


class GuardedAMP(amp.AMP):
    """AMP that answers bad input with the control protocol's codes and bounds each box."""

    log = Logger()
    peer = "unknown peer"
    max_request = c.MAX_REQUEST
    requests: dict[bytes, type[amp.Command]] = {cmd.commandName: cmd for cmd in c.REQUESTS}

    # Answered requests by (command, code): "ok" or the error code (metrics).
    tally: Counter[tuple[str, str]] | None = None

    _box_size = 0
    _oversized: dict[bytes, bytes] | None = None

    # Framing: BinaryBoxProtocol calls proto_init for a box's first key, then
    # proto_value and proto_key in turn; an empty key ends the box.

    def proto_init(self, string: bytes) -> str:
        self._box_size = 2
        self._oversized = None
        return super().proto_init(string)

    def proto_key(self, string: bytes) -> str:
        if string:
            self._box_size += 4 + len(string)
        elif self._oversized is not None:
            kept, self._oversized = self._oversized, None
            self._currentBox = None
            self._refuse_oversized(kept)
            return "init"
        return super().proto_key(string)

    def proto_value(self, string: bytes) -> str:
        key = self._currentKey
        state = super().proto_value(string)
        self._box_size += len(string)
        if self._oversized is None:
            if self._box_size <= self.max_request:
                return state
            # Keep only what routes the answer; let the rest go, now and as it comes.
            self._oversized = {k: v for k, v in self._currentBox.items() if k in _ROUTING}
            self._currentBox = amp.AmpBox()
        value = self._currentBox.pop(key, None)
        if key in _ROUTING and value is not None:
            self._oversized[key] = value
        return state

    def _refuse_oversized(self, kept: dict[bytes, bytes]) -> None:
        command = kept.get(amp.COMMAND, b"?").decode("ascii", "replace")
        if amp.COMMAND in kept and amp.ASK in kept:
            self.log.warn(
                "control request {command} from {peer} refused: {size} bytes, more than {limit}",
                log_code="control.too_large",
                command=command,
                peer=self.peer,
                size=self._box_size,
                limit=self.max_request,
            )
            error = TooLarge(
                f"request of {self._box_size} bytes refused: at most {self.max_request}"
                " bytes per request"
            )
            self._safeEmit(_error_box(kept[amp.ASK], error))
            return
        self._drop(f"a box of {self._box_size} bytes, more than {self.max_request}")

    def lengthLimitExceeded(self, length: int) -> None:
        self._drop(f"a key of {length} bytes, more than {amp.MAX_KEY_LENGTH}", close=False)
        super().lengthLimitExceeded(length)

    def _drop(self, what: str, close: bool = True) -> None:
        self.log.warn(
            "control connection from {peer} dropped: it sent {what}",
            log_code="control.bad_box",
            peer=self.peer,
            what=what,
        )
        if close:
            self.transport.loseConnection()

    # Boxes

    def ampBoxReceived(self, box: amp.AmpBox) -> None:
        if self.transport is None or self.transport.disconnecting:
            return
        if amp.ANSWER in box or amp.ERROR in box:
            ask = box.get(amp.ANSWER, box.get(amp.ERROR))
            if ask not in self._outstandingRequests:
                self._drop("an answer to nothing it was asked")
                return
            if amp.ANSWER not in box and amp.ERROR_CODE not in box:
                self._drop("an error without _error_code")
                return
            box.setdefault(amp.ERROR_DESCRIPTION, b"")
        elif amp.COMMAND in box and amp.ASK not in box:
            self._drop("a request without _ask (every command here is answered)")
            return
        elif amp.COMMAND not in box:
            if amp.ASK in box:
                error = InvalidArgument("a request needs _command")
                self._safeEmit(_error_box(box[amp.ASK], error))
            else:
                self._drop("a box that is neither a request nor an answer")
            return
        super().ampBoxReceived(box)

    def dispatchCommand(self, box: amp.AmpBox) -> Deferred:
        d = self._dispatch(box)
        if self.tally is not None:
            command = box[amp.COMMAND]
            shown = command.decode("ascii", "replace") if command in self.requests else "unknown"
            d.addBoth(self._count, shown)
        return d

    def _dispatch(self, box: amp.AmpBox) -> Deferred:
        name = box[amp.COMMAND]
        command = self.requests.get(name)
        responder = self.locateResponder(name) if command is not None else None
        if responder is None:
            known = ", ".join(sorted(n.decode() for n in self.requests))
            shown = name.decode("ascii", "replace")[:64]
            return fail(_remote(UnknownCommand(f"no command {shown!r} here (known: {known})")))
        problem = argument_problem(command, box, self)
        if problem is not None:
            return fail(_remote(InvalidArgument(problem)))
        return maybeDeferred(responder, box).addErrback(self._unexpected, command)

    def _count(self, result: Any, command: str) -> Any:
        if isinstance(result, Failure):
            code = getattr(result.value, "errorCode", b"UNKNOWN")
            code = code.decode("ascii", "replace") if isinstance(code, bytes) else str(code)
        else:
            code = "ok"
        self.tally[(command, code)] += 1
        return result

    def _unexpected(self, failure: Failure, command: type[amp.Command]) -> Failure:
        if failure.check(amp.RemoteAmpError):
            return failure
        self.log.failure(
            "control command {command} from {peer} failed",
            failure,
            log_code="control.internal",
            command=command.__name__,
            peer=self.peer,
        )
        return Failure(_remote(VoiceCallError(_BUG)))
