"""
A client's turns on Plivo without an audio stream: Plivo's own voice
(C{<Speak>}) and speech recognition (C{<GetInput>}), each C{continue}'s
C{<GetInput>} carrying its turn token in the action URL, and a live call
moved to new XML by a transfer.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.trial.unittest import TestCase

from tests.unit.test_plivo import Rig
from voicecalld.values.record import USER
from voicecalld.values.states import CallState


def turn(attrs: dict[str, str]) -> str | None:
    """The turn token in a C{<GetInput>}'s action URL, if any."""
    return parse_qs(urlsplit(attrs["action"]).query).get("turn", [None])[0]


class Turns(TestCase):
    """Whole turns held through GetInput."""

    timeout = 30

    @inlineCallbacks
    def test_a_continue_speaks_listens_with_its_token_and_gets_the_answer(self):
        rig = yield Rig(self).start()
        record = yield rig.initiate("Hi! What can I do for you?", "conversation")
        call = yield rig.fake.when_call(0)
        yield call.answer()
        listening = yield call.when_listening()
        self.assertIsNone(turn(listening))
        self.assertEqual(listening["inputType"], "speech dtmf")
        before = len(rig.ids)
        asking = Deferred.fromCoroutine(rig.manager.continue_call(record.call_id, "Which city?"))
        (token,) = rig.ids[before:]
        yield call.when_element("Speak", 2)
        self.assertEqual(call.elements_named("Transfer")[0].attrs["legs"], "aleg")
        yield call.when_listening()
        inputs = call.elements_named("GetInput")
        self.assertEqual(turn(inputs[-1].attrs), token)
        yield call.say("Paris, please", confidence=0.8)
        self.assertEqual((yield asking), "Paris, please")
        action = call.callbacks_of("action")[-1]
        self.assertEqual(parse_qs(urlsplit(action.url).query)["turn"], [token])
        # The conversation goes on listening, with no token left over from the turn.
        self.assertIsNone(turn((yield call.when_listening())))
        yield call.press("42")
        live = rig.manager.live_calls()[0]
        self.assertEqual(
            [e.text for e in live.transcript if e.speaker == USER][-2:],
            [
                "Paris, please",
                "42",
            ],
        )
        self.assertEqual(
            [e.text for e in call.elements_named("Speak")],
            ["Hi! What can I do for you?", "Which city?"],
        )
        self.assertEqual(rig.fake.errors, [])
        yield Deferred.fromCoroutine(rig.manager.end(record.call_id))
        yield call.when_ended()
        self.assertEqual((yield rig.record(record.call_id)).state, CallState.HANGUP_BOT)

    @inlineCallbacks
    def test_silence_listens_again(self):
        rig = yield Rig(self).start()
        yield rig.initiate("Hello?", "conversation")
        call = yield rig.fake.when_call(0)
        yield call.answer()
        yield call.when_listening()
        yield call.input_timeout()
        yield call.when_listening()
        self.assertEqual(len(call.elements_named("GetInput")), 2)
        self.assertTrue(call.is_live)
        self.assertEqual(rig.fake.errors, [])

    @inlineCallbacks
    def test_a_failed_transfer_fails_the_speech(self):
        rig = yield Rig(self).start()
        record = yield rig.initiate("Hello?", "conversation")
        call = yield rig.fake.when_call(0)
        yield call.answer()
        yield call.when_listening()
        rig.fake.fail_next("transfer", 500)
        failure = yield self.assertFailure(
            Deferred.fromCoroutine(rig.manager.speak(record.call_id, "Are you there?")),
            Exception,
        )
        self.assertIn("Plivo", str(failure))
