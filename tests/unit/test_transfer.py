"""Transfer to a person, in the call core: refusals, the spoken line, the carrier's confirmation."""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from tests.fakes.provider import provider_error
from tests.unit.harness import Harness
from voicecalld.calls.lifecycle import TRANSFER_CONFIRM_SECONDS
from voicecalld.errors import CallEnded, InvalidArgument, NotAllowed, ProviderError, UnknownCall
from voicecalld.values import events as ev
from voicecalld.values.states import TERMINAL, CallState

TO = "+15551234567"
PERSON = "+15558675309"


def transfer(h: Harness, call_id: str | None, to: str | None = PERSON, message=None):
    return Deferred.fromCoroutine(h.manager.transfer(call_id, to, message))


class RefusalTests(TestCase):
    """What cannot be transferred is refused with a stable code and changes nothing."""

    def test_only_a_connected_call(self):
        h = Harness(self)
        record = h.ok(h.manager.initiate(TO, "hi", "conversation"))
        error = h.error(transfer(h, record.call_id), NotAllowed)
        self.assertIn("only a connected call can be transferred (state initiated)", str(error))
        h.error(transfer(h, "nope"), UnknownCall)
        h.error(transfer(h, None), InvalidArgument)
        h.ok(h.manager.end(record.call_id))
        self.assertEqual(
            str(h.error(transfer(h, record.call_id), CallEnded)), "Call has ended (hangup-bot)"
        )
        self.assertNotIn("transfer", h.provider.kinds())

    def test_bad_destinations(self):
        h = Harness(self, {"outbound": {"allowedPrefixes": ["+1555"]}})
        call_id = h.answered_call()
        for to in (None, "  ", "5558675309", "+1 555 867 5309"):
            h.error(transfer(h, call_id, to), InvalidArgument)
        refused = h.error(transfer(h, call_id, "+447700900123"), NotAllowed)
        self.assertIn("allowedPrefixes", str(refused))
        h.error(transfer(h, call_id, PERSON, "x" * 4001), InvalidArgument)
        self.assertNotIn("transfer", h.provider.kinds())
        self.assertEqual(h.kinds().count("call.refused"), 1)
        self.assertEqual(h.stored(call_id).state, CallState.LISTENING, "still ours")

    def test_a_carrier_refusal_leaves_the_call_ours(self):
        h = Harness(self, {"maxDurationSeconds": 600})
        call_id = h.answered_call()
        h.provider.fail_transfer = provider_error()
        h.error(transfer(h, call_id), ProviderError)
        (live,) = h.manager.live_calls()
        self.assertNotIn("transferredTo", live.metadata)
        h.ok(h.manager.speak(call_id, "Still here."))
        h.clock.advance(601)
        self.assertEqual(h.stored(call_id).state, CallState.TIMEOUT, "timers run again")


class HandOverTests(TestCase):
    """A transfer the carrier took, until the call ends as transferred."""

    def test_the_line_is_said_then_the_carrier_asked(self):
        h = Harness(self)
        call_id = h.answered_call()
        record = h.ok(transfer(h, call_id, PERSON, " One moment, please. "))
        kinds = [r for r in h.provider.requests if r[0] in ("speak", "transfer")]
        self.assertEqual(
            kinds[-2:],
            [("speak", call_id, "One moment, please."), ("transfer", call_id, PERSON)],
        )
        self.assertEqual(record.metadata["transferredTo"], PERSON)
        self.assertEqual(h.stored(call_id).metadata["transferredTo"], PERSON)
        self.assertFalse(record.ended, "ours until the carrier confirms")
        h.ok(h.provider.emit(ev.Transferred(call_id=call_id, detail="answered")))
        final = h.stored(call_id)
        self.assertEqual(
            (final.state, final.end_reason, final.end_detail),
            (CallState.TRANSFERRED, "transferred", PERSON),
        )
        self.assertEqual(h.manager.live_calls(), [])
        self.assertEqual(h.kinds()[-1], "call.ended")

    def test_our_legs_end_before_a_confirmation_ends_it_too(self):
        h = Harness(self)
        call_id = h.answered_call()
        h.ok(transfer(h, call_id))
        h.ok(
            h.provider.emit(
                ev.Ended(call_id=call_id, reason=CallState.COMPLETED, detail="Twilio: completed")
            )
        )
        final = h.stored(call_id)
        self.assertEqual(final.state, CallState.TRANSFERRED)
        self.assertEqual(
            final.end_detail, f"{PERSON} (ended before the carrier confirmed: Twilio: completed)"
        )

    def test_while_handed_over_the_call_is_not_ours_to_drive(self):
        h = Harness(self, {"maxDurationSeconds": 60})
        call_id = h.answered_call()
        h.ok(transfer(h, call_id))
        for work in (
            h.manager.speak(call_id, "hi"),
            h.manager.continue_call(call_id, "hi"),
            h.manager.send_dtmf(call_id, "1"),
            transfer(h, call_id, "+15550001234"),
        ):
            self.assertIn("transferred to", str(h.error(work, NotAllowed)))
        before = len(h.stored(call_id).transcript)
        h.ok(h.provider.emit(ev.Speech(call_id=call_id, text="Hello? Is this the agent?")))
        self.assertEqual(len(h.stored(call_id).transcript), before, "said to the person")
        h.clock.advance(61)
        self.assertNotIn("hangup", h.provider.kinds(), "max duration no longer applies")

    def test_ending_it_meanwhile_hangs_up(self):
        h = Harness(self)
        call_id = h.answered_call()
        h.ok(transfer(h, call_id))
        self.assertEqual(h.ok(h.manager.end(call_id)).state, CallState.HANGUP_BOT)
        self.assertIn("hangup", h.provider.kinds())

    def test_an_unconfirmed_transfer_counts_as_handed_over(self):
        h = Harness(self)
        call_id = h.answered_call()
        h.ok(transfer(h, call_id))
        h.clock.advance(TRANSFER_CONFIRM_SECONDS - 1)
        self.assertEqual(len(h.manager.live_calls()), 1)
        h.clock.advance(1)
        final = h.stored(call_id)
        self.assertEqual(final.state, CallState.TRANSFERRED)
        self.assertIn("not confirmed within 120 s", final.end_detail)
        self.assertNotIn("hangup", h.provider.kinds(), "the caller is not cut off")

    def test_a_pending_continue_fails_when_the_call_is_handed_over(self):
        h = Harness(self)
        call_id = h.answered_call()
        asking = Deferred.fromCoroutine(h.manager.continue_call(call_id, "Anything else?"))
        h.ok(transfer(h, call_id))
        self.assertEqual(
            str(self.failureResultOf(asking, CallEnded).value), "Call ended: transferred"
        )

    def test_transferred_is_a_terminal_state(self):
        self.assertIn(CallState.TRANSFERRED, TERMINAL)
        self.assertEqual(CallState("transferred"), CallState.TRANSFERRED)


class RestartTests(TestCase):
    """A call handed over before a restart is not taken back."""

    def test_a_handed_over_call_ends_transferred_on_restart(self):
        h = Harness(self)
        call_id = h.answered_call()
        h.ok(transfer(h, call_id))
        h2 = h.restart()
        self.assertEqual(h2.manager.live_calls(), [])
        final = h2.stored(call_id)
        self.assertEqual(final.state, CallState.TRANSFERRED)
        self.assertEqual(final.end_detail, f"{PERSON} (handed over before a restart)")
        self.assertNotIn("hangup", h2.provider.kinds())
