"""
Reading a config file into L{VoiceCallSettings}.

A file is a whole OpenClaw config when its top level has C{plugins} or a key
of OpenClaw's own (L{voicecalld.config.openclaw}); the plugin config then
lives at C{plugins.entries.voice-call.config} and the core TTS block at
C{messages.tts} or top-level C{tts}.  Any other file is a bare plugin config,
checked as strictly as the plugin config inside a whole one.  Legacy keys are
rewritten, the core TTS block is deep-merged under the plugin's C{tts},
secrets fall back to their environment variables, SecretRefs are resolved,
and the result is checked as upstream checks it.  Every problem names the
file and the key path.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
import json5

from voicecalld import paths
from voicecalld.config import legacy
from voicecalld.config.command import run_bounded
from voicecalld.config.merge import deep_merge
from voicecalld.config.model import TtsSettings, VoiceCallSettings
from voicecalld.config.openclaw import OPENCLAW_VERSION, TOP_LEVEL_KEYS
from voicecalld.config.resolve import Runner, resolve_secrets
from voicecalld.config.schema import Path, Problem, dotted, keys_of, structure
from voicecalld.config.secret import Secret
from voicecalld.config.secretproviders import SecretsBlock, read_secrets_block

PLUGIN_PATH: Path = ("plugins", "entries", "voice-call", "config")
ENTRY_PATH: Path = PLUGIN_PATH[:-1]

# Every key a bare plugin config may have at its top level: the current ones
# and the legacy ones legacy.py rewrites.
PLUGIN_KEYS = frozenset(keys_of(VoiceCallSettings)) | {"stt"}
# Top-level keys that make a file a whole OpenClaw config (tts is both).
_OPENCLAW_ONLY_KEYS = TOP_LEVEL_KEYS - PLUGIN_KEYS


class ConfigError(Exception):
    """A config that cannot be used: the file and each problem in it."""

    def __init__(self, source: str | None, problems: list[Problem]) -> None:
        super().__init__(source, problems)
        self.source = source
        self.problems = problems

    def __str__(self) -> str:
        where = self.source or "built-in defaults"
        return f"{where}: " + "; ".join(str(p) for p in self.problems)


@attrs.frozen
class LoadedConfig:
    """A validated config and what was noticed while reading it."""

    settings: VoiceCallSettings
    source: str | None
    prefix: Path
    notes: tuple[Problem, ...] = ()
    from_environment: Mapping[str, str] = attrs.field(factory=dict)
    whole: bool = False

    def path(self, *keys: str) -> str:
        """The full key path of a plugin key in this file, for messages."""
        return dotted((*self.prefix, *keys))


def resolve_config_path(explicit: str | None, environ: Mapping[str, str]) -> str | None:
    """
    Which file to read: C{--config}, else C{$VOICECALLD_CONFIG}, else
    C{$OPENCLAW_CONFIG_PATH}, else C{~/.openclaw/openclaw.json} if it exists.
    """
    return paths.config_file(explicit, environ)


def is_implicit_default(explicit: str | None, environ: Mapping[str, str]) -> bool:
    """
    Whether L{resolve_config_path} falls back to C{~/.openclaw/openclaw.json}
    (no C{--config}, C{$VOICECALLD_CONFIG} or C{$OPENCLAW_CONFIG_PATH}).
    """
    return not (explicit or environ.get("VOICECALLD_CONFIG") or environ.get("OPENCLAW_CONFIG_PATH"))


def load_config(
    path: str | None,
    environ: Mapping[str, str],
    *,
    named: bool = True,
    resolve_refs: bool = True,
    runner: Runner = run_bounded,
) -> LoadedConfig:
    """
    Read and validate the file at C{path} (None: built-in defaults).

    C{named} is false only for the implicit default file: a whole OpenClaw
    config without a voice-call entry is then read as the defaults (with a
    note) instead of refused.  Without C{resolve_refs}, SecretRefs are checked
    but left unresolved (for callers that only want a non-secret key).
    """
    if path is None:
        return parse_config({}, None, environ, named=named, resolve_refs=resolve_refs)
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as e:
        raise ConfigError(path, [Problem((), f"cannot read the file: {e.strerror}")]) from e
    try:
        data = json5.loads(text)
    except ValueError as e:
        raise ConfigError(path, [Problem((), f"not valid JSON5: {e}")]) from e
    return parse_config(data, path, environ, named=named, resolve_refs=resolve_refs, runner=runner)


def parse_config(
    data: Any,
    source: str | None,
    environ: Mapping[str, str],
    *,
    named: bool = True,
    resolve_refs: bool = True,
    runner: Runner = run_bounded,
) -> LoadedConfig:
    """Validate parsed JSON (a whole OpenClaw config or a bare plugin config)."""
    notes: list[Problem] = []
    whole = False
    secrets = SecretsBlock()
    try:
        if not isinstance(data, dict):
            raise Problem((), "expected a JSON object at the top level")
        whole = is_whole_openclaw_config(data)
        if whole:
            _check_top_level(data, notes)
            secrets = read_secrets_block(data)
            prefix, plugin, entry_enabled, core_tts = _extract(data, notes, named)
            core_path = ("tts",) if isinstance(data.get("tts"), dict) else ("messages", "tts")
            core = structure(TtsSettings, core_tts, core_path, notes, strict=False)
            _keep_core_refs(core, core_tts)
        else:
            prefix, plugin, entry_enabled, core_tts = (), data, True, {}
        plugin = legacy.migrate_plugin(plugin, prefix, notes)
        plugin_tts = plugin.pop("tts", {})
        structure(TtsSettings, plugin_tts, (*prefix, "tts"), notes)
        if whole:
            _apply_core_google_key(plugin, data)
        used_env = _apply_environment(plugin, environ)
        try:
            settings = structure(VoiceCallSettings, plugin, prefix, notes)
        except Problem as problem:
            raise _blame_environment(problem, prefix, used_env) from None
        merged_tts = _apply_tts_environment(deep_merge(core_tts, plugin_tts), environ, used_env)
        tts = structure(TtsSettings, merged_tts, (*prefix, "tts"), [], strict=False)
        settings = attrs.evolve(settings, tts=tts)
        if not entry_enabled:
            settings = attrs.evolve(settings, enabled=False)
    except Problem as problem:
        raise ConfigError(source, [problem]) from None
    loaded = LoadedConfig(settings, source, prefix, tuple(notes), used_env, whole)
    problems = check_consistency(loaded)
    if problems:
        raise ConfigError(source, problems)
    if not resolve_refs:
        return loaded
    try:
        settings, problems, unresolved = resolve_secrets(settings, secrets, environ, runner=runner)
    except Problem as problem:
        raise ConfigError(source, [problem]) from None
    if problems:
        raise ConfigError(source, problems)
    return attrs.evolve(loaded, settings=settings, notes=(*loaded.notes, *unresolved))


def is_whole_openclaw_config(data: dict[str, Any]) -> bool:
    """Whether a file's top level is OpenClaw's (C{plugins} or a key only OpenClaw has)."""
    return any(key in _OPENCLAW_ONLY_KEYS for key in data)


def _check_top_level(data: dict[str, Any], notes: list[Problem]) -> None:
    """Plugin keys at the top of a whole config are misplaced; unknown ones are OpenClaw's."""
    for key in data:
        if key in TOP_LEVEL_KEYS:
            continue
        if key in PLUGIN_KEYS:
            raise Problem(
                (key,),
                "a voice-call plugin key at the top level of an OpenClaw config; it belongs"
                f" under {dotted(PLUGIN_PATH)}",
            )
        notes.append(
            Problem((key,), f"not a top-level key of OpenClaw {OPENCLAW_VERSION}'s config; ignored")
        )


