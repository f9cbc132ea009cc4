"""
Twilio's REST API: where it is, what a call is created with, and the three
requests a voice daemon makes (create a call, update a live call, fetch
one), over the neutral L{RestClient}.

Form bodies with PascalCase names and repeated keys, HTTP Basic auth with
the Account SID and Auth Token, JSON answers and errors
(C{{"code": 21211, "message": ...}}).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import treq
from twisted.internet.interfaces import IReactorTime

from voicecalld.providers.common.rest import REQUEST_TIMEOUT, RestClient, json_error

API_VERSION = "2010-04-01"
# The default API roots per twilio.region; twilio.apiBaseUrl overrides them.
DEFAULT_BASE_URLS = {
    "us1": "https://api.twilio.com",  # default for us1
    "ie1": "https://api.dublin.ie1.twilio.com",
    "au1": "https://api.sydney.au1.twilio.com",
}
# The call progress we ask Twilio to report.
STATUS_EVENTS = ("initiated", "ringing", "answered", "completed")


def create_params(
    *,
    to: str,
    from_: str,
    answer_url: str,
    status_url: str,
    ring_seconds: int,
    time_limit: int,
    send_digits: str | None = None,
    detection_url: str | None = None,
) -> list[tuple[str, str]]:
    """
    The form that creates an outbound call; with C{detection_url}, one
    dialled with asynchronous answering-machine detection that waits for the
    end of a machine's greeting and posts C{AnsweredBy} there.
    """
    return [
        ("To", to),
        ("From", from_),
        ("Url", answer_url),
        ("Method", "POST"),
        ("StatusCallback", status_url),
        ("StatusCallbackMethod", "POST"),
        *[("StatusCallbackEvent", e) for e in STATUS_EVENTS],
        *([("SendDigits", send_digits)] if send_digits else []),
        ("Timeout", str(ring_seconds)),
        ("TimeLimit", str(time_limit)),
        *(detection_params(detection_url) if detection_url else []),
    ]


def detection_params(url: str) -> list[tuple[str, str]]:
    """Asynchronous AMD, to the end of a machine's greeting, its result posted to C{url}."""
    return [
        ("MachineDetection", "DetectMessageEnd"),
        ("AsyncAmd", "true"),
        ("AsyncAmdStatusCallback", url),
        ("AsyncAmdStatusCallbackMethod", "POST"),
    ]


class TwilioRest:
    """The few REST calls a voice daemon needs, for one account."""

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
        root = f"{base_url.rstrip('/')}/{API_VERSION}/Accounts/{quote(account_sid)}"
        self._client = RestClient(
            carrier="Twilio",
            base_url=root,
            auth=(account_sid, auth_token),
            clock=clock,
            http=http,
            timeout=timeout,
            parse_error=json_error,
        )

    async def create_call(self, params: Sequence[tuple[str, str]]) -> dict[str, Any]:
        """POST Calls.json; the Call resource (its C{sid})."""
        return await self._client.request("POST", "/Calls.json", "creating the call", form=params)

    async def update_call(self, sid: str, params: Sequence[tuple[str, str]]) -> dict[str, Any]:
        """POST Calls/{sid}.json: new TwiML, or C{Status=completed} to hang up."""
        return await self._client.request(
            "POST", f"/Calls/{quote(sid)}.json", "updating the call", form=params
        )

    async def fetch_account(self) -> dict[str, Any]:
        """GET Accounts/{sid}.json: read-only, proves the credentials (C{voicecall doctor})."""
        return await self._client.request("GET", ".json", "reading the account")

    async def fetch_call(self, sid: str) -> dict[str, Any] | None:
        """GET Calls/{sid}.json; None when Twilio does not know the call."""
        return await self._client.fetch(f"/Calls/{quote(sid)}.json", "fetching the call")


def api_root(region: str, configured: str | None) -> str:
    """Where REST calls go: C{twilio.apiBaseUrl}, else the region's root."""
    return configured or DEFAULT_BASE_URLS[region]
