"""
The real daemon for the benchmarks of issue 15 (control RPC, webhooks, start-up): a
C{twistd -n voicecalld} process on its own core, its CPU read from C{/proc/<pid>/stat}, and
client processes pinned to the other core.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench._common import core_shares, core_times, cores_for
from tests.integration import daemon as _launcher
from tests.integration.daemon import Daemon

ROOT = Path(__file__).resolve().parent.parent
CLOCK_TICK = os.sysconf("SC_CLK_TCK")


def voice_call(config: dict[str, Any]) -> dict[str, Any]:
    """A whole config file holding C{config} as the voice-call plugin's settings."""
    return {"plugins": {"entries": {"voice-call": {"config": config}}}}


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) process C{pid} has used so far."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        # The command name (field 2) may hold spaces; the rest follows its ")".
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICK


def set_core(pid: int, core: int | None) -> None:
    """Pin process C{pid} (every thread it has now) to C{core}, if there is one."""
    if core is None:
        return
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(task), {core})
        except OSError:
            pass


def two_cores() -> tuple[int | None, int | None]:
    """(daemon core, client core): the last two usable cores, or None where there are too few."""
    daemon, client = cores_for(2)
    return daemon, client


class Window:
    """A measured window: the daemon's CPU and how the daemon's core spent the time."""

    def __init__(self, pid: int, core: int | None) -> None:
        self.pid = pid
        self.core = core
        self.began = time.perf_counter()
        self.cpu = process_cpu(pid)
        self.times = core_times(core)

    def close(self) -> dict[str, Any]:
        """Seconds, the daemon's CPU seconds and share, and other processes' share of the core."""
        seconds = time.perf_counter() - self.began
        cpu = process_cpu(self.pid) - self.cpu
        shares = core_shares(self.times, core_times(self.core))
        busy = 1.0 - shares.get("idle", 0.0) - shares.get("iowait", 0.0)
        own = cpu / seconds if seconds else 0.0
        return {
            "seconds": round(seconds, 3),
            "daemonCpuSeconds": round(cpu, 3),
            "daemonCpuShare": round(own, 3),
            "othersShareOfCore": round(max(0.0, busy - own), 3) if shares else None,
        }


def _profiled_twistd(root: Path, stats: str) -> str:
    """A C{twistd} that runs the reactor under cProfile and saves its stats to C{stats}."""
    script = root / "twistd-profiled"
    options = f"--profile={stats} --profiler=cprofile --savestats"
    script.write_text(f'#!/bin/sh\nexec {_launcher.TWISTD} {options} "$@"\n')
    script.chmod(0o755)
    return str(script)


@contextmanager
def running(
    config: dict[str, Any],
    *extra: str,
    core: int | None = None,
    root: Path | None = None,
    profile: str | None = None,
):
    """
    A started daemon (READY=1) on C{core} in a temporary directory; stopped afterwards.
    With C{profile}, the daemon's reactor runs under cProfile, whose stats are saved there
    when it stops.
    """
    # Short: a UNIX socket path must fit in 108 bytes.
    made = root is None
    root = root or Path(tempfile.mkdtemp(prefix="vcb-"))
    daemon = Daemon(root, config)
    twistd = _launcher.TWISTD
    try:
        if profile:
            _launcher.TWISTD = _profiled_twistd(root, os.path.abspath(profile))
        try:
            daemon.start(*extra, wait=False)
        finally:
            _launcher.TWISTD = twistd
        set_core(daemon.process.pid, core)
        daemon.wait_ready(timeout=120)
        set_core(daemon.process.pid, core)
        yield daemon
    finally:
        if daemon.process is not None and daemon.process.poll() is None:
            daemon.stop()
        if made:
            shutil.rmtree(root, ignore_errors=True)


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def client(module: str, core: int | None, *args: str, timeout: float = 600) -> dict[str, Any]:
    """Run C{python -m MODULE client ARGS} pinned to C{core}; its last stdout line as JSON."""
    command = [sys.executable, "-m", module, "client", *args]
    if core is not None:
        command += ["--core", str(core)]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, cwd=ROOT, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{module} client failed: {done.stderr.strip()[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])
