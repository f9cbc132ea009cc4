"""The call manager: operations, events, timers, persistence and restore, on a Clock."""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from tests.fakes.provider import RecordingProvider, provider_error
from tests.unit.harness import Harness
from voicecalld.calls.routes import DEFAULT_GREETING
from voicecalld.calls.turns import APOLOGY
from voicecalld.errors import (
    Busy,
    CallEnded,
    InvalidArgument,
    NotAllowed,
    NotConnected,
    ProviderError,
    StoreError,
    Timeout,
    UnknownCall,
)
from voicecalld.values import events as ev
from voicecalld.values.playback import CallStatus, Liveness
from voicecalld.values.states import CallState
from voicecalld.voice.replies import IResponder

TO = "+15551234567"


class InitiateTests(TestCase):
    """Placing outbound calls."""

    def test_record_is_stored_before_the_provider_dials(self):
        h = Harness(self)
        h.provider.on_dial = lambda record: h.provider.store_seen_at_dial.append(
            h.stored(record.call_id)
        )
        record = h.ok(h.manager.initiate(TO, "Hi", "notify"))
        (seen,) = h.provider.store_seen_at_dial
        self.assertEqual(seen.state, CallState.INITIATED)
        self.assertEqual(record.provider_call_id, f"P-{record.call_id}")
        self.assertEqual(h.stored(record.call_id).provider_call_id, record.provider_call_id)
        self.assertEqual(h.kinds()[:1], ["call.created"])

    def test_defaults_come_from_the_config(self):
        h = Harness(self, {"toNumber": TO, "outbound": {"defaultMode": "conversation"}})
        record = h.ok(h.manager.initiate(None, None, None))
        self.assertEqual((record.to_number, record.mode), (TO, "conversation"))
        self.assertEqual(record.from_number, "+15550000000")

    def test_bad_arguments_are_refused_and_change_nothing(self):
        h = Harness(self)
        cases = [
            ((None, "hi", "notify"), "to required"),
            (("12345", "hi", "notify"), "not an E.164"),
            ((TO, "hi", "shout"), "mode must be"),
            ((TO, None, "notify"), "message required"),
            ((TO, "x" * 4001, "notify"), "too long"),
        ]
        for args, text in cases:
            if "E.164" in text:
                error = h.error(h.manager.initiate(*args), NotAllowed)
            else:
                error = h.error(h.manager.initiate(*args), InvalidArgument)
            self.assertIn(text, str(error))
        self.assertEqual(h.provider.requests, [])
        self.assertEqual(h.ok(h.store.recent(10)), [])

    def test_dtmf_sequence_is_for_conversations(self):
        h = Harness(self)
        error = h.error(
            h.manager.initiate(TO, "hi", "notify", dtmf_sequence="1234"), InvalidArgument
        )
        self.assertEqual(str(error), 'dtmfSequence is valid only with mode "conversation"')
        h.error(h.manager.initiate(TO, "hi", "conversation", dtmf_sequence="12x"), InvalidArgument)
        record = h.ok(h.manager.initiate(TO, "hi", "conversation", dtmf_sequence="ww1234#"))
        self.assertEqual(record.metadata["dtmfSequence"], "ww1234#")
        self.assertEqual(h.stored(record.call_id).metadata["dtmfSequence"], "ww1234#")

    def test_concurrency_cap_refuses_without_dialling(self):
        h = Harness(self, {"maxConcurrentCalls": 1})
        h.ok(h.manager.initiate(TO, "one", "notify"))
        error = h.error(h.manager.initiate(TO, "two", "notify"), NotAllowed)
        self.assertEqual(str(error), "Maximum concurrent calls (1) reached")
        self.assertEqual(h.provider.kinds().count("place_call"), 1)
        self.assertEqual(h.kinds()[-1], "call.refused")

    def test_toll_fraud_guard(self):
        h = Harness(self, {"maxConcurrentCalls": 10})
        premium = h.error(h.manager.initiate("+19001234567", "x", "notify"), NotAllowed)
        self.assertIn("premium-rate or high-cost destination", str(premium))
        limited = Harness(self, {"outbound": {"allowedPrefixes": ["+1555"]}})
        elsewhere = limited.error(
            limited.manager.initiate("+447700900123", "x", "notify"), NotAllowed
        )
        self.assertIn("allowedPrefixes", str(elsewhere))
        limited.ok(limited.manager.initiate(TO, "x", "notify"))
        self.assertEqual(h.provider.requests, [])
        self.assertEqual(limited.provider.kinds(), ["place_call"])
        refusal = [n for n in h.notices if n.kind == "call.refused"]
        self.assertEqual([r.to_number for r in refusal], ["+19001234567"])

    def test_an_allowed_prefix_more_specific_than_a_denied_one_wins(self):
        h = Harness(self, {"outbound": {"allowedPrefixes": ["+1900555"]}})
        h.ok(h.manager.initiate("+19005551234", "x", "notify"))

    def test_hourly_cap_slides_and_survives_a_restart(self):
        h = Harness(self, {"maxConcurrentCalls": 10, "outbound": {"maxCallsPerHour": 2}})
        h.ok(h.manager.initiate(TO, "1", "notify"))
        h.clock.advance(600)
        h.ok(h.manager.initiate(TO, "2", "notify"))
        self.assertIn(
            "maxCallsPerHour", str(h.error(h.manager.initiate(TO, "3", "notify"), NotAllowed))
        )
        h2 = h.restart()
        h2.error(h2.manager.initiate(TO, "3", "notify"), NotAllowed)
        h2.clock.advance(3001)
        h2.ok(h2.manager.initiate(TO, "3", "notify"))

    def test_provider_failure_ends_the_call_failed(self):
        h = Harness(self)
        h.provider.fail_dial = provider_error("21211: Invalid 'To' Phone Number")
        error = h.error(h.manager.initiate(TO, "hi", "notify"), ProviderError)
        self.assertIn("21211", str(error))
        (record,) = h.ok(h.store.recent(5))
        self.assertEqual(record.state, CallState.FAILED)
        self.assertIn("21211", record.end_detail)
        self.assertEqual(h.manager.live_calls(), [])

    def test_store_failure_refuses_before_dialling(self):
        h = Harness(self)
        h.ok(h.store.close())
        h.error(h.manager.initiate(TO, "hi", "notify"), StoreError)
        self.assertEqual(h.provider.requests, [])
        self.assertEqual(h.manager.live_calls(), [])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class LifecycleTests(TestCase):
    """Events, first words, notify hang-up, timers."""

    def test_notify_speaks_then_hangs_up_after_the_delay(self):
        h = Harness(self, {"outbound": {"notifyHangupDelaySec": 3}})
        record = h.ok(h.manager.initiate(TO, "Your table is ready", "notify"))
        h.ok(h.provider.emit(ev.Ringing(call_id=record.call_id)))
        h.ok(h.provider.emit(ev.Answered(call_id=record.call_id)))
        self.assertEqual(h.provider.requests[-1], ("speak", record.call_id, "Your table is ready"))
        h.clock.advance(10)
        self.assertNotIn("hangup", h.provider.kinds())
        h.provider.finish_speaking(record.call_id)
        h.clock.advance(2.9)
        self.assertNotIn("hangup", h.provider.kinds())
        h.clock.advance(0.2)
        stored = h.stored(record.call_id)
        self.assertEqual(stored.state, CallState.HANGUP_BOT)
        self.assertEqual([e.text for e in stored.transcript], ["Your table is ready"])
        self.assertIsNone(stored.initial_message)
        states = [n.state for n in h.notices if n.kind == "call.state"]
        self.assertEqual(states, ["ringing", "answered", "speaking", "active", "hangup-bot"])

    def test_first_words_cut_off_by_a_lost_stream_are_said_on_the_next(self):
        h = Harness(self)
        h.provider.media = True
        record = h.ok(h.manager.initiate(TO, "Hello, it's the pharmacy.", "conversation"))
        h.ok(h.provider.emit(ev.Answered(call_id=record.call_id)))
        self.assertNotIn("speak", h.provider.kinds(), "spoke before the stream was up")
        h.ok(h.provider.emit(ev.MediaConnected(call_id=record.call_id, stream_id="S1")))
        h.provider.interrupt(h.manager.live_calls()[0])  # the stream went away mid-greeting
        h.ok(h.provider.emit(ev.MediaConnected(call_id=record.call_id, stream_id="S2")))
        said = [r for r in h.provider.requests if r[0] == "speak"]
        self.assertEqual([r[2] for r in said], ["Hello, it's the pharmacy."] * 2)
        h.provider.finish_speaking(record.call_id)
        stored = h.stored(record.call_id)
        self.assertIsNone(stored.initial_message)
        self.assertEqual(stored.state, CallState.LISTENING)

    def test_out_of_order_events_never_move_a_call_back(self):
        h = Harness(self)
        call_id = h.answered_call()
        h.ok(h.provider.emit(ev.Ringing(call_id=call_id)))
        self.assertEqual(h.stored(call_id).state, CallState.LISTENING)

    def test_ring_timeout_hangs_up_as_no_answer(self):
        h = Harness(self, {"ringTimeoutMs": 20000})
        record = h.ok(h.manager.initiate(TO, "hi", "notify"))
        h.clock.advance(19.9)
        self.assertEqual(h.manager.live_calls()[0].state, CallState.INITIATED)
        h.clock.advance(0.2)
        self.assertEqual(h.provider.requests[-2][0], "hangup")
        self.assertEqual(h.stored(record.call_id).state, CallState.NO_ANSWER)

    def test_max_duration_hangs_up_as_timeout(self):
        h = Harness(self, {"maxDurationSeconds": 60})
        call_id = h.answered_call()
        h.clock.advance(59)
        self.assertEqual(len(h.manager.live_calls()), 1)
        h.clock.advance(2)
        self.assertEqual(h.stored(call_id).state, CallState.TIMEOUT)

    def test_failed_hang_up_is_retried_and_the_call_stays_live(self):
        h = Harness(self, {"maxDurationSeconds": 60})
        call_id = h.answered_call()
        h.provider.fail_hangup = provider_error()
        h.clock.advance(61)
        self.assertEqual(h.stored(call_id).state, CallState.LISTENING)
        h.provider.fail_hangup = None
        h.clock.advance(15)
        self.assertEqual(h.stored(call_id).state, CallState.TIMEOUT)

    def test_the_hang_up_retry_backs_off_then_gives_up_once(self):
        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        h = Harness(self, {"maxDurationSeconds": 60})
        call_id = h.answered_call()
        h.provider.fail_hangup = provider_error()
        h.clock.advance(61)
        attempts = [h.provider.kinds().count("hangup")]
        for delay in (15, 30, 60, 120):
            h.clock.advance(delay - 0.1)
            attempts.append(h.provider.kinds().count("hangup"))
            h.clock.advance(0.1)
        self.assertEqual(attempts, [1, 1, 2, 3, 4])
        self.assertEqual(h.provider.kinds().count("hangup"), 5)
        stored = h.stored(call_id)
        self.assertEqual(stored.state, CallState.ERROR)
        self.assertIn("hang-up failed 5 times", stored.end_detail)
        gave_up = [e for e in observer if e.get("log_code") == "call.hangup_gave_up"]
        self.assertEqual(len(gave_up), 1)
        h.clock.advance(3600)
        self.assertEqual(h.provider.kinds().count("hangup"), 5)

    def test_caller_hang_up(self):
        h = Harness(self)
        call_id = h.answered_call()
        h.ok(h.provider.emit(ev.Ended(call_id=call_id, reason=CallState.HANGUP_USER)))
        self.assertEqual(h.stored(call_id).end_reason, "hangup-user")
        self.assertEqual(h.manager.live_calls(), [])

    def test_duplicate_events_apply_once_even_after_a_restart(self):
        h = Harness(self)
        call_id = h.answered_call()
        said = ev.Speech(call_id=call_id, text="yes", dedupe_key="twilio:abc")
        h.ok(h.provider.emit(said))
        h.ok(h.provider.emit(said))
        self.assertEqual(
            [e.text for e in h.stored(call_id).transcript if e.speaker == "user"], ["yes"]
        )
        h2 = h.restart()
        h2.ok(h2.provider.emit(said))
        self.assertEqual(len(h2.stored(call_id).transcript), 2)

    def test_dtmf_reaches_the_transcript_and_the_tail(self):
        h = Harness(self)
        call_id = h.answered_call()
        h.ok(h.provider.emit(ev.Dtmf(call_id=call_id, digits="42#")))
        entry = h.stored(call_id).transcript[-1]
        self.assertEqual((entry.speaker, entry.text, entry.kind), ("user", "42#", "dtmf"))
        self.assertEqual(h.notices[-1].entry_kind, "dtmf")

    def test_stale_unanswered_calls_are_reaped(self):
        h = Harness(self, {"staleCallReaperSeconds": 45, "ringTimeoutMs": 600000})
        record = h.ok(h.manager.initiate(TO, "hi", "notify"))
        h.clock.advance(30)
        self.assertEqual(len(h.manager.live_calls()), 1)
        h.clock.advance(30)
        stored = h.stored(record.call_id)
        self.assertEqual(stored.state, CallState.TIMEOUT)
        self.assertIn("stale", stored.end_detail)


