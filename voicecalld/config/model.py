"""
The plugin config tree: every key of the OpenClaw voice-call plugin (both the
2026.4 reference and the 2026.9 additions), with upstream's defaults and
rules, plus voicecalld's own keys from the contract.

Read the classes top-down as the JSON file reads: L{VoiceCallSettings} is
C{plugins.entries.voice-call.config}.
"""

from __future__ import annotations

from typing import Any

from attrs import frozen

from voicecalld.config.schema import (
    E164,
    Blob,
    Bool,
    DialPrefix,
    Enum,
    Int,
    ListOf,
    MapOf,
    Nested,
    Number,
    Path_,
    ProviderBlob,
    SecretStr,
    Str,
    Url,
    setting,
    structure,
)
from voicecalld.config.secret import Secret

OPENAI_REALTIME_URL = "wss://api.openai.com/v1/realtime?intent=transcription"
OPENAI_S2S_URL = "wss://api.openai.com/v1/realtime"
GEMINI_LIVE_URL = (
    "wss://generativelanguage.googleapis.com/ws/"
    "google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
)
DEEPGRAM_LISTEN_URL = "wss://api.deepgram.com/v1/listen"
ELEVENLABS_STT_BASE_URL = "wss://api.elevenlabs.io"

# outbound.voicemailAction: what a conversation call does when a machine answers.
LEAVE_MESSAGE = "leave-message"
HANG_UP = "hangup"
VOICEMAIL_ACTIONS = (LEAVE_MESSAGE, HANG_UP)

# Premium-rate and high-cost destinations refused by default (docs/config.md
# lists what each one is).  Operators who really call them list them in
# outbound.allowedPrefixes, which wins over this list.
DEFAULT_DENIED_PREFIXES = (
    "+1900",  # US/Canada premium-rate
    "+1976",  # US premium-rate (legacy)
    "+44870",
    "+44871",
    "+44872",
    "+44873",  # UK revenue-share
    "+449",  # UK premium-rate
    "+3368",
    "+3389",  # France premium/audiotex
    "+49900",
    "+49137",  # Germany premium-rate and mass-calling
    "+39899",
    "+3489",
    "+34803",
    "+34806",
    "+34807",  # Italy, Spain premium
    "+43900",
    "+43930",  # Austria premium
    "+881",
    "+882",
    "+883",  # global mobile satellite and international networks
    "+870",
    "+871",
    "+872",
    "+873",
    "+874",  # Inmarsat
    "+979",  # international premium-rate
    "+808",  # international shared-cost
    "+53",  # Cuba (very high termination cost)
    "+252",  # Somalia (high-cost, frequent IRSF target)
    "+228",  # Togo (frequent IRSF target)
    "+239",  # Sao Tome (frequent IRSF target)
    "+248",  # Seychelles (frequent IRSF target)
    "+269",  # Comoros (frequent IRSF target)
    "+290",  # St Helena
    "+675",  # Papua New Guinea
    "+677",  # Solomon Islands
    "+678",  # Vanuatu
    "+682",  # Cook Islands
    "+683",  # Niue
    "+686",  # Kiribati
    "+688",  # Tuvalu
    "+690",  # Tokelau
    "+691",  # Micronesia
    "+692",  # Marshall Islands
)


def _positive(default: int) -> Any:
    return setting(Int(minimum=1), default)


@frozen
class TwilioSettings:
    """C{twilio}: account credentials and REST location."""

    account_sid: str | None = setting(Str(1))
    auth_token: Secret | None = setting(SecretStr(refs=True))
    region: str = setting(Enum(("us1", "ie1", "au1")), "us1")
    api_base_url: str | None = setting(Url())


@frozen
class TelnyxSettings:
    """C{telnyx}: Call Control credentials."""

    api_key: Secret | None = setting(SecretStr())
    connection_id: str | None = setting(Str(1))
    public_key: Secret | None = setting(SecretStr())
    api_base_url: str | None = setting(Url())


