"""
The benchmarks of the real daemon (issue 15) in their quick forms: each starts
C{twistd -n voicecalld}, drives it from another process and reports figures an
operator can read.  Only that they run and report sensible numbers is checked
here, not how fast this machine is.
"""

from __future__ import annotations

import pytest

from bench import control, startup, webhooks

pytestmark = pytest.mark.integration


def test_control_round_trips():
    figures = control.run(calls=2, status=40, speaks=2, quick=True)
    assert figures["calls"] == 2
    for name in ("ping", "statusOne", "statusAll", "speak"):
        assert figures[name]["samples"] >= 2
        assert 0 < figures[name]["p50Ms"] <= figures[name]["p99Ms"]
    # Speak answers once the mock has played the words.
    assert figures["speak"]["p50Ms"] >= figures["playbackMs"]
    assert [row[0] for row in control.rows(figures)] == ["control"] * 4


def test_signed_webhooks_per_second():
    figures = webhooks.run(calls=2, connections=4, requests=100, warmup=10, quick=True)
    # Every status callback was signed correctly and answered, none refused.
    assert figures["refused"] == {}
    assert figures["answered"] >= 100
    assert figures["perSecond"] > 0
    assert figures["cpuMicrosPerRequest"] > 0
    assert "signed webhooks/s" in webhooks.rows(figures)[0][1]


def test_startup_with_a_full_store():
    figures = startup.run(calls=50, live=3, runs=1, quick=True)
    assert figures["calls"] == 50 and figures["liveCalls"] == 3
    assert 0 < figures["emptySeconds"]
    assert 0 < figures["fullSeconds"]
    assert startup.rows(figures)[1][1] == "READY=1, 50 calls stored s"
