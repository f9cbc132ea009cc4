"""
A client's turns on Twilio without a media stream: each C{continue}'s
C{<Gather>} carries its turn token (C{turn=} in the action URL), and words
that come back with another turn's token are kept but answer nothing.
Everything runs through the fake Twilio, which executes our TwiML.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import TestCase

from tests.fakes.provider import CallBook
from tests.fakes.twilio import FakeCall
from tests.unit.rigs import Rig
from voicecalld.config import parse_config
from voicecalld.errors import Timeout
from voicecalld.providers.twilio.provider import TwilioProvider
from voicecalld.values.record import USER, CallRecord
from voicecalld.values.states import CallState


def turn(gather: dict[str, str]) -> str | None:
    """The turn token in a C{<Gather>}'s action URL (its attributes), if any."""
    return parse_qs(urlsplit(gather["action"]).query).get("turn", [None])[0]


def gathers_after(call: FakeCall, said: str) -> list[dict[str, str]]:
    """The attributes of every C{<Gather>} the call ran after the last C{<Say>} of C{said}."""
    names = [(v.name, v.text) for v in call.verbs]
    start = len(names) - names[::-1].index(("Say", said))
    return [v.attrs for v in call.verbs[start:] if v.name == "Gather"]


def action_turn(call: FakeCall) -> str | None:
    """The turn token in the URL of the last C{<Gather>} action the call posted."""
    action = [hook for hook in call.webhooks if hook.kind == "action"][-1]
    return turn({"action": action.url})


class TurnTokens(TestCase):
    """What a caller's answer to a C{continue} is, by the turn it came back with."""

    timeout = 30

    @inlineCallbacks
    def connected(self, rig: Rig, message: str, mode: str) -> Any:
        record = yield rig.initiate(message, mode)
        call = yield rig.fake.when_call(0)
        yield call.answer()
        yield call.when_verb("Say")
        return record, call

    def ask(self, rig: Rig, call_id: str, prompt: str) -> tuple[Deferred, str]:
        """Start a C{continue}; its deferred answer and its turn token."""
        before = len(rig.ids)
        asking = Deferred.fromCoroutine(rig.manager.continue_call(call_id, prompt))
        (token,) = rig.ids[before:]
        return asking, token

    @inlineCallbacks
    def test_a_continue_listens_with_its_token_and_gets_the_answer(self):
        rig = yield Rig(self, {}, False).start()
        record, call = yield self.connected(rig, "Hi! What can I do for you?", "conversation")
        self.assertIsNone(turn((yield call.when_gathering())))
        asking, token = self.ask(rig, record.call_id, "Which city?")
        yield call.when_verb("Say", 2)
        yield call.when_gathering()
        self.assertEqual(turn(gathers_after(call, "Which city?")[0]), token)
        yield call.gather_result("Paris, please")
        self.assertEqual((yield asking), "Paris, please")
        # The conversation goes on listening, with no token left over from the turn.
        self.assertIsNone(turn((yield call.when_gathering())))
        yield call.gather_result("And a hotel")
        live = rig.manager.live_calls()[0]
        self.assertEqual(
            [e.text for e in live.transcript if e.speaker == USER], ["Paris, please", "And a hotel"]
        )

    @inlineCallbacks
    def test_a_notify_call_on_hold_is_asked_then_listens_with_the_token(self):
        # Pauses last (the fake's clock is real), so the call really holds.
        rig = yield Rig(self, {"outbound": {"notifyHangupDelaySec": 600}}, False, 1.0).start()
        record, call = yield self.connected(rig, "Your parcel has arrived.", "notify")
        yield call.when_verb("Pause")
        asking, token = self.ask(rig, record.call_id, "Leave it with a neighbour?")
        yield call.when_verb("Say", 2)
        yield call.when_gathering()
        self.assertEqual(turn(gathers_after(call, "Leave it with a neighbour?")[0]), token)
        yield call.gather_result("Yes, number four")
        self.assertEqual((yield asking), "Yes, number four")
        self.assertEqual(
            [v.text for v in call.verbs_named("Say")],
            ["Your parcel has arrived.", "Leave it with a neighbour?"],
        )
        yield Deferred.fromCoroutine(rig.manager.end(record.call_id))
        yield call.when_ended()

    @inlineCallbacks
    def test_words_for_an_earlier_turn_are_kept_but_do_not_answer(self):
        rig = yield Rig(self, {"transcriptTimeoutMs": 300}, False).start()
        record, call = yield self.connected(rig, "Hi!", "conversation")
        first, stale = self.ask(rig, record.call_id, "First question?")
        yield call.when_verb("Say", 2)
        self.assertEqual(turn((yield call.when_gathering())), stale)
        yield self.assertFailure(first, Timeout)
        # A client hears of the timeout over the control socket: its next
        # continue comes on a later turn of the reactor, not inside the errback.
        yield deferLater(reactor, 0)
        # The first turn's <Gather> is still running when the next continue
        # starts; the caller's words then come back with the first turn's token.
        second, token = self.ask(rig, record.call_id, "Second question?")
        self.assertNotEqual(token, stale)
        late = yield call.gather_result("late words")
        self.assertFalse(second.called)
        self.assertIn("late words", [e.text for e in rig.manager.live_calls()[0].transcript])
        self.assertEqual(action_turn(late), stale)
        yield call.when_verb("Say", 3)
        self.assertEqual(turn((yield call.when_gathering())), token)
        self.assertEqual(turn(gathers_after(call, "Second question?")[0]), token)
        yield call.gather_result("right words")
        self.assertEqual((yield second), "right words")
        self.assertEqual(
            [e.text for e in rig.manager.live_calls()[0].transcript if e.speaker == USER],
            ["late words", "right words"],
        )


