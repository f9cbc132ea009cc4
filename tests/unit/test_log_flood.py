"""
A flood of hostile webhook requests, through the guarded site as the daemon
serves it, writes O(windows) log lines, not one per request.
"""

from __future__ import annotations

import io
import json
import re
from urllib.parse import urlencode

from twisted.internet.address import IPv4Address
from twisted.internet.defer import succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher, textFileLogObserver
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from tests.fakes.provider import CallBook
from voicecalld.config import parse_config
from voicecalld.logs.observer import Chain
from voicecalld.providers.twilio.provider import TwilioProvider
from voicecalld.web.guard import GuardedSite
from voicecalld.web.site import build_root

ACCOUNT = "AC" + "3" * 32
TOKEN = "flood-test-token"
REQUESTS = 15_000
BODY = urlencode({"CallSid": "CA" + "9" * 32, "AccountSid": ACCOUNT, "CallStatus": "ringing"})
HOSTILE = (
    b"POST /voice/webhook HTTP/1.1\r\nHost: 127.0.0.1:3334\r\n"
    b"Content-Type: application/x-www-form-urlencoded\r\n"
    b"X-Twilio-Signature: bm90IGEgc2lnbmF0dXJl\r\n"
    b"Content-Length: " + str(len(BODY)).encode() + b"\r\n\r\n" + BODY.encode()
)


class Flood:
    """The Twilio webhook behind the guarded site, on a Clock, fed raw requests."""

    def __init__(self) -> None:
        settings = parse_config(
            {
                "provider": "twilio",
                "fromNumber": "+15550001111",
                "twilio": {"accountSid": ACCOUNT, "authToken": TOKEN},
            },
            None,
            {},
        ).settings
        self.clock = Clock()
        provider = TwilioProvider(
            settings, self.clock, public_url="http://127.0.0.1:3334/voice/webhook"
        )
        provider.start(lambda event: succeed(None), CallBook())
        self.site = GuardedSite(build_root(provider.web_resources()), reactor=self.clock)
        self.statuses: dict[int, int] = {}

    def request(self, peer: str, data: bytes = HOSTILE) -> None:
        transport = StringTransport(peerAddress=IPv4Address("TCP", peer, 40000))
        protocol = self.site.buildProtocol(transport.getPeer())
        protocol.makeConnection(transport)
        protocol.dataReceived(data)
        match = re.match(rb"HTTP/1\.1 (\d{3})", transport.value())
        status = int(match.group(1)) if match else 0
        self.statuses[status] = self.statuses.get(status, 0) + 1
        protocol.connectionLost(Failure(ConnectionDone()))


def lines(out: io.StringIO) -> list[str]:
    return out.getvalue().splitlines()


class FloodTests(TestCase):
    def capture(self, clock: Clock) -> tuple[io.StringIO, io.StringIO, io.StringIO, Chain]:
        """twistd's default text observer, and our chain in both formats."""
        plain, text, js = io.StringIO(), io.StringIO(), io.StringIO()
        ours = Chain("text", text, clock)
        shipped = Chain("json", js, clock)
        observers = [textFileLogObserver(plain), ours.observer, shipped.observer]
        for observer in observers:
            globalLogPublisher.addObserver(observer)
            self.addCleanup(globalLogPublisher.removeObserver, observer)
        self.chains = (ours, shipped)
        return plain, text, js, ours

    def test_fifteen_thousand_hostile_requests(self) -> None:
        flood = Flood()
        plain, text, js, _ = self.capture(flood.clock)
        for _ in range(REQUESTS):
            flood.request("203.0.113.9")
            flood.clock.advance(0.001)  # 1000 requests/s for 15 s
        flood.clock.advance(30)
        refused = sum(n for status, n in flood.statuses.items() if status in (403, 429))
        self.assertEqual(refused, REQUESTS, flood.statuses)
        before, after = len(plain.getvalue().encode()), len(text.getvalue().encode())
        print(
            f"\nflood of {REQUESTS}: twistd's default log {len(lines(plain))} lines,"
            f" {before} bytes; ours {len(lines(text))} lines, {after} bytes;"
            f" json {len(lines(js))} lines, {len(js.getvalue().encode())} bytes"
        )
        self.assertGreaterEqual(len(lines(plain)), REQUESTS)
        # Two codes (bad signature, then rate limited) over two 10 s windows:
        # at most 5 lines and one summary per code and window.
        self.assertLessEqual(len(lines(text)), 2 * 2 * 6)
        self.assertLess(after, 20_000)
        records = [json.loads(line) for line in lines(js)]
        self.assertEqual(
            {r["code"] for r in records},
            {"webhook.bad_signature", "webhook.rate_limited", "log.suppressed"},
        )
        self.assertTrue(all(r["peer"] == "203.0.113.9" for r in records))
        written = sum(1 for r in records if r["code"] != "log.suppressed")
        summaries = [r for r in records if r["code"] == "log.suppressed"]
        self.assertEqual(
            {r["suppressed_code"] for r in summaries},
            {"webhook.bad_signature", "webhook.rate_limited"},
        )
        held = sum(r["count"] for r in summaries)
        self.assertEqual(written + held, REQUESTS)
        summary = next(line for line in lines(text) if "log.suppressed" in line)
        self.assertRegex(
            summary, r"… and [\d,]+ more webhook\.\S+ from 203\.0\.113\.9 in the last 10 s$"
        )

    def test_each_peer_is_summed_up_on_its_own(self) -> None:
        flood = Flood()
        _, text, _, chain = self.capture(flood.clock)
        for _ in range(20):
            for peer in ("198.51.100.1", "198.51.100.2"):
                flood.request(peer)
        chain.flush()
        for peer in ("198.51.100.1", "198.51.100.2"):
            mine = [line for line in lines(text) if peer in line]
            self.assertEqual(len(mine), 6, mine)
            self.assertIn(f"… and 15 more webhook.bad_signature from {peer}", mine[-1])

    def test_a_lone_refusal_is_one_warning_with_code_and_peer(self) -> None:
        flood = Flood()
        _, _, js, _ = self.capture(flood.clock)
        flood.request("192.0.2.7")
        flood.request("192.0.2.7", HOSTILE.replace(b"POST", b"GET", 1))
        flood.request("192.0.2.7", HOSTILE.replace(BODY.encode(), b"\xff" * len(BODY)))
        records = [json.loads(line) for line in lines(js)]
        self.assertEqual(
            [(r["level"], r["code"], r["peer"]) for r in records],
            [
                ("warn", "webhook.bad_signature", "192.0.2.7"),
                ("warn", "webhook.bad_method", "192.0.2.7"),
                ("warn", "webhook.malformed", "192.0.2.7"),
            ],
        )
        self.assertNotIn(TOKEN, js.getvalue())
