"""
What a realtime session is opened with, from C{realtime.*}: the model's
instructions, the tools it is offered, and the media path its streams use.

Every call gets C{openclaw_end_call}; C{openclaw_agent_consult} unless
C{realtime.toolPolicy} is C{none}; and the custom C{realtime.tools}, except
any that would take a built-in's name.  C{consultPolicy: always} also turns
on the host's consult fallback (L{RealtimeSetup.host_consult}; see
L{voicecalld.realtime.bridge}).
"""

from __future__ import annotations

from voicecalld.config.model import RealtimeSettings, VoiceCallSettings
from voicecalld.realtime.interface import CONSULT_TOOL, END_CALL_TOOL, RealtimeSetup, RealtimeTool

DEFAULT_INSTRUCTIONS = (
    "You are a helpful voice assistant on a phone call. Keep your answers short and"
    " natural to hear; never read out lists or markup."
)
END_CALL_GUIDANCE = (
    f"When the caller wants to end the call, say a short goodbye first, then call {END_CALL_TOOL}."
)
CONSULT_GUIDANCE = {
    "auto": "",
    "substantive": (
        f"Answer simple conversational glue yourself; call {CONSULT_TOOL} before any answer"
        " that needs facts, memory, tools or context."
    ),
    "always": f"Call {CONSULT_TOOL} before every substantive answer.",
}

END_CALL = RealtimeTool(
    END_CALL_TOOL,
    "End the phone call. Say your last words before calling this; it takes no arguments.",
)
CONSULT = RealtimeTool(
    CONSULT_TOOL,
    "Ask the full assistant agent (with its tools, memory and current information) and"
    " get its answer to speak to the caller.",
    {
        "type": "object",
        "properties": {
            "question": {"type": "string", "description": "What to ask the agent."},
            "context": {
                "type": "string",
                "description": "What the caller said that the agent needs to know.",
            },
        },
        "required": ["question"],
    },
)


def offered_tools(settings: RealtimeSettings) -> tuple[RealtimeTool, ...]:
    """The tools a session offers the model (see the module docstring)."""
    tools = [END_CALL]
    if settings.tool_policy != "none":
        tools.append(CONSULT)
    for tool in settings.tools:
        if tool.name in (END_CALL_TOOL, CONSULT_TOOL):
            continue
        parameters: dict = {"type": "object", "properties": dict(tool.parameters.properties)}
        if tool.parameters.required:
            parameters["required"] = list(tool.parameters.required)
        tools.append(RealtimeTool(tool.name, tool.description or "", parameters))
    return tuple(tools)


def realtime_setup(settings: RealtimeSettings, call_id: str) -> RealtimeSetup:
    """The setup of one call's session."""
    parts = [settings.instructions or DEFAULT_INSTRUCTIONS, END_CALL_GUIDANCE]
    if settings.tool_policy != "none":
        parts.append(CONSULT_GUIDANCE.get(settings.consult_policy or "auto", ""))
    instructions = "\n\n".join(p for p in parts if p)
    host_consult = settings.tool_policy != "none" and settings.consult_policy == "always"
    return RealtimeSetup(instructions, offered_tools(settings), call_id, host_consult)


def realtime_stream_path(settings: VoiceCallSettings) -> str:
    """
    C{realtime.streamPath}, or upstream's default: beside C{serve.path}
    (C{/voice/webhook} gives C{/voice/stream/realtime}).
    """
    if settings.realtime.stream_path:
        return settings.realtime.stream_path
    serve = settings.serve.path
    if serve == "/":
        return "/voice/stream/realtime"
    if serve.endswith("/webhook"):
        return serve[: -len("/webhook")] + "/stream/realtime"
    return serve.rstrip("/") + "/stream/realtime"