class _Response:
    def __init__(self, body: bytes) -> None:
        self.code = 200
        self._body = body

    def content(self) -> Deferred:
        return succeed(self._body)


class HeldHttp:
    """A treq stand-in whose requests wait until the test answers them."""

    def __init__(self) -> None:
        self.held: list[tuple[dict[str, str], Deferred]] = []

    def request(self, method: str, url: str, data: Any = None, **kwargs: Any) -> Deferred:
        d: Deferred = Deferred()
        self.held.append((dict(data or []), d))
        return d

    def answer(self) -> dict[str, str]:
        """Answer the oldest request (200, an empty resource); returns its form."""
        params, d = self.held.pop(0)
        d.callback(_Response(b"{}"))
        return params


class OneUpdateAtATime(TestCase):
    """TwiML updates on a call go one by one: Twilio may apply concurrent ones in any order."""

    def test_the_prompt_goes_after_the_listening_update(self):
        http = HeldHttp()
        settings = parse_config(
            {
                "provider": "twilio",
                "fromNumber": "+15550001111",
                "twilio": {"accountSid": "AC1", "authToken": "t"},
                "publicUrl": "https://voice.example.com/voice/webhook",
            },
            None,
            {},
        ).settings
        provider = TwilioProvider(
            settings,
            Clock(),
            public_url="https://voice.example.com/voice/webhook",
            http=http,
        )
        provider.start(lambda event: succeed(None), CallBook())
        record = CallRecord(
            call_id="c1",
            provider="twilio",
            direction="outbound",
            mode="notify",
            from_number="+15550001111",
            to_number="+15551234567",
            state=CallState.ACTIVE,
            started_at=0.0,
            provider_call_id="CA1",
        )
        provider.answer(record)
        call = provider.call_for("c1", "CA1")
        self.assertIn("<Pause", provider.answer_document(call, "CA1"))
        provider.start_listening(record, "T1")
        said = provider.speak(record, "Leave it with a neighbour?")
        self.assertEqual(len(http.held), 1)
        self.assertIn("turn=T1", http.answer()["Twiml"])
        self.assertIn("Leave it with a neighbour?", http.answer()["Twiml"])
        self.assertEqual(http.held, [])
        self.assertNoResult(said)
        provider.played(call, 1)
        self.assertEqual(self.successResultOf(said).played, "Leave it with a neighbour?")
        self.assertIn("turn=T1", provider.document(call))