@frozen
class PlivoSettings:
    """C{plivo}: account credentials."""

    auth_id: str | None = setting(Str(1))
    auth_token: Secret | None = setting(SecretStr())
    api_base_url: str | None = setting(Url())


@frozen
class OutboundSettings:
    """C{outbound}: call modes and the toll-fraud guard."""

    default_mode: str = setting(Enum(("notify", "conversation")), "notify")
    notify_hangup_delay_sec: int = setting(Int(minimum=0), 3)
    allowed_prefixes: tuple[str, ...] = setting(ListOf(DialPrefix()), [])
    denied_prefixes: tuple[str, ...] = setting(ListOf(DialPrefix()), list(DEFAULT_DENIED_PREFIXES))
    max_calls_per_hour: int | None = setting(Int(minimum=1))
    # Answering-machine detection on outbound calls (ours; upstream has none).
    machine_detection: bool = setting(Bool(), False)
    # What a conversation call does when a machine answers; a notify call
    # always leaves its message after the beep.
    voicemail_action: str = setting(Enum(VOICEMAIL_ACTIONS), LEAVE_MESSAGE)


@frozen
class ServeSettings:
    """C{serve}: where the webhook HTTP server listens."""

    port: int = setting(Int(minimum=1, maximum=65535), 3334)
    bind: str = setting(Str(1), "127.0.0.1")
    path: str = setting(Path_(), "/voice/webhook")


@frozen
class ShutdownSettings:
    """C{shutdown}: what SIGTERM does with live calls (docs/operations.md)."""

    mode: str = setting(Enum(("resume", "drain")), "resume")
    drain_seconds: int = setting(Int(minimum=0, maximum=3600), 30)


@frozen
class TailscaleSettings:
    """C{tailscale}: legacy exposure through Tailscale serve/funnel."""

    mode: str = setting(Enum(("off", "serve", "funnel")), "off")
    path: str = setting(Path_(), "/voice/webhook")
    port: int = setting(Int(minimum=1, maximum=65535), 443)


@frozen
class TunnelSettings:
    """C{tunnel}: exposure through ngrok or Tailscale."""

    provider: str = setting(Enum(("none", "ngrok", "tailscale-serve", "tailscale-funnel")), "none")
    ngrok_auth_token: Secret | None = setting(SecretStr())
    ngrok_domain: str | None = setting(Str(1))
    allow_ngrok_free_tier_loopback_bypass: bool = setting(Bool(), False)


@frozen
class WebhookSecuritySettings:
    """C{webhookSecurity}: which forwarding headers to trust for signature URLs."""

    allowed_hosts: tuple[str, ...] = setting(ListOf(Str(1)), [])
    trust_forwarding_headers: bool = setting(Bool(), False)
    trusted_proxy_ips: tuple[str, ...] = setting(ListOf(Str(1)), [], key="trustedProxyIPs")


@frozen
class OpenAIStreamingSettings:
    """C{streaming.providers.openai}: OpenAI realtime transcription."""

    api_key: Secret | None = setting(SecretStr(refs=True))
    model: str = setting(Str(1), "gpt-4o-transcribe")
    silence_duration_ms: int = _positive(800)
    vad_threshold: float = setting(Number(0, 1), 0.5)
    language: str | None = setting(Str(1))
    prompt: str | None = setting(Str())


@frozen
class DeepgramStreamingSettings:
    """C{streaming.providers.deepgram}: Deepgram live transcription (listen v1)."""

    api_key: Secret | None = setting(SecretStr(refs=True))
    model: str = setting(Str(1), "nova-3")
    # The phone's audio goes through untouched, so only its own format is accepted.
    encoding: str = setting(Enum(("mulaw",)), "mulaw")
    sample_rate: int = setting(Int(minimum=8000, maximum=8000), 8000)
    endpointing_ms: int = _positive(800)
    interim_results: bool = setting(Bool(), True)
    utterance_end_ms: int = setting(Int(minimum=1000), 1000)
    vad_events: bool = setting(Bool(), True)
    smart_format: bool = setting(Bool(), True)
    language: str | None = setting(Str(1))
    base_url: str = setting(Url(("ws", "wss")), DEEPGRAM_LISTEN_URL)


