"""
C{voicecall doctor}'s speech-vendor checks as an operator reads them: one
read-only GET to each vendor's fake on 127.0.0.1 (Deepgram and ElevenLabs
STT, OpenAI and Google realtime voice), once healthy and once broken.
"""

from __future__ import annotations

import json
from typing import Any

import treq
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from tests.fakes.deepgram import FakeDeepgramServer
from tests.fakes.elevenlabs_stt import FakeElevenLabsSTTServer
from tests.fakes.gemini_live import FakeGeminiLive
from tests.fakes.openai_s2s import FakeS2SServer
from tests.integration.test_twilio_conversation import free_port
from voicecalld.cli.doctor import check_realtime, check_stt, render, report, rest_url
from voicecalld.config import parse_config

RIGHT = "vendor-key-right"
WRONG = "vendor-key-wrong"


class _Fresh:
    """treq without a connection pool, so no connection outlives a test."""

    def request(self, method: str, url: str, **options: Any) -> Any:
        return treq.request(method, url, persistent=False, **options)


def stt(name: str, block: dict[str, Any]) -> Any:
    config = {
        "provider": "mock",
        "streaming": {"enabled": True, "provider": name, "providers": {name: block}},
    }
    return parse_config(config, None, {}, named=False).settings


def realtime(name: str, block: dict[str, Any]) -> Any:
    config = {
        "provider": "mock",
        "inboundPolicy": "open",
        "realtime": {"enabled": True, "provider": name, "providers": {name: block}},
    }
    return parse_config(config, None, {}, named=False).settings


