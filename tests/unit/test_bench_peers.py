"""
The benchmark's peers: the bare relay as a process of its own, driven by the system
benchmark's generator (C{--direct}), carries media both ways and is measured from outside;
the search for the largest call count with no late frame brackets it as an operator would
read it.
"""

from __future__ import annotations

import os
from pathlib import Path

from twisted.trial.unittest import SkipTest, TestCase

from bench import _daemon
from bench._common import verdict as shared_verdict
from bench.peers import driver, venv


class RelayProcessTests(TestCase):
    """The relay, started and driven the way the benchmark does, for two streams."""

    def point(self, peer: str) -> dict:
        logs = Path(self.mktemp())
        logs.mkdir()
        return driver.run_point(peer, 2, warmup=0.2, duration=1.0, logs=logs)

    def test_media_both_ways(self) -> None:
        """Two streams relayed for a second: frames go in and come back, one for one."""
        point = self.point("relay")
        self.assertEqual((point["opened"], point["failed"]), (2, 0))
        # 2 streams x 50 frames/s for about a second.
        self.assertGreater(point["inboundFrames"], 60)
        self.assertGreater(point["outboundFrames"], 60)
        self.assertGreaterEqual(point["outInRatio"], 0.9)
        self.assertIsNotNone(point["gapMsP99"])
        self.assertGreater(point["usPerInboundFrame"], 0)

    def test_pipecat_media_both_ways(self) -> None:
        """The pipecat peer echoes too (only where its environment has been built)."""
        if venv.python() is None:
            raise SkipTest(f"no pipecat environment at {venv.venv_dir()} (python -m bench.peers)")
        point = self.point("pipecat")
        self.assertEqual((point["opened"], point["failed"]), (2, 0))
        self.assertGreater(point["inboundFrames"], 60)
        self.assertGreater(point["outboundFrames"], 60)


class CpuTests(TestCase):
    """CPU is read from /proc for a process and its descendants."""

    def test_own_cpu(self) -> None:
        """This process has used some CPU, and its tree includes itself."""
        self.assertIn(os.getpid(), _daemon.process_tree(os.getpid()))
        self.assertGreater(_daemon.tree_cpu_seconds(os.getpid()), 0)


def verdict(calls: int, limit: int) -> dict:
    """A point that is on time up to C{limit} calls."""
    point = {
        "calls": calls,
        "live": calls,
        "cpuUtilization": 0.9 * calls / limit,
        "speakingRate": 1.0 if calls <= limit else 0.9,
        "outboundGapMs": {"p99": 25},
    }
    point["noLateFrame"], point["why"] = shared_verdict(point)
    return point


class SearchTests(TestCase):
    """The largest N with no late frame."""

    def test_verdict(self) -> None:
        """The system benchmark's verdict: each criterion on its own makes a point late."""
        good = {
            "calls": 10,
            "live": 10,
            "cpuUtilization": 0.5,
            "speakingRate": 0.99,
            "outboundGapMs": {"p99": 30},
        }
        self.assertEqual(shared_verdict(good), (True, ""))
        for key, value, said in (
            ("cpuUtilization", 0.96, "cpu"),
            ("speakingRate", 0.97, "speaking rate"),
            ("outboundGapMs", {"p99": 60}, "p99 gap"),
            ("live", 7, "not live"),
        ):
            ok, why = shared_verdict({**good, key: value})
            self.assertFalse(ok)
            self.assertIn(said, why)

    def test_brackets_the_limit(self) -> None:
        """From two measured points the search doubles, then bisects to within 10 %."""
        measured = []

        def at(n: int) -> dict:
            measured.append(n)
            return verdict(n, 370)

        known = {50: at(50), 100: at(100)}
        found = driver.search(at, known)
        self.assertLessEqual(found, 370)
        self.assertGreaterEqual(found, 370 * 0.9)
        self.assertLessEqual(len(measured), 10)

    def test_nothing_passes(self) -> None:
        """If even the floor is late there is no answer."""
        self.assertIsNone(driver.search(lambda n: verdict(n, 1), {}, floor=5))

    def test_estimate_from_cpu(self) -> None:
        """From the largest on-time point: 50 calls at 25 % of a core is 190 at 95 %."""
        points = [verdict(20, 100), {**verdict(50, 100), "cpuUtilization": 0.25}, verdict(200, 100)]
        self.assertEqual(driver.estimate(points), 190)
        self.assertIsNone(driver.estimate([verdict(200, 100)]))
