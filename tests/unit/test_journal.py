"""
Durable before visible: the call core against a store whose writes finish
only when the test releases them, or fail as on a full disk.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from tests.unit.harness import Harness
from tests.unit.test_manager import ScriptedResponder
from voicecalld.errors import StoreError
from voicecalld.values import events as ev
from voicecalld.values.events import Outcome
from voicecalld.values.states import CallState

TO = "+15551234567"
CALLER = "+15557654321"


def user_words(record):
    return [e.text for e in record.transcript if e.speaker == "user" and e.kind == "speech"]


class VisibleOnlyWhenDurable(TestCase):
    """Nobody sees a change (status, tail, turn logic, the carrier) before the store holds it."""

    def test_a_change_is_seen_only_once_written(self):
        h = Harness(self)
        call_id = h.answered_call()
        before = len(h.notices)
        h.store.holding = True
        applied = h.provider.emit(ev.Dtmf(call_id=call_id, digits="5", dedupe_key="k1"))
        self.assertNoResult(applied)
        (live,) = h.manager.live_calls()
        self.assertNotIn("5", [e.text for e in live.transcript])
        self.assertEqual(len(h.notices), before, "published before it was stored")
        h.store.release()
        self.assertEqual(self.successResultOf(applied), Outcome.APPLIED)
        self.assertEqual(h.manager.live_calls()[0].transcript[-1].text, "5")
        self.assertEqual(h.notices[-1].kind, "call.transcript")

    def test_a_write_that_changes_nothing_is_not_made(self):
        h = Harness(self)
        call_id = h.answered_call()
        writes = h.store.commits
        h.ok(h.provider.emit(ev.Ringing(call_id=call_id)))
        h.ok(h.provider.emit(ev.Answered(call_id=call_id)))
        h.ok(h.provider.emit(ev.SpeechStarted(call_id=call_id)))
        self.assertEqual(h.store.commits, writes)

    def test_words_during_the_greeting_done_write_are_answered(self):
        h = Harness(self)
        responder = ScriptedResponder()
        h.manager.replies.register(responder)
        record = h.ok(h.manager.initiate(TO, "Hello, this is the clinic.", "conversation"))
        h.ok(h.provider.emit(ev.Answered(call_id=record.call_id)))
        h.store.holding = True
        h.provider.finish_speaking(record.call_id)
        self.assertEqual(len(h.store.held), 1, "the greeting-done write is pending")
        self.assertEqual(h.manager.live_calls()[0].state, CallState.SPEAKING)
        heard = h.provider.emit(ev.Speech(call_id=record.call_id, text="Hi, I need an appointment"))
        self.assertNoResult(heard)
        self.assertEqual(responder.asked, [])
        h.store.release_all()
        self.successResultOf(heard)
        ((asked, reply),) = responder.asked
        self.assertEqual(user_words(asked), ["Hi, I need an appointment"])
        reply.callback("Of course. Which day suits you?")
        self.assertEqual(
            h.provider.requests[-1], ("speak", record.call_id, "Of course. Which day suits you?")
        )

    def test_words_said_over_the_greeting_are_held_then_answered(self):
        h = Harness(self)
        responder = ScriptedResponder()
        h.manager.replies.register(responder)
        record = h.ok(h.manager.initiate(TO, "Hello, this is the clinic.", "conversation"))
        h.ok(h.provider.emit(ev.Answered(call_id=record.call_id)))
        h.ok(h.provider.emit(ev.Speech(call_id=record.call_id, text="I want to cancel")))
        self.assertNotIn("interrupt", h.provider.kinds(), "the greeting was cut off")
        self.assertEqual(responder.asked, [])
        h.provider.finish_speaking(record.call_id)
        self.assertEqual(len(responder.asked), 1)


class StreamBeforeAnswerStored(TestCase):
    """
    A carrier that streams media (Twilio, Telnyx, Plivo) reports the answer
    and connects the stream at about the same time; the stream may be up
    while the answer is still being written, and the caller is greeted anyway.
    """

    def ring(self, h, sid):
        return h.provider.emit(
            ev.InboundCall(provider_call_id=sid, from_number=CALLER, to_number="+15550001111")
        )

    def test_stream_up_while_the_answer_is_written_still_greets(self):
        h = Harness(self, {"inboundPolicy": "open", "inboundGreeting": "Acme, hello!"})
        h.provider.media = True
        h.provider.instant_speech = True
        call_id = h.ok(self.ring(h, "IN-1")).call_id
        h.store.holding = True
        answered = h.provider.emit(ev.Answered(provider_call_id="IN-1"))
        connected = h.provider.emit(ev.MediaConnected(provider_call_id="IN-1", stream_id="S1"))
        h.store.release_all()
        self.successResultOf(answered)
        self.successResultOf(connected)
        self.assertIn(("speak", call_id, "Acme, hello!"), h.provider.requests)
        self.assertEqual(h.stored(call_id).transcript[0].text, "Acme, hello!")

    def test_second_caller_ringing_as_the_first_hangs_up_is_greeted(self):
        config = {"inboundPolicy": "open", "inboundGreeting": "Acme, hello!"}
        h = Harness(self, {**config, "maxConcurrentCalls": 2})
        h.provider.media = True
        h.provider.instant_speech = True
        first = h.ok(self.ring(h, "IN-1")).call_id
        h.ok(h.provider.emit(ev.Answered(provider_call_id="IN-1")))
        h.ok(h.provider.emit(ev.MediaConnected(provider_call_id="IN-1", stream_id="S1")))
        self.assertEqual(h.stored(first).transcript[0].text, "Acme, hello!")
        # The first caller hangs up; the second rings while that end is written.
        h.store.holding = True
        ended = h.provider.emit(ev.Ended(provider_call_id="IN-1", reason=CallState.COMPLETED))
        ringing = self.ring(h, "IN-2")
        h.store.release()
        self.successResultOf(ended)
        second = self.successResultOf(ringing).call_id
        # Its answer is written behind whatever else is pending; its stream is up meanwhile.
        answered = h.provider.emit(ev.Answered(provider_call_id="IN-2"))
        connected = h.provider.emit(ev.MediaConnected(provider_call_id="IN-2", stream_id="S2"))
        self.assertNotIn(("speak", second, "Acme, hello!"), h.provider.requests)
        h.store.release_all()
        self.successResultOf(answered)
        self.successResultOf(connected)
        self.assertIn(("speak", second, "Acme, hello!"), h.provider.requests)
        record = h.stored(second)
        self.assertEqual(record.transcript[0].text, "Acme, hello!")
        self.assertEqual(record.state, CallState.LISTENING)
        self.assertEqual(h.stored(first).state, CallState.COMPLETED)


class TwoEndsAtOnce(TestCase):
    """A client's end and the carrier's report of it cross: the call ends once, for one reason."""

    def test_the_end_written_first_is_the_only_end(self):
        h = Harness(self)
        call_id = h.answered_call()
        h.store.holding = True
        ending = Deferred.fromCoroutine(h.manager.end(call_id))
        reported = h.provider.emit(ev.Ended(call_id=call_id, reason=CallState.COMPLETED))
        h.store.release_all()
        self.successResultOf(ending)
        self.successResultOf(reported)
        self.assertEqual(h.kinds().count("call.ended"), 1)
        self.assertEqual(h.stored(call_id).state, CallState.HANGUP_BOT)


class FailedWrites(TestCase):
    """A failed write changes nothing, answers 5xx or STORE_ERROR, and its retry applies once."""

    def test_failed_write_then_carrier_retry_leaves_one_entry(self):
        h = Harness(self)
        call_id = h.answered_call()
        said = ev.Speech(call_id=call_id, text="my account number is 42", dedupe_key="twilio:r1")
        h.store.fail_next()
        h.error(h.provider.emit(said), StoreError)
        self.assertEqual(user_words(h.manager.live_calls()[0]), [])
        self.assertEqual(h.ok(h.provider.emit(said)), Outcome.APPLIED)
        self.assertEqual(h.ok(h.provider.emit(said)), Outcome.DUPLICATE)
        self.assertEqual(user_words(h.stored(call_id)), ["my account number is 42"])
        self.flushLoggedErrors(OSError)

    def test_a_duplicate_arriving_during_the_write_waits_for_it(self):
        h = Harness(self)
        call_id = h.answered_call()
        said = ev.Speech(call_id=call_id, text="yes", dedupe_key="twilio:r2")
        h.store.holding = True
        first = h.provider.emit(said)
        second = h.provider.emit(said)
        h.store.release_all()
        self.assertEqual(self.successResultOf(first), Outcome.APPLIED)
        self.assertEqual(self.successResultOf(second), Outcome.DUPLICATE)
        self.assertEqual(user_words(h.stored(call_id)), ["yes"])

    def test_kill_while_a_write_is_held_loses_nothing_acknowledged(self):
        h = Harness(self)
        call_id = h.answered_call()
        self.assertEqual(h.ok(h.provider.emit(ev.Dtmf(call_id=call_id, digits="1"))), "applied")
        h.store.holding = True
        pending = h.provider.emit(ev.Speech(call_id=call_id, text="lost", dedupe_key="k-lost"))
        self.assertNoResult(pending)
        h2 = h.restart()  # the held write never reaches the file: kill -9
        pending.addErrback(lambda f: None)
        (record,) = h2.manager.live_calls()
        self.assertEqual([e.text for e in record.transcript if e.kind == "dtmf"], ["1"])
        self.assertEqual(user_words(record), [])
        again = ev.Speech(call_id=call_id, text="lost", dedupe_key="k-lost")
        self.assertEqual(h2.ok(h2.provider.emit(again)), Outcome.APPLIED)
        self.assertEqual(user_words(h2.stored(call_id)), ["lost"])

    def test_end_on_a_full_disk_keeps_the_call_live_then_converges(self):
        h = Harness(self)
        call_id = h.answered_call()
        h.store.fail_next()
        h.error(h.manager.end(call_id), StoreError)
        (live,) = h.manager.live_calls()
        self.assertFalse(live.state.terminal, "the call left the live list unstored")
        self.assertFalse(h.stored(call_id).state.terminal)
        h.store.fail_next()
        h.error(h.manager.end(call_id), StoreError)  # a retried end really retries
        self.assertEqual(len(h.manager.live_calls()), 1)
        self.assertEqual(h.provider.kinds().count("hangup"), 1)
        h.clock.advance(60)  # space came back: the end is written without anyone asking
        self.assertEqual(h.manager.live_calls(), [])
        self.assertEqual(h.stored(call_id).state, CallState.HANGUP_BOT)
        self.assertEqual(h.ok(h.manager.end(call_id)).state, CallState.HANGUP_BOT)
        self.flushLoggedErrors(OSError)

    def test_a_failed_end_write_from_the_carrier_is_retried_by_it(self):
        h = Harness(self)
        call_id = h.answered_call()
        hung_up = ev.Ended(call_id=call_id, reason=CallState.HANGUP_USER, dedupe_key="end-1")
        h.store.fail_next()
        h.error(h.provider.emit(hung_up), StoreError)
        self.assertEqual(len(h.manager.live_calls()), 1)
        self.assertEqual(h.ok(h.provider.emit(hung_up)), Outcome.APPLIED)
        self.assertEqual(h.stored(call_id).state, CallState.HANGUP_USER)
        self.assertEqual(h.ok(h.provider.emit(hung_up)), Outcome.DUPLICATE)
        self.flushLoggedErrors(OSError)

    def test_a_failed_first_write_places_no_call(self):
        h = Harness(self)
        h.store.fail_next()
        d = Deferred.fromCoroutine(h.manager.initiate(TO, "hi", "notify"))
        self.failureResultOf(d, StoreError)
        self.assertEqual(h.provider.requests, [])
        self.assertEqual(h.manager.live_calls(), [])
        self.flushLoggedErrors(OSError)