class TalkTests(TestCase):
    """speak, continue, DTMF out, end."""

    def test_speak_requires_a_connected_call(self):
        h = Harness(self)
        record = h.ok(h.manager.initiate(TO, "hi", "conversation"))
        h.error(h.manager.speak(record.call_id, "hello"), NotConnected)
        h.error(h.manager.speak("nope", "hello"), UnknownCall)
        h.error(h.manager.speak(None, "hello"), InvalidArgument)
        h.ok(h.manager.end(record.call_id))
        ended = h.error(h.manager.speak(record.call_id, "hello"), CallEnded)
        self.assertEqual(str(ended), "Call has ended (hangup-bot)")
        h.error(h.manager.send_dtmf(record.call_id, "1"), CallEnded)

    def test_continue_returns_the_callers_next_words(self):
        h = Harness(self)
        call_id = h.answered_call()
        h.provider.instant_speech = False
        d = Deferred.fromCoroutine(h.manager.continue_call(call_id, "What's your name?"))
        h.provider.finish_speaking(call_id)
        self.assertNoResult(d)
        self.assertEqual(h.stored(call_id).state, CallState.LISTENING)
        h.clock.advance(2)
        h.ok(h.provider.emit(ev.Speech(call_id=call_id, text=" Bob ")))
        self.assertEqual(self.successResultOf(d), "Bob")
        stored = h.stored(call_id)
        self.assertEqual(stored.metadata["turnCount"], 1)
        self.assertEqual(stored.metadata["lastTurnListenWaitMs"], 2000)
        self.assertEqual(
            ["start_listening", "stop_listening"],
            [k for k in h.provider.kinds() if k.endswith("listening")],
        )

    def test_words_said_during_the_question_answer_it(self):
        h = Harness(self)
        call_id = h.answered_call()
        h.provider.instant_speech = False
        d = Deferred.fromCoroutine(h.manager.continue_call(call_id, "Shall I book it?"))
        h.ok(h.provider.emit(ev.Speech(call_id=call_id, text="ok")))
        self.assertNoResult(d)
        h.provider.finish_speaking(call_id)
        self.assertEqual(self.successResultOf(d), "ok")

    def test_an_answer_over_the_question_cuts_it_short(self):
        h = Harness(self)
        call_id = h.answered_call()
        h.provider.instant_speech = False
        d = Deferred.fromCoroutine(h.manager.continue_call(call_id, "Shall I book it for you?"))
        h.ok(h.provider.emit(ev.Speech(call_id=call_id, text="yes please")))
        self.assertEqual(self.successResultOf(d), "yes please")
        answer, question = h.stored(call_id).transcript[-2:]
        self.assertEqual((answer.speaker, answer.text), ("user", "yes please"))
        self.assertEqual((question.text, question.interrupted), ("Shall", True))

    def test_one_continue_at_a_time_and_its_timeout(self):
        h = Harness(self, {"transcriptTimeoutMs": 5000})
        call_id = h.answered_call()
        d = Deferred.fromCoroutine(h.manager.continue_call(call_id, "Hello?"))
        h.error(h.manager.continue_call(call_id, "Again?"), Busy)
        h.clock.advance(5.1)
        error = self.failureResultOf(d, Timeout).value
        self.assertEqual(str(error), "Timed out waiting for transcript after 5000ms")
        d2 = Deferred.fromCoroutine(h.manager.continue_call(call_id, "Hello?"))
        self.assertNoResult(d2)
        d2.addErrback(lambda f: None)

    def test_continue_fails_when_the_call_ends(self):
        h = Harness(self)
        call_id = h.answered_call()
        d = Deferred.fromCoroutine(h.manager.continue_call(call_id, "Hello?"))
        h.ok(h.provider.emit(ev.Ended(call_id=call_id, reason=CallState.HANGUP_USER)))
        self.assertEqual(str(self.failureResultOf(d, CallEnded).value), "Call ended: hangup-user")

    def test_failed_playback_fails_the_turn(self):
        h = Harness(self)
        call_id = h.answered_call()
        h.provider.fail_speak = provider_error("tts down")
        h.error(h.manager.continue_call(call_id, "Hello?"), ProviderError)
        self.assertEqual(h.manager.live_calls()[0].state, CallState.LISTENING)
        self.assertIn("call.problem", h.kinds())
        h.provider.fail_speak = None
        d = Deferred.fromCoroutine(h.manager.continue_call(call_id, "Hello?"))
        self.assertNoResult(d)
        d.addErrback(lambda f: None)

    def test_dtmf_out_is_validated_and_recorded(self):
        h = Harness(self)
        call_id = h.answered_call()
        h.error(h.manager.send_dtmf(call_id, "12x"), InvalidArgument)
        h.ok(h.manager.send_dtmf(call_id, "ww123#"))
        self.assertEqual(h.provider.requests[-1], ("send_dtmf", call_id, "ww123#"))
        self.assertEqual(h.stored(call_id).transcript[-1].kind, "dtmf")

    def test_end_hangs_up_and_is_idempotent(self):
        h = Harness(self)
        call_id = h.answered_call()
        record = h.ok(h.manager.end(call_id))
        self.assertEqual(record.state, CallState.HANGUP_BOT)
        self.assertEqual(h.provider.kinds().count("hangup"), 1)
        again = h.ok(h.manager.end(call_id))
        self.assertEqual(again.state, CallState.HANGUP_BOT)
        self.assertEqual(h.provider.kinds().count("hangup"), 1)
        h.error(h.manager.end("nope"), UnknownCall)

    def test_end_that_the_provider_refuses_leaves_the_call_live(self):
        h = Harness(self)
        call_id = h.answered_call()
        h.provider.fail_hangup = provider_error()
        h.error(h.manager.end(call_id), ProviderError)
        self.assertEqual(len(h.manager.live_calls()), 1)

    def test_status_finds_ended_calls_by_either_id(self):
        h = Harness(self)
        call_id = h.answered_call()
        h.ok(h.manager.end(call_id))
        self.assertEqual(h.ok(h.manager.get(call_id)).state, CallState.HANGUP_BOT)
        self.assertEqual(h.ok(h.manager.get(f"P-{call_id}")).call_id, call_id)


