"""
Per-number routes: chosen by the dialled number when an inbound call rings,
kept on the call's record, and what every reply and consult is told.
"""

from __future__ import annotations

import json

from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from tests.fakes.openai_chat import FakeChat
from tests.unit.harness import Harness
from tests.unit.test_control import Fixture, connect
from voicecalld.config import ConfigError, parse_config
from voicecalld.config.features import UNBUILT
from voicecalld.control import commands as c
from voicecalld.control.client import ControlClient
from voicecalld.errors import Cancelled, InvalidArgument, NotAllowed, Timeout
from voicecalld.providers.mock import MockProvider
from voicecalld.values import events as ev
from voicecalld.values.route import route_of
from voicecalld.voice.chat import make_chat_responder
from voicecalld.voice.replies import IResponder, ReplyRouter
from voicecalld.voice.tts_factory import CallVoices, route_tts

SALES = "+15550001111"
SUPPORT = "+15550002222"
CALLER = "+15557654321"
CONFIG = {
    "inboundPolicy": "open",
    "maxConcurrentCalls": 3,
    "agentId": "main",
    "sessionScope": "per-call",
    "inboundGreeting": "Acme, hello.",
    "responseModel": "openai/gpt-4.1-mini",
    "realtime": {"toolPolicy": "safe-read-only", "consultThinkingLevel": "low"},
    "numbers": {
        SALES: {
            "inboundGreeting": "Sales here.",
            "agentId": "sales",
            "responseSystemPrompt": "You sell kettles.",
            "responseTimeoutMs": 4000,
            "tts": {"providers": {"openai": {"speakerVoice": "nova"}}},
        },
        SUPPORT: {"agentId": "support"},
    },
}


def ring(h: Harness, to: str, n: int = 1) -> str:
    outcome = h.ok(
        h.provider.emit(
            ev.InboundCall(provider_call_id=f"IN-{n}", from_number=CALLER, to_number=to)
        )
    )
    return outcome.call_id


class RouteOnTheRecord(TestCase):
    """The route is resolved once, on arrival, and survives restarts and config changes."""

    def test_the_dialled_number_chooses_greeting_and_agent(self):
        h = Harness(self, CONFIG)
        sales, support = ring(h, SALES, 1), ring(h, SUPPORT, 2)
        other = ring(h, "+15550003333", 3)
        self.assertEqual(h.stored(sales).initial_message, "Sales here.")
        self.assertEqual(h.stored(support).initial_message, "Acme, hello.")
        self.assertEqual(h.stored(other).initial_message, "Acme, hello.")
        self.assertEqual(
            h.stored(sales).metadata["route"],
            {
                "number": SALES,
                "inboundGreeting": "Sales here.",
                "agentId": "sales",
                "responseSystemPrompt": "You sell kettles.",
                "responseTimeoutMs": 4000,
                "tts": True,
            },
        )
        self.assertEqual(
            h.stored(support).metadata["route"], {"number": SUPPORT, "agentId": "support"}
        )
        self.assertNotIn("route", h.stored(other).metadata)

    def test_a_config_change_does_not_move_a_live_call(self):
        h = Harness(self, CONFIG)
        call_id = ring(h, SALES)
        changed = json.loads(json.dumps(CONFIG))
        changed["numbers"][SALES] = {"agentId": "someone-else", "inboundGreeting": "New."}
        h.manager.stop()
        h2 = Harness(self, changed, h.path, clock=h.clock)
        record = h2.ok(h2.manager.get(call_id))
        route = route_of(record)
        self.assertEqual((route.agent_id, route.inbound_greeting), ("sales", "Sales here."))

    def test_outbound_calls_never_use_a_route(self):
        h = Harness(self, CONFIG)
        record = h.ok(h.manager.initiate(SALES, "Hi from Acme.", "conversation"))
        self.assertNotIn("route", h.stored(record.call_id).metadata)
        self.assertIsNone(route_of(h.stored(record.call_id)))


@implementer(IResponder)
class Slow:
    """A responder that never answers (until cancelled)."""

    def describe(self):
        return "slow"

    def generate_reply(self, record):
        return Deferred()

    def consult(self, record, question):
        return Deferred()


