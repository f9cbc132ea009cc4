"""
OpenClaw SecretRefs as config values: their grammar, as the 2026.9 SecretRef
contract (C{docs/gateway/secrets/secretref-contract.md}) defines it.

A secret key that takes references holds either a literal string, the env
shorthand C{"${NAME}"} / C{"$NAME"}, or the object C{{source, provider, id}}.
Reading one gives a L{Secret}: literal, or carrying its L{SecretRef} with no
value yet (L{voicecalld.config.resolve} fills those in).
"""

from __future__ import annotations

import re
from typing import Any

from voicecalld.config.problem import Path, Problem, describe
from voicecalld.config.secret import REDACTED, Secret, SecretRef

SOURCES = ("env", "file", "exec", "store")
REF_KEYS = frozenset({"source", "provider", "id"})

ALIAS_PATTERN = r"[a-z][a-z0-9_-]{0,63}"
ENV_NAME_PATTERN = r"[A-Z][A-Z0-9_]{0,127}"
# An absolute JSON pointer (RFC 6901: "~" only as ~0 or ~1), or "value".
FILE_ID_PATTERN = r"value|(?:/(?:[^~/]|~[01])*)+"
EXEC_ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._:/#-]{0,255}"

_SHORTHAND = re.compile(rf"\$\{{({ENV_NAME_PATTERN})\}}|\$({ENV_NAME_PATTERN})")

# Where upstream 2026.9 takes SecretRefs in the plugin config (configuration.md
# and the SecretRef credential surface), relative to the plugin config.
REF_KEY_PATHS = (
    "twilio.authToken",
    "tts.providers.*.apiKey",
    "streaming.providers.*.apiKey",
    "realtime.providers.*.apiKey",
)
_REF_KEYS_TEXT = ", ".join(REF_KEY_PATHS)

ID_PATTERNS = {
    "env": ENV_NAME_PATTERN,
    "store": ENV_NAME_PATTERN,
    "file": FILE_ID_PATTERN,
    "exec": EXEC_ID_PATTERN,
}
_ID_MEANINGS = {
    "env": "an environment variable name (A-Z, 0-9 and _, from a letter)",
    "store": "a secret-store name (A-Z, 0-9 and _, from a letter)",
    "file": "an absolute JSON pointer such as '/providers/openai/apiKey'"
    " (or 'value' for a singleValue file provider)",
    "exec": "1-256 of A-Z a-z 0-9 . _ : / # - (from a letter or digit), with no '.' or '..'"
    " segment",
}


def shorthand(value: str) -> str | None:
    """The variable named by C{"${NAME}"} or C{"$NAME"}, else None."""
    match = _SHORTHAND.fullmatch(value.strip())
    if match is None:
        return None
    return match.group(1) or match.group(2)


def secret_input(value: Any, path: Path, *, refs: bool) -> Secret:
    """
    Read a secret key's value.  With C{refs}, references are taken (as upstream
    takes them at L{REF_KEY_PATHS}); without, they are refused by name.
    """
    if isinstance(value, Secret):
        return value
    if isinstance(value, str):
        name = shorthand(value)
        if name is not None and refs:
            return Secret(None, SecretRef("env", None, name, path))
        if name is not None and value.strip().startswith("${"):
            # Upstream substitutes ${NAME} in any string; voicecalld does so
            # only where a SecretRef is taken, so say it rather than send it.
            raise Problem(path, _not_here(f"{value.strip()!r} (an environment reference) is"))
        if not value:
            raise Problem(path, "must not be empty")
        return Secret(value)
    if isinstance(value, dict):
        if not refs:
            raise Problem(path, _not_here("secret references are"))
        return Secret(None, parse_ref(value, path))
    wanted = "a string or a secret reference" if refs else "a string"
    raise Problem(path, f"expected {wanted}, got {describe(value)}")


def _not_here(what: str) -> str:
    return (
        f"{what} not accepted here (as upstream, only at {_REF_KEYS_TEXT});"
        " put the value itself, or leave the key out and set its environment variable"
    )


def parse_ref(value: dict[str, Any], path: Path) -> SecretRef:
    """Check a C{{source, provider, id}} object and return its L{SecretRef}."""
    for key in value:
        if key not in REF_KEYS:
            raise Problem(
                (*path, key), "unknown key (a secret reference has source, provider and id)"
            )
    missing = [key for key in ("source", "provider", "id") if key not in value]
    if missing:
        needed = ", ".join(missing)
        raise Problem(path, f"a secret reference needs source, provider and id (missing: {needed})")
    source, provider, ref_id = value["source"], value["provider"], value["id"]
    if source not in SOURCES:
        shown = repr(source) if isinstance(source, str) else describe(source)
        choices = ", ".join(repr(s) for s in SOURCES)
        raise Problem((*path, "source"), f"must be one of {choices}, got {shown}")
    if not isinstance(provider, str) or re.fullmatch(ALIAS_PATTERN, provider) is None:
        raise Problem(
            (*path, "provider"),
            f"must be a provider alias matching {ALIAS_PATTERN} (e.g. 'default'),"
            f" got {_shown(provider)}",
        )
    pattern, meaning = ID_PATTERNS[source], _ID_MEANINGS[source]
    if not isinstance(ref_id, str) or not _id_ok(source, ref_id, pattern):
        raise Problem(
            (*path, "id"), f"a {source} reference id must be {meaning}, got {_shown(ref_id)}"
        )
    return SecretRef(source, provider, ref_id, path)


def _id_ok(source: str, ref_id: str, pattern: str) -> bool:
    if re.fullmatch(pattern, ref_id) is None:
        return False
    return source != "exec" or all(part not in (".", "..") for part in ref_id.split("/"))


def _shown(value: Any) -> str:
    return repr(value) if isinstance(value, str) else describe(value)


def redacted(ref: SecretRef) -> dict[str, str]:
    """A reference as C{check-config} shows it: source and provider kept, id concealed."""
    return {"source": ref.source, "provider": ref.provider or "default", "id": REDACTED}


def as_json(ref: SecretRef) -> dict[str, str]:
    """A reference as written in the config, its provider alias filled in."""
    return {"source": ref.source, "provider": ref.provider or "default", "id": ref.id}