class InboundTests(TestCase):
    """Inbound policy, greeting and the shared concurrency budget."""

    def ring(self, h, caller="+15557654321"):
        return h.ok(
            h.provider.emit(
                ev.InboundCall(
                    provider_call_id="IN-1", from_number=caller, to_number="+15550001111"
                )
            )
        )

    def test_disabled_by_default(self):
        h = Harness(self)
        outcome = self.ring(h)
        self.assertIsInstance(outcome, ev.Refused)
        self.assertIn("disabled", outcome.reason)
        self.assertEqual(h.provider.kinds(), ["reject"])
        self.assertEqual(h.ok(h.store.recent(5)), [])
        self.assertEqual(h.kinds(), ["call.refused"])

    def test_a_caller_the_store_cannot_keep_hears_busy(self):
        h = Harness(self, {"inboundPolicy": "open"})
        h.ok(h.store.close())
        outcome = self.ring(h)
        self.assertIsInstance(outcome, ev.Refused)
        self.assertEqual(outcome.refusal, ev.Refusal.BUSY)
        self.assertEqual(h.provider.requests, [("reject", "IN-1", ev.Refusal.BUSY)])
        self.assertEqual(h.manager.live_calls(), [])
        self.flushLoggedErrors(RuntimeError)

    def test_allowlist_compares_digits_exactly(self):
        h = Harness(self, {"inboundPolicy": "allowlist", "allowFrom": ["+15557654321"]})
        self.assertIsInstance(self.ring(h, "+1 (555) 765-4321"), ev.Accepted)
        h2 = Harness(self, {"inboundPolicy": "allowlist", "allowFrom": ["+15557654321"]})
        self.assertIsInstance(self.ring(h2, "+45557654321"), ev.Refused)
        self.assertIsInstance(self.ring(h2, None), ev.Refused)

    def test_pairing_is_refused_with_a_clear_reason(self):
        h = Harness(self, {"inboundPolicy": "pairing"})
        outcome = self.ring(h)
        self.assertIn("pairing new callers is not built yet", outcome.reason)

    def test_accepted_calls_are_answered_and_greeted(self):
        h = Harness(self, {"inboundPolicy": "open", "inboundGreeting": "Acme, hello!"})
        outcome = self.ring(h)
        self.assertEqual(h.provider.requests[-1], ("answer", outcome.call_id))
        h.provider.instant_speech = True
        h.ok(h.provider.emit(ev.Answered(provider_call_id="IN-1")))
        record = h.stored(outcome.call_id)
        self.assertEqual((record.direction, record.mode), ("inbound", "conversation"))
        self.assertEqual(record.transcript[0].text, "Acme, hello!")
        self.assertEqual(record.state, CallState.LISTENING)

    def test_default_greeting_and_per_number_greeting(self):
        h = Harness(
            self,
            {
                "inboundPolicy": "open",
                "numbers": {"+15550001111": {"inboundGreeting": "Sales here."}},
            },
        )
        outcome = self.ring(h)
        self.assertEqual(h.stored(outcome.call_id).initial_message, "Sales here.")
        h2 = Harness(self, {"inboundPolicy": "open"})
        outcome = self.ring(h2)
        self.assertEqual(h2.stored(outcome.call_id).initial_message, DEFAULT_GREETING)

    def test_inbound_calls_share_the_concurrency_budget(self):
        h = Harness(self, {"inboundPolicy": "open", "maxConcurrentCalls": 1})
        h.ok(h.manager.initiate(TO, "hi", "notify"))
        outcome = self.ring(h)
        self.assertIn("Maximum concurrent calls", outcome.reason)


