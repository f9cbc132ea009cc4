"""
One line per event: the text format for journald and terminals, and the
JSON format for log shippers.

A line never spans two lines: newlines inside a message are escaped and a
traceback is folded into the one line, so journald keeps one record per
event.  Only a real failure (error or critical) carries its traceback; a
warning that holds a failure shows its one-line message.  Fields that may
hold a key are never written, and a L{voicecalld.config.secret.Secret}
formats as C{<redacted>} wherever it sits.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import IO, Any

from twisted.logger import ILogObserver, LogLevel, formatEvent
from zope.interface import implementer

REDACTED = "<redacted>"
# Field names that hold (or may hold) a credential: never written.
_SECRET_WORDS = ("token", "secret", "password", "passwd", "apikey", "api_key", "authorization")
_SECRET_NAMES = frozenset({"key", "auth", "credentials", "cookie"})
# Twisted's own bookkeeping fields, not the event's content.
_PRIVATE = frozenset(
    {
        "log_logger",
        "log_source",
        "log_format",
        "log_text",
        "log_io",
        "log_trace",
        "log_flattened",
        "log_legacy",
        "log_system",
        "format",
        "message",
        "isError",
        "why",
        "failure",
    }
)
_MAX_TEXT = 2000
# syslog priorities, understood by journald at the start of a stdout line.
_PRIORITY = {"debug": 7, "info": 6, "warn": 4, "error": 3, "critical": 2}


def is_secret_name(name: str) -> bool:
    """Whether a field of this name may hold a credential."""
    lowered = name.lower()
    if lowered in _SECRET_NAMES or lowered.endswith("key"):
        return True
    return any(word in lowered for word in _SECRET_WORDS)


def level_name(event: Mapping[str, Any]) -> str:
    """The event's level as a word (info when it has none)."""
    level = event.get("log_level")
    return level.name if isinstance(level, type(LogLevel.info)) else "info"


def namespace(event: Mapping[str, Any]) -> str:
    """Who logged: the logger's namespace; C{twisted} for Twisted's legacy log."""
    name = event.get("log_namespace")
    return "twisted" if not name or name == "log_legacy" else str(name)


def _one_line(text: str) -> str:
    text = text.replace("\r", "").replace("\n", " | ")
    return text if len(text) <= _MAX_TEXT else text[:_MAX_TEXT] + "…"


def message(event: Mapping[str, Any]) -> str:
    """The event's formatted message on one line, with its failure if it has one."""
    text = formatEvent(event) or ""
    failure = event.get("log_failure")
    if failure is not None:
        if level_name(event) in ("error", "critical"):
            trace = failure.getTraceback().rstrip()
            text = f"{text} | {trace}" if text else trace
        else:
            text = f"{text}: {failure.getErrorMessage()}"
    return _one_line(text)


def _plain(value: Any, depth: int = 0) -> Any:
    """A JSON-safe copy of a field's value; anything else becomes its (redacting) str."""
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return value if len(value) <= _MAX_TEXT else value[:_MAX_TEXT] + "…"
    if depth < 3 and isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(v, depth + 1) for v in list(value)[:50]]
    if depth < 3 and isinstance(value, Mapping):
        return {
            str(k): REDACTED if is_secret_name(str(k)) else _plain(v, depth + 1)
            for k, v in list(value.items())[:50]
        }
    return _one_line(str(value))


def fields(event: Mapping[str, Any]) -> dict[str, Any]:
    """The event's own fields: not Twisted's bookkeeping, never a credential."""
    out: dict[str, Any] = {}
    for name, value in event.items():
        if name in _PRIVATE or name.startswith("log_") or name.startswith("_"):
            continue
        out[name] = REDACTED if is_secret_name(name) else _plain(value)
    return out


def _iso(seconds: float | None) -> str:
    moment = datetime.fromtimestamp(seconds or 0.0, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def text_line(event: Mapping[str, Any], *, journald: bool = False) -> str:
    """
    C{TIME LEVEL [namespace] code: message}; under journald the time is left
    to the journal and the level is given as a syslog priority prefix.
    """
    level = level_name(event)
    code = event.get("log_code")
    head = f"[{namespace(event)}]"
    if code:
        head = f"{head} {code}:"
    if journald:
        return f"<{_PRIORITY.get(level, 6)}>{head} {message(event)}\n"
    return f"{_iso(event.get('log_time'))} {level:<5} {head} {message(event)}\n"


def json_line(event: Mapping[str, Any]) -> str:
    """One JSON object: time, level, code, namespace, message, then the event's fields."""
    record: dict[str, Any] = {
        "time": _iso(event.get("log_time")),
        "level": level_name(event),
        "code": event.get("log_code"),
        "namespace": namespace(event),
        "message": message(event),
    }
    for name, value in fields(event).items():
        # An event's own field never hides one of the record's five.
        record[f"field_{name}" if name in record else name] = value
    return json.dumps(record, ensure_ascii=False, default=str) + "\n"


@implementer(ILogObserver)
class LineWriter:
    """Writes each event as one line to C{out} and flushes it."""

    def __init__(self, out: IO[str], render: Callable[[Mapping[str, Any]], str]) -> None:
        self._out = out
        self._render = render

    def __call__(self, event: Mapping[str, Any]) -> None:
        try:
            line = self._render(event)
        except Exception as e:  # a bad format string must not lose the event
            line = f"unformattable log event {event.get('log_namespace')}: {e!r}\n"
        self._out.write(line)
        self._out.flush()
