"""
Every TwiML document voicecalld answers with, built with the Twilio SDK.

No document is ever empty: each one either keeps the call doing something
(speaking, listening, holding, streaming) or hangs up on purpose.
"""

from __future__ import annotations

from collections.abc import Sequence

from twilio.twiml.voice_response import Connect, Gather, VoiceResponse

from voicecalld.providers.common.carrier import polly_voice

LANGUAGE = "en-US"
HOLD_SECONDS = 30
LISTEN_SECONDS = 30

DEFAULT_VOICE = "Polly.Joanna"


def native_voice(configured: str | None) -> str:
    """Twilio's C{<Say>} voice for a configured TTS voice name."""
    if not configured:
        return DEFAULT_VOICE
    if configured.startswith(("Polly.", "Google.")):
        return configured
    polly = polly_voice(configured)
    return f"Polly.{polly}" if polly else DEFAULT_VOICE


def stream(url: str, parameters: dict[str, str], ended_url: str) -> str:
    """Connect a bidirectional media stream; when it ends, Twilio asks C{ended_url}."""
    response = VoiceResponse()
    connect = Connect(action=ended_url, method="POST")
    target = connect.stream(url=url)
    for name, value in parameters.items():
        target.parameter(name=name, value=value)
    response.append(connect)
    return response.to_xml()


def say(texts: Sequence[str], voice: str, played_url: str) -> str:
    """Say each text, then tell us (C{played_url}) that they have been played."""
    response = VoiceResponse()
    for text in texts:
        response.say(text, voice=voice, language=LANGUAGE)
    response.redirect(played_url, method="POST")
    return response.to_xml()


def listen(action_url: str, idle_url: str) -> str:
    """Listen for speech or keys; Twilio posts what it heard (or nothing) to C{action_url}."""
    response = VoiceResponse()
    response.append(
        Gather(
            input="speech dtmf",
            action=action_url,
            method="POST",
            speech_timeout="auto",
            timeout=LISTEN_SECONDS,
            language=LANGUAGE,
            action_on_empty_result=True,
        )
    )
    response.redirect(idle_url, method="POST")
    return response.to_xml()


def hold(idle_url: str, seconds: int = HOLD_SECONDS) -> str:
    """Keep the line open quietly, then ask again what to do."""
    response = VoiceResponse()
    response.pause(length=seconds)
    response.redirect(idle_url, method="POST")
    return response.to_xml()


def play_digits(digits: str, then_url: str) -> str:
    """Send touch tones (C{w} is a half-second pause), then carry on."""
    response = VoiceResponse()
    response.play(digits=digits)
    response.redirect(then_url, method="POST")
    return response.to_xml()


def transfer(to: str, caller_id: str, answered_url: str) -> str:
    """
    Dial C{to} from C{caller_id} (a cold transfer); Twilio tells C{answered_url}
    when the person answers.  Nothing follows: when they hang up, the call ends.
    """
    response = VoiceResponse()
    dial = response.dial(caller_id=caller_id)
    dial.number(
        to,
        status_callback=answered_url,
        status_callback_event="answered",
        status_callback_method="POST",
    )
    return response.to_xml()


def reject(reason: str = "rejected") -> str:
    """Refuse an inbound call without answering it (C{reason} C{busy}: the caller hears busy)."""
    response = VoiceResponse()
    response.reject(reason=reason)
    return response.to_xml()


def hangup() -> str:
    """End the call."""
    response = VoiceResponse()
    response.hangup()
    return response.to_xml()