class RestoreTests(TestCase):
    """What a restart does with calls that were live."""

    def test_live_calls_come_back_with_their_remaining_time(self):
        h = Harness(self, {"maxDurationSeconds": 100})
        call_id = h.answered_call()
        h.clock.advance(40)
        h2 = h.restart()
        (record,) = h2.manager.live_calls()
        self.assertEqual(record.call_id, call_id)
        h2.clock.advance(59)
        self.assertEqual(len(h2.manager.live_calls()), 1)
        h2.clock.advance(2)
        self.assertEqual(h2.stored(call_id).state, CallState.TIMEOUT)

    def test_calls_the_provider_ended_or_forgot_are_ended_with_a_reason(self):
        h = Harness(self, {"maxConcurrentCalls": 5})
        ended = h.answered_call()
        forgotten = h.answered_call()
        unreachable = h.answered_call()
        provider = RecordingProvider()
        provider.statuses = {
            ended: CallStatus(Liveness.ENDED, CallState.HANGUP_USER),
            forgotten: CallStatus(Liveness.UNKNOWN_CALL),
            unreachable: provider_error("connection refused"),
        }
        h2 = h.restart(provider)
        self.assertEqual(h2.stored(ended).state, CallState.HANGUP_USER)
        self.assertEqual(h2.stored(ended).end_detail, "ended while voicecalld was down")
        self.assertEqual(h2.stored(forgotten).state, CallState.ERROR)
        self.assertIn("no longer knows", h2.stored(forgotten).end_detail)
        self.assertEqual([r.call_id for r in h2.manager.live_calls()], [unreachable])

    def test_calls_never_dialled_or_on_another_provider_are_closed(self):
        h = Harness(self, {"maxConcurrentCalls": 5})
        h.provider.dial_result = Deferred()
        Deferred.fromCoroutine(h.manager.initiate(TO, "hi", "notify"))
        (record,) = h.manager.live_calls()
        h2 = h.restart(RecordingProvider("twilio"))
        self.assertEqual(h2.stored(record.call_id).state, CallState.ERROR)
        self.assertIn("twilio", h2.stored(record.call_id).end_detail)
        h3 = Harness(self, {"maxConcurrentCalls": 5})
        h3.provider.dial_result = Deferred()
        Deferred.fromCoroutine(h3.manager.initiate(TO, "hi", "notify"))
        (record,) = h3.manager.live_calls()
        h4 = h3.restart()
        self.assertEqual(h4.stored(record.call_id).state, CallState.FAILED)

    def test_restored_speaking_call_is_active_again(self):
        h = Harness(self)
        call_id = h.answered_call(message=None)
        h.provider.instant_speech = False
        Deferred.fromCoroutine(h.manager.speak(call_id, "long message")).addErrback(lambda f: None)
        self.assertEqual(h.stored(call_id).state, CallState.SPEAKING)
        h2 = h.restart()
        self.assertEqual(h2.stored(call_id).state, CallState.ACTIVE)


