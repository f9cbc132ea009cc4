"""The config: OpenClaw's voice-call plugin config, read and checked."""

from voicecalld.config.loader import (
    ConfigError,
    LoadedConfig,
    is_implicit_default,
    load_config,
    parse_config,
    resolve_config_path,
)
from voicecalld.config.model import VoiceCallSettings
from voicecalld.config.secret import Secret

__all__ = [
    "ConfigError",
    "LoadedConfig",
    "Secret",
    "VoiceCallSettings",
    "is_implicit_default",
    "load_config",
    "parse_config",
    "resolve_config_path",
]