def _extract(data: dict[str, Any], notes: list[Problem], named: bool):
    entry = _object_at(data, ENTRY_PATH)
    plugin = {}
    entry_enabled = True
    if entry is None:
        missing = "not set: this OpenClaw config has no voice-call plugin entry"
        if named:
            raise Problem(
                ENTRY_PATH, f"{missing} (add {dotted(PLUGIN_PATH)}, or name a bare plugin config)"
            )
        notes.append(Problem(ENTRY_PATH, f"{missing}; running the mock provider with the defaults"))
    else:
        plugin = _object_at(entry, ("config",), ENTRY_PATH) or {}
        enabled = entry.get("enabled", True)
        if not isinstance(enabled, bool):
            raise Problem((*ENTRY_PATH, "enabled"), "expected true or false")
        entry_enabled = enabled
    core_tts: dict[str, Any] = {}
    messages_tts = _object_at(data, ("messages", "tts"))
    if messages_tts is not None:
        core_tts = legacy.migrate_tts(messages_tts, ("messages", "tts"), notes)
    top_tts = _object_at(data, ("tts",))
    if top_tts is not None:
        core_tts = deep_merge(core_tts, legacy.migrate_tts(top_tts, ("tts",), notes))
    return PLUGIN_PATH, plugin, entry_enabled, core_tts


