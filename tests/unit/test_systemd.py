"""The systemd units: what the contract asks of them, and systemd's own verdict."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from twisted.trial.unittest import SkipTest, TestCase

UNIT = Path(__file__).parent.parent.parent / "systemd" / "voicecalld.service"


def settings() -> dict[str, list[str]]:
    """Key → values of the unit (continuation lines joined)."""
    result: dict[str, list[str]] = {}
    text = UNIT.read_text().replace("\\\n", " ")
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "[")) and "=" in line:
            key, value = line.split("=", 1)
            result.setdefault(key, []).append(value)
    return result


class UnitTests(TestCase):
    """The unit runs twistd in the foreground with its own user and directories."""

    def test_contract(self):
        s = settings()
        (exec_start,) = s["ExecStart"]
        self.assertIn("twistd -n --pidfile= voicecalld", exec_start)
        self.assertIn("--control systemd:domain=UNIX:name=control", exec_start)
        self.assertIn("--webhook systemd:domain=INET:name=webhook", exec_start)
        sockets = "voicecalld.socket voicecalld-webhook.socket"
        self.assertEqual(s["Requires"], [sockets])
        self.assertIn(sockets, s["After"][0])
        self.assertEqual(s["RuntimeDirectoryPreserve"], ["yes"])
        # shutdown.drainSeconds' default (30) plus time to end calls and flush.
        self.assertEqual(s["TimeoutStopSec"], ["45"])
        self.assertEqual(s["Type"], ["notify"])
        self.assertEqual(s["StateDirectory"], ["voicecalld"])
        self.assertEqual(s["RuntimeDirectory"], ["voicecalld"])
        self.assertEqual(s["User"], ["voicecalld"])
        self.assertEqual(s["Restart"], ["on-failure"])
        self.assertEqual(s["RestartPreventExitStatus"], ["2"])
        for hardening in (
            "NoNewPrivileges",
            "ProtectSystem",
            "PrivateTmp",
            "RestrictAddressFamilies",
            "SystemCallFilter",
        ):
            self.assertIn(hardening, s)

    def test_systemd_analyze_verify(self):
        analyze = shutil.which("systemd-analyze")
        if analyze is None:
            raise SkipTest("systemd-analyze is not installed here")
        twistd = str(Path(sys.executable).parent / "twistd")
        units = Path(self.mktemp())
        units.mkdir()
        for unit in sorted(UNIT.parent.iterdir()):
            text = unit.read_text().replace("/opt/voicecalld/.venv/bin/twistd", twistd)
            (units / unit.name).write_text(text)
        result = subprocess.run(
            [analyze, "verify", *sorted(str(p) for p in units.iterdir())],
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual((result.returncode, result.stderr), (0, ""))

    def test_the_sockets_are_named(self):
        named = (("voicecalld.socket", "control"), ("voicecalld-webhook.socket", "webhook"))
        for name, expected in named:
            text = (UNIT.parent / name).read_text()
            self.assertIn(f"FileDescriptorName={expected}\n", text)
            self.assertIn("Service=voicecalld.service\n", text)