@implementer(IResponder)
class ScriptedResponder:
    """Answers reply requests with Deferreds the test controls."""

    def __init__(self):
        self.asked = []

    def describe(self):
        return "the test"

    def generate_reply(self, record):
        d = Deferred()
        self.asked.append((record, d))
        return d

    def consult(self, record, question):
        d = Deferred()
        self.asked.append((record, d, question))
        return d


class ReplyTests(TestCase):
    """Conversation replies from the registered responder."""

    def test_each_answered_turn_is_measured(self):
        h = Harness(self)
        call_id = h.answered_call()
        h.provider.instant_speech = False
        responder = ScriptedResponder()
        h.manager.replies.register(responder)
        start = h.clock.seconds()
        h.ok(h.provider.emit(ev.SpeechStopped(call_id=call_id)))
        h.clock.advance(0.3)
        h.ok(h.provider.emit(ev.Speech(call_id=call_id, text="What's the weather?")))
        h.clock.advance(0.8)
        responder.asked[0][1].callback("Sunny all day.")
        h.provider.finish_speaking(
            call_id,
            requested_at=start + 1.1,
            first_audio_at=start + 1.35,
            first_frame_at=start + 1.351,
        )
        stages = h.stored(call_id).metadata["lastTurnLatency"]
        self.assertEqual(
            stages,
            {
                "stt": 300.0,
                "oursBeforeReply": 0.0,
                "reply": 800.0,
                "oursBeforeSpeech": 0.0,
                "ttsFirstByte": 250.0,
                "oursToFirstFrame": 1.0,
                "total": 1351.0,
                "ours": 1.0,
            },
        )
        (measured,) = [n for n in h.notices if n.kind == "turn.latency"]
        self.assertEqual((measured.turn, measured.stages), (1, stages))
        self.assertEqual(measured.to_json()["stages"]["total"], 1351.0)

    def test_caller_turn_gets_a_reply_spoken(self):
        h = Harness(self)
        call_id = h.answered_call()
        responder = ScriptedResponder()
        h.manager.replies.register(responder)
        h.ok(h.provider.emit(ev.Speech(call_id=call_id, text="what time is it?")))
        ((record, d),) = responder.asked
        self.assertEqual(record.transcript[-1].text, "what time is it?")
        d.callback("It is noon.")
        self.assertEqual(h.provider.requests[-1], ("speak", call_id, "It is noon."))
        self.assertEqual(h.stored(call_id).transcript[-1].text, "It is noon.")

    def test_a_reply_overtaken_by_the_caller_is_dropped(self):
        h = Harness(self)
        call_id = h.answered_call()
        responder = ScriptedResponder()
        h.manager.replies.register(responder)
        h.ok(h.provider.emit(ev.Speech(call_id=call_id, text="first")))
        h.ok(h.provider.emit(ev.Speech(call_id=call_id, text="second")))
        responder.asked[0][1].callback("stale answer")
        self.assertNotIn(("speak", call_id, "stale answer"), h.provider.requests)
        responder.asked[1][1].callback("fresh answer")
        self.assertIn(("speak", call_id, "fresh answer"), h.provider.requests)

    def test_failure_or_timeout_gives_an_apology(self):
        h = Harness(self, {"responseTimeoutMs": 2000})
        call_id = h.answered_call()
        responder = ScriptedResponder()
        h.manager.replies.register(responder)
        h.ok(h.provider.emit(ev.Speech(call_id=call_id, text="hello?")))
        h.clock.advance(2.1)
        self.assertEqual(h.provider.requests[-1], ("speak", call_id, APOLOGY))
        self.assertIn(
            "responseTimeoutMs", next(n for n in h.notices if n.kind == "call.problem").message
        )

    def test_the_dialled_numbers_response_timeout_is_the_one_enforced(self):
        h = Harness(
            self,
            {
                "inboundPolicy": "open",
                "responseTimeoutMs": 9000,
                "numbers": {"+15550001111": {"responseTimeoutMs": 1500}},
            },
        )
        responder = ScriptedResponder()
        h.manager.replies.register(responder)
        h.provider.instant_speech = True
        outcome = h.ok(
            h.provider.emit(
                ev.InboundCall(
                    provider_call_id="IN-1", from_number="+15557654321", to_number="+15550001111"
                )
            )
        )
        h.ok(h.provider.emit(ev.Answered(provider_call_id="IN-1")))
        h.ok(h.provider.emit(ev.Speech(call_id=outcome.call_id, text="are you there?")))
        h.clock.advance(1.6)
        self.assertEqual(h.provider.requests[-1], ("speak", outcome.call_id, APOLOGY))
        problem = next(n for n in h.notices if n.kind == "call.problem").message
        self.assertIn("1500 ms", problem)

    def test_no_responder_means_no_reply(self):
        h = Harness(self)
        call_id = h.answered_call()
        h.ok(h.provider.emit(ev.Speech(call_id=call_id, text="anyone?")))
        self.assertEqual(h.provider.kinds().count("speak"), 1)

    def test_unregistering_stops_replies(self):
        h = Harness(self)
        call_id = h.answered_call()
        responder = ScriptedResponder()
        unregister = h.manager.replies.register(responder)
        unregister()
        h.ok(h.provider.emit(ev.Speech(call_id=call_id, text="anyone?")))
        self.assertEqual(responder.asked, [])


