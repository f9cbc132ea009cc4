"""
The real daemon for every benchmark that runs it (issue 15), and what /proc says of a process.

One class launches C{twistd -n voicecalld}: L{DaemonProcess}, on a temporary directory, pinned
to one core, READY=1 awaited on a C{NOTIFY_SOCKET}, optionally under cProfile.  The system
benchmark gives it L{config} (one carrier, every vendor at the fakes); control RPC, webhooks
and start-up use it through L{running} or directly.  The /proc readers (a process's or a
process tree's CPU seconds, resident memory, pinning every thread, a core's busy share) serve
the daemon and the peers alike.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench._common import core_shares, core_times, cores_for

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TWISTD = str(BIN / "twistd")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
#: The /proc/stat counters that are some process's time (interrupts are charged to none).
PROCESS_TIME = ("user", "nice", "system")
#: ... and everything that is not idle.
BUSY = ("user", "nice", "system", "irq", "softirq", "steal")


# -- /proc readers ---------------------------------------------------------------------------


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) process C{pid} has used so far."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        # The command name (field 2) may hold spaces; the rest follows its ")".
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def process_tree(pid: int) -> list[int]:
    """C{pid} and all its descendants that are alive now."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{current}/task/{task}/children", encoding="ascii") as f:
                    queue.extend(int(child) for child in f.read().split())
            except OSError:
                pass
    return found


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of C{pid} and its live descendants (all threads)."""
    total = 0.0
    for member in process_tree(pid):
        try:
            total += process_cpu(member)
        except OSError:
            continue
    return total


def process_rss_kib(pid: int) -> int:
    """Resident memory of process C{pid} now, KiB."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def busy(before: dict[str, int], after: dict[str, int], kinds=BUSY) -> tuple[int, int]:
    """(busy jiffies of C{kinds}, all jiffies) between two L{core_times} readings."""
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    return sum(delta.get(k, 0) for k in kinds), sum(delta.values())


def set_core(pid: int, core: int | None) -> None:
    """Pin process C{pid} (every thread it has now) to C{core}, if there is one."""
    if core is None:
        return
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        tasks = [str(pid)]
    for task in tasks:
        try:
            os.sched_setaffinity(int(task), {core})
        except OSError:
            pass


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_cores() -> tuple[int | None, int | None]:
    """(daemon core, client core): the last two usable cores, or None where there are too few."""
    daemon, client = cores_for(2)
    return daemon, client


# -- control RPC, webhooks, start-up ----------------------------------------------------------


def voice_call(config: dict[str, Any]) -> dict[str, Any]:
    """A whole config file holding C{config} as the voice-call plugin's settings."""
    return {"plugins": {"entries": {"voice-call": {"config": config}}}}


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
    script.write_text(f'#!/bin/sh\nexec {TWISTD} {options} "$@"\n')
    script.chmod(0o755)
    return str(script)


@contextmanager
def running(
    config: dict[str, Any],
    *,
    port: int | None = None,
    core: int | None = None,
    root: Path | None = None,
    profile: str | None = None,
):
    """
    A started L{DaemonProcess} (READY=1) on C{core} in a temporary directory, its webhooks on
    C{port} (a free one by default); stopped afterwards.  With C{profile}, the daemon's
    reactor runs under cProfile, whose stats are saved there when it stops.
    """
    # Short: a UNIX socket path must fit in 108 bytes.
    made = root is None
    root = root or Path(tempfile.mkdtemp(prefix="vcb-"))
    daemon = DaemonProcess(root, config, port or free_port(), core, profile=profile)
    try:
        daemon.start(timeout=120)
        yield daemon
    finally:
        daemon.stop()
        if made:
            shutil.rmtree(root, ignore_errors=True)


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


# -- the daemon process ----------------------------------------------------------------------

#: Room above the benchmark's largest point.
MAX_CALLS = 700
#: A greeting long enough to keep every call speaking when the vendors script no turns.
GREETING = " ".join(["Thanks for calling, this is the benchmark speaking without a pause."] * 40)
SECRETS = {"tts": "sk-bench-tts", "stt": "sk-bench-stt", "chat": "sk-bench-chat"}


def vendor_urls(vendors: dict[str, Any]) -> dict[str, str]:
    """TTS base, STT socket URL and chat base from the vendor fakes' C{ready} line."""
    base = vendors["openai_base"].rstrip("/")
    ws = "ws" + base[len("http") :] if base.startswith("http") else base
    return {
        "tts": vendors.get("tts_base") or base,
        "stt": vendors.get("stt_url")
        or vendors.get("realtime_url")
        or f"{ws}/realtime?intent=transcription",
        "chat": vendors.get("chat_base") or base,
    }


