"""
The per-number route an inbound call was given when it arrived.

A call dialled to a number under C{numbers.<E.164>} keeps that route's fields
in C{record.metadata["route"]}, resolved once at arrival, so the greeting,
every reply, the consult and the call's TTS stay what they were even if the
config changes (or the daemon restarts) while the call is live.  Outbound
calls never carry one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from attrs import frozen

from voicecalld.values.record import INBOUND, CallRecord

ROUTE_KEY = "route"

# Record field name -> attribute; the stored form uses upstream's camelCase names.
_FIELDS = {
    "number": "number",
    "inboundGreeting": "inbound_greeting",
    "agentId": "agent_id",
    "responseModel": "response_model",
    "responseSystemPrompt": "response_system_prompt",
    "responseTimeoutMs": "response_timeout_ms",
    "tts": "has_tts",
}


@frozen
class CallRoute:
    """
    One inbound call's C{numbers.<number>} route: only the fields that route
    sets (None: the plugin's value applies).  C{has_tts} says the route has its
    own TTS, which is looked up by C{number} (the stored record keeps no TTS
    settings, since those may hold keys).
    """

    number: str
    inbound_greeting: str | None = None
    agent_id: str | None = None
    response_model: str | None = None
    response_system_prompt: str | None = None
    response_timeout_ms: int | None = None
    has_tts: bool = False

    def to_json(self) -> dict[str, Any]:
        """The stored form: upstream's field names, unset fields left out."""
        data = {}
        for name, attribute in _FIELDS.items():
            value = getattr(self, attribute)
            if value is not None and value is not False:
                data[name] = value
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CallRoute | None:
        """A route from its stored form; None when it is not one."""
        if not isinstance(data, Mapping) or not isinstance(data.get("number"), str):
            return None
        values = {a: data.get(n) for n, a in _FIELDS.items() if data.get(n) is not None}
        values["has_tts"] = bool(values.get("has_tts"))
        return cls(**values)


def route_of(record: CallRecord) -> CallRoute | None:
    """The route stored on an inbound call's record, if it has one (outbound: never)."""
    if record.direction != INBOUND:
        return None
    stored = record.metadata.get(ROUTE_KEY)
    return CallRoute.from_json(stored) if stored is not None else None
