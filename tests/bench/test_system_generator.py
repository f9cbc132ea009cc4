"""
The system benchmark's generator against the real daemon: a few calls on each carrier, the
three at once (each its own daemon, vendor fakes and generator), audio both ways on every
stream.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from bench._daemon import DaemonProcess, config, free_port
from bench.system.children import Child
from bench.system.point import vendors_module

pytestmark = pytest.mark.integration

CALLS = 2
#: Frames each stream must hear from the daemon: 0.6 s of its speech.
FRAMES = 30


class Rig:
    """A generator and a daemon for one carrier, unpinned, on shared vendor fakes."""

    def __init__(self, carrier: str, vendors: Child) -> None:
        self.carrier = carrier
        self.root = Path(tempfile.mkdtemp(prefix="vcsys-"))
        self.vendors = vendors
        self.generator = Child(
            "bench.system.generator", "--carrier", carrier, stderr=self.root / "generator.log"
        )
        self.daemon: DaemonProcess | None = None

    def start_daemon(self, urls: dict) -> None:
        facts = self.generator.expect("ready", timeout=30)
        port = free_port()
        self.daemon = DaemonProcess(self.root, config(self.carrier, facts, urls, port), port, None)
        self.daemon.start(wait=False)

    def call(self) -> None:
        self.daemon.wait_ready(timeout=30)
        self.generator.send({"cmd": "calls", "count": CALLS, "webhook": self.daemon.webhook})

    def reached(self) -> dict:
        up = self.generator.expect("up", timeout=30)
        assert up == {"streams": CALLS, "failed": 0}, (up, self.daemon.log()[-2000:])
        self.generator.send({"cmd": "until", "frames": FRAMES})
        return self.generator.expect("reached", timeout=30)

    def stop(self) -> None:
        # How the daemon drains is not what this test is about: a second, then SIGKILL.
        if self.daemon is not None and self.daemon.process is not None:
            self.daemon.stop(timeout=1)
        self.generator.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def test_every_carrier_streams_both_ways() -> None:
    module, cwd = vendors_module(None)
    vendors = Child(module, cwd=cwd)
    rigs = [Rig(carrier, vendors) for carrier in ("twilio", "telnyx", "plivo")]
    try:
        urls = vendors.expect(None, timeout=30)
        for rig in rigs:
            rig.start_daemon(urls)
        for rig in rigs:
            rig.call()
        for rig in rigs:
            reached = rig.reached()
            assert len(reached["received"]) == CALLS, rig.carrier
            assert min(reached["received"]) >= FRAMES, (rig.carrier, reached)
            assert min(reached["sent"]) > 0, (rig.carrier, reached)
    finally:
        for child in (vendors, *(rig.generator for rig in rigs)):
            child.close()
        for rig in rigs:
            rig.stop()
        vendors.stop()
