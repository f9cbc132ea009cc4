"""
The plugin config as a JSON schema, generated from the attrs config model.

The OpenClaw gateway validates C{plugins.entries.voice-call.config} against
the C{configSchema} of the shim's manifest (C{gateway/openclaw.plugin.json})
before the daemon ever reads the file, so that schema must accept exactly
what the daemon accepts.  It is generated here from the same declarations the
daemon validates with (L{voicecalld.config.model} and the kinds of
L{voicecalld.config.schema}), plus the legacy keys L{voicecalld.config.legacy}
rewrites, since users bring old configs.

C{python -m voicecalld.config.jsonschema} prints the schema;
C{--manifest PATH} rewrites the C{configSchema} of a manifest file in place.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from typing import Any

import attrs

from voicecalld.config import legacy, refs
from voicecalld.config.model import (
    OpenAIStreamingSettings,
    StreamingSettings,
    TwilioSettings,
    VoiceCallSettings,
)
from voicecalld.config.schema import (
    _KIND,
    E164,
    Blob,
    Bool,
    Enum,
    Int,
    Kind,
    ListOf,
    MapOf,
    Nested,
    Number,
    ProviderBlob,
    SecretStr,
    Str,
    Url,
    json_key,
    keys_of,
)

JSON = dict[str, Any]


def kind_schema(kind: Kind) -> JSON:
    """The JSON schema of one value kind."""
    if isinstance(kind, Bool):
        return {"type": "boolean"}
    if isinstance(kind, Int):
        return _bounded({"type": "integer"}, kind.minimum, kind.maximum)
    if isinstance(kind, Number):
        return _bounded({"type": "number"}, kind.minimum, kind.maximum)
    if isinstance(kind, SecretStr):
        return secret_input_schema() if kind.refs else {"type": "string", "minLength": 1}
    if isinstance(kind, Str):
        schema: JSON = {"type": "string"}
        if kind.min_length:
            schema["minLength"] = kind.min_length
        if kind.max_length is not None:
            schema["maxLength"] = kind.max_length
        if kind.pattern is not None:
            schema["pattern"] = f"^(?:{kind.pattern})$"
        return schema
    if isinstance(kind, Url):
        schemes = "|".join(re.escape(s) for s in kind.schemes)
        return {"type": "string", "pattern": f"^(?:{schemes})://[^/?#\\s]+"}
    if isinstance(kind, Enum):
        return {"type": "string", "enum": list(kind.values)}
    if isinstance(kind, ListOf):
        schema = {"type": "array", "items": kind_schema(kind.item)}
        if kind.max_items is not None:
            schema["maxItems"] = kind.max_items
        return schema
    if isinstance(kind, ProviderBlob):
        return {"type": "object", "properties": {"apiKey": secret_input_schema()}}
    if isinstance(kind, Blob):
        return {"type": "object"}
    if isinstance(kind, Nested):
        return object_schema(kind.cls, strict=kind.strict)
    if isinstance(kind, MapOf):
        schema = {"type": "object"}
        if kind.known:
            schema["properties"] = {name: kind_schema(k) for name, k in kind.known.items()}
        if kind.key is not None:
            # Keys are always strings; without "type" OpenClaw keeps the rule.
            names = kind_schema(kind.key)
            del names["type"]
            schema["propertyNames"] = names
        schema["additionalProperties"] = kind_schema(kind.other)
        return schema
    raise TypeError(f"no JSON schema for config kind {kind!r}")


def secret_input_schema() -> JSON:
    """A secret that may be an OpenClaw SecretRef: a string, or one of the four reference shapes."""
    shapes: list[JSON] = [{"type": "string", "minLength": 1}]
    for source in refs.SOURCES:
        pattern = refs.ID_PATTERNS[source]
        if source == "exec":
            pattern = r"(?!(?:.*/)?\.{1,2}(?:/|$))" + pattern
        shapes.append(
            {
                "type": "object",
                "additionalProperties": False,
                "required": ["source", "provider", "id"],
                "properties": {
                    "source": {"type": "string", "enum": [source]},
                    "provider": {"type": "string", "pattern": f"^(?:{refs.ALIAS_PATTERN})$"},
                    "id": {"type": "string", "pattern": f"^(?:{pattern})$"},
                },
            }
        )
    return {"anyOf": shapes}


def _bounded(schema: JSON, minimum: float | None, maximum: float | None) -> JSON:
    if minimum is not None:
        schema["minimum"] = minimum
    if maximum is not None:
        schema["maximum"] = maximum
    return schema


def object_schema(cls: type, *, strict: bool = True) -> JSON:
    """The JSON schema of a settings class: its keys, and (when strict) nothing else."""
    properties = {
        json_key(field): kind_schema(field.metadata[_KIND])
        for field in attrs.fields(cls)
        if _KIND in field.metadata
    }
    return {"type": "object", "additionalProperties": not strict, "properties": properties}


def plugin_schema() -> JSON:
    """The whole plugin config schema, legacy keys included."""
    schema = object_schema(VoiceCallSettings)
    _add_legacy(schema)
    return schema


def _add_legacy(schema: JSON) -> None:
    """Accept the older shapes that L{legacy.migrate_plugin} rewrites."""
    top = schema["properties"]
    top["provider"]["enum"].append("log")
    top["stt"] = {"type": "object"}
    twilio = top["twilio"]["properties"]
    assert "from" not in keys_of(TwilioSettings)
    twilio["from"] = kind_schema(E164())

    streaming = top["streaming"]["properties"]
    assert "sttProvider" not in keys_of(StreamingSettings)
    streaming["sttProvider"] = {"type": "string", "minLength": 1}
    openai_stt = keys_of(OpenAIStreamingSettings)
    for old, new in legacy._STREAMING_OPENAI_FIELDS.items():
        if old not in streaming:
            streaming[old] = kind_schema(openai_stt[new].metadata[_KIND])

    tts = top["tts"]["properties"]
    for dropped in ("model", "voice", "instructions"):
        tts[dropped] = {"type": "string"}
    providers = tts["providers"]["properties"]
    for block in providers.values():
        _add_speaker_fields(block)
    for old, new in legacy._TTS_PROVIDER_BLOCKS.items():
        tts[old] = providers.get(new, {"type": "object"})


def _add_speaker_fields(block: JSON) -> None:
    """Accept a provider block's pre-2026.9 speaker field names where their new name exists."""
    properties = block["properties"]
    for old, new in legacy._SPEAKER_FIELDS.items():
        if new in properties and old not in properties:
            properties[old] = properties[new]


