"""
Every Plivo XML document voicecalld answers with, built with the plivo
SDK's XML classes (pure; no network).

No document is ever empty or runs out: Plivo hangs up a call whose XML
ends (4010), so each one keeps the call speaking, listening, holding or
streaming, and asks us again (C{<Redirect>}), or hangs up on purpose.
"""

from __future__ import annotations

from collections.abc import Sequence

from plivo.xml import (
    DialElement,
    GetInputElement,
    HangupElement,
    NumberElement,
    RedirectElement,
    ResponseElement,
    SpeakElement,
    StreamElement,
    WaitElement,
)

from voicecalld.providers.common.carrier import polly_voice
from voicecalld.providers.plivo.codec import CONTENT_TYPE, extra_headers

LANGUAGE = "en-US"
HOLD_SECONDS = 30
LISTEN_SECONDS = 30

DEFAULT_VOICE = "Polly.Joanna"


def native_voice(configured: str | None) -> str:
    """Plivo's C{<Speak>} voice for a configured TTS voice name."""
    if not configured:
        return DEFAULT_VOICE
    if configured.startswith("Polly.") or configured in ("WOMAN", "MAN"):
        return configured
    polly = polly_voice(configured)
    return f"Polly.{polly}" if polly else DEFAULT_VOICE


def _xml(*elements: object) -> str:
    response = ResponseElement()
    for element in elements:
        response.add(element)
    return response.to_string(False)


def stream(url: str, parameters: dict[str, str], ended_url: str) -> str:
    """
    A bidirectional mu-law stream that holds the call while it runs;
    C{parameters} travel in C{extraHeaders}; once the socket closes, Plivo
    asks C{ended_url}.
    """
    return _xml(
        StreamElement(
            url,
            bidirectional=True,
            keepCallAlive=True,
            contentType=CONTENT_TYPE,
            extraHeaders=extra_headers(parameters),
        ),
        RedirectElement(ended_url, method="POST"),
    )


def say(texts: Sequence[str], voice: str, played_url: str) -> str:
    """Speak each text, then tell us (C{played_url}) that they have been played."""
    return _xml(
        *[SpeakElement(text, voice=voice, language=LANGUAGE) for text in texts],
        RedirectElement(played_url, method="POST"),
    )


def listen(action_url: str, idle_url: str) -> str:
    """Listen for speech or keys: what is heard goes to C{action_url}; silence asks C{idle_url}."""
    return _xml(
        GetInputElement(
            action=action_url,
            method="POST",
            input_type="speech dtmf",
            execution_timeout=LISTEN_SECONDS,
            language=LANGUAGE,
            redirect=True,
        ),
        RedirectElement(idle_url, method="POST"),
    )


def hold(idle_url: str, seconds: int = HOLD_SECONDS) -> str:
    """Keep the line open quietly, then ask again what to do."""
    return _xml(WaitElement(length=seconds), RedirectElement(idle_url, method="POST"))


def transfer(number: str, caller_id: str) -> str:
    """Dial C{number} from C{caller_id} (a cold transfer); when they hang up, the call ends."""
    dial = DialElement(caller_id=caller_id)
    dial.add(NumberElement(number))
    return _xml(dial)


def reject(reason: str = "rejected") -> str:
    """Refuse an inbound call without answering it."""
    return _xml(HangupElement(reason=reason))


def hangup() -> str:
    """End the call."""
    return _xml(HangupElement())