def _keep_core_refs(core: TtsSettings, raw: dict[str, Any]) -> None:
    """
    Put the core TTS block's checked secrets back into its raw form, so that
    after the merge a SecretRef from it still names its own key path.
    """
    for name, block in core.providers.items():
        secret = getattr(block, "api_key", None)
        if isinstance(secret, Secret) and secret.ref is not None:
            raw["providers"][name]["apiKey"] = secret


def _object_at(data: dict[str, Any], keys: Path, base: Path = ()) -> dict[str, Any] | None:
    node: Any = data
    for i, key in enumerate(keys):
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
        if not isinstance(node, dict):
            raise Problem((*base, *keys[: i + 1]), "expected an object")
    return node


# Secrets and endpoints that may come from the environment when the config
# leaves them out; provider variables apply only to the selected provider.
_PROVIDER_ENV = {
    "twilio": [
        (("twilio", "accountSid"), "TWILIO_ACCOUNT_SID"),
        (("twilio", "authToken"), "TWILIO_AUTH_TOKEN"),
        (("fromNumber",), "TWILIO_FROM_NUMBER"),
    ],
    "telnyx": [
        (("telnyx", "apiKey"), "TELNYX_API_KEY"),
        (("telnyx", "connectionId"), "TELNYX_CONNECTION_ID"),
        (("telnyx", "publicKey"), "TELNYX_PUBLIC_KEY"),
    ],
    "plivo": [(("plivo", "authId"), "PLIVO_AUTH_ID"), (("plivo", "authToken"), "PLIVO_AUTH_TOKEN")],
}
_ALWAYS_ENV = [
    (("tunnel", "ngrokAuthToken"), ("NGROK_AUTHTOKEN",)),
    (("tunnel", "ngrokDomain"), ("NGROK_DOMAIN",)),
    (("responseBaseUrl",), ("OPENAI_BASE_URL",)),
    (("controlSocket",), ("VOICECALLD_SOCKET",)),
]
# Gemini's keys, in upstream's order.
_GOOGLE_KEYS = ("GEMINI_API_KEY", "GOOGLE_API_KEY")
_STT_ENV = {
    "deepgram": [
        (("streaming", "providers", "deepgram", "apiKey"), ("DEEPGRAM_API_KEY",)),
        (("streaming", "providers", "deepgram", "baseUrl"), ("DEEPGRAM_BASE_URL",)),
    ],
    "elevenlabs": [
        (("streaming", "providers", "elevenlabs", "apiKey"), ("ELEVENLABS_API_KEY", "XI_API_KEY")),
    ],
}
_TTS_ENV = [
    (("providers", "openai", "apiKey"), ("OPENAI_API_KEY",)),
    (("providers", "openai", "baseUrl"), ("OPENAI_BASE_URL",)),
    (("providers", "elevenlabs", "apiKey"), ("ELEVENLABS_API_KEY", "XI_API_KEY")),
]


def _wants_google_key(plugin: dict[str, Any]) -> bool:
    realtime = plugin.get("realtime")
    return (
        isinstance(realtime, dict)
        and bool(realtime.get("enabled"))
        and realtime.get("provider") in (None, "google")
    )


def _apply_core_google_key(plugin: dict[str, Any], data: dict[str, Any]) -> None:
    """Gemini Live's key falls back to OpenClaw's C{models.providers.google.apiKey}, as upstream."""
    models = data.get("models")
    providers = models.get("providers") if isinstance(models, dict) else None
    google = providers.get("google") if isinstance(providers, dict) else None
    key = google.get("apiKey") if isinstance(google, dict) else None
    if key is None or not _wants_google_key(plugin):
        return
    node = plugin["realtime"]
    for name in ("providers", "google"):
        child = node.setdefault(name, {})
        if not isinstance(child, dict):
            return
        node = child
    node.setdefault("apiKey", key)


