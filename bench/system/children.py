"""The runner's side of its JSON-line children (the generator and the vendor fakes)."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench._daemon import process_cpu

ROOT = Path(__file__).resolve().parent.parent.parent


class Child:
    """A C{python -m MODULE} child that prints JSON lines and may read commands."""

    def __init__(
        self, module: str, *args: str, stderr: Path | None = None, cwd: Path | None = None
    ) -> None:
        self.name = module
        self._err = open(stderr, "ab") if stderr else subprocess.DEVNULL
        self.process = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._err,
            cwd=cwd or ROOT,
        )
        self._buffer = b""
        self._lines: list[dict[str, Any]] = []

    def send(self, command: dict[str, Any]) -> None:
        """One command line on its stdin."""
        self.process.stdin.write(json.dumps(command).encode() + b"\n")
        self.process.stdin.flush()

    def expect(self, key: str | None = None, timeout: float = 60.0) -> dict[str, Any]:
        """The next line (with C{key}, whose value is returned), waiting at most C{timeout}."""
        deadline = time.monotonic() + timeout
        fd = self.process.stdout.fileno()
        while True:
            for i, line in enumerate(self._lines):
                if key is None or key in line:
                    del self._lines[: i + 1]
                    return line if key is None else line[key]
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.name}: no {key or 'line'} within {timeout} s")
            readable, _, _ = select.select([fd], [], [], left)
            if not readable:
                continue
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                raise RuntimeError(f"{self.name} exited ({self.process.wait()}) before {key}")
            self._buffer += chunk
            *lines, self._buffer = self._buffer.split(b"\n")
            self._lines += [json.loads(line) for line in lines if line.strip()]

    def cpu_seconds(self) -> float:
        """Its CPU seconds so far (user + system)."""
        return process_cpu(self.process.pid)

    def close(self) -> None:
        """Close its stdin: it quits on its own (L{stop} then waits)."""
        if not self.process.stdin.closed:
            try:
                self.process.stdin.close()
            except OSError:
                pass

    def stop(self) -> None:
        """Ask it to quit (closing stdin), then terminate it if it lingers."""
        if self.process.poll() is None:
            self.close()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.terminate()
                try:
                    self.process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
        if self._err is not subprocess.DEVNULL:
            self._err.close()
