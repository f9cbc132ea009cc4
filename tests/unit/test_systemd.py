"""The systemd unit: what the contract asks of it, and systemd's own verdict."""

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
        self.assertIn("--control unix:%t/voicecalld/control.sock:mode=660", exec_start)
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
        unit = Path(self.mktemp())
        unit.mkdir()
        copy = unit / "voicecalld.service"
        copy.write_text(UNIT.read_text().replace("/opt/voicecalld/.venv/bin/twistd", twistd))
        result = subprocess.run(
            [analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60
        )
        self.assertEqual((result.returncode, result.stderr), (0, ""))
