"""
Running the exposure tools (C{tailscale}, C{ngrok}) as child processes,
without blocking the reactor and never for longer than a deadline.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from attrs import frozen
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ProcessDone, ProcessExitedAlready
from twisted.internet.protocol import ProcessProtocol

INSTALL_HINTS = {
    "tailscale": "https://tailscale.com/download",
    "ngrok": "https://ngrok.com/download",
}


class ExposeError(Exception):
    """Exposure failed; the message says why in one line, without secrets."""


class ToolMissing(ExposeError):
    """The tool's executable is not installed or not on C{PATH}."""

    def __init__(self, name: str) -> None:
        where = INSTALL_HINTS.get(name)
        hint = f"; install it from {where}" if where else ""
        super().__init__(f"{name} is not installed or not on PATH{hint}")
        self.name = name


def find_executable(name: str, environ: Mapping[str, str]) -> str | None:
    """The full path of C{name} on C{environ}'s C{PATH}, or None."""
    if os.sep in name:
        return name if os.access(name, os.X_OK) and os.path.isfile(name) else None
    for folder in environ.get("PATH", os.defpath).split(os.pathsep):
        candidate = os.path.join(folder or ".", name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """C{text} with every secret replaced by C{<redacted>}."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "<redacted>")
    return text


def child_environment(
    environ: Mapping[str, str] | None, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The child's environment: C{environ} (default: ours) plus C{extra}."""
    env = dict(os.environ if environ is None else environ)
    env.update(extra or {})
    return env


@frozen
class ProcessResult:
    """How a short-lived tool run ended."""

    argv: tuple[str, ...]
    exit_code: int | None
    stdout: str
    stderr: str
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        """Exited 0 in time."""
        return self.exit_code == 0 and not self.timed_out

    def describe(self) -> str:
        """The command line, for messages."""
        return " ".join(self.argv)


class _Collect(ProcessProtocol):
    """Collects a child's output; fires C{done} when it has exited."""

    def __init__(self, argv: Sequence[str]) -> None:
        self.argv = tuple(argv)
        self.out: list[bytes] = []
        self.err: list[bytes] = []
        self.timed_out = False
        self.done: Deferred[ProcessResult] = Deferred()

    def connectionMade(self) -> None:
        self.transport.closeStdin()

    def outReceived(self, data: bytes) -> None:
        self.out.append(data)

    def errReceived(self, data: bytes) -> None:
        self.err.append(data)

    def kill(self) -> None:
        self.timed_out = True
        try:
            self.transport.signalProcess("KILL")
        except ProcessExitedAlready:
            pass

    def processEnded(self, reason: Any) -> None:
        if reason.check(ProcessDone):
            code: int | None = 0
        else:
            code = getattr(reason.value, "exitCode", None)
        self.done.callback(
            ProcessResult(
                argv=self.argv,
                exit_code=code,
                stdout=b"".join(self.out).decode("utf-8", "replace"),
                stderr=b"".join(self.err).decode("utf-8", "replace"),
                timed_out=self.timed_out,
            )
        )


def run(
    name: str,
    args: Sequence[str],
    *,
    reactor: Any,
    clock: Any = None,
    environ: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> Deferred[ProcessResult]:
    """
    Run C{name args...} and collect its output; killed after C{timeout} s.

    Fails with L{ToolMissing} when C{name} is not on C{environ}'s C{PATH}.
    The result is returned whatever the exit status: callers judge it.
    """
    env = child_environment(environ)
    executable = find_executable(name, env)
    if executable is None:
        return fail(ToolMissing(name))
    argv = [name, *args]
    protocol = _Collect(argv)
    reactor.spawnProcess(protocol, executable, argv, env=env)
    deadline = (clock or reactor).callLater(timeout, protocol.kill)

    def settled(result: ProcessResult) -> ProcessResult:
        if deadline.active():
            deadline.cancel()
        return result

    return protocol.done.addCallback(settled)
