"""
Telnyx Call Control v2 over the neutral L{RestClient}: JSON bodies, Bearer
auth with the API key, answers in C{{"data": ...}} and errors as
C{{"errors": [{"code", "title", "detail"}]}}.

Commands (C{POST /calls/{id}/actions/<name>}) are only accepted here; what
they do arrives later as webhooks.  Each carries a fresh C{command_id}, so a
command Telnyx got twice is run once.
"""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any
from urllib.parse import quote

import treq
from twisted.internet.interfaces import IReactorTime

from voicecalld.providers.common.rest import REQUEST_TIMEOUT, RestClient, RestError

DEFAULT_BASE_URL = "https://api.telnyx.com/v2"
#: The error code of a command sent to a call that has already ended.
CALL_ENDED = "90018"
# Path-segment characters RFC 3986 lets stand (call control ids hold ":" and "=").
_SEGMENT_SAFE = "!$&'()*+,;=:@"
# The media-stream options of every stream we ask for: the caller's audio to
# us, ours back as raw PCMU at 8 kHz.
STREAM_OPTIONS = {
    "stream_track": "inbound_track",
    "stream_codec": "PCMU",
    "stream_bidirectional_mode": "rtp",
    "stream_bidirectional_codec": "PCMU",
}


def client_state(call_id: str) -> str:
    """Our call id as the Base64 C{client_state} Telnyx echoes in every webhook."""
    return base64.b64encode(call_id.encode("utf-8")).decode("ascii")


# What the leg a transfer dials carries as its client_state (the transfer's
# target_leg_client_state): this, then our call id.
TRANSFER_LEG = "transfer:"


def transfer_state(call_id: str) -> str:
    """The C{client_state} of the leg that a transfer of our call C{call_id} dials."""
    return client_state(TRANSFER_LEG + call_id)


def call_id_from_state(value: Any) -> str | None:
    """Our call id from a webhook's C{client_state}, if it holds one."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return base64.b64decode(value, validate=True).decode("utf-8") or None
    except (ValueError, UnicodeDecodeError):
        return None


def stream_params(stream_url: str, token: str, call_id: str) -> dict[str, Any]:
    """The C{stream_*} fields that open our bidirectional stream, with its token."""
    return {
        "stream_url": stream_url,
        **STREAM_OPTIONS,
        "custom_parameters": [
            {"name": "token", "value": token},
            {"name": "callId", "value": call_id},
        ],
    }


def dial_params(
    *,
    connection_id: str,
    to: str,
    from_: str,
    webhook_url: str,
    call_id: str,
    ring_seconds: int,
    time_limit: int,
    machine_detection: bool = False,
) -> dict[str, Any]:
    """
    The body of C{POST /calls} for an outbound call; with
    C{machine_detection}, answering-machine detection that also reports the
    end of a machine's greeting (its beep).
    """
    detection = {"answering_machine_detection": "detect_beep"} if machine_detection else {}
    return {
        **detection,
        "connection_id": connection_id,
        "to": to,
        "from": from_,
        "webhook_url": webhook_url,
        "webhook_url_method": "POST",
        "client_state": client_state(call_id),
        "timeout_secs": max(5, min(600, ring_seconds)),
        "time_limit_secs": max(30, min(14400, time_limit)),
    }


def telnyx_error(status: int, body: bytes) -> tuple[str | None, str | None]:
    """The first error of a Telnyx error body: its code, and its title and detail."""
    try:
        data = json.loads(body)
    except ValueError:
        return None, None
    errors = data.get("errors") if isinstance(data, dict) else None
    if not isinstance(errors, list) or not errors or not isinstance(errors[0], dict):
        return None, None
    first = errors[0]
    code = first.get("code")
    words = [str(first[k]) for k in ("title", "detail") if first.get(k)]
    return (str(code) if code is not None else None), (": ".join(words) or None)


def call_ended(error: RestError) -> bool:
    """Whether Telnyx refused a command because the call is already over."""
    return error.gone or error.provider_code == CALL_ENDED


class TelnyxRest:
    """The REST calls a voice daemon makes, for one API key."""

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str | None,
        clock: IReactorTime,
        http: Any = treq,
        timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        self._client = RestClient(
            carrier="Telnyx",
            base_url=base_url or DEFAULT_BASE_URL,
            auth=None,
            clock=clock,
            http=http,
            timeout=timeout,
            parse_error=telnyx_error,
            headers={"Authorization": [f"Bearer {api_key}"]},
        )

    async def dial(self, params: dict[str, Any]) -> dict[str, Any]:
        """C{POST /calls}; the new call's C{data}."""
        answer = await self._client.request("POST", "/calls", "dialling", body=params)
        data = answer.get("data")
        return data if isinstance(data, dict) else {}

    async def command(self, call_control_id: str, name: str, params: dict[str, Any]) -> None:
        """C{POST /calls/{id}/actions/{name}}, with a fresh C{command_id}."""
        body = {**params, "command_id": str(uuid.uuid4())}
        await self._client.request(
            "POST", f"{_path(call_control_id)}/actions/{name}", f"sending {name}", body=body
        )

    async def balance(self) -> dict[str, Any]:
        """C{GET /balance}: read-only, proves the API key (C{voicecall doctor})."""
        return await self._client.request("GET", "/balance", "reading the balance")

    async def fetch_call(self, call_control_id: str) -> dict[str, Any] | None:
        """C{GET /calls/{id}}; its C{data}, or None when Telnyx does not know the call."""
        answer = await self._client.fetch(_path(call_control_id), "fetching the call")
        if answer is None:
            return None
        data = answer.get("data")
        return data if isinstance(data, dict) else {}


def _path(call_control_id: str) -> str:
    return "/calls/" + quote(call_control_id, safe=_SEGMENT_SAFE)
