"""
A small declarative schema for the config tree.

Each config object is a frozen attrs class whose fields are declared with
L{setting}: the field's value kind (which validates and converts the JSON
value), its default, and whether it is a secret.  L{structure} turns parsed
JSON into those classes, rejecting unknown keys by path; L{unstructure} turns
them back into JSON-shaped dicts (camelCase keys, secrets redacted) for
C{voicecall check-config}.

JSON keys are the field names in camelCase unless a field names its own key.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import attrs

from voicecalld.config import refs
from voicecalld.config.problem import Path, Problem, describe
from voicecalld.config.problem import dotted as dotted  # re-exported: callers import it here
from voicecalld.config.secret import REDACTED

_KIND = "voicecalld.kind"
_KEY = "voicecalld.key"


def camel(name: str) -> str:
    """C{max_duration_seconds} -> C{maxDurationSeconds}."""
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


class Kind:
    """How one value is validated and converted.  Subclasses override L{check}."""

    def check(self, value: Any, path: Path, notes: list[Problem]) -> Any:
        """Return the converted value or raise L{Problem}; append warnings to C{notes}."""
        raise NotImplementedError

    def dump(self, value: Any, redact: bool) -> Any:
        """Turn a converted value back into JSON data."""
        return value


@attrs.frozen
class Bool(Kind):
    """true or false."""

    def check(self, value, path, notes):
        if not isinstance(value, bool):
            raise Problem(path, f"expected true or false, got {describe(value)}")
        return value


@attrs.frozen
class Int(Kind):
    """A whole JSON number within bounds."""

    minimum: int | None = None
    maximum: int | None = None

    def check(self, value, path, notes):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise Problem(path, f"expected a whole number, got {describe(value)}")
        if isinstance(value, float):
            if not value.is_integer():
                raise Problem(path, f"expected a whole number, got {value}")
            value = int(value)
        _bounds(value, self.minimum, self.maximum, path)
        return value


@attrs.frozen
class Number(Kind):
    """Any finite JSON number within bounds."""

    minimum: float | None = None
    maximum: float | None = None

    def check(self, value, path, notes):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise Problem(path, f"expected a number, got {describe(value)}")
        if not math.isfinite(value):
            raise Problem(path, "expected a finite number")
        _bounds(value, self.minimum, self.maximum, path)
        return value


def _bounds(value, minimum, maximum, path):
    if minimum is not None and value < minimum:
        if minimum == 1 and isinstance(value, int):
            raise Problem(path, f"must be a positive whole number, got {value}")
        raise Problem(path, f"must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise Problem(path, f"must be at most {maximum}, got {value}")


@attrs.frozen
class Str(Kind):
    """A string, optionally non-empty or matching a pattern."""

    min_length: int = 0
    pattern: str | None = None
    pattern_reason: str = "has the wrong form"
    max_length: int | None = None

    def check(self, value, path, notes):
        if not isinstance(value, str):
            raise Problem(path, f"expected a string, got {describe(value)}")
        if len(value) < self.min_length:
            raise Problem(path, "must not be empty")
        if self.max_length is not None and len(value) > self.max_length:
            raise Problem(path, f"must be at most {self.max_length} characters long")
        if self.pattern is not None and re.fullmatch(self.pattern, value) is None:
            raise Problem(path, f"{value!r} {self.pattern_reason}")
        return value


E164_PATTERN = r"\+[1-9]\d{1,14}"


def E164() -> Str:
    """A phone number in E.164 form, as upstream checks it."""
    return Str(1, E164_PATTERN, "is not an E.164 number (expected e.g. +15550001234)")


def DialPrefix() -> Str:
    """The start of an E.164 number, for the toll-fraud guard."""
    return Str(2, r"\+\d{1,15}", "is not a number prefix (expected e.g. +1900)")


def Path_() -> Str:
    """A URL path such as C{/voice/webhook}."""
    return Str(1, r"/[^\s?#]*", "is not a URL path (it must start with / and hold no ? or #)")


@attrs.frozen
class Url(Kind):
    """An absolute URL with one of the allowed schemes."""

    schemes: tuple[str, ...] = ("http", "https")

    def check(self, value, path, notes):
        if not isinstance(value, str):
            raise Problem(path, f"expected a URL string, got {describe(value)}")
        parts = urlsplit(value)
        if parts.scheme not in self.schemes or not parts.hostname:
            wanted = " or ".join(f"{s}://" for s in self.schemes)
            raise Problem(path, f"{value!r} is not an absolute {wanted} URL")
        return value


@attrs.frozen
class Enum(Kind):
    """One of a fixed set of strings."""

    values: tuple[str, ...]

    def check(self, value, path, notes):
        if value not in self.values:
            choices = ", ".join(repr(v) for v in self.values)
            shown = repr(value) if isinstance(value, str) else describe(value)
            raise Problem(path, f"must be one of {choices}, got {shown}")
        return value


@attrs.frozen
class SecretStr(Kind):
    """
    A non-empty secret string, wrapped in L{Secret}.  With C{refs}, also an
    OpenClaw SecretRef (object or C{"${NAME}"}), kept unresolved in the L{Secret}.
    """

    refs: bool = False

    def check(self, value, path, notes):
        return refs.secret_input(value, path, refs=self.refs)

    def dump(self, value, redact):
        if redact:
            return REDACTED if value.ref is None else refs.redacted(value.ref)
        return value.reveal() if value.resolved else refs.as_json(value.ref)


@attrs.frozen
class ListOf(Kind):
    """A JSON list whose items all have one kind; stored as a tuple."""

    item: Kind
    max_items: int | None = None

    def check(self, value, path, notes):
        if not isinstance(value, list | tuple):
            raise Problem(path, f"expected a list, got {describe(value)}")
        if self.max_items is not None and len(value) > self.max_items:
            raise Problem(path, f"must have at most {self.max_items} items, got {len(value)}")
        return tuple(self.item.check(v, (*path, str(i)), notes) for i, v in enumerate(value))

    def dump(self, value, redact):
        return [self.item.dump(v, redact) for v in value]


@attrs.frozen
class Blob(Kind):
    """A free-form JSON object owned by something else; kept as given."""

    def check(self, value, path, notes):
        if not isinstance(value, dict):
            raise Problem(path, f"expected an object, got {describe(value)}")
        return value

    def dump(self, value, redact):
        if not redact:
            return value
        return {k: (REDACTED if _looks_secret(k) else v) for k, v in value.items()}


@attrs.frozen
class ProviderBlob(Blob):
    """
    A provider's block that voicecalld does not run: kept as given, but its
    C{apiKey} must be a string or a well-formed SecretRef, as upstream checks.
    """

    def check(self, value, path, notes):
        value = super().check(value, path, notes)
        if "apiKey" in value:
            refs.secret_input(value["apiKey"], (*path, "apiKey"), refs=True)
        return value


def _looks_secret(key: str) -> bool:
    lowered = key.lower()
    return any(word in lowered for word in ("key", "token", "secret", "password"))


@attrs.frozen
class Nested(Kind):
    """An object described by a settings class."""

    cls: type
    strict: bool = True

    def check(self, value, path, notes):
        return structure(self.cls, value, path, notes, strict=self.strict)

    def dump(self, value, redact):
        return unstructure(value, redact)


@attrs.frozen
class MapOf(Kind):
    """An object with free keys: known keys get their own kind, others C{other}."""

    other: Kind
    known: Mapping[str, Kind] = attrs.field(factory=dict)
    key: Str | None = None
    describe_other: Callable[[str], str] | None = None

    def check(self, value, path, notes):
        if not isinstance(value, dict):
            raise Problem(path, f"expected an object, got {describe(value)}")
        result = {}
        for name, item in value.items():
            here = (*path, name)
            if self.key is not None:
                self.key.check(name, here, notes)
            kind = self.known.get(name)
            if kind is None:
                kind = self.other
                if self.describe_other is not None:
                    notes.append(Problem(here, self.describe_other(name)))
            result[name] = kind.check(item, here, notes)
        return result

    def dump(self, value, redact):
        return {
            name: self.known.get(name, self.other).dump(item, redact)
            for name, item in value.items()
        }


def setting(kind: Kind, default: Any = None, *, key: str | None = None) -> Any:
    """Declare one config field: its kind, its default and (rarely) its JSON key."""
    metadata = {_KIND: kind, _KEY: key}
    if isinstance(kind, Nested):
        cls = kind.cls
        return attrs.field(factory=lambda: structure(cls, {}, (), []), metadata=metadata)
    if isinstance(default, list | dict):
        frozen = tuple(default) if isinstance(default, list) else dict(default)
        return attrs.field(factory=lambda: frozen, metadata=metadata)
    return attrs.field(default=default, metadata=metadata)


def json_key(field: attrs.Attribute) -> str:
    """The JSON key of a settings field."""
    return field.metadata.get(_KEY) or camel(field.name)


def keys_of(cls: type) -> dict[str, attrs.Attribute]:
    """Map each JSON key of a settings class to its field."""
    return {json_key(f): f for f in attrs.fields(cls) if _KIND in f.metadata}


def structure(cls: type, raw: Any, path: Path, notes: list[Problem], *, strict: bool = True) -> Any:
    """
    Build a settings object from parsed JSON.

    Unknown keys raise L{Problem} when C{strict}, else become notes (and are dropped).
    """
    if not isinstance(raw, dict):
        raise Problem(path, f"expected an object, got {describe(raw)}")
    fields = keys_of(cls)
    for name in raw:
        if name not in fields:
            problem = Problem((*path, name), "unknown key")
            if strict:
                raise Problem(problem.path, f"unknown key ({_suggest(name, fields)})")
            notes.append(problem)
    values = {}
    for name, field in fields.items():
        if name in raw:
            values[field.alias] = field.metadata[_KIND].check(raw[name], (*path, name), notes)
    return cls(**values)


def _suggest(name: str, known: Mapping[str, Any]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.75)
    if close:
        return f"did you mean {close[0]!r}?"
    return "known keys here: " + ", ".join(sorted(known))


def unstructure(obj: Any, redact: bool = True) -> dict[str, Any]:
    """Turn a settings object back into JSON data; unset values are left out."""
    result = {}
    for field in attrs.fields(type(obj)):
        if _KIND not in field.metadata:
            continue
        value = getattr(obj, field.name)
        if value is None:
            continue
        result[json_key(field)] = field.metadata[_KIND].dump(value, redact)
    return result