class WhatTheResponderIsTold(TestCase):
    """agentId and sessionScope go with every reply and consult, built one way."""

    def setUp(self):
        self.f = Fixture(self, CONFIG)
        self.replies, self.consults = [], []

        def reply(callId, call, context):
            self.replies.append(context)
            return {"text": f"reply from {context['agentId']}"}

        def consult(callId, call, question, context):
            self.consults.append((question, context))
            return {"text": f"{context['agentId']} says: 42"}

        client = ControlClient(on_reply_request=reply, on_consult=consult)
        self.server, self.client, self.pump = connect(self.f.factory, client)
        self.successResultOf(self.f.call(client, self.pump, c.RegisterResponder, name="t"))

    def answered(self, to, n=1):
        h = self.f.h
        h.provider.instant_speech = True
        call_id = ring(h, to, n)
        h.ok(h.provider.emit(ev.Answered(provider_call_id=f"IN-{n}")))
        return call_id

    def test_replies_carry_the_routes_agent(self):
        h = self.f.h
        sales = self.answered(SALES, 1)
        h.ok(h.provider.emit(ev.Speech(call_id=sales, text="A kettle, please.")))
        self.pump.flush()
        self.assertEqual(
            self.replies[-1],
            {
                "agentId": "sales",
                "sessionScope": "per-call",
                "responseModel": "openai/gpt-4.1-mini",
                "responseSystemPrompt": "You sell kettles.",
                "responseTimeoutMs": 4000,
                "number": SALES,
            },
        )
        self.assertEqual(h.stored(sales).transcript[-1].text, "reply from sales")
        plain = self.answered("+15550003333", 2)
        h.ok(h.provider.emit(ev.Speech(call_id=plain, text="Hello?")))
        self.pump.flush()
        self.assertEqual(self.replies[-1]["agentId"], "main")
        self.assertNotIn("number", self.replies[-1])

    def test_a_consult_is_routed_like_a_reply(self):
        h = self.f.h
        support = self.answered(SUPPORT)
        record = h.stored(support)
        answer = h.manager.replies.consult(record, "What is the order status?")
        self.pump.flush()
        self.assertEqual(self.successResultOf(answer), "support says: 42")
        question, context = self.consults[0]
        self.assertEqual(question, "What is the order status?")
        self.assertEqual(context["agentId"], "support")
        self.assertEqual(context["sessionScope"], "per-call")
        self.assertEqual(context["toolPolicy"], "safe-read-only")
        self.assertEqual(context["consultThinkingLevel"], "low")
        self.assertNotIn("consultFastMode", context)

    def test_a_cancelled_consult_fails_as_cancelled(self):
        h = self.f.h
        support = self.answered(SUPPORT)

        def refuse(callId, call, question, context):
            raise Cancelled("the consult run was cancelled")

        self.client._on_consult = refuse
        failures = []
        h.manager.replies.consult(h.stored(support), "Still there?").addErrback(failures.append)
        self.pump.flush()
        self.assertTrue(failures[0].check(Cancelled))
        self.assertEqual(failures[0].value.message, "the consult run was cancelled")


class ConsultTimeouts(TestCase):
    """A consult waits at least a minute by default; an explicit timeout wins."""

    def record(self):
        h = Harness(self, CONFIG)
        return h.stored(ring(h, SALES))

    def test_default_and_explicit(self):
        clock = Clock()
        router = ReplyRouter(clock, 5.0)
        router.register(Slow())
        record = self.record()
        d = router.consult(record, "q")
        clock.advance(59)
        self.assertNoResult(d)
        clock.advance(1)
        self.assertIn("60000 ms", str(self.failureResultOf(d, Timeout).value))
        d = router.consult(record, "q", timeout=2)
        clock.advance(2)
        self.failureResultOf(d, Timeout)

    def test_no_responder_no_answer(self):
        router = ReplyRouter(Clock(), 5.0)
        self.assertIsNone(self.successResultOf(router.consult(self.record(), "q")))


class ChatConsult(TestCase):
    """The chat fallback answers a consult with one request; routes pick model and prompt."""

    def test_one_request_with_the_question_last(self):
        h = Harness(self, CONFIG)
        call_id = ring(h, SALES)
        fake = FakeChat()
        settings = parse_config(CONFIG, None, {}).settings
        responder = make_chat_responder(
            settings, {"OPENAI_API_KEY": "sk-test"}, Clock(), http=StubTreq(fake)
        )
        fake.replies.append("The blue kettle is in stock.")
        answer = self.successResultOf(responder.consult(h.stored(call_id), "Is it in stock?"))
        self.assertEqual(answer, "The blue kettle is in stock.")
        (request,) = fake.requests
        messages = request["body"]["messages"]
        self.assertTrue(messages[0]["content"].startswith("You sell kettles."))
        self.assertEqual(messages[0]["role"], "system")
        self.assertTrue(messages[-1]["content"].endswith("Is it in stock?"))
        self.assertEqual(request["body"]["model"], "gpt-4.1-mini")


