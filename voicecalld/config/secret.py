"""A value that must never be shown: it formats as ``<redacted>`` everywhere."""

from __future__ import annotations

from attrs import field, frozen

REDACTED = "<redacted>"


@frozen
class Secret:
    """A secret string (token, key).  Read it with L{reveal}; it never prints itself."""

    _value: str = field(repr=False, alias="value")

    def reveal(self) -> str:
        """Return the secret itself, for the one place that must send it."""
        return self._value

    def __str__(self) -> str:
        return REDACTED

    def __repr__(self) -> str:
        return f"Secret({REDACTED})"

    def __format__(self, spec: str) -> str:
        return REDACTED


def reveal(secret: Secret | None) -> str | None:
    """Return the secret's text, or None when it is unset."""
    return None if secret is None else secret.reveal()
