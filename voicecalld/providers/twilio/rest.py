"""
Twilio's REST API through treq: create a call, update a live call, fetch one.

Form bodies with PascalCase names and repeated keys, HTTP Basic auth, JSON
answers.  Every failure becomes a L{ProviderError} carrying Twilio's own code
and message; nothing is retried (a retried create could place a second call).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import treq
from twisted.internet.defer import Deferred
from twisted.internet.defer import TimeoutError as DeferredTimeoutError
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from voicecalld.errors import ProviderError

API_VERSION = "2010-04-01"
# The default API roots per twilio.region; twilio.apiBaseUrl overrides them.
DEFAULT_BASE_URLS = {
    "us1": "https://api.twilio.com",  # default for us1
    "ie1": "https://api.dublin.ie1.twilio.com",
    "au1": "https://api.sydney.au1.twilio.com",
}
REQUEST_TIMEOUT = 15.0


class TwilioError(ProviderError):
    """Twilio refused a request: its HTTP status, error code and message."""

    def __init__(
        self, message: str, status: int | None = None, twilio_code: int | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.twilio_code = twilio_code


class TwilioRest:
    """The few REST calls a voice daemon needs, for one account."""

    log = Logger()

    def __init__(
        self,
        *,
        account_sid: str,
        auth_token: str,
        base_url: str,
        clock: IReactorTime,
        http: Any = treq,
        timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        self._account_sid = account_sid
        self._auth = (account_sid, auth_token)
        self._root = f"{base_url.rstrip('/')}/{API_VERSION}/Accounts/{quote(account_sid)}"
        self._clock = clock
        self._http = http
        self._timeout = timeout

    async def create_call(self, params: Sequence[tuple[str, str]]) -> dict[str, Any]:
        """POST Calls.json; the Call resource (its C{sid})."""
        return await self._request("POST", "/Calls.json", params, "creating the call")

    async def update_call(self, sid: str, params: Sequence[tuple[str, str]]) -> dict[str, Any]:
        """POST Calls/{sid}.json: new TwiML, or C{Status=completed} to hang up."""
        return await self._request("POST", f"/Calls/{quote(sid)}.json", params, "updating the call")

    async def fetch_call(self, sid: str) -> dict[str, Any] | None:
        """GET Calls/{sid}.json; None when Twilio does not know the call."""
        try:
            return await self._request("GET", f"/Calls/{quote(sid)}.json", (), "fetching the call")
        except TwilioError as e:
            if e.status == 404:
                return None
            raise

    async def _request(
        self, method: str, path: str, params: Sequence[tuple[str, str]], doing: str
    ) -> dict[str, Any]:
        exchange = Deferred.fromCoroutine(self._exchange(method, self._root + path, params))
        exchange.addTimeout(self._timeout, self._clock)
        try:
            status, body = await exchange
        except (TimeoutError, DeferredTimeoutError):
            raise TwilioError(
                f"Twilio {doing} failed: no answer within {self._timeout:g} s"
            ) from None
        except Exception as e:
            raise TwilioError(f"Twilio {doing} failed: {e or type(e).__name__}") from None
        if 200 <= status < 300:
            try:
                return json.loads(body or b"{}")
            except ValueError:
                raise TwilioError(f"Twilio {doing}: unreadable answer", status) from None
        raise _error(status, body, doing)

    async def _exchange(
        self, method: str, url: str, params: Sequence[tuple[str, str]]
    ) -> tuple[int, bytes]:
        response = await self._http.request(
            method,
            url,
            data=list(params) if method == "POST" else None,
            auth=self._auth,
            headers={"Accept": ["application/json"]},
        )
        return response.code, await response.content()


def _error(status: int, body: bytes, doing: str) -> TwilioError:
    try:
        data = json.loads(body)
    except ValueError:
        data = {}
    code = data.get("code") if isinstance(data, dict) else None
    message = data.get("message") if isinstance(data, dict) else None
    message = str(message or body[:200].decode("utf-8", "replace").strip() or "no detail")
    text = f"Twilio {code or status}: {message} ({doing}, HTTP {status})"
    return TwilioError(text, status, code if isinstance(code, int) else None)


def api_root(region: str, configured: str | None) -> str:
    """Where REST calls go: C{twilio.apiBaseUrl}, else the region's root."""
    return configured or DEFAULT_BASE_URLS[region]
