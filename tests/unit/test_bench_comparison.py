"""
The side-by-side table: the daemon's calls per core against pipecat's, its µs per frame against
the relay's at an equal N, and memory per speaking call, each held to the issue's target.
"""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from bench import comparison


def point(calls: int, us: float, ok: bool = True, kib: float | None = None) -> dict:
    """A measured point as the system benchmark or the peers store it."""
    return {"calls": calls, "usPerInboundFrame": us, "noLateFrame": ok, "kibPerLiveCall": kib}


class CompareTests(TestCase):
    """What an operator reads off the comparison."""

    def figures(self) -> dict:
        system = {
            "carriers": {
                "twilio": {
                    "largestNoLateFrame": 300,
                    "points": [point(100, 80.0, kib=90.0), point(200, 70.0, kib=95.0)],
                },
                "plivo": {"error": "RuntimeError: no daemon"},
            }
        }
        peers = {
            "peers": {
                "pipecat": {"maxCalls": 70, "points": [point(100, 400.0, ok=False)]},
                "relay": {"maxCalls": 400, "points": [point(100, 60.0), point(200, 56.0)]},
            }
        }
        return comparison.compare(system, peers)

    def test_ratios_and_verdicts(self) -> None:
        """4.29x pipecat passes; 70/56 = 1.25x the relay at 200 misses; 95 KiB passes."""
        twilio = self.figures()["carriers"]["twilio"]
        self.assertEqual(twilio["equalN"], 200)
        self.assertEqual(
            (twilio["callsVsPipecat"], twilio["callsVsPipecatVerdict"]), (4.29, "pass")
        )
        self.assertEqual((twilio["usVsRelay"], twilio["usVsRelayVerdict"]), (1.25, "miss"))
        self.assertEqual((twilio["kibPerSpeakingCall"], twilio["kibVerdict"]), (95.0, "pass"))

    def test_error_and_rows(self) -> None:
        """A carrier that failed shows its error; every row has five cells."""
        figures = self.figures()
        self.assertIn("error", figures["carriers"]["plivo"])
        rows = comparison.rows(figures)
        self.assertTrue(all(len(r) == 5 for r in rows))
        self.assertIn(("comparison/plivo", "error"), [r[:2] for r in rows])

    def test_not_searched(self) -> None:
        """Without a search the largest passing point stands in, and says so."""
        out = comparison.compare(
            {"carriers": {"twilio": {"points": [point(20, 90.0)]}}},
            {"peers": {"relay": {"maxCalls": None, "points": [point(20, 60.0)]}}},
        )
        self.assertEqual(out["carriers"]["twilio"]["maxCallsPerCore"], 20)
        self.assertIn("not searched", out["carriers"]["twilio"]["basis"])
        self.assertIsNone(out["pipecat"]["maxCallsPerCore"])
        self.assertEqual(out["carriers"]["twilio"]["callsVsPipecatVerdict"], "-")
