"""Exposure and operator-facing safety, through the real daemon and CLI."""

from __future__ import annotations

import json
import os
import stat
import sys
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.integration

FAKE_TAILSCALE = """#!{python}
import json, sys
with open({log!r}, "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\\n")
if sys.argv[1:3] == ["status", "--json"]:
    print(json.dumps({{"Self": {{"DNSName": "box.tail1234.ts.net."}}, "BackendState": "Running"}}))
"""


def fake_tailscale(folder) -> tuple[str, object]:
    """A `tailscale` executable that records its argv and answers `status --json`."""
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "argv.log"
    script = folder / "tailscale"
    script.write_text(FAKE_TAILSCALE.format(python=sys.executable, log=str(log)))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return f"{folder}{os.pathsep}{os.environ['PATH']}", log


def test_expose_publishes_both_paths_and_feeds_the_url(make_daemon, tmp_path):
    path, argv_log = fake_tailscale(tmp_path / "bin")
    daemon = make_daemon({"streaming": {"enabled": False}}, env={"PATH": path}).start()
    shown = daemon.cli("--json", "expose", "--mode", "funnel", PATH=path)
    assert shown.returncode == 0, shown.stderr
    answer = json.loads(shown.stdout)
    assert answer["publicUrl"] == "https://box.tail1234.ts.net/voice/webhook"
    assert answer["how"] == "tailscale-funnel"
    calls = [json.loads(line) for line in argv_log.read_text().splitlines()]
    assert ["status", "--json"] in calls
    mounts = [c for c in calls if c[0] == "funnel"]
    assert mounts[0][-1] == "http://127.0.0.1:3334/voice/webhook"
    assert "webhook URL: https://box.tail1234.ts.net/voice/webhook (tailscale-funnel)" in (
        daemon.log()
    )
    off = daemon.cli("expose", "--mode", "off", PATH=path)
    assert off.returncode == 0, off.stderr
    assert off.stdout.startswith("exposure off; webhook URL now http://127.0.0.1:3334/")


def test_expose_without_tailscale_says_what_to_do(make_daemon, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    daemon = make_daemon(env={"PATH": f"{empty}{os.pathsep}/usr/bin:/bin"}).start()
    result = daemon.cli("expose", "--mode", "serve")
    assert result.returncode == 1
    assert result.stderr.startswith("voicecall: EXPOSE_FAILED: tailscale is not installed")
    assert result.stderr.count("\n") == 1


def test_tunnel_at_start_up(make_daemon, tmp_path):
    path, argv_log = fake_tailscale(tmp_path / "bin")
    daemon = make_daemon({"tunnel": {"provider": "tailscale-serve"}}, env={"PATH": path}).start()
    assert "webhook URL: https://box.tail1234.ts.net/voice/webhook (tailscale-serve)" in (
        daemon.log()
    )
    assert daemon.stop() == 0
    calls = [json.loads(line) for line in argv_log.read_text().splitlines()]
    assert calls[-1][0] == "serve" and calls[-1][-1] == "off"


def test_skipping_signatures_is_loudly_warned(make_daemon):
    daemon = make_daemon({"skipSignatureVerification": True}).start()
    assert "SECURITY WARNING: skipSignatureVerification is on" in daemon.log()


def test_metrics_and_health(make_daemon):
    daemon = make_daemon({"maxConcurrentCalls": 2})
    daemon.start("--metrics", "tcp:0:interface=127.0.0.1")
    port = _metrics_port(daemon.log())
    placed = daemon.cli("call", "--to", "+15551234567", "--message", "hi")
    assert placed.returncode == 0
    health = urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10).read()
    assert health == b"ok\n"
    during = scrape(port)
    live = {labels: n for (name, labels), n in during.items() if name == "voicecalld_live_calls"}
    assert sum(live.values()) == 1 and all(("provider", "mock") in key for key in live), live
    assert daemon.cli("end", "--call-id", placed.stdout.strip()).returncode == 0
    assert daemon.cli("end", "--call-id", "no-such-call").returncode != 0
    after = scrape(port)
    created = (("direction", "outbound"), ("mode", "notify"), ("provider", "mock"))
    assert after[("voicecalld_calls_created_total", created)] == 1
    assert after[("voicecalld_calls_ended_total", (("reason", "hangup-bot"),))] == 1
    assert after[("voicecalld_control_requests_total", (("code", "ok"), ("command", "Initiate")))]
    refused = (("code", "UNKNOWN_CALL"), ("command", "End"))
    assert after[("voicecalld_control_requests_total", refused)] == 1
    assert not [key for key in after if key[0] == "voicecalld_live_calls"]


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """C{/metrics}, parsed by prometheus_client: each sample by name and sorted labels."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _metrics_port(log: str) -> int:
    for line in log.splitlines():
        if "listening for metrics on" in line:
            return int(line.rstrip(")").rsplit(":", 1)[-1])
    raise AssertionError(f"no metrics port in the log:\n{log}")
