"""
Running an exec secret provider's program, with every bound its config sets.

This blocks, on purpose and within bounds: secrets are resolved while the
config is loaded, in C{twistd}'s option parsing and in C{voicecall
check-config}, before any reactor runs, so nothing else is waiting.  Doing it
there keeps the rule that a config which cannot be used stops the start with
exit status 2 and one line, before the daemon forks, logs or opens a socket.
The wait is bounded by the provider's C{timeoutMs} and C{noOutputTimeoutMs},
and its output by C{maxOutputBytes}; the program runs in its own process
group, which is killed when a bound is hit.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence

from attrs import frozen

_CHUNK = 65536


@frozen
class Outcome:
    """How the program ended: C{exited} (with C{code}), C{timeout}, C{silent} or C{too-much}."""

    ended: str
    code: int | None
    stdout: bytes


def run_bounded(
    argv: Sequence[str],
    *,
    stdin: bytes,
    env: Mapping[str, str],
    cwd: str,
    timeout: float,
    no_output_timeout: float,
    max_output: int,
    clock: Callable[[], float] = time.monotonic,
) -> Outcome:
    """
    Run C{argv} (no shell) with C{stdin} as its input and return its stdout.

    C{max_output} bounds stdout and stderr together; stderr is read and
    dropped, since a resolver may print secrets there.
    """
    process = subprocess.Popen(
        list(argv),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(env),
        cwd=cwd,
        start_new_session=True,
    )
    deadline = clock() + timeout
    try:
        ended, stdout = _exchange(process, stdin, deadline, no_output_timeout, max_output, clock)
        code = None
        if ended == "exited":
            try:
                code = process.wait(timeout=max(0.0, deadline - clock()))
            except subprocess.TimeoutExpired:
                ended = "timeout"
        return Outcome(ended, code, bytes(stdout))
    finally:
        if process.poll() is None:
            _kill(process)
        for stream in (process.stdin, process.stdout, process.stderr):
            if stream is not None and not stream.closed:
                stream.close()


def _exchange(process, data, deadline, no_output_timeout, max_output, clock):
    """Feed stdin and drain stdout/stderr until both close or a bound is hit."""
    selector = selectors.DefaultSelector()
    pending = memoryview(data)
    for stream in (process.stdin, process.stdout, process.stderr):
        os.set_blocking(stream.fileno(), False)
    if pending:
        selector.register(process.stdin, selectors.EVENT_WRITE)
    else:
        process.stdin.close()
    selector.register(process.stdout, selectors.EVENT_READ)
    selector.register(process.stderr, selectors.EVENT_READ)
    readers = 2
    stdout = bytearray()
    total = 0
    last_output = clock()
    try:
        while readers:
            now = clock()
            if now >= deadline:
                return "timeout", stdout
            if now >= last_output + no_output_timeout:
                return "silent", stdout
            wait = min(deadline, last_output + no_output_timeout) - now
            for key, _ in selector.select(wait):
                stream = key.fileobj
                if stream is process.stdin:
                    try:
                        written = os.write(stream.fileno(), pending[:_CHUNK])
                    except BrokenPipeError:
                        written = len(pending)
                    pending = pending[written:]
                    if not pending:
                        selector.unregister(stream)
                        stream.close()
                    continue
                chunk = os.read(stream.fileno(), _CHUNK)
                if not chunk:
                    selector.unregister(stream)
                    readers -= 1
                    continue
                last_output = clock()
                total += len(chunk)
                if total > max_output:
                    return "too-much", stdout
                if stream is process.stdout:
                    stdout += chunk
        return "exited", stdout
    finally:
        selector.close()


def _kill(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()