@frozen
class ElevenLabsStreamingSettings:
    """C{streaming.providers.elevenlabs}: ElevenLabs Scribe realtime transcription."""

    api_key: Secret | None = setting(SecretStr(refs=True))
    model_id: str = setting(Str(1), "scribe_v2_realtime")
    audio_format: str = setting(Enum(("ulaw_8000",)), "ulaw_8000")
    sample_rate: int = setting(Int(minimum=8000, maximum=8000), 8000)
    commit_strategy: str = setting(Enum(("vad",)), "vad")
    language_code: str | None = setting(Str(1))
    vad_silence_threshold_secs: float | None = setting(Number(0.3, 3))
    vad_threshold: float | None = setting(Number(0, 1))
    base_url: str = setting(Url(("ws", "wss", "http", "https")), ELEVENLABS_STT_BASE_URL)


STT_PROVIDER_KINDS = {
    "openai": Nested(OpenAIStreamingSettings),
    "deepgram": Nested(DeepgramStreamingSettings),
    "elevenlabs": Nested(ElevenLabsStreamingSettings),
}


def _not_built_stt(name: str) -> str:
    built = ", ".join(repr(n) for n in STT_PROVIDER_KINDS)
    return f"streaming STT provider {name!r} is not built in voicecalld (built in: {built})"


@frozen
class StreamingSettings:
    """C{streaming}: Twilio media streams with streaming STT."""

    enabled: bool = setting(Bool(), False)
    provider: str | None = setting(Str(1))
    stream_path: str = setting(Path_(), "/voice/stream")
    pre_start_timeout_ms: int = _positive(5000)
    max_pending_connections: int = _positive(32)
    max_pending_connections_per_ip: int = _positive(4)
    max_connections: int = _positive(128)
    providers: dict[str, Any] = setting(
        MapOf(ProviderBlob(), STT_PROVIDER_KINDS, None, _not_built_stt),
        {},
    )
    stt_url: str = setting(Url(("ws", "wss")), OPENAI_REALTIME_URL)
    barge_in_min_speech_ms: int = setting(Int(minimum=0), 400)
    barge_in_min_words: int = setting(Int(minimum=1), 2)
    frame_lead_ms: int = setting(Int(minimum=0, maximum=1000), 60)


@frozen
class RealtimeToolParameters:
    """C{realtime.tools[].parameters}: a JSON-schema object."""

    type: str = setting(Enum(("object",)), "object")
    properties: dict[str, Any] = setting(Blob(), {})
    required: tuple[str, ...] | None = setting(ListOf(Str()))


@frozen
class RealtimeTool:
    """C{realtime.tools[]}: one function the realtime model may call."""

    type: str = setting(Enum(("function",)), "function")
    name: str = setting(Str(1), "")
    description: str | None = setting(Str())
    parameters: RealtimeToolParameters = setting(Nested(RealtimeToolParameters))


@frozen
class RealtimeAgentContext:
    """C{realtime.agentContext}: identity and workspace files for the realtime model."""

    enabled: bool = setting(Bool(), False)
    max_chars: int | None = setting(Int(minimum=1))
    include_identity: bool | None = setting(Bool())
    include_workspace_files: bool | None = setting(Bool())
    files: tuple[str, ...] = setting(ListOf(Str(1)), [])


@frozen
class RealtimeFastContext:
    """C{realtime.fastContext}: memory search before a full consult."""

    enabled: bool = setting(Bool(), False)
    timeout_ms: int | None = setting(Int(minimum=1))
    fallback_to_consult: bool | None = setting(Bool())


# Gemini Live's enums, as Google spells them or in short lower case.
_SENSITIVITY = ("low", "high")
_ACTIVITY_HANDLING = ("START_OF_ACTIVITY_INTERRUPTS", "NO_INTERRUPTION")
_TURN_COVERAGE = (
    "TURN_INCLUDES_ONLY_ACTIVITY",
    "TURN_INCLUDES_ALL_INPUT",
    "TURN_INCLUDES_AUDIO_ACTIVITY_AND_ALL_VIDEO",
)


