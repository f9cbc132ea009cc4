"""
The real daemon for the system benchmark: its config, its process, and what /proc says of it.

L{config} writes the plugin config for one carrier with every vendor at the fakes;
L{DaemonProcess} runs C{twistd -n voicecalld} on it, pinned to one core, waits for systemd's
C{READY=1} on a C{NOTIFY_SOCKET} (bounded, no polling of logs), and reads its CPU time
(C{utime}+C{stime} of C{/proc/<pid>/stat}, all threads) and resident memory
(C{VmRSS} of C{/proc/<pid>/status}).
"""

from __future__ import annotations

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
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
#: Room above the benchmark's largest point.
MAX_CALLS = 700
#: A greeting long enough to keep every call speaking when the vendors script no turns.
GREETING = " ".join(["Thanks for calling, this is the benchmark speaking without a pause."] * 40)
SECRETS = {"tts": "sk-bench-tts", "stt": "sk-bench-stt", "chat": "sk-bench-chat"}


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
    """The daemon's config file for C{carrier}, its REST at the generator's fake."""
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
    if carrier == "twilio":
        plugin["twilio"] = {
            "accountSid": facts["accountSid"],
            "authToken": facts["authToken"],
            "apiBaseUrl": facts["apiBaseUrl"],
        }
    elif carrier == "telnyx":
        plugin["telnyx"] = {
            "apiKey": facts["apiKey"],
            "connectionId": facts["connectionId"],
            "publicKey": facts["publicKey"],
            "apiBaseUrl": facts["apiBaseUrl"],
        }
    elif carrier == "plivo":
        plugin["plivo"] = {
            "authId": facts["authId"],
            "authToken": facts["authToken"],
            "apiBaseUrl": facts["apiBaseUrl"],
        }
    return {"plugins": {"entries": {"voice-call": {"config": plugin}}}}


class DaemonProcess:
    """One C{twistd -n voicecalld} on a temporary directory, pinned to C{cpu}."""

    def __init__(self, root: Path, settings: dict, port: int, cpu: int | None) -> None:
        self.root = root
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
        argv = [
            TWISTD,
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
        if self.cpu is not None:
            try:
                os.sched_setaffinity(self.process.pid, {self.cpu})
            except OSError:
                pass
        return self.wait_ready(timeout) if wait else None

    def wait_ready(self, timeout: float = 60.0) -> float:
        """Wait (bounded) for READY=1; the seconds since the start."""
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                readable, _, _ = select.select([self._notify], [], [], 0.25)
                if readable and b"READY=1" in self._notify.recv(4096):
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
        with open(f"/proc/{self.process.pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    def rss_kib(self) -> int:
        """Resident memory now, KiB."""
        with open(f"/proc/{self.process.pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

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