def _apply_environment(plugin: dict[str, Any], environ: Mapping[str, str]) -> dict[str, str]:
    used: dict[str, str] = {}
    provider = plugin.get("provider", "mock")
    wanted = [(keys, (var,)) for keys, var in _PROVIDER_ENV.get(provider, [])] + _ALWAYS_ENV
    streaming = plugin.get("streaming")
    if isinstance(streaming, dict) and streaming.get("enabled"):
        wanted.append((("streaming", "providers", "openai", "apiKey"), ("OPENAI_API_KEY",)))
        stt = streaming.get("provider")
        if isinstance(stt, str):
            wanted += _STT_ENV.get(stt, [])
    if _realtime_uses_openai(plugin.get("realtime")):
        wanted.append((("realtime", "providers", "openai", "apiKey"), ("OPENAI_API_KEY",)))
    if _wants_google_key(plugin):
        wanted.append((("realtime", "providers", "google", "apiKey"), _GOOGLE_KEYS))
    for keys, names in wanted:
        _fill(plugin, keys, names, environ, used, ())
    return used


def _realtime_uses_openai(realtime: Any) -> bool:
    """Whether an enabled C{realtime} block picks OpenAI (named, or the only one configured)."""
    if not isinstance(realtime, dict) or not realtime.get("enabled"):
        return False
    provider = realtime.get("provider")
    if provider is not None:
        return provider == "openai"
    providers = realtime.get("providers")
    return not isinstance(providers, dict) or set(providers) <= {"openai"}


def _apply_tts_environment(
    tts: dict[str, Any], environ: Mapping[str, str], used: dict[str, str]
) -> dict[str, Any]:
    for keys, names in _TTS_ENV:
        _fill(tts, keys, names, environ, used, ("tts",))
    return tts


def _fill(
    target: dict[str, Any],
    keys: Path,
    names: tuple[str, ...],
    environ: Mapping[str, str],
    used: dict[str, str],
    base: Path,
) -> None:
    value = next((environ[n] for n in names if environ.get(n)), None)
    name = next((n for n in names if environ.get(n)), None)
    if value is None:
        return
    node = target
    for key in keys[:-1]:
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            return
        node = child
    if keys[-1] not in node:
        node[keys[-1]] = value
        used[".".join((*base, *keys))] = name


def _blame_environment(problem: Problem, prefix: Path, used: dict[str, str]) -> Problem:
    key = ".".join(problem.path[len(prefix) :])
    if key in used:
        return Problem(problem.path, f"{problem.reason} (the value comes from ${used[key]})")
    return problem


def check_consistency(loaded: LoadedConfig) -> list[Problem]:
    """Upstream's cross-field rules (only for an enabled config), each with its key path."""
    s = loaded.settings
    if not s.enabled:
        return []
    at = loaded.prefix
    problems: list[Problem] = []
    if s.provider != "mock" and s.from_number is None:
        hint = " (or set TWILIO_FROM_NUMBER)" if s.provider == "twilio" else ""
        problems.append(Problem((*at, "fromNumber"), f"required for provider {s.provider!r}{hint}"))
    required = {
        "twilio": [
            ("accountSid", s.twilio.account_sid, "TWILIO_ACCOUNT_SID"),
            ("authToken", s.twilio.auth_token, "TWILIO_AUTH_TOKEN"),
        ],
        "telnyx": [
            ("apiKey", s.telnyx.api_key, "TELNYX_API_KEY"),
            ("connectionId", s.telnyx.connection_id, "TELNYX_CONNECTION_ID"),
        ]
        + (
            []
            if s.skip_signature_verification
            else [("publicKey", s.telnyx.public_key, "TELNYX_PUBLIC_KEY")]
        ),
        "plivo": [
            ("authId", s.plivo.auth_id, "PLIVO_AUTH_ID"),
            ("authToken", s.plivo.auth_token, "PLIVO_AUTH_TOKEN"),
        ],
    }
    for key, value, env in required.get(s.provider, []):
        if value is None:
            problems.append(
                Problem(
                    (*at, s.provider, key), f"required for provider {s.provider!r} (or set {env})"
                )
            )
    if s.realtime.enabled:
        if s.inbound_policy == "disabled":
            problems.append(
                Problem(
                    (*at, "inboundPolicy"), 'must not be "disabled" when realtime.enabled is true'
                )
            )
        if s.streaming.enabled:
            problems.append(
                Problem(
                    (*at, "realtime", "enabled"),
                    "realtime.enabled and streaming.enabled cannot both be true"
                    " (pick one audio mode)",
                )
            )
    return problems