def _google_enum(values: tuple[str, ...], prefix: str = "") -> Enum:
    return Enum(
        tuple(prefix + v.upper() for v in values)
        + tuple(v.lower().replace("_", "-") for v in values)
    )


@frozen
class GoogleRealtimeSettings:
    """C{realtime.providers.google}: Gemini Live (BidiGenerateContent)."""

    api_key: Secret | None = setting(SecretStr(refs=True))
    base_url: str = setting(Url(("ws", "wss")), GEMINI_LIVE_URL)
    model: str = setting(Str(1), "gemini-3.1-flash-live-preview")
    voice: str = setting(Str(1), "Kore")
    # Upstream's examples name the voice speakerVoice; when set it wins over voice.
    speaker_voice: str | None = setting(Str(1))
    session_resumption: bool = setting(Bool(), True)
    context_window_compression: bool = setting(Bool(), True)
    silence_duration_ms: int | None = setting(Int(minimum=0))
    start_sensitivity: str | None = setting(_google_enum(_SENSITIVITY, "START_SENSITIVITY_"))
    end_sensitivity: str | None = setting(_google_enum(_SENSITIVITY, "END_SENSITIVITY_"))
    temperature: float | None = setting(Number(maximum=2))
    activity_handling: str | None = setting(_google_enum(_ACTIVITY_HANDLING))
    turn_coverage: str | None = setting(_google_enum(_TURN_COVERAGE))
    automatic_activity_detection_disabled: bool = setting(Bool(), False)

    @property
    def voice_name(self) -> str:
        """The prebuilt voice to speak with."""
        return self.speaker_voice or self.voice


@frozen
class OpenAIRealtimeSettings:
    """
    C{realtime.providers.openai}: OpenAI Realtime speech-to-speech.

    Upstream's examples name the voice C{speakerVoice}, its table C{voice}:
    both are read, C{speakerVoice} (the current name) winning.  Keys
    voicecalld does not use (Azure's, say) are noted and ignored.
    """

    api_key: Secret | None = setting(SecretStr(refs=True))
    base_url: str = setting(Url(("ws", "wss")), OPENAI_S2S_URL)
    model: str = setting(Str(1), "gpt-realtime-2.1")
    voice: str | None = setting(Str(1))
    speaker_voice: str | None = setting(Str(1))
    vad_threshold: float = setting(Number(0, 1), 0.5)
    silence_duration_ms: int = _positive(500)
    prefix_padding_ms: int = setting(Int(minimum=0), 300)
    temperature: float | None = setting(Number(0, 2))
    reasoning_effort: str | None = setting(Enum(("minimal", "low", "medium", "high", "xhigh")))
    audio_format: str = setting(Enum(("g711_ulaw", "pcm16")), "g711_ulaw")
    transcription_model: str = setting(Str(1), "gpt-4o-transcribe")

    @property
    def chosen_voice(self) -> str:
        """The voice to speak in: C{voice}, else C{speakerVoice}, else C{alloy}."""
        return self.speaker_voice or self.voice or "alloy"


REALTIME_PROVIDER_KINDS: dict[str, Any] = {
    "openai": Nested(OpenAIRealtimeSettings, strict=False),
    "google": Nested(GoogleRealtimeSettings),
}


@frozen
class RealtimeSettings:
    """C{realtime}: full-duplex speech-to-speech calls (L{voicecalld.realtime})."""

    enabled: bool = setting(Bool(), False)
    provider: str | None = setting(Str(1))
    stream_path: str | None = setting(Path_())
    instructions: str | None = setting(Str())
    tools: tuple[RealtimeTool, ...] = setting(ListOf(Nested(RealtimeTool)), [])
    providers: dict[str, Any] = setting(MapOf(ProviderBlob(), REALTIME_PROVIDER_KINDS), {})
    tool_policy: str | None = setting(Enum(("safe-read-only", "owner", "none")))
    consult_policy: str | None = setting(Enum(("auto", "substantive", "always")))
    consult_thinking_level: str | None = setting(Str(1))
    consult_fast_mode: bool | None = setting(Bool())
    agent_context: RealtimeAgentContext = setting(Nested(RealtimeAgentContext))
    fast_context: RealtimeFastContext = setting(Nested(RealtimeFastContext))