class VendorChecks(TestCase):
    timeout = 30

    @inlineCallbacks
    def fake(self, kind: Any) -> Any:
        server = kind(reactor)
        url = yield server.start()
        self.addCleanup(server.stop)
        server.key = RIGHT
        return server, url

    def assertNoKey(self, *checks: Any) -> None:
        text = json.dumps(report(list(checks))) + render(list(checks))
        self.assertNotIn(RIGHT, text)
        self.assertNotIn(WRONG, text)

    @inlineCallbacks
    def test_deepgram(self):
        fake, url = yield self.fake(FakeDeepgramServer)
        good = yield check_stt(
            reactor, stt("deepgram", {"apiKey": RIGHT, "baseUrl": url}), http=_Fresh()
        )
        self.assertEqual((good.id, good.status), ("stt", "ok"), good.detail)
        self.assertEqual(good.detail, "Deepgram accepted the key (read-only GET /v1/projects)")
        bad = yield check_stt(
            reactor, stt("deepgram", {"apiKey": WRONG, "baseUrl": url}), http=_Fresh()
        )
        self.assertEqual(
            render([bad]),
            "fail stt: Deepgram refused the key (HTTP 401)"
            " -- fix: set a valid streaming.providers.deepgram.apiKey",
        )
        self.assertEqual(
            [(p, h.get("authorization")) for p, h, _ in fake.rest_requests],
            [("/v1/projects", f"Token {RIGHT}"), ("/v1/projects", f"Token {WRONG}")],
        )
        self.assertEqual(fake.opened, 0, "read-only: no transcription socket opened")
        self.assertNoKey(good, bad)

    @inlineCallbacks
    def test_elevenlabs_scribe(self):
        fake, url = yield self.fake(FakeElevenLabsSTTServer)
        good = yield check_stt(
            reactor, stt("elevenlabs", {"apiKey": RIGHT, "baseUrl": url}), http=_Fresh()
        )
        self.assertEqual(good.status, "ok", good.detail)
        bad = yield check_stt(
            reactor, stt("elevenlabs", {"apiKey": WRONG, "baseUrl": url}), http=_Fresh()
        )
        self.assertEqual(
            (bad.status, bad.fix), ("fail", "set a valid streaming.providers.elevenlabs.apiKey")
        )
        self.assertEqual([h.get("xi-api-key") for _, h, _ in fake.rest_requests], [RIGHT, WRONG])
        self.assertEqual([p for p, _, _ in fake.rest_requests], ["/v1/models"] * 2)
        self.assertEqual(fake.opened, 0)
        self.assertNoKey(good, bad)

    @inlineCallbacks
    def test_openai_realtime_voice(self):
        fake, url = yield self.fake(FakeS2SServer)
        block = {"apiKey": RIGHT, "baseUrl": url, "model": "gpt-realtime-2.1"}
        good = yield check_realtime(reactor, realtime("openai", block), _Fresh())
        self.assertEqual((good.id, good.status), ("realtime", "ok"), good.detail)
        self.assertIn("model gpt-realtime-2.1 found", good.detail)
        bad = yield check_realtime(
            reactor, realtime("openai", {**block, "apiKey": WRONG}), _Fresh()
        )
        self.assertEqual(
            (bad.status, bad.detail, bad.fix),
            (
                "fail",
                "OpenAI refused the key (HTTP 401)",
                "set a valid realtime.providers.openai.apiKey",
            ),
        )
        fake.models = {"gpt-realtime-2.1"}
        missing = yield check_realtime(
            reactor, realtime("openai", {**block, "model": "gpt-nope"}), _Fresh()
        )
        self.assertEqual(missing.status, "fail")
        self.assertIn("OpenAI has no model gpt-nope", missing.detail)
        self.assertEqual(
            missing.fix, "set realtime.providers.openai.model to a model the key may use"
        )
        self.assertEqual(
            [(p, h.get("authorization")) for p, h, _ in fake.rest_requests][:2],
            [
                ("/v1/models/gpt-realtime-2.1", f"Bearer {RIGHT}"),
                ("/v1/models/gpt-realtime-2.1", f"Bearer {WRONG}"),
            ],
        )
        self.assertEqual(fake.opened, 0)
        self.assertNoKey(good, bad, missing)

    @inlineCallbacks
    def test_google_gemini_live(self):
        fake, url = yield self.fake(FakeGeminiLive)
        block = {"apiKey": RIGHT, "baseUrl": url, "model": "gemini-3.1-flash-live-preview"}
        good = yield check_realtime(reactor, realtime("google", block), _Fresh())
        self.assertEqual(good.status, "ok", good.detail)
        bad = yield check_realtime(
            reactor, realtime("google", {**block, "apiKey": WRONG}), _Fresh()
        )
        self.assertEqual(
            render([bad]),
            "fail realtime: Google refused the key (HTTP 400)"
            " -- fix: set a valid realtime.providers.google.apiKey",
        )
        self.assertEqual(
            [(p, h.get("x-goog-api-key"), q) for p, h, q in fake.rest_requests],
            [
                ("/v1beta/models/gemini-3.1-flash-live-preview", RIGHT, {}),
                ("/v1beta/models/gemini-3.1-flash-live-preview", WRONG, {}),
            ],
        )
        self.assertEqual(fake.opened, 0)
        self.assertNoKey(good, bad)

    @inlineCallbacks
    def test_a_vendor_that_does_not_answer_fails_with_the_base_url_to_check(self):
        gone = f"ws://127.0.0.1:{free_port()}/v1/listen"
        result = yield check_stt(
            reactor, stt("deepgram", {"apiKey": RIGHT, "baseUrl": gone}), http=_Fresh()
        )
        self.assertEqual(result.status, "fail")
        self.assertTrue(result.detail.startswith("no answer from http://127.0.0.1:"), result.detail)
        self.assertEqual(result.fix, "check streaming.providers.deepgram.baseUrl and the network")

    @inlineCallbacks
    def test_no_key_says_where_to_put_one(self):
        result = yield check_realtime(reactor, realtime("google", {}), _Fresh())
        self.assertEqual(
            (result.status, result.detail, result.fix),
            (
                "fail",
                "no Google API key",
                "set realtime.providers.google.apiKey (or $GEMINI_API_KEY)",
            ),
        )

    def test_rest_urls_sit_on_the_socket_hosts(self):
        self.assertEqual(
            rest_url("wss://api.deepgram.com/v1/listen", "/v1/", "/v1/projects"),
            "https://api.deepgram.com/v1/projects",
        )
        self.assertEqual(
            rest_url("wss://api.elevenlabs.io", "/v1/", "/v1/models"),
            "https://api.elevenlabs.io/v1/models",
        )
        self.assertEqual(
            rest_url("wss://proxy.example/openai/v1/realtime?x=1", "/v1/", "/v1/models/m"),
            "https://proxy.example/openai/v1/models/m",
        )
        self.assertEqual(
            rest_url(
                "wss://generativelanguage.googleapis.com/ws/google.ai.generativelanguage"
                ".v1beta.GenerativeService.BidiGenerateContent",
                "/ws/",
                "/v1beta/models/g",
            ),
            "https://generativelanguage.googleapis.com/v1beta/models/g",
        )
