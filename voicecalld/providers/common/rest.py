"""
A carrier's REST API through treq: one base URL, one way to authenticate,
JSON answers, and every failure as one L{RestError}.

The carrier gives its error parser (its error body into a code and a
message); L{RestError} adds what callers decide on: the HTTP status, whether
trying again later may work (C{retryable}), and whether the resource is
gone (C{gone}: 404 or 410).  Nothing is retried here: a retried create
could place a second call, so only the caller can know.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import treq
from twisted.internet.defer import Deferred
from twisted.internet.defer import TimeoutError as DeferredTimeoutError
from twisted.internet.interfaces import IReactorTime

from voicecalld.errors import ProviderError

REQUEST_TIMEOUT = 15.0
GONE = (404, 410)

# A carrier's error body (and the HTTP status) into its own code and message.
ErrorParser = Callable[[int, bytes], tuple["int | str | None", str | None]]


class RestError(ProviderError):
    """
    A carrier refused or failed a REST request.

    @ivar status: the HTTP status, or None if no answer came.
    @ivar provider_code: the carrier's own error code, if it sent one.
    @ivar retryable: whether the same request may work later (no answer, 429, 5xx).
    @ivar gone: whether the carrier does not know the resource (404, 410).
    """

    def __init__(
        self,
        message: str,
        status: int | None = None,
        provider_code: int | str | None = None,
        *,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.provider_code = provider_code
        self.retryable = (
            retryable if retryable is not None else status is None or status == 429 or status >= 500
        )
        self.gone = status in GONE


def json_error(status: int, body: bytes) -> tuple[int | str | None, str | None]:
    """The usual error body, C{{"code": ..., "message": ...}} (Twilio's)."""
    try:
        data = json.loads(body)
    except ValueError:
        return None, None
    if not isinstance(data, dict):
        return None, None
    code = data.get("code")
    message = data.get("message")
    return (code if isinstance(code, int | str) else None), (str(message) if message else None)


class RestClient:
    """Requests to one carrier account's API root."""

    def __init__(
        self,
        *,
        carrier: str,
        base_url: str,
        auth: tuple[str, str] | None,
        clock: IReactorTime,
        http: Any = treq,
        timeout: float = REQUEST_TIMEOUT,
        parse_error: ErrorParser = json_error,
        headers: dict[str, list[str]] | None = None,
    ) -> None:
        self.carrier = carrier
        self._root = base_url.rstrip("/")
        self._auth = auth
        self._clock = clock
        self._http = http
        self._timeout = timeout
        self._parse_error = parse_error
        self._headers = {"Accept": ["application/json"], **(headers or {})}

    async def request(
        self,
        method: str,
        path: str,
        doing: str,
        *,
        form: Sequence[tuple[str, str]] | None = None,
        body: Any = None,
    ) -> dict[str, Any]:
        """
        C{method} the root's C{path} (with a form, or a JSON C{body}); the
        decoded JSON answer.  C{doing} ("creating the call") names the request
        in errors.
        """
        exchange = Deferred.fromCoroutine(self._exchange(method, self._root + path, form, body))
        exchange.addTimeout(self._timeout, self._clock)
        try:
            status, answer = await exchange
        except (TimeoutError, DeferredTimeoutError):
            raise RestError(
                f"{self.carrier} {doing} failed: no answer within {self._timeout:g} s"
            ) from None
        except Exception as e:
            raise RestError(f"{self.carrier} {doing} failed: {e or type(e).__name__}") from None
        if 200 <= status < 300:
            try:
                return json.loads(answer or b"{}")
            except ValueError:
                raise RestError(
                    f"{self.carrier} {doing}: unreadable answer", status, retryable=False
                ) from None
        raise self._error(status, answer, doing)

    async def fetch(self, path: str, doing: str) -> dict[str, Any] | None:
        """GET C{path}; None when the carrier does not know it."""
        try:
            return await self.request("GET", path, doing)
        except RestError as e:
            if e.gone:
                return None
            raise

    async def _exchange(
        self, method: str, url: str, form: Sequence[tuple[str, str]] | None, body: Any
    ) -> tuple[int, bytes]:
        options: dict[str, Any] = {"auth": self._auth, "headers": self._headers}
        if body is not None:
            options["json"] = body
        else:
            options["data"] = list(form) if form is not None and method != "GET" else None
        response = await self._http.request(method, url, **options)
        return response.code, await response.content()

    def _error(self, status: int, body: bytes, doing: str) -> RestError:
        code, message = self._parse_error(status, body)
        message = message or body[:200].decode("utf-8", "replace").strip() or "no detail"
        text = f"{self.carrier} {code or status}: {message} ({doing}, HTTP {status})"
        return RestError(text, status, code)
