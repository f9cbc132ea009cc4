"""
One streamed speech request over HTTP, shared by the OpenAI and ElevenLabs clients.

The response body is handed on chunk by chunk as it arrives; a timer bounds the
wait for the response and for each next chunk; cancelling closes the connection.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from typing import Protocol as TypingProtocol

from twisted.internet.defer import CancelledError, Deferred, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import PotentialDataLoss, ResponseDone, ResponseFailed

from voicecalld.voice.tts import Synthesis, TtsError

log = Logger()

ERROR_BODY_LIMIT = 16384
MESSAGE_LIMIT = 300
NOT_AUDIO = ("application/json", "text/", "audio/mpeg", "audio/mp3", "audio/ogg", "audio/opus")
NOT_AUDIO += ("audio/aac", "audio/flac", "audio/wav", "audio/x-wav", "audio/webm")


class Transcoder(TypingProtocol):
    """Turns the vendor's audio into 8 kHz mu-law, chunk by chunk."""

    def feed(self, data: bytes) -> bytes:
        """Take the next chunk of vendor audio; return the mu-law ready so far."""

    def flush(self) -> bytes:
        """The vendor is done: return whatever is still held back."""


class Passthrough:
    """The vendor already sends 8 kHz mu-law."""

    def feed(self, data: bytes) -> bytes:
        """Return C{data} as it is."""
        return data

    def flush(self) -> bytes:
        """Nothing is held back."""
        return b""


def stream_speech(
    *,
    provider: str,
    http: Any,
    clock: IReactorTime,
    timeout: float,
    url: str,
    headers: dict[str, str],
    body: dict[str, Any],
    params: dict[str, str] | None = None,
    text: str,
    transcoder: Transcoder,
    on_audio: Callable[[bytes], object],
    secret: str | None = None,
) -> Deferred[Synthesis]:
    """
    POST C{body} as JSON and stream the audio answer to C{on_audio}, as
    L{voicecalld.voice.tts.ITTS.synthesize} describes.  C{secret} (the key sent)
    is scrubbed from any error text.
    """
    speech = _Speech(provider, clock, timeout, text, transcoder, on_audio, secret)
    speech.start(http, url, headers, body, params)
    return speech.done


