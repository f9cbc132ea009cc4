"""
The C{secrets} block of a whole OpenClaw config: the providers that
SecretRefs name and the default alias of each source, with the options and
bounds of OpenClaw 2026.9's schema.

Only what the voice-call config uses is checked: C{secrets.defaults}, and each
provider a reference names.  The rest of the block belongs to OpenClaw.
"""

from __future__ import annotations

import os
from typing import Any

import attrs
from attrs import frozen

from voicecalld.config.problem import Path, Problem, describe
from voicecalld.config.refs import ALIAS_PATTERN, ENV_NAME_PATTERN, SOURCES
from voicecalld.config.schema import (
    Bool,
    Enum,
    Int,
    ListOf,
    MapOf,
    Nested,
    Str,
    setting,
    structure,
)

SECRETS_PATH: Path = ("secrets",)
DEFAULT_ALIAS = "default"
MAX_TIMEOUT_MS = 120_000
MAX_BYTES = 20 * 1024 * 1024


def _env_name() -> Str:
    return Str(1, ENV_NAME_PATTERN, "is not an environment variable name (A-Z, 0-9, _)")


@frozen
class EnvProvider:
    """C{{source: "env"}}: the daemon's environment, optionally limited to some names."""

    source: str = setting(Enum(("env",)), "env")
    allowlist: tuple[str, ...] | None = setting(ListOf(_env_name(), 256))


@frozen
class FileProvider:
    """C{{source: "file"}}: a private JSON file (or a single-value file)."""

    source: str = setting(Enum(("file",)), "file")
    path: str = setting(Str(1), "")
    mode: str = setting(Enum(("singleValue", "json")), "json")
    timeout_ms: int = setting(Int(1, MAX_TIMEOUT_MS), 5000)
    max_bytes: int = setting(Int(1, MAX_BYTES), 1024 * 1024)


@frozen
class PluginIntegration:
    """C{pluginIntegration}: an exec provider published by an OpenClaw plugin."""

    plugin_id: str = setting(Str(1, max_length=128), "")
    integration_id: str = setting(Str(1, max_length=128), "")


@frozen
class ExecProvider:
    """C{{source: "exec"}}: a resolver program spoken to in JSON on stdin/stdout."""

    source: str = setting(Enum(("exec",)), "exec")
    command: str | None = setting(Str(1))
    args: tuple[str, ...] = setting(ListOf(Str(max_length=1024), 128), [])
    timeout_ms: int = setting(Int(1, MAX_TIMEOUT_MS), 5000)
    no_output_timeout_ms: int | None = setting(Int(1, MAX_TIMEOUT_MS))
    max_output_bytes: int = setting(Int(1, MAX_BYTES), 1024 * 1024)
    json_only: bool = setting(Bool(), True)
    env: dict[str, str] = setting(MapOf(Str()), {})
    pass_env: tuple[str, ...] = setting(ListOf(_env_name(), 128), [])
    trusted_dirs: tuple[str, ...] = setting(ListOf(Str(1), 64), [])
    plugin_integration: PluginIntegration | None = setting(Nested(PluginIntegration))


@frozen
class StoreProvider:
    """C{{source: "store"}}: OpenClaw's own secret store (voicecalld cannot read it)."""

    source: str = setting(Enum(("store",)), "store")


PROVIDER_CLASSES = {
    "env": EnvProvider,
    "file": FileProvider,
    "exec": ExecProvider,
    "store": StoreProvider,
}

# Keys a provider block must have besides source: upstream's schema requires them.
_REQUIRED = {"file": ("path",)}


def _alias() -> Any:
    return setting(Str(1, ALIAS_PATTERN, f"is not a provider alias ({ALIAS_PATTERN})"))


@frozen
class SecretDefaults:
    """C{secrets.defaults}: the provider alias a reference without one uses, per source."""

    env: str | None = _alias()
    file: str | None = _alias()
    exec: str | None = _alias()
    store: str | None = _alias()

    def alias(self, source: str) -> str:
        """The default alias of C{source}."""
        return getattr(self, source) or DEFAULT_ALIAS


@frozen
class SecretsBlock:
    """The parts of C{secrets} voicecalld reads: provider blocks (raw) and the defaults."""

    providers: dict[str, Any] = attrs.field(factory=dict)
    defaults: SecretDefaults = attrs.field(factory=SecretDefaults)
    present: bool = False

    def provider(self, name: str) -> Any:
        """The checked block of provider C{name}, or None when it is not defined."""
        raw = self.providers.get(name)
        if raw is None:
            return None
        return parse_provider(raw, (*SECRETS_PATH, "providers", name))


def read_secrets_block(data: dict[str, Any]) -> SecretsBlock:
    """Read C{secrets} from a whole OpenClaw config (raising L{Problem} by path)."""
    raw = data.get("secrets")
    if raw is None:
        return SecretsBlock()
    if not isinstance(raw, dict):
        raise Problem(SECRETS_PATH, f"expected an object, got {describe(raw)}")
    providers = raw.get("providers", {})
    if not isinstance(providers, dict):
        raise Problem(
            (*SECRETS_PATH, "providers"), f"expected an object, got {describe(providers)}"
        )
    defaults = structure(SecretDefaults, raw.get("defaults", {}), (*SECRETS_PATH, "defaults"), [])
    return SecretsBlock(providers, defaults, True)


def parse_provider(raw: Any, path: Path) -> Any:
    """Check one C{secrets.providers.<name>} block as upstream's schema does."""
    if not isinstance(raw, dict):
        raise Problem(path, f"expected an object, got {describe(raw)}")
    source = raw.get("source")
    if source not in SOURCES:
        shown = repr(source) if isinstance(source, str) else describe(source)
        choices = ", ".join(repr(s) for s in SOURCES)
        raise Problem((*path, "source"), f"must be one of {choices}, got {shown}")
    for key in _REQUIRED.get(source, ()):
        if key not in raw:
            raise Problem((*path, key), f"required for a {source} provider")
    provider = structure(PROVIDER_CLASSES[source], raw, path, [])
    if isinstance(provider, ExecProvider):
        if "pluginIntegration" not in raw:
            provider = attrs.evolve(provider, plugin_integration=None)
        _check_exec(provider, raw, path)
    return provider


def _check_exec(provider: ExecProvider, raw: dict[str, Any], path: Path) -> None:
    if provider.plugin_integration is not None:
        others = sorted(set(raw) - {"source", "pluginIntegration"})
        if others:
            raise Problem(
                (*path, others[0]), "not allowed beside pluginIntegration (the plugin defines it)"
            )
        return
    if provider.command is None:
        raise Problem((*path, "command"), "required for an exec provider (an absolute path)")
    if not os.path.isabs(provider.command):
        raise Problem((*path, "command"), f"must be an absolute path, got {provider.command!r}")
    for i, directory in enumerate(provider.trusted_dirs):
        if not os.path.isabs(directory):
            raise Problem((*path, "trustedDirs", str(i)), "must be an absolute path")