class PerNumberTts(TestCase):
    """numbers.<E.164>.tts: checked at load, merged over tts, one TTS per route."""

    BASE = {
        "tts": {
            "provider": "openai",
            "providers": {"openai": {"apiKey": "sk-tts", "speakerVoice": "alloy"}},
        },
        "numbers": {SALES: {"tts": {"providers": {"openai": {"speakerVoice": "nova"}}}}},
    }

    def test_merged_over_the_plugins(self):
        settings = parse_config(self.BASE, None, {}).settings
        merged = route_tts(settings, SALES)
        openai = merged.provider_settings("openai")
        self.assertEqual((merged.provider, openai.speaker_voice), ("openai", "nova"))
        self.assertEqual(openai.api_key.reveal(), "sk-tts")
        self.assertEqual(settings.tts.provider_settings("openai").speaker_voice, "alloy")

    def test_a_bad_key_names_its_path_and_the_file(self):
        bad = json.loads(json.dumps(self.BASE))
        bad["numbers"][SALES]["tts"] = {"providers": {"openai": {"speakerVoce": "nova"}}}
        with self.assertRaises(ConfigError) as raised:
            parse_config(bad, "/etc/voicecalld.json", {})
        message = str(raised.exception)
        self.assertIn("/etc/voicecalld.json", message)
        self.assertIn(f"numbers.{SALES}.tts.providers.openai.speakerVoce", message)

    def test_legacy_voice_names_are_read_as_upstream_migrates_them(self):
        legacy = json.loads(json.dumps(self.BASE))
        legacy["numbers"][SALES]["tts"] = {"openai": {"voice": "shimmer"}}
        loaded = parse_config(legacy, None, {})
        self.assertEqual(
            route_tts(loaded.settings, SALES).provider_settings("openai").speaker_voice, "shimmer"
        )
        self.assertTrue(any("numbers" in str(note) for note in loaded.notes))

    def test_no_longer_an_unbuilt_feature(self):
        self.assertNotIn("numbers.*.tts", [u.keys for u in UNBUILT])

    def test_each_call_gets_its_routes_tts(self):
        h = Harness(self, CONFIG)
        sales, support = ring(h, SALES, 1), ring(h, SUPPORT, 2)
        outbound = h.ok(h.manager.initiate(SALES, "Hi.", "conversation"))
        voices = CallVoices("plugin tts", {SALES: "sales tts"})
        self.assertEqual(voices.for_record(h.stored(sales)), "sales tts")
        self.assertEqual(voices.for_record(h.stored(support)), "plugin tts")
        self.assertEqual(voices.for_record(h.stored(outbound.call_id)), "plugin tts")


class SimulatedConsult(TestCase):
    """`voicecall simulate consult` puts a question to the call's agent on the mock provider."""

    def test_answered_by_the_routes_agent(self):
        clock = Clock()
        clock.advance(1_800_000_000)
        f = Fixture(self, CONFIG, provider=MockProvider(clock), clock=clock)
        asked = []

        def consult(callId, call, question, context):
            asked.append((callId, question, context["agentId"]))
            return {"text": "Tuesday."}

        _server, client, pump = connect(f.factory, ControlClient(on_consult=consult))
        self.successResultOf(f.call(client, pump, c.RegisterResponder, name="t"))
        rang = self.successResultOf(
            f.call(client, pump, c.Simulate, action="inbound", From=CALLER, to=SALES)
        )
        call_id = rang["callId"]
        answer = self.successResultOf(
            f.call(client, pump, c.Simulate, action="consult", callId=call_id, text="When?")
        )
        self.assertEqual(answer["text"], "Tuesday.")
        self.assertEqual(asked, [(call_id, "When?", "sales")])
        self.failureResultOf(
            f.call(client, pump, c.Simulate, action="consult", callId=call_id), InvalidArgument
        )

    def test_only_on_the_mock_provider(self):
        f = Fixture(self, CONFIG)
        _server, client, pump = connect(f.factory)
        self.failureResultOf(
            f.call(client, pump, c.Simulate, action="consult", callId="x", text="q"), NotAllowed
        )