class _Speech(Protocol):
    """The state of one request; also the protocol that receives the response body."""

    def __init__(
        self,
        provider: str,
        clock: IReactorTime,
        timeout: float,
        text: str,
        transcoder: Transcoder,
        on_audio: Callable[[bytes], object],
        secret: str | None,
    ) -> None:
        self._provider = provider
        self._clock = clock
        self._timeout = timeout
        self._text = text
        self._transcoder = transcoder
        self._on_audio = on_audio
        self._secret = secret
        self._request: Deferred[Any] | None = None
        self._timer: IDelayedCall | None = None
        self._status: int | None = None
        self._error_body = b""
        self._malformed: str | None = None
        self._finished = False
        self._requested_at = clock.seconds()
        self._first_byte_at: float | None = None
        self._audio_bytes = 0
        self._paused = False
        self.done: Deferred[Synthesis] = Deferred(self._cancel)

    def start(self, http: Any, url: str, headers: dict[str, str], body: Any, params: Any) -> None:
        self._timer = self._clock.callLater(self._timeout, self._timed_out)
        request = maybeDeferred(
            http.post,
            url,
            json=body,
            headers=headers,
            params=params,
            unbuffered=True,
            allow_redirects=False,
        )
        self._request = request
        request.addCallbacks(self._got_response, self._request_failed)

    def _got_response(self, response: Any) -> None:
        self._request = None
        if self._finished:
            return
        self._restart_timer()
        kind = (response.headers.getRawHeaders("content-type") or [""])[0].lower()
        if response.code != 200:
            self._status = response.code
        elif kind.startswith(NOT_AUDIO):
            self._status = response.code
            self._malformed = kind
        response.deliverBody(self)

    def _request_failed(self, failure: Failure) -> None:
        self._request = None
        if not self._finished:
            self._fail(self._error(f"request failed: {_reason(failure)}"))

    def dataReceived(self, data: bytes) -> None:
        if self._finished:
            return
        self._restart_timer()
        if self._status is not None:
            self._error_body += data
            if len(self._error_body) > ERROR_BODY_LIMIT:
                self._fail(self._status_error())
            return
        if self._first_byte_at is None:
            self._first_byte_at = self._clock.seconds()
        self._deliver(self._transcoder.feed(data))

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._finished:
            return
        clean = reason.check(ResponseDone, PotentialDataLoss)
        if self._status is not None:
            self._fail(self._status_error())
        elif not clean:
            self._end_audio()
            self._fail(self._error(f"audio stream broke: {_reason(reason)}"))
        else:
            self._end_audio()
            if self._finished:
                return
            if not self._audio_bytes:
                self._fail(self._error("the vendor sent no audio"))
                return
            self._finish()
            synthesis = Synthesis(
                provider=self._provider,
                text=self._text,
                requested_at=self._requested_at,
                first_byte_at=self._first_byte_at,
                finished_at=self._clock.seconds(),
                audio_bytes=self._audio_bytes,
            )
            log.debug(
                "{provider} TTS gave {audio_bytes} bytes, first after {first_ms:.0f} ms",
                provider=self._provider,
                audio_bytes=self._audio_bytes,
                first_ms=(synthesis.first_byte_at - synthesis.requested_at) * 1000,
            )
            self.done.callback(synthesis)

    def _deliver(self, ulaw: bytes) -> None:
        if not ulaw or self._finished:
            return
        self._audio_bytes += len(ulaw)
        try:
            hold = self._on_audio(ulaw)
        except Exception:
            self._fail(Failure())
            return
        if isinstance(hold, Deferred) and not self._paused and not self._finished:
            self._pause(hold)

    def _pause(self, hold: Deferred) -> None:
        """The listener has enough for now: stop reading the body (and its timer) until C{hold}."""
        self._paused = True
        if self.transport is not None:
            self.transport.pauseProducing()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        hold.addCallback(self._resume)

    def _resume(self, _: object) -> None:
        self._paused = False
        if self._finished:
            return
        self._timer = self._clock.callLater(self._timeout, self._timed_out)
        if self.transport is not None:
            self.transport.resumeProducing()

    def _end_audio(self) -> None:
        """Hand on what the transcoder still holds, so audio given so far ends whole."""
        if self._first_byte_at is not None:
            self._deliver(self._transcoder.flush())

    def _timed_out(self) -> None:
        self._timer = None
        where = "waiting for the vendor" if self._first_byte_at is None else "mid-stream"
        self._end_audio()
        self._fail(self._error(f"timed out after {self._timeout:g} s {where}"))

    def _restart_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.reset(self._timeout)

    def _fail(self, error: TtsError | Failure) -> None:
        if self._finished:
            return
        self._finish()
        self._abort()
        self.done.errback(error)

    def _finish(self) -> None:
        self._finished = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _abort(self) -> None:
        if self._request is not None:
            request, self._request = self._request, None
            request.cancel()
        if self.transport is not None:
            self.transport.stopProducing()

    def _cancel(self, done: Deferred[Synthesis]) -> None:
        if self._finished:
            return
        self._finish()
        self._abort()
        log.debug("{provider} TTS request cancelled", provider=self._provider)

    def _error(self, what: str, status: int | None = None) -> TtsError:
        message = self._scrub(f"{self._provider} TTS failed: {what}")
        return TtsError(message, provider=self._provider, status=status)

    def _status_error(self) -> TtsError:
        message = vendor_message(self._error_body[:ERROR_BODY_LIMIT])
        if self._malformed is not None:
            what = f"malformed stream: expected raw audio, got {self._malformed}"
            return self._error(what + (f" ({message})" if message else ""))
        what = f"HTTP {self._status}" + (f": {message}" if message else "")
        return self._error(what, self._status)

    def _scrub(self, message: str) -> str:
        if self._secret:
            message = message.replace(self._secret, "<redacted>")
        return message


def vendor_message(body: bytes) -> str:
    """The human part of a vendor's error body (OpenAI or ElevenLabs JSON, or plain text)."""
    text = body.decode("utf-8", "replace")
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    found = _message_in(data) if data is not None else None
    message = found if found is not None else text
    message = " ".join(message.split())
    if len(message) > MESSAGE_LIMIT:
        message = message[: MESSAGE_LIMIT - 3] + "..."
    return message


def _message_in(data: Any) -> str | None:
    """C{error.message} (OpenAI), C{detail.message}, C{detail} or C{detail[].msg} (ElevenLabs)."""
    if isinstance(data, str):
        return data
    if isinstance(data, list) and data:
        return "; ".join(filter(None, (_message_in(item) for item in data))) or None
    if not isinstance(data, dict):
        return None
    for key in ("error", "detail", "message", "msg"):
        if key in data:
            found = _message_in(data[key])
            if found:
                return found
    return None


def _reason(failure: Failure) -> str:
    """A short description of a connection failure, unwrapping twisted.web's wrappers."""
    value = failure.value
    reasons = getattr(value, "reasons", None)
    if isinstance(value, ResponseFailed) or reasons:
        inner = [_reason(r) for r in reasons or []]
        return "; ".join(inner) or type(value).__name__
    if isinstance(value, CancelledError):
        return "cancelled"
    message = failure.getErrorMessage().strip()
    return message or type(value).__name__
