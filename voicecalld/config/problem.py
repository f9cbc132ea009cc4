"""Key paths and the one error a config value can have."""

from __future__ import annotations

Path = tuple[str, ...]


class Problem(Exception):
    """One invalid value: where it is (a key path) and what is wrong with it."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(path, reason)
        self.path = path
        self.reason = reason

    def __str__(self) -> str:
        return f"{dotted(self.path)}: {self.reason}"


def dotted(path: Path) -> str:
    """Render a key path the way users write it: C{twilio.authToken}."""
    return ".".join(path) if path else "(top level)"


def describe(value: object) -> str:
    """What kind of JSON value C{value} is, for messages (C{a string}, C{null})."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
