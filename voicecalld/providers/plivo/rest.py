"""
Plivo's Voice REST API: where it is, what a call is made with, and the
requests a voice daemon makes (make, transfer, hang up or cancel, look up,
send digits), over the neutral L{RestClient}.

JSON bodies, HTTP Basic auth with the Auth ID and Auth Token, every path
ending in C{/}; errors are JSON with an C{error} text (and an C{api_id}).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import treq
from twisted.internet.interfaces import IReactorTime

from voicecalld.providers.common.rest import REQUEST_TIMEOUT, RestClient

DEFAULT_BASE_URL = "https://api.plivo.com"
# Plivo's limits on a call's ring time (seconds).
MIN_RING, MAX_RING = 5, 120


def plivo_error(status: int, body: bytes) -> tuple[int | str | None, str | None]:
    """Plivo's error body, C{{"error": "...", "api_id": ...}}: no code, its text."""
    try:
        data = json.loads(body)
    except ValueError:
        return None, None
    if not isinstance(data, dict):
        return None, None
    error = data.get("error") or data.get("message")
    if isinstance(error, dict):
        error = "; ".join(f"{k}: {v}" for k, v in error.items())
    return None, (str(error) if error else None)


# How long Plivo listens for a machine (its documented default, sent explicitly):
# it reports machines only, so none reported in this time means a person.
DETECTION_MS = 5000


def plivo_number(number: str) -> str:
    """A number as Plivo takes it: digits with the country code, no C{+}; SIP URIs as they are."""
    return number if number.startswith("sip:") else number.lstrip("+")


def create_body(
    *,
    to: str,
    from_: str,
    answer_url: str,
    hangup_url: str,
    ring_url: str,
    ring_seconds: int,
    time_limit: int,
    send_digits: str | None = None,
    detection_url: str | None = None,
) -> dict[str, Any]:
    """
    The JSON that makes an outbound call; with C{detection_url}, one dialled
    with answering-machine detection whose result Plivo posts there.
    """
    body: dict[str, Any] = {
        "from": plivo_number(from_),
        "to": plivo_number(to),
        "answer_url": answer_url,
        "answer_method": "POST",
        "hangup_url": hangup_url,
        "hangup_method": "POST",
        "ring_url": ring_url,
        "ring_method": "POST",
        "ring_timeout": ring_seconds,
        "hangup_on_ring": ring_seconds,
        "time_limit": time_limit,
    }
    if send_digits:
        body["send_digits"] = send_digits
    if detection_url:
        body["machine_detection"] = "true"
        body["machine_detection_time"] = DETECTION_MS
        body["machine_detection_url"] = detection_url
        body["machine_detection_method"] = "POST"
    return body


class PlivoRest:
    """The few REST calls a voice daemon needs, for one account."""

    def __init__(
        self,
        *,
        auth_id: str,
        auth_token: str,
        base_url: str | None,
        clock: IReactorTime,
        http: Any = treq,
        timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        root = f"{(base_url or DEFAULT_BASE_URL).rstrip('/')}/v1/Account/{quote(auth_id)}"
        self._client = RestClient(
            carrier="Plivo",
            base_url=root,
            auth=(auth_id, auth_token),
            clock=clock,
            http=http,
            timeout=timeout,
            parse_error=plivo_error,
        )

    async def create_call(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST Call/; the answer holds the C{request_uuid} (not yet the call's UUID)."""
        return await self._client.request("POST", "/Call/", "making the call", body=body)

    async def transfer(self, call_uuid: str, url: str) -> dict[str, Any]:
        """POST Call/{uuid}/: the call's A leg fetches and runs the XML at C{url}."""
        body = {"legs": "aleg", "aleg_url": url, "aleg_method": "POST"}
        return await self._client.request(
            "POST", f"/Call/{quote(call_uuid)}/", "transferring the call", body=body
        )

    async def hangup(self, call_uuid: str) -> None:
        """DELETE Call/{uuid}/: end a live call."""
        await self._client.request("DELETE", f"/Call/{quote(call_uuid)}/", "hanging up")

    async def cancel(self, request_uuid: str) -> None:
        """DELETE Request/{uuid}/: cancel a call that has not been answered."""
        await self._client.request(
            "DELETE", f"/Request/{quote(request_uuid)}/", "cancelling the call"
        )

    async def send_digits(self, call_uuid: str, digits: str) -> None:
        """POST Call/{uuid}/DTMF/: touch tones into the call."""
        await self._client.request(
            "POST",
            f"/Call/{quote(call_uuid)}/DTMF/",
            "sending digits",
            body={"digits": digits, "leg": "aleg"},
        )

    async def fetch_account(self) -> dict[str, Any]:
        """GET Account/{auth_id}/: read-only, proves the credentials (C{voicecall doctor})."""
        return await self._client.request("GET", "/", "reading the account")

    async def live_call(self, call_uuid: str) -> dict[str, Any] | None:
        """GET Call/{uuid}/?status=live; None when no live call has that UUID."""
        return await self._client.fetch(
            f"/Call/{quote(call_uuid)}/?status=live", "looking up the live call"
        )

    async def queued_call(self, request_uuid: str) -> dict[str, Any] | None:
        """GET Call/{request_uuid}/?status=queued; None when no such request waits."""
        return await self._client.fetch(
            f"/Call/{quote(request_uuid)}/?status=queued", "looking up the queued call"
        )

    async def call_record(self, call_uuid: str) -> dict[str, Any] | None:
        """GET Call/{uuid}/: the record of an ended call; None when Plivo has none."""
        return await self._client.fetch(f"/Call/{quote(call_uuid)}/", "fetching the call record")
