"""
An ngrok tunnel: the C{ngrok http} agent as a long-running child process.

The auth token goes to the child in C{NGROK_AUTHTOKEN}, never on its
command line, and is blanked out of anything we report (ngrok prints it
back in some errors).  Upstream runs C{ngrok config add-authtoken} first,
which writes the token into ngrok's config file; the environment variable
needs no file.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ProcessDone, ProcessExitedAlready
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger

from voicecalld.expose.process import (
    ExposeError,
    ToolMissing,
    child_environment,
    find_executable,
    redact,
)

_log = Logger(namespace="voicecalld.expose.ngrok")


def ngrok_argv(port: int, domain: str | None = None) -> list[str]:
    """The agent's command line (upstream's, unchanged)."""
    argv = ["ngrok", "http", str(port), "--log", "stdout", "--log-format", "json"]
    if domain:
        argv += ["--domain", domain]
    return argv


def _secret_text(secret: Any) -> str | None:
    if secret is None:
        return None
    reveal = getattr(secret, "reveal", None)
    return reveal() if reveal is not None else str(secret)


class _Agent(ProcessProtocol):
    """Reads the agent's JSON log until it names its public URL (or fails)."""

    def __init__(self, tunnel: NgrokTunnel) -> None:
        self._tunnel = tunnel
        self._pending = b""
        self._stderr: list[str] = []

    def outReceived(self, data: bytes) -> None:
        *lines, self._pending = (self._pending + data).split(b"\n")
        for raw in lines:
            self._line(raw.decode("utf-8", "replace").strip())

    def _line(self, line: str) -> None:
        if not line:
            return
        try:
            entry = json.loads(line)
        except ValueError:
            entry = None
        if not isinstance(entry, dict):
            if "ERR_NGROK" in line:
                self._tunnel._failed(line)
            return
        error = entry.get("err")
        if isinstance(error, str) and "ERR_NGROK" in error:
            self._tunnel._failed(error)
            return
        url = entry.get("url")
        if isinstance(url, str) and url.startswith(("https://", "http://")):
            self._tunnel._started(url)

    def errReceived(self, data: bytes) -> None:
        text = data.decode("utf-8", "replace")
        self._stderr.append(text)
        if "ERR_NGROK" in text:
            lines = [line.strip() for line in "".join(self._stderr).splitlines()]
            self._tunnel._failed(next(line for line in lines if "ERR_NGROK" in line))

    def processEnded(self, reason: Any) -> None:
        if self._pending:
            self._line(self._pending.decode("utf-8", "replace").strip())
            self._pending = b""
        code = 0 if reason.check(ProcessDone) else getattr(reason.value, "exitCode", None)
        lines = [line.strip() for line in "".join(self._stderr).splitlines() if line.strip()]
        self._tunnel._ended(code, lines[-1] if lines else None)


class NgrokTunnel:
    """
    One C{ngrok http <port>} agent: L{start} it, get its public URL, L{stop} it.

    @param reactor: spawns the process.
    @param clock: times the start and the stop (default: C{reactor}).
    @param environ: the child's environment (and C{PATH}); default ours.
    @param timeout: seconds to wait for the public URL (upstream: 30).
    @param stop_grace: seconds between SIGTERM and SIGKILL on L{stop}.
    """

    def __init__(
        self,
        *,
        reactor: Any,
        clock: Any = None,
        environ: Mapping[str, str] | None = None,
        timeout: float = 30.0,
        stop_grace: float = 5.0,
        executable: str = "ngrok",
    ) -> None:
        self._reactor = reactor
        self._clock = clock or reactor
        self._environ = environ
        self._timeout = timeout
        self._stop_grace = stop_grace
        self._executable = executable
        self._process: Any = None
        self._token: str | None = None
        self._waiting: Deferred[str] | None = None
        self._deadline: Any = None
        self._kill_call: Any = None
        self._running = False
        self._stopping = False
        self._exit_waiters: list[Deferred[None]] = []
        self.url: str | None = None

    @property
    def running(self) -> bool:
        """Whether the agent process is alive."""
        return self._running

    def start(
        self, port: int, *, domain: str | None = None, authtoken: Any = None
    ) -> Deferred[str]:
        """
        Start the agent for local C{port}; fires with its public base URL.

        Fails with L{ToolMissing} or L{ExposeError} (a one-line reason).
        """
        if self._running:
            return fail(ExposeError("the ngrok tunnel is already running"))
        self._token = _secret_text(authtoken)
        extra = {"NGROK_AUTHTOKEN": self._token} if self._token else {}
        env = child_environment(self._environ, extra)
        executable = find_executable(self._executable, env)
        if executable is None:
            return fail(ToolMissing("ngrok"))
        argv = ngrok_argv(port, domain)
        argv[0] = self._executable
        self.url = None
        self._waiting = Deferred()
        waiting = self._waiting
        self._running = True
        self._process = self._reactor.spawnProcess(_Agent(self), executable, argv, env=env)
        self._deadline = self._clock.callLater(self._timeout, self._timed_out)
        return waiting

    def _settle(self) -> Deferred[str] | None:
        waiting, self._waiting = self._waiting, None
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None
        return waiting

    def _started(self, url: str) -> None:
        waiting = self._settle()
        if waiting is not None:
            self.url = url
            waiting.callback(url)

    def _failed(self, message: str) -> None:
        waiting = self._settle()
        if waiting is not None:
            waiting.errback(ExposeError(redact(f"ngrok failed: {message}", [self._token])))
            self._terminate()

    def _timed_out(self) -> None:
        self._deadline = None
        self._failed(f"no public URL within {self._timeout:g} s")

    def _ended(self, code: int | None, last_error: str | None) -> None:
        self._running = False
        self._process = None
        if self._kill_call is not None and self._kill_call.active():
            self._kill_call.cancel()
        self._kill_call = None
        why = f"ngrok exited (status {code})" + (f": {last_error}" if last_error else "")
        why = redact(why, [self._token])
        waiting = self._settle()
        if waiting is not None:
            waiting.errback(ExposeError(f"{why} before reporting a public URL"))
        elif not self._stopping:
            _log.warn("the ngrok tunnel stopped: {why}", why=why)
        self._stopping = False
        waiters, self._exit_waiters = self._exit_waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def _signal(self, name: str) -> None:
        if self._process is None:
            return
        try:
            self._process.signalProcess(name)
        except ProcessExitedAlready:
            pass

    def stop(self) -> Deferred[None]:
        """Stop the agent (SIGTERM, then SIGKILL after the grace); fires once it exited."""
        if not self._running:
            return succeed(None)
        done: Deferred[None] = Deferred()
        self._exit_waiters.append(done)
        self._terminate()
        return done

    def _terminate(self) -> None:
        self._stopping = True
        self._signal("TERM")
        if self._kill_call is None:
            self._kill_call = self._clock.callLater(self._stop_grace, self._signal, "KILL")
