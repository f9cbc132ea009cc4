"""
Per-number routes: chosen once when an inbound call arrives, then read from
the call's record (L{voicecalld.values.route}).

Also builds what a responder is told about a call's owner (C{agentId},
C{sessionScope}, the reply settings), one way for replies and consults.
"""

from __future__ import annotations

from typing import Any

from voicecalld.config.model import VoiceCallSettings
from voicecalld.values.record import CallRecord
from voicecalld.values.route import ROUTE_KEY, CallRoute, route_of

DEFAULT_GREETING = "Hello! How can I help you today?"


def resolve(settings: VoiceCallSettings, dialled: str) -> CallRoute | None:
    """The route of C{numbers.<dialled>}, if the config has one."""
    route = settings.numbers.get(dialled)
    if route is None:
        return None
    return CallRoute(
        number=dialled,
        inbound_greeting=route.inbound_greeting,
        agent_id=route.agent_id,
        response_model=route.response_model,
        response_system_prompt=route.response_system_prompt,
        response_timeout_ms=route.response_timeout_ms,
        has_tts=bool(route.tts),
    )


def route_metadata(route: CallRoute | None) -> dict[str, Any]:
    """The metadata an inbound call's record starts with for its route."""
    return {ROUTE_KEY: route.to_json()} if route is not None else {}


def greeting(settings: VoiceCallSettings, route: CallRoute | None) -> str:
    """What an inbound call is greeted with: the route's, else the plugin's, else ours."""
    return (route and route.inbound_greeting) or settings.inbound_greeting or DEFAULT_GREETING


def reply_timeout(record: CallRecord) -> float | None:
    """The call's route's C{responseTimeoutMs} in seconds, if it sets one."""
    route = route_of(record)
    if route is None or route.response_timeout_ms is None:
        return None
    return route.response_timeout_ms / 1000.0


def responder_context(settings: VoiceCallSettings, record: CallRecord) -> dict[str, Any]:
    """
    What a responder is told with every reply and consult: the owning agent
    (the route's, else the plugin's), the session scope and the reply settings
    (unset ones left out).
    """
    route = route_of(record)
    context = {
        "agentId": (route and route.agent_id) or settings.agent_id,
        "sessionScope": settings.session_scope,
        "responseModel": (route and route.response_model) or settings.response_model,
        "responseSystemPrompt": (
            (route and route.response_system_prompt) or settings.response_system_prompt
        ),
        "responseTimeoutMs": (route and route.response_timeout_ms) or settings.response_timeout_ms,
        "number": route and route.number,
    }
    return {k: v for k, v in context.items() if v is not None}


def consult_context(settings: VoiceCallSettings, record: CallRecord) -> dict[str, Any]:
    """L{responder_context} plus the consult policies of C{realtime.*}."""
    realtime = settings.realtime
    context = responder_context(settings, record)
    extra = {
        "toolPolicy": realtime.tool_policy,
        "consultPolicy": realtime.consult_policy,
        "consultThinkingLevel": realtime.consult_thinking_level,
        "consultFastMode": realtime.consult_fast_mode,
    }
    context.update({k: v for k, v in extra.items() if v is not None})
    return context