def config(carrier: str, facts: dict[str, Any], vendors: dict[str, Any], port: int) -> dict:
    """
    The daemon's config file for C{carrier}, its REST at the generator's fake;
    C{facts} (the generator's C{ready} line) is the carrier's block as it stands.
    """
    urls = vendor_urls(vendors)
    plugin: dict[str, Any] = {
        "provider": carrier,
        "fromNumber": "+15550001111",
        "publicUrl": f"http://127.0.0.1:{port}/voice/webhook",
        "serve": {"port": port},
        "inboundPolicy": "open",
        "inboundGreeting": GREETING,
        "maxConcurrentCalls": MAX_CALLS,
        "staleCallReaperSeconds": 0,
        "maxDurationSeconds": 3600,
        "streaming": {
            "enabled": True,
            "sttUrl": urls["stt"],
            "providers": {"openai": {"apiKey": SECRETS["stt"]}},
            "maxConnections": MAX_CALLS,
            "maxPendingConnections": MAX_CALLS,
            "maxPendingConnectionsPerIp": MAX_CALLS,
        },
        "tts": {
            "provider": "openai",
            "providers": {"openai": {"apiKey": SECRETS["tts"], "baseUrl": urls["tts"]}},
        },
        "responseBaseUrl": urls["chat"],
    }
    # The generator's ready facts are the carrier's config block, key for key.
    plugin[carrier] = dict(facts)
    return {"plugins": {"entries": {"voice-call": {"config": plugin}}}}


class DaemonProcess:
    """One C{twistd -n voicecalld} on a temporary directory, pinned to C{cpu}."""

    def __init__(
        self,
        root: Path,
        settings: dict,
        port: int,
        cpu: int | None,
        *,
        profile: str | None = None,
    ) -> None:
        self.root = root
        self.profile = profile
        self.port = port
        self.cpu = cpu
        self.state = root / "state"
        self.config_path = root / "config.json"
        self.config_path.write_text(json.dumps(settings))
        self.socket = root / "control.sock"
        self.metrics_port = free_port()
        self.log_path = root / "daemon.log"
        self.process: subprocess.Popen | None = None

    @property
    def webhook(self) -> str:
        """The URL the carrier posts inbound calls to."""
        return f"http://127.0.0.1:{self.port}/voice/webhook"

    @property
    def metrics_url(self) -> str:
        """The daemon's Prometheus endpoint."""
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def env(self) -> dict[str, str]:
        """No user config leaks in; the chat key is OpenAI's variable."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("VOICECALLD_", "OPENCLAW_", "TWILIO_", "OPENAI_", "TELNYX_"))
            and not k.startswith("PLIVO_")
        }
        home = self.root / "home"
        home.mkdir(exist_ok=True)
        env.update(HOME=str(home), VOICECALLD_SOCKET=str(self.socket))
        env["OPENAI_API_KEY"] = SECRETS["chat"]
        return env

    def start(self, timeout: float = 60.0, wait: bool = True) -> float | None:
        """Start and pin it; with C{wait}, return the seconds it took to say READY=1."""
        notify_path = self.root / "notify.sock"
        self._notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._notify.bind(str(notify_path))
        twistd = (
            _profiled_twistd(self.root, os.path.abspath(self.profile)) if self.profile else TWISTD
        )
        argv = [
            twistd,
            "-n",
            "--pidfile=",
            "voicecalld",
            "--state-dir",
            str(self.state),
            "--config",
            str(self.config_path),
            "--webhook",
            f"tcp:{self.port}:interface=127.0.0.1",
            "--control",
            f"unix:{self.socket}",
            "--metrics",
            f"tcp:{self.metrics_port}:interface=127.0.0.1",
        ]
        env = self.env()
        env["NOTIFY_SOCKET"] = str(notify_path)
        self._began = time.monotonic()
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
        set_core(self.process.pid, self.cpu)
        return self.wait_ready(timeout) if wait else None

    def wait_ready(self, timeout: float = 60.0) -> float:
        """Wait (bounded) for READY=1; the seconds since the start."""
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                readable, _, _ = select.select([self._notify], [], [], 0.25)
                if readable and b"READY=1" in self._notify.recv(4096):
                    # Threads started since (the store's, the resolver's) are pinned too.
                    set_core(self.process.pid, self.cpu)
                    return time.monotonic() - self._began
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"voicecalld exited ({self.process.returncode}):\n{self.log()[-3000:]}"
                    )
            raise RuntimeError(f"voicecalld not ready within {timeout} s:\n{self.log()[-3000:]}")
        finally:
            self._notify.close()

    def log(self) -> str:
        """Everything it printed."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def cpu_seconds(self) -> float:
        """User + system CPU seconds the daemon has used so far (all its threads)."""
        return process_cpu(self.process.pid)

    def rss_kib(self) -> int:
        """Resident memory now, KiB."""
        return process_rss_kib(self.process.pid)

    def kill9(self) -> None:
        """Crash it: SIGKILL, no clean-up at all."""
        self.process.kill()
        self.process.wait(timeout=30)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL if it has not gone after C{timeout} seconds."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(timeout=timeout)