class BargeInTests(TestCase):
    """The caller speaking over the bot: real turns interrupt, backchannels do not."""

    def speaking(self, h, text="Here is a rather long answer to your question"):
        record = h.ok(h.manager.initiate(TO, "Welcome to the long greeting", "conversation"))
        h.ok(h.provider.emit(ev.Answered(call_id=record.call_id)))
        h.ok(h.provider.emit(ev.SpeechStarted(call_id=record.call_id)))
        h.clock.advance(2)
        self.assertNotIn("interrupt", h.provider.kinds(), "the greeting was interrupted")
        h.provider.finish_speaking(record.call_id)
        d = Deferred.fromCoroutine(h.manager.speak(record.call_id, text))
        return record.call_id, d

    def test_speech_that_lasts_interrupts(self):
        h = Harness(self, {"streaming": {"bargeInMinSpeechMs": 400}})
        call_id, d = self.speaking(h)
        h.ok(h.provider.emit(ev.SpeechStarted(call_id=call_id)))
        h.clock.advance(0.39)
        self.assertNotIn("interrupt", h.provider.kinds())
        h.clock.advance(0.02)
        self.assertIn("interrupt", h.provider.kinds())
        playback = self.successResultOf(d)
        self.assertFalse(playback.complete)
        entry = h.stored(call_id).transcript[-1]
        self.assertEqual((entry.text, entry.interrupted), ("Here", True))

    def test_the_transcript_reads_in_the_order_things_were_said(self):
        h = Harness(self, {"streaming": {"bargeInMinSpeechMs": 400}})
        call_id, d = self.speaking(h)
        started = h.clock.seconds()
        h.clock.advance(1.5)
        h.ok(h.provider.emit(ev.Speech(call_id=call_id, text="Sorry, which day was that?")))
        self.assertFalse(self.successResultOf(d).complete)
        stored = h.stored(call_id)
        live = h.manager.live_calls()[0]
        for record in (stored, live):
            bot, user = record.transcript[-2:]
            self.assertEqual((bot.speaker, bot.text, bot.at), ("bot", "Here", started))
            self.assertEqual((user.speaker, user.at), ("user", started + 1.5))
        said = [n for n in h.notices if n.kind == "call.transcript"][-2:]
        self.assertEqual(
            sorted((n.at, n.speaker) for n in said), [(started, "bot"), (started + 1.5, "user")]
        )

    def test_a_short_burst_is_a_backchannel(self):
        h = Harness(self)
        call_id, d = self.speaking(h)
        responder = ScriptedResponder()
        h.manager.replies.register(responder)
        h.ok(h.provider.emit(ev.SpeechStarted(call_id=call_id)))
        h.clock.advance(0.2)
        h.ok(h.provider.emit(ev.SpeechStopped(call_id=call_id)))
        h.ok(h.provider.emit(ev.Speech(call_id=call_id, text="Mm-hm.")))
        h.clock.advance(1)
        self.assertNotIn("interrupt", h.provider.kinds())
        self.assertEqual(responder.asked, [])
        self.assertEqual(h.stored(call_id).transcript[-1].text, "Mm-hm.")
        self.assertNoResult(d)

    def test_enough_words_interrupt_at_once(self):
        h = Harness(self, {"streaming": {"bargeInMinSpeechMs": 5000, "bargeInMinWords": 2}})
        call_id, d = self.speaking(h)
        h.ok(h.provider.emit(ev.SpeechStarted(call_id=call_id)))
        h.ok(h.provider.emit(ev.Speech(call_id=call_id, text="okay", final=False)))
        self.assertNotIn("interrupt", h.provider.kinds())
        h.ok(h.provider.emit(ev.Speech(call_id=call_id, text="wait, stop", final=False)))
        self.assertIn("interrupt", h.provider.kinds())
        self.assertFalse(self.successResultOf(d).complete)

    def test_a_real_turn_interrupts_and_gets_a_reply(self):
        h = Harness(self)
        call_id, _ = self.speaking(h)
        responder = ScriptedResponder()
        h.manager.replies.register(responder)
        h.ok(h.provider.emit(ev.Speech(call_id=call_id, text="No, I meant tomorrow")))
        self.assertIn("interrupt", h.provider.kinds())
        self.assertEqual(len(responder.asked), 1)
