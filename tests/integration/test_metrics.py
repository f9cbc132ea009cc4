"""
What C{/metrics} says after a whole Twilio conversation through the real
daemon, parsed with prometheus_client's own parser.
"""

from __future__ import annotations

import os
import re

import pytest
import treq
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.web.client import HTTPConnectionPool

from tests.integration import test_twilio_conversation as conversation
from tests.waiting import wait_for

pytestmark = pytest.mark.integration
DOCS = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "metrics.md")
SUFFIXES = ("_bucket", "_sum", "_count", "_created", "_total")


def undocumented(samples: set[str]) -> list[str]:
    """The metrics among C{samples} (sample names) that docs/metrics.md does not list."""
    with open(DOCS, encoding="utf-8") as f:
        docs = f.read()
    missing = set()
    for name in samples:
        base = name
        for suffix in SUFFIXES:
            base = base.removesuffix(suffix)
        if not re.search(rf"`{base}(_total)?`", docs):
            missing.add(base)
    return sorted(missing)


class ConversationMetrics(conversation.TwilioConversation):
    """The Twilio conversation's daemon, with C{--metrics}."""

    daemon_args = ("--metrics", "tcp:0:interface=127.0.0.1")
    # Only this class's test: the conversation's own run in their module.
    test_outbound_conversation = None  # type: ignore[assignment]
    test_kill_9_mid_call_and_restart = None  # type: ignore[assignment]
    test_provider_error_and_guard = None  # type: ignore[assignment]

    def metrics_url(self, path: str) -> str:
        for line in self.log.read_text().splitlines():
            if "listening for metrics on" in line:
                return f"http://{line.rstrip(')').rsplit('(', 1)[-1]}{path}"
        raise AssertionError(f"no metrics port in the log:\n{self.log.read_text()}")

    @inlineCallbacks
    def get(self, url: str, **options):
        pool = HTTPConnectionPool(reactor, persistent=False)
        response = yield treq.request(options.pop("method", "GET"), url, pool=pool, **options)
        body = yield response.text()
        return response.code, body

    @inlineCallbacks
    def scrape(self):
        code, text = yield self.get(self.metrics_url("/metrics"))
        self.assertEqual(code, 200)
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    @inlineCallbacks
    def test_a_conversation_is_counted(self):
        to = conversation.TO
        out, _, _ = yield self.cli("call", "--to", to, "--mode", "conversation", "--message", "Hi")
        call_id = out.strip()
        call = yield self.twilio.when_call(0)
        yield call.ring()
        yield call.answer()
        stream = yield call.when_stream()
        yield stream.when_mark_echoed("u1:end")
        yield stream.send_audio(b"\x55" * 3200)
        yield self.stt.audio_at_least(3200)
        self.stt.speech_started("item_1")
        self.stt.completed("item_1", "A table for two, please.")
        yield stream.when_mark_echoed("u2:end")
        during = yield self.scrape()
        live = {k: v for k, v in during.items() if k[0] == "voicecalld_live_calls"}
        self.assertEqual(sum(live.values()), 1, live)
        self.assertEqual(during[("voicecalld_media_streams_open", ())], 1)

        _, err, code = yield self.cli("end", "--call-id", "no-such-call", ok=False)
        self.assertNotEqual(code, 0, err)
        yield self.cli("end", "--call-id", call_id)
        yield call.when_ended()
        yield wait_for(
            lambda: any(
                h.param("CallStatus") == "completed" and h.code for h in self.twilio.webhooks
            ),
            what="the completed status answered",
        )
        answered = [h for h in self.twilio.webhooks if h.code in (200, 204) and not h.duplicate]
        forged, _ = yield self.get(
            self.webhook + f"?callId={call_id}",
            method="POST",
            data={"CallSid": call.sid, "CallStatus": "completed"},
            headers={"X-Twilio-Signature": "bm90IGEgc2lnbmF0dXJl"},
        )
        self.assertEqual(forged, 403)

        samples = yield self.scrape()
        created = (("direction", "outbound"), ("mode", "conversation"), ("provider", "twilio"))
        self.assertEqual(samples[("voicecalld_calls_created_total", created)], 1)
        # The CLI's end and Twilio's "completed" status cross: one end.
        ended = samples[("voicecalld_calls_ended_total", (("reason", "hangup-bot"),))]
        self.assertEqual(ended, 1)
        hooks = {
            dict(labels)["outcome"]: n
            for (name, labels), n in samples.items()
            if name == "voicecalld_webhook_requests_total"
        }
        sent = [(h.kind, h.code, h.duplicate) for h in self.twilio.webhooks]
        self.assertEqual(hooks["accepted"], len(answered), sent)
        self.assertGreaterEqual(hooks["accepted"], 2)
        self.assertEqual(hooks["bad_signature"], 1)
        self.assertEqual(hooks["limited"] + hooks["malformed"], 0)
        control = "voicecalld_control_requests_total"
        self.assertEqual(samples[(control, (("code", "ok"), ("command", "Initiate")))], 1)
        self.assertEqual(samples[(control, (("code", "ok"), ("command", "End")))], 1)
        self.assertEqual(samples[(control, (("code", "UNKNOWN_CALL"), ("command", "End")))], 1)
        total = (("stage", "total"),)
        self.assertEqual(samples[("voicecalld_turn_latency_seconds_count", total)], 1)
        self.assertGreater(samples[("voicecalld_media_frames_in_total", ())], 0)
        self.assertGreater(samples[("voicecalld_media_frames_out_total", ())], 50)
        self.assertGreater(samples[("voicecalld_pacing_lateness_seconds_count", ())], 50)
        self.assertGreater(samples[("voicecalld_store_write_seconds_count", ())], 3)
        self.assertFalse([k for k in samples if k[0] == "voicecalld_live_calls"])
        self.assertEqual(samples[("voicecalld_store_full", ())], 0)
        self.assertGreater(samples[("voicecalld_store_bytes", ())], 0)
        self.assertGreater(samples[("voicecalld_state_free_bytes", ())], 0)
        self.assertEqual(undocumented({name for name, _ in samples}), [])
        health = yield self.get(self.metrics_url("/healthz"))
        self.assertEqual(health, (200, "ok\n"))
