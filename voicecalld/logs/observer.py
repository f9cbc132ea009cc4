"""
The observer chain the daemon logs through: a level filter (info and up),
the flood summary, then one line per event in the chosen format.

twistd takes the chain from the application's C{ILogObserver} component,
which L{LoggingRoot} sets when twistd makes it the application's service;
twistd's own C{--logger} still wins when given.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from functools import partial
from typing import IO, Any

from twisted.application import service
from twisted.internet.interfaces import IReactorTime
from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    PredicateResult,
)
from twisted.python.components import Componentized

from voicecalld.logs.flood import FloodFilter
from voicecalld.logs.lines import LineWriter, json_line, text_line

FORMATS = ("text", "json")
# Twisted's routine chatter, one line per connection: not events of ours.
_ROUTINE_NAMESPACES = frozenset({"twisted.protocols.amp"})
_ROUTINE_PREFIXES = ("Starting factory", "Stopping factory")


def routine(event: Mapping[str, Any]) -> PredicateResult:
    """Drop Twisted's per-connection info chatter (a CLI client's connect, a factory start)."""
    if event.get("log_level") not in (LogLevel.info, LogLevel.debug):
        return PredicateResult.maybe
    if event.get("log_namespace") in _ROUTINE_NAMESPACES:
        return PredicateResult.no
    text = event.get("log_format") or " ".join(str(m) for m in event.get("message", ()))
    if isinstance(text, str) and text.startswith(_ROUTINE_PREFIXES):
        return PredicateResult.no
    return PredicateResult.maybe


def under_journald(environ: Mapping[str, str], out: IO[str]) -> bool:
    """Whether C{out} is the journal's stream (systemd sets C{JOURNAL_STREAM})."""
    stream = environ.get("JOURNAL_STREAM", "")
    try:
        st = os.fstat(out.fileno())
    except (AttributeError, OSError, ValueError):
        return False
    return stream == f"{st.st_dev}:{st.st_ino}"


class Chain:
    """
    The daemon's observer: C{observer} takes events, L{flush} writes pending
    flood summaries.
    """

    def __init__(
        self,
        log_format: str,
        out: IO[str],
        clock: IReactorTime,
        *,
        level: LogLevel = LogLevel.info,
        journald: bool = False,
        window: float = 10.0,
        burst: int = 5,
    ) -> None:
        if log_format not in FORMATS:
            raise ValueError(f"log format {log_format!r}: use text or json")
        render: Any = json_line if log_format == "json" else partial(text_line, journald=journald)
        self.flood = FloodFilter(LineWriter(out, render), clock, window=window, burst=burst)
        self.observer: ILogObserver = FilteringLogObserver(
            self.flood, [LogLevelFilterPredicate(defaultLogLevel=level), routine]
        )

    def flush(self) -> None:
        """Write every pending flood summary."""
        self.flood.flush()


def output(parent_options: Mapping[str, Any] | None) -> IO[str] | None:
    """
    Where twistd would write: stdout under C{-n} (or C{--logfile -}), its
    C{--logfile}, else C{twistd.log} when it daemonizes; None under
    C{--syslog}, which is left to twistd.
    """
    options = parent_options or {"nodaemon": True}
    if options.get("syslog"):
        return None
    name = options.get("logfile")
    if name == "-" or (not name and options.get("nodaemon")):
        return sys.stdout
    from twisted.python.logfile import LogFile

    return LogFile.fromFullPath(name or "twistd.log")  # type: ignore[return-value]


class LoggingRoot(service.MultiService):
    """
    The service twistd runs: the daemon under it, and the log chain offered
    to twistd as the application's log observer.
    """

    def __init__(self, chain: Chain) -> None:
        super().__init__()
        self.chain = chain

    def setServiceParent(self, parent: Any) -> None:
        if isinstance(parent, Componentized) and parent.getComponent(ILogObserver) is None:
            parent.setComponent(ILogObserver, self.chain.observer)
        super().setServiceParent(parent)

    def stopService(self) -> Any:
        d = super().stopService()
        if d is None:
            self.chain.flush()
            return None
        return d.addBoth(lambda result: (self.chain.flush(), result)[1])
