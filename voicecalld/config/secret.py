"""A value that must never be shown: it formats as ``<redacted>`` everywhere."""

from __future__ import annotations

from attrs import field, frozen

REDACTED = "<redacted>"


class UnresolvedSecret(Exception):
    """A secret read before its secret reference was resolved (a bug, not a config error)."""


@frozen
class SecretRef:
    """
    An OpenClaw SecretRef: which provider holds a secret and under which id.

    C{provider} None means the source's default alias (C{secrets.defaults.<source>},
    else C{default}); resolution fills it in.  C{where} is the key path that
    names the reference in the config file, for messages; it is not part of
    the reference's identity.
    """

    source: str
    provider: str | None
    id: str
    where: tuple[str, ...] = field(default=(), eq=False)

    def label(self) -> str:
        """C{source:provider:id}, the way OpenClaw names a reference in messages."""
        return f"{self.source}:{self.provider or 'default'}:{self.id}"


@frozen
class Secret:
    """
    A secret string (token, key).  Read it with L{reveal}; it never prints itself.

    A secret named by a L{SecretRef} carries the reference; its value is None
    until the reference is resolved.
    """

    _value: str | None = field(repr=False, alias="value")
    ref: SecretRef | None = None

    @property
    def resolved(self) -> bool:
        """Whether the value is known (always, unless it is an unresolved reference)."""
        return self._value is not None

    def reveal(self) -> str:
        """Return the secret itself, for the one place that must send it."""
        if self._value is None:
            where = ".".join(self.ref.where) if self.ref is not None else "?"
            raise UnresolvedSecret(f"{where}: the secret reference was not resolved")
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
