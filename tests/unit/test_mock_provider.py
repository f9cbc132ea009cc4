"""The mock provider: ringing, answering, speech timing, interruption, its webhook."""

from __future__ import annotations

import json

import attrs
from treq.testing import StubTreq
from twisted.internet.defer import succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from tests.fakes.provider import CallBook
from voicecalld.providers.mock import (
    ANSWER_DELAY,
    CHARS_PER_SECOND,
    DETECTION_DELAY,
    MACHINE_GREETING,
    RING_DELAY,
    MockProvider,
)
from voicecalld.values import events as ev
from voicecalld.values.playback import Liveness
from voicecalld.values.record import CallRecord
from voicecalld.values.states import CallState
from voicecalld.web.site import build_root


def record(to="+15551234567", call_id="c1", provider_call_id="mock-c1") -> CallRecord:
    return CallRecord(
        call_id=call_id,
        provider="mock",
        direction="outbound",
        mode="notify",
        from_number="+15550000000",
        to_number=to,
        state=CallState.INITIATED,
        started_at=0.0,
        provider_call_id=provider_call_id,
    )


class MockTests(TestCase):
    """What the mock reports, and when."""

    def setUp(self):
        self.clock = Clock()
        self.events = []
        self.mock = MockProvider(self.clock)
        self.mock.start(lambda e: succeed(self.events.append(e)), CallBook())

    def test_outbound_rings_then_answers(self):
        pid = self.successResultOf(self.mock.place_call(record()))
        self.assertEqual(pid, "mock-c1")
        self.clock.advance(RING_DELAY)
        self.assertIsInstance(self.events[-1], ev.Ringing)
        self.clock.advance(ANSWER_DELAY - RING_DELAY)
        self.assertIsInstance(self.events[-1], ev.Answered)

    def test_busy_and_never_answered_numbers(self):
        self.mock.place_call(record("+15550000002"))
        self.clock.advance(ANSWER_DELAY)
        self.assertEqual(self.events[-1].reason, CallState.BUSY)
        self.events.clear()
        self.mock.place_call(record("+15550000001", "c2"))
        self.clock.advance(600)
        self.assertEqual([type(e) for e in self.events], [ev.Ringing])

    def test_speech_lasts_longer_for_longer_text(self):
        text = "x" * 45
        d = self.mock.speak(record(), text)
        self.clock.advance(len(text) / CHARS_PER_SECOND - 0.01)
        self.assertNoResult(d)
        self.clock.advance(0.02)
        playback = self.successResultOf(d)
        self.assertEqual((playback.played, playback.complete), (text, True))

    def test_interrupt_keeps_what_was_heard(self):
        d = self.mock.speak(record(), "one two three four")
        self.clock.advance(0.6)
        self.mock.interrupt(record())
        playback = self.successResultOf(d)
        self.assertFalse(playback.complete)
        self.assertEqual(playback.played, "one two")

    def test_with_detection_a_person_or_a_machine_that_beeps_answers(self):
        def screened(to, call_id):
            return attrs.evolve(record(to, call_id), metadata={"machineDetection": True})

        self.mock.place_call(screened("+15551234567", "c1"))
        self.clock.advance(ANSWER_DELAY + DETECTION_DELAY)
        self.assertEqual(self.events[-1].answered_by, "human")
        self.events.clear()
        self.mock.place_call(screened("+15550000003", "c2"))
        self.clock.advance(ANSWER_DELAY + DETECTION_DELAY)
        self.assertEqual(
            (self.events[-1].answered_by, self.events[-1].message_end), ("machine", False)
        )
        self.clock.advance(MACHINE_GREETING)
        self.assertEqual(
            (self.events[-1].answered_by, self.events[-1].message_end), ("machine", True)
        )
        self.mock.place_call(record("+15550000003", "c3"))
        self.clock.advance(600)
        self.assertNotIsInstance(self.events[-1], ev.MachineDetected)  # without detection

    def test_forget_cancels_pending_events(self):
        self.mock.place_call(record())
        self.mock.forget(record())
        self.clock.advance(10)
        self.assertEqual(self.events, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_status_after_restart(self):
        status = self.successResultOf(self.mock.call_status(record()))
        self.assertEqual(status.liveness, Liveness.ALIVE)
        ended = self.successResultOf(self.mock.call_status(record(provider_call_id="stale-1")))
        self.assertEqual(ended.liveness, Liveness.ENDED)

    def test_webhook_accepts_upstreams_mock_events(self):
        http = StubTreq(build_root(self.mock.web_resources()))
        body = {
            "events": [
                {"type": "call.speech", "callId": "c1", "transcript": "hi"},
                {"type": "call.ended", "callId": "c1", "reason": "hangup-user"},
            ]
        }
        response = self.successResultOf(
            http.post("http://h/voice/webhook", data=json.dumps(body).encode())
        )
        self.assertEqual(response.code, 200)
        self.assertEqual([type(e) for e in self.events], [ev.Speech, ev.Ended])
        bad = self.successResultOf(
            http.post(
                "http://h/voice/webhook",
                data=b'{"event": {"type": "call.ended", "callId": "c1", "reason": "active"}}',
            )
        )
        self.assertEqual(bad.code, 400)
        lookalike = self.successResultOf(http.post("http://h/voice/webhook-evil", data=b"{}"))
        self.assertEqual(lookalike.code, 404)
        for elsewhere in ("http://h/", "http://h/voice", "http://h/nope/deeper"):
            self.assertEqual(self.successResultOf(http.get(elsewhere)).code, 404, elsewhere)
        nested = self.successResultOf(http.post("http://h/voice/webhook/x", data=b"{}"))
        self.assertEqual(nested.code, 404)
        slash = self.successResultOf(
            http.post(
                "http://h/voice/webhook/",
                data=b'{"event": {"type": "call.dtmf", "callId": "c1", "digits": "5"}}',
            )
        )
        self.assertEqual(slash.code, 200)