def secret_paths() -> list[str]:
    """Dotted key paths of every secret in the plugin config (for uiHints)."""
    found: list[str] = []

    def walk(cls: type, prefix: str) -> None:
        for field in attrs.fields(cls):
            kind = field.metadata.get(_KIND)
            if kind is None:
                continue
            path = f"{prefix}{json_key(field)}"
            if isinstance(kind, SecretStr):
                found.append(path)
            elif isinstance(kind, Nested):
                walk(kind.cls, path + ".")
            elif isinstance(kind, MapOf):
                for name, known in kind.known.items():
                    if isinstance(known, Nested):
                        walk(known.cls, f"{path}.{name}.")

    walk(VoiceCallSettings, "")
    found.append("streaming.openaiApiKey")
    for old, new in legacy._TTS_PROVIDER_BLOCKS.items():
        found.extend(
            f"tts.{old}.{p[len(f'tts.providers.{new}.') :]}"
            for p in list(found)
            if p.startswith(f"tts.providers.{new}.")
        )
    return found


def main(argv: Sequence[str] | None = None) -> int:
    """Print the schema, or write it into a manifest's C{configSchema}."""
    parser = argparse.ArgumentParser(
        prog="python -m voicecalld.config.jsonschema",
        description="Print the JSON schema of the voice-call plugin config.",
    )
    parser.add_argument(
        "--manifest", metavar="PATH", help="rewrite configSchema in this openclaw.plugin.json"
    )
    args = parser.parse_args(argv)
    schema = plugin_schema()
    if args.manifest is None:
        json.dump(schema, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    with open(args.manifest, encoding="utf-8") as handle:
        manifest = json.load(handle)
    manifest["configSchema"] = schema
    with open(args.manifest, "w", encoding="utf-8") as handle:
        json.dump(manifest, handle, indent=2)
        handle.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
