"""C{voicecall doctor}'s carrier check: one read-only request to each carrier's fake."""

from __future__ import annotations

from typing import Any

import treq
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from tests.fakes.plivo import FakePlivo
from tests.fakes.telnyx import FakeTelnyx
from tests.fakes.twilio import FakeTwilio
from voicecalld.cli.doctor import check_carrier
from voicecalld.config import parse_config


class _Fresh:
    """treq without a connection pool, so no connection outlives a test."""

    def request(self, method: str, url: str, **options: Any) -> Any:
        return treq.request(method, url, persistent=False, **options)


def settings(block: dict[str, Any]) -> Any:
    complete = {"fromNumber": "+15550001111", **block}
    if complete["provider"] == "telnyx":
        complete["telnyx"] = {"connectionId": "c1", "publicKey": "A" * 43 + "=", **block["telnyx"]}
    return parse_config(complete, None, {}, named=False).settings


class CarrierCheck(TestCase):
    @inlineCallbacks
    def check(self, fake: Any, url: str, config: dict[str, Any]):
        self.addCleanup(fake.stop)
        result = yield check_carrier(reactor, settings(config), _Fresh())
        return result

    @inlineCallbacks
    def test_twilio(self):
        sid = "AC" + "1" * 32
        fake = FakeTwilio(sid, "right")
        api = yield fake.listen()
        good = yield self.check(
            fake,
            api,
            {
                "provider": "twilio",
                "twilio": {"accountSid": sid, "authToken": "right", "apiBaseUrl": api},
            },
        )
        self.assertEqual(good.status, "ok", good.detail)
        bad = yield check_carrier(
            reactor,
            settings(
                {
                    "provider": "twilio",
                    "twilio": {"accountSid": sid, "authToken": "no", "apiBaseUrl": api},
                }
            ),
            _Fresh(),
        )
        self.assertEqual((bad.id, bad.status), ("carrier-credentials", "fail"))
        self.assertIn("401", bad.detail)
        self.assertIn("copy them again", bad.fix)
        self.assertEqual([r.method for r in fake.requests], ["GET", "GET"])

    @inlineCallbacks
    def test_telnyx(self):
        fake = FakeTelnyx("KEY-right", connection_id="c1")
        yield fake.listen()
        api = fake.api_url
        good = yield self.check(
            fake, api, {"provider": "telnyx", "telnyx": {"apiKey": "KEY-right", "apiBaseUrl": api}}
        )
        self.assertEqual(good.status, "ok", good.detail)
        bad = yield check_carrier(
            reactor,
            settings({"provider": "telnyx", "telnyx": {"apiKey": "KEY-no", "apiBaseUrl": api}}),
            _Fresh(),
        )
        self.assertEqual(bad.status, "fail")
        self.assertIn("401", bad.detail)
        self.assertNotIn("KEY-no", bad.detail)

    @inlineCallbacks
    def test_plivo(self):
        fake = FakePlivo("MAAUTHID", "right")
        api = yield fake.listen()
        good = yield self.check(
            fake,
            api,
            {
                "provider": "plivo",
                "plivo": {"authId": "MAAUTHID", "authToken": "right", "apiBaseUrl": api},
            },
        )
        self.assertEqual(good.status, "ok", good.detail)
        bad = yield check_carrier(
            reactor,
            settings(
                {
                    "provider": "plivo",
                    "plivo": {"authId": "MAAUTHID", "authToken": "x", "apiBaseUrl": api},
                }
            ),
            _Fresh(),
        )
        self.assertEqual(bad.status, "fail")
        self.assertIn("401", bad.detail)
