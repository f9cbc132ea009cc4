"""
The errors clients see, each with the stable code the control protocol sends.

Responders raise these; AMP carries the code and the one-line message to the
CLI (C{voicecall: CODE: message}) and to the gateway shim.
"""

from __future__ import annotations


class VoiceCallError(Exception):
    """Base class: an operation refused or failed, with a stable code."""

    code = "INTERNAL"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UnknownCommand(VoiceCallError):
    """The control connection sent a command this daemon does not know."""

    code = "UNKNOWN_COMMAND"


class TooLarge(VoiceCallError):
    """A control request is bigger than the daemon reads (L{commands.MAX_REQUEST})."""

    code = "TOO_LARGE"


class UnknownCall(VoiceCallError):
    """No call with that id, live or ended."""

    code = "UNKNOWN_CALL"


class InvalidArgument(VoiceCallError):
    """An argument is missing or malformed."""

    code = "INVALID_ARGUMENT"


class CallEnded(VoiceCallError):
    """The call has ended; it can be read but not driven."""

    code = "CALL_ENDED"


class NotConnected(VoiceCallError):
    """The call exists but is not answered yet."""

    code = "NOT_CONNECTED"


class Busy(VoiceCallError):
    """Another turn is already waiting on this call."""

    code = "BUSY"


class NotAllowed(VoiceCallError):
    """Refused by policy: limits, the toll-fraud guard, inbound policy, provider kind."""

    code = "NOT_ALLOWED"


class ProviderError(VoiceCallError):
    """The telephony provider refused or failed the request."""

    code = "PROVIDER_ERROR"


class Timeout(VoiceCallError):
    """Waited as long as configured; nothing came."""

    code = "TIMEOUT"


class StoreError(VoiceCallError):
    """The durable store could not record the change, so nothing was done."""

    code = "STORE_ERROR"


class ShuttingDown(VoiceCallError):
    """The daemon is stopping and takes no new work."""

    code = "SHUTTING_DOWN"


class ExposeFailed(VoiceCallError):
    """Publishing the webhook (Tailscale, ngrok) failed; the message says how to fix it."""

    code = "EXPOSE_FAILED"


class Cancelled(VoiceCallError):
    """The work was cancelled before it finished (a responder's consult run, say)."""

    code = "CANCELLED"


class Disabled(VoiceCallError):
    """Voice calls are disabled in the config."""

    code = "DISABLED"


ALL_ERRORS: tuple[type[VoiceCallError], ...] = (
    UnknownCall,
    InvalidArgument,
    CallEnded,
    NotConnected,
    Busy,
    NotAllowed,
    ProviderError,
    Timeout,
    StoreError,
    ShuttingDown,
    ExposeFailed,
    Disabled,
    Cancelled,
    UnknownCommand,
    TooLarge,
    VoiceCallError,
)


def provider_error(e: BaseException) -> VoiceCallError:
    """A provider's failure as the error clients see (L{ProviderError} unless it is ours)."""
    if isinstance(e, VoiceCallError):
        return e
    return ProviderError(f"{type(e).__name__}: {e}" if str(e) else type(e).__name__)