@frozen
class TtsModelOverrides:
    """C{tts.modelOverrides}: what a model may change in its own TTS directives."""

    enabled: bool | None = setting(Bool())
    allow_text: bool | None = setting(Bool())
    allow_provider: bool | None = setting(Bool())
    allow_voice: bool | None = setting(Bool())
    allow_model_id: bool | None = setting(Bool())
    allow_voice_settings: bool | None = setting(Bool())
    allow_normalization: bool | None = setting(Bool())
    allow_seed: bool | None = setting(Bool())


@frozen
class OpenAITtsSettings:
    """C{tts.providers.openai}: OpenAI speech (or any compatible server)."""

    api_key: Secret | None = setting(SecretStr(refs=True))
    base_url: str | None = setting(Url())
    model: str = setting(Str(1), "gpt-4o-mini-tts")
    speaker_voice: str = setting(Str(1), "alloy")
    speed: float | None = setting(Number(0.25, 4))
    instructions: str | None = setting(Str())


@frozen
class ElevenLabsVoiceSettings:
    """C{tts.providers.elevenlabs.voiceSettings}."""

    stability: float | None = setting(Number(0, 1))
    similarity_boost: float | None = setting(Number(0, 1))
    style: float | None = setting(Number(0, 1))
    use_speaker_boost: bool | None = setting(Bool())
    speed: float | None = setting(Number(0.5, 2))


@frozen
class ElevenLabsTtsSettings:
    """C{tts.providers.elevenlabs}: ElevenLabs streaming speech."""

    api_key: Secret | None = setting(SecretStr(refs=True))
    base_url: str | None = setting(Url())
    speaker_voice_id: str = setting(Str(1), "pMsXgVXv3BLzUgSXRplE")
    model_id: str = setting(Str(1), "eleven_multilingual_v2")
    seed: int | None = setting(Int(0, 4294967295))
    apply_text_normalization: str | None = setting(Enum(("auto", "on", "off")))
    language_code: str | None = setting(Str(1))
    voice_settings: ElevenLabsVoiceSettings = setting(Nested(ElevenLabsVoiceSettings))


@frozen
class MicrosoftTtsSettings:
    """C{tts.providers.microsoft} (formerly C{edge}): accepted, never used for calls."""

    enabled: bool | None = setting(Bool())
    speaker_voice: str | None = setting(Str(1))
    lang: str | None = setting(Str(1))
    output_format: str | None = setting(Str(1))
    pitch: str | None = setting(Str())
    rate: str | None = setting(Str())
    volume: str | None = setting(Str())
    save_subtitles: bool | None = setting(Bool())
    proxy: str | None = setting(Str())
    timeout_ms: int | None = setting(Int(1000, 120000))


def _not_telephony_tts(name: str) -> str:
    return f"TTS provider {name!r} is not built in voicecalld; calls use openai or elevenlabs"


TTS_PROVIDER_KINDS = {
    "openai": Nested(OpenAITtsSettings),
    "elevenlabs": Nested(ElevenLabsTtsSettings),
    "microsoft": Nested(MicrosoftTtsSettings),
}


