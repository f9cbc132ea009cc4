"""
Running the real daemon (C{twistd -n voicecalld}) and the real CLI for tests.

Readiness is systemd's: the daemon gets a C{NOTIFY_SOCKET} and the test waits
for C{READY=1}.  Waiting is always bounded and always on an event (a
datagram, a line of output, a process exit), never a sleep.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent
TWISTD = str(BIN / "twistd")
VOICECALL = str(BIN / "voicecall")

# Moves the passed fds to 3, 4, ... and execs the daemon with its own pid in
# LISTEN_PID, as systemd does (dash cannot redirect fds above 9).
_EXEC_AS_SYSTEMD = """
import os, sys
for i, fd in enumerate(int(f) for f in sys.argv[1].split(",")):
    os.dup2(fd, 3 + i)
    os.close(fd)
os.environ["LISTEN_PID"] = str(os.getpid())
os.execv(sys.argv[2], sys.argv[2:])
"""


class Daemon:
    """One voicecalld process on temporary directories."""

    def __init__(
        self, root: Path, config: dict[str, Any] | None = None, env: dict[str, str] | None = None
    ) -> None:
        self.root = root
        self.state = root / "state"
        self.home = root / "home"
        self.home.mkdir(parents=True, exist_ok=True)
        self.config_path = root / "config.json"
        self.config_path.write_text(json.dumps(config or {}))
        self.socket = self.state / "control.sock"
        self.log_path = root / "daemon.log"
        self.extra_env = env or {}
        self.process: subprocess.Popen | None = None
        self._notify: socket.socket | None = None
        #: Every datagram the daemon sent to its NOTIFY_SOCKET, in order.
        self.notified: list[str] = []

    def env(self, **more: str) -> dict[str, str]:
        """The environment for the daemon and CLI: no user config leaks in."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("VOICECALLD_", "OPENCLAW_", "TWILIO_", "OPENAI_"))
        }
        env.update(HOME=str(self.home), VOICECALLD_SOCKET=str(self.socket))
        env.update(self.extra_env)
        env.update(more)
        return env

    def start(
        self,
        *extra: str,
        wait: bool = True,
        timeout: float = 30.0,
        sockets: list[tuple[str, socket.socket]] | None = None,
    ) -> Daemon:
        """
        Start the daemon; with C{wait}, return once it said READY=1.  With
        C{sockets} (name, bound listening socket), pass them as systemd does:
        at fds 3, 4, ... with C{LISTEN_FDS}, C{LISTEN_FDNAMES} and the
        child's own pid in C{LISTEN_PID}; the test passes the C{systemd:}
        endpoints in C{extra}.
        """
        notify_path = self.root / f"notify-{time.monotonic_ns()}.sock"
        self._notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._notify.bind(str(notify_path))
        self.notified = []
        log = open(self.log_path, "ab")
        argv = [
            TWISTD,
            "-n",
            "--pidfile=",
            "voicecalld",
            "--state-dir",
            str(self.state),
            "--config",
            str(self.config_path),
        ]
        env = self.env(NOTIFY_SOCKET=str(notify_path))
        passed: list[int] = []
        if sockets:
            # Above 10 first, so moving them to 3, 4, ... overwrites none.
            passed = [fcntl.fcntl(s.fileno(), fcntl.F_DUPFD, 10) for _, s in sockets]
            argv = [sys.executable, "-c", _EXEC_AS_SYSTEMD, ",".join(map(str, passed)), *argv]
            env.update(LISTEN_FDS=str(len(sockets)), LISTEN_FDNAMES=":".join(n for n, _ in sockets))
        else:
            argv += ["--webhook", "tcp:0:interface=127.0.0.1"]
        self.process = subprocess.Popen(
            [*argv, *extra],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            pass_fds=passed,
        )
        for fd in passed:
            os.close(fd)
        log.close()
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait for READY=1 (or fail with the log if the daemon died first)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._receive(0.25) and "READY=1" in self.notified[-1]:
                return
            if self.process.poll() is not None:
                raise AssertionError(
                    f"voicecalld exited ({self.process.returncode}):\n{self.log()}"
                )
        raise AssertionError(f"voicecalld not ready within {timeout} s:\n{self.log()}")

    def _receive(self, wait: float) -> bool:
        readable, _, _ = select.select([self._notify], [], [], wait)
        if readable:
            self.notified.append(self._notify.recv(4096).decode())
        return bool(readable)

    def wait_notified(self, predicate, timeout: float = 30.0) -> str:
        """The first datagram (since start) matching C{predicate}, waiting for it."""
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for message in self.notified[seen:]:
                if predicate(message):
                    return message
            seen = len(self.notified)
            if time.monotonic() > deadline:
                raise AssertionError(f"no such notification within {timeout} s: {self.notified}")
            self._receive(0.25)

    def wait_exit(self, timeout: float = 30.0) -> int:
        """Wait for the process to end; its exit status."""
        return self.process.wait(timeout=timeout)

    def log(self) -> str:
        """Everything the daemon printed so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> int:
        """SIGTERM, then wait for the exit status."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        return self.wait_exit()

    def kill9(self) -> None:
        """Crash it: SIGKILL, no clean-up at all."""
        self.process.kill()
        self.process.wait(timeout=30)

    def cli(self, *args: str, timeout: float = 60.0, **env: str) -> subprocess.CompletedProcess:
        """Run C{voicecall ARGS} against this daemon."""
        return subprocess.run(
            [VOICECALL, *args], capture_output=True, text=True, env=self.env(**env), timeout=timeout
        )

    def spawn_cli(self, *args: str) -> subprocess.Popen:
        """Start C{voicecall ARGS} without waiting for it."""
        return subprocess.Popen(
            [VOICECALL, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env(),
        )

    def tail(self, *args: str) -> Tail:
        """Follow the daemon's events (C{voicecall --json tail}), once it is subscribed."""
        tail = Tail(self.spawn_cli("--json", "tail", *args))
        tail.until(lambda e: e["type"] == "subscribed")
        return tail


class Tail:
    """
    Reads a running C{voicecall --json tail}, one event at a time, with deadlines.
    Each L{until} looks only at events after the one the previous call returned.
    """

    def __init__(self, process: subprocess.Popen) -> None:
        self.process = process
        self.events: list[dict[str, Any]] = []
        self._next = 0
        self._buffer = ""

    def until(self, predicate, timeout: float = 20.0) -> dict[str, Any]:
        """Read events until one matches C{predicate}; return it."""
        deadline = time.monotonic() + timeout
        fd = self.process.stdout.fileno()
        while True:
            while self._next < len(self.events):
                event = self.events[self._next]
                self._next += 1
                if predicate(event):
                    return event
            if time.monotonic() > deadline:
                raise AssertionError(f"no matching event within {timeout} s; saw {self.events}")
            readable, _, _ = select.select([fd], [], [], 0.25)
            if readable:
                chunk = os.read(fd, 65536).decode()
                if not chunk:
                    raise AssertionError(f"tail ended; saw {self.events}")
                self._buffer += chunk
                *lines, self._buffer = self._buffer.split("\n")
                self.events.extend(json.loads(line) for line in lines if line)

    def close(self) -> None:
        """Stop following."""
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.process.stdout.close()
        self.process.stderr.close()


def state_of(daemon: Daemon, call_id: str) -> dict[str, Any]:
    """The call record as C{voicecall --json status} prints it."""
    result = daemon.cli("--json", "status", "--call-id", call_id)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)