@frozen
class TtsSettings:
    """C{tts}: the telephony TTS config (core C{tts}/C{messages.tts} merged under it)."""

    auto: str | None = setting(Enum(("off", "always", "inbound", "tagged")))
    enabled: bool | None = setting(Bool())
    mode: str | None = setting(Enum(("final", "all")))
    provider: str | None = setting(Str(1))
    summary_model: str | None = setting(Str(1))
    model_overrides: TtsModelOverrides = setting(Nested(TtsModelOverrides))
    providers: dict[str, Any] = setting(
        MapOf(ProviderBlob(), TTS_PROVIDER_KINDS, None, _not_telephony_tts), {}
    )
    prefs_path: str | None = setting(Str(1))
    max_text_length: int | None = setting(Int(minimum=1))
    timeout_ms: int | None = setting(Int(1000, 120000))

    def provider_settings(self, name: str) -> Any:
        """The settings block of one TTS provider, with its defaults when unset."""
        block = self.providers.get(name)
        if block is None and name in TTS_PROVIDER_KINDS:
            return TTS_PROVIDER_KINDS[name].check({}, (), [])
        return block


class TtsOverride(Blob):
    """
    A C{tts} block deep-merged over the plugin's (C{numbers.<E.164>.tts}):
    kept as given, checked key by key like the plugin's C{tts}.
    """

    def check(self, value, path, notes):
        value = super().check(value, path, notes)
        structure(TtsSettings, value, path, notes)
        return value


@frozen
class NumberRoute:
    """C{numbers.<E.164>}: per-dialed-number overrides for inbound calls."""

    inbound_greeting: str | None = setting(Str())
    tts: dict[str, Any] | None = setting(TtsOverride())
    agent_id: str | None = setting(Str(1))
    response_model: str | None = setting(Str(1))
    response_system_prompt: str | None = setting(Str())
    response_timeout_ms: int | None = setting(Int(minimum=1))


@frozen
class VoiceCallSettings:
    """C{plugins.entries.voice-call.config}: the whole plugin config."""

    enabled: bool = setting(Bool(), True)
    provider: str = setting(Enum(("telnyx", "twilio", "plivo", "mock")), "mock")
    telnyx: TelnyxSettings = setting(Nested(TelnyxSettings))
    twilio: TwilioSettings = setting(Nested(TwilioSettings))
    plivo: PlivoSettings = setting(Nested(PlivoSettings))
    from_number: str | None = setting(E164())
    to_number: str | None = setting(E164())
    inbound_policy: str = setting(Enum(("disabled", "allowlist", "pairing", "open")), "disabled")
    allow_from: tuple[str, ...] = setting(ListOf(E164()), [])
    inbound_greeting: str | None = setting(Str())
    outbound: OutboundSettings = setting(Nested(OutboundSettings))
    max_duration_seconds: int = _positive(300)
    stale_call_reaper_seconds: int = setting(Int(minimum=0), 120)
    silence_timeout_ms: int = _positive(800)
    transcript_timeout_ms: int = _positive(180000)
    ring_timeout_ms: int = _positive(30000)
    max_concurrent_calls: int = _positive(1)
    serve: ServeSettings = setting(Nested(ServeSettings))
    shutdown: ShutdownSettings = setting(Nested(ShutdownSettings))
    tailscale: TailscaleSettings = setting(Nested(TailscaleSettings))
    tunnel: TunnelSettings = setting(Nested(TunnelSettings))
    webhook_security: WebhookSecuritySettings = setting(Nested(WebhookSecuritySettings))
    streaming: StreamingSettings = setting(Nested(StreamingSettings))
    realtime: RealtimeSettings = setting(Nested(RealtimeSettings))
    public_url: str | None = setting(Url())
    skip_signature_verification: bool = setting(Bool(), False)
    tts: TtsSettings = setting(Nested(TtsSettings))
    store: str | None = setting(Str())
    retention_days: int = setting(Int(minimum=0), 30)
    response_model: str | None = setting(Str(1))
    response_system_prompt: str | None = setting(Str())
    response_timeout_ms: int = _positive(30000)
    response_base_url: str | None = setting(Url())
    agent_id: str | None = setting(Str(1))
    session_scope: str = setting(Enum(("per-phone", "per-call", "main")), "per-phone")
    numbers: dict[str, NumberRoute] = setting(MapOf(Nested(NumberRoute), key=E164()), {})
    control_socket: str | None = setting(Str(1))
