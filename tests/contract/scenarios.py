"""
The provider contract: scenarios written once against an L{Adapter}, each
asserting what the caller, the carrier or the client sees.  A carrier's
test case mixes L{Contract} in and names its adapter.
"""

from __future__ import annotations

import base64
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks

from tests.contract.adapters import Adapter
from tests.fakes.realtime_voice import ScriptedVoice
from tests.waiting import wait_for
from voicecalld.calls.policy import digits
from voicecalld.errors import CallEnded, InvalidArgument, NotAllowed, ProviderError
from voicecalld.realtime.interface import END_CALL_TOOL
from voicecalld.values.record import BOT, USER
from voicecalld.values.states import CallState

CALLER = "+15557654321"
STRANGER = "+15550000999"
GREETING = "Hi there, this is the assistant calling."
AMD = {"outbound": {"machineDetection": True, "notifyHangupDelaySec": 0}}
#: The person calls are transferred to.
PERSON = "+15558675309"


def keys(a: Adapter) -> list[tuple[str, str]]:
    """Who pressed which keys in the one live call, from its transcript."""
    (live,) = a.manager.live_calls()
    return [(e.speaker, e.text) for e in live.transcript if e.kind == "dtmf"]


class Contract:
    """The scenarios; C{adapter} is the carrier's L{Adapter} class."""

    adapter: type[Adapter]
    timeout = 30

    def rig(self, config: dict[str, Any] | None = None, streaming: bool = False) -> Deferred:
        """The carrier's rig, started; fires with its adapter."""
        return self.adapter(self).start(config or {}, streaming)

    @inlineCallbacks
    def answered(self, streaming: bool, message: str = GREETING, config: Any = None):
        """A conversation call placed and answered (with its stream, if streamed)."""
        a = yield self.rig(config, streaming)
        record = yield a.place(message, "conversation")
        call = yield a.fake.when_call(0)
        yield call.answer()
        stream = (yield call.when_stream()) if streaming else None
        return a, record, call, stream

    # Answering-machine detection.

    @inlineCallbacks
    def test_detection_off_asks_the_carrier_for_none(self):
        a = yield self.rig()
        yield a.place("Hello")
        call = yield a.fake.when_call(0)
        self.assertEqual(a.detection_asked(call), {})

    @inlineCallbacks
    def test_notify_at_a_machine_leaves_the_message_after_the_beep(self):
        a = yield self.rig(AMD)
        record = yield a.place("Your parcel has arrived.")
        call = yield a.fake.when_call(0)
        self.assertNotEqual(a.detection_asked(call), {})
        yield a.answer_as(call, "machine")
        if a.reports_beep:
            self.assertEqual(a.heard(call), [], "nothing before the beep")
            yield a.beep(call)
        yield call.when_ended()
        self.assertEqual(a.heard(call), ["Your parcel has arrived."])
        yield wait_for(lambda: not a.manager.live_calls())
        final = yield a.record(record.call_id)
        self.assertEqual(final.state, CallState.VOICEMAIL)
        self.assertEqual(final.metadata["answeredBy"], "machine")
        self.assertTrue(final.metadata["answeredByRaw"])
        self.assertEqual(a.fake.errors, [])

    @inlineCallbacks
    def test_a_streamed_call_at_a_machine_speaks_after_the_beep(self):
        a = yield self.rig(AMD, streaming=True)
        record = yield a.place("Your parcel has arrived.")
        call = yield a.fake.when_call(0)
        yield a.answer_as(call, "machine")
        yield call.when_stream()
        if a.reports_beep:
            self.assertEqual(a.rig.tts.texts, [], "nothing before the beep")
            yield a.beep(call)
        yield wait_for(lambda: not a.manager.live_calls(), what="the call to end")
        self.assertEqual(a.rig.tts.texts, ["Your parcel has arrived."])
        final = yield a.record(record.call_id)
        self.assertEqual(final.state, CallState.VOICEMAIL)
        self.assertEqual([e.text for e in final.transcript], ["Your parcel has arrived."])

    @inlineCallbacks
    def test_a_repeated_detection_callback_leaves_no_second_message(self):
        a = yield self.rig({"outbound": {"machineDetection": True, "notifyHangupDelaySec": 600}})
        record = yield a.place("Your parcel has arrived.")
        call = yield a.fake.when_call(0)
        yield a.answer_as(call, "machine")
        yield a.beep(call)
        yield wait_for(lambda: len(a.heard(call)) == 1, what="the message")
        replay = yield a.resend_detection(call)
        self.assertEqual(replay.code // 100, 2)
        if a.reports_beep:
            yield a.beep(call)  # a fresh report of the same beep
        yield Deferred.fromCoroutine(a.manager.end(record.call_id))
        yield call.when_ended()
        self.assertEqual(a.heard(call), ["Your parcel has arrived."])
        self.assertEqual(a.fake.errors, [])

    @inlineCallbacks
    def test_a_person_gets_the_message_as_without_detection(self):
        a = yield self.rig(AMD)
        record = yield a.place("Your parcel has arrived.")
        call = yield a.fake.when_call(0)
        yield a.answer_as(call, "human")
        yield call.when_ended()
        self.assertEqual(a.heard(call), ["Your parcel has arrived."])
        yield wait_for(lambda: not a.manager.live_calls())
        final = yield a.record(record.call_id)
        self.assertEqual(final.state, CallState.HANGUP_BOT)
        self.assertEqual(final.metadata["answeredBy"], "human")

    @inlineCallbacks
    def test_a_conversation_at_a_machine_ends_as_voicemail(self):
        config = {"outbound": {"machineDetection": True, "voicemailAction": "hangup"}}
        a = yield self.rig(config)
        record = yield a.place(GREETING, "conversation")
        call = yield a.fake.when_call(0)
        yield a.answer_as(call, "machine")
        yield a.machine_reported(call)
        yield call.when_ended()
        self.assertEqual(a.heard(call), [])
        yield wait_for(lambda: not a.manager.live_calls())
        final = yield a.record(record.call_id)
        self.assertEqual(final.state, CallState.VOICEMAIL)
        self.assertEqual(final.metadata["answeredBy"], "machine")

    @inlineCallbacks
    def test_a_conversation_at_a_machine_can_leave_its_message(self):
        config = {"outbound": {"machineDetection": True, "notifyHangupDelaySec": 0}}
        a = yield self.rig(config)
        record = yield a.place(GREETING, "conversation")
        call = yield a.fake.when_call(0)
        yield a.answer_as(call, "machine")
        yield a.beep(call)
        yield call.when_ended()
        self.assertEqual(a.heard(call), [GREETING])
        yield wait_for(lambda: not a.manager.live_calls())
        final = yield a.record(record.call_id)
        self.assertEqual(final.state, CallState.VOICEMAIL)

    # Outbound.

    @inlineCallbacks
    def test_outbound_notify(self):
        a = yield self.rig({"outbound": {"notifyHangupDelaySec": 0}})
        record = yield a.place("Your parcel has arrived.")
        call = yield a.fake.when_call(0)
        self.assertEqual(digits(call.to), digits(record.to_number))
        yield call.ring()
        self.assertEqual((yield a.record(record.call_id)).state, CallState.RINGING)
        yield call.answer()
        yield call.when_ended()
        self.assertEqual(a.heard(call), ["Your parcel has arrived."])
        yield wait_for(lambda: not a.manager.live_calls())
        final = yield a.record(record.call_id)
        self.assertEqual(final.state, CallState.HANGUP_BOT)
        self.assertEqual([e.text for e in final.transcript], ["Your parcel has arrived."])
        self.assertFalse(a.carrier_live(call))
        self.assertEqual(a.fake.errors, [])

    @inlineCallbacks
    def test_outbound_conversation_streamed(self):
        a, record, call, stream = yield self.answered(True)
        self.assertEqual(a.stream_keys(stream)["callId"], record.call_id)
        yield stream.when_mark_echoed("u1:end")
        self.assertEqual(a.heard(call), [], "the greeting went over the stream")
        spoken = stream.outbound_audio.replace(b"\xff", b"")
        self.assertEqual(len(spoken), len(GREETING) * 400)
        yield wait_for(lambda: a.manager.live_calls()[0].state == CallState.LISTENING)
        (session,) = a.rig.stt.sessions
        yield stream.send_audio(b"\x55" * 1600)
        yield wait_for(lambda: len(session.audio) >= 1600)
        asking = Deferred.fromCoroutine(a.manager.continue_call(record.call_id, "Name?"))
        yield stream.when_mark_echoed("u2:end")

        def said():
            return [(e.speaker, e.text) for e in a.manager.live_calls()[0].transcript]

        # The caller answers once the daemon has heard the question end.
        yield wait_for(lambda: (BOT, "Name?") in said(), what="the question in the transcript")
        session.listener.speech_started()
        session.listener.final("It's Ann")
        self.assertEqual((yield asking), "It's Ann")
        self.assertEqual(said(), [(BOT, GREETING), (BOT, "Name?"), (USER, "It's Ann")])
        self.assertEqual(a.rig.tts.texts, [GREETING, "Name?"])
        self.assertEqual(a.rig.tts.texts, [GREETING, "Name?"])
        self.assertEqual(stream.errors, [])

    @inlineCallbacks
    def test_outbound_conversation_not_streamed(self):
        a, record, call, _ = yield self.answered(False, "Hi! What can I do for you?")
        yield a.listening(call)
        asking = Deferred.fromCoroutine(a.manager.continue_call(record.call_id, "Where to?"))
        yield wait_for(lambda: len(a.heard(call)) == 2)
        yield a.listening(call)
        self.assertEqual(a.heard(call), ["Hi! What can I do for you?", "Where to?"])
        yield a.caller_says(call, "To the station please")
        self.assertEqual((yield asking), "To the station please")
        said = [(e.speaker, e.text) for e in a.manager.live_calls()[0].transcript]
        self.assertEqual(
            said,
            [
                (BOT, "Hi! What can I do for you?"),
                (BOT, "Where to?"),
                (USER, "To the station please"),
            ],
        )
        yield Deferred.fromCoroutine(a.manager.end(record.call_id))
        yield call.when_ended()
        yield wait_for(lambda: not a.manager.live_calls())
        self.assertEqual((yield a.record(record.call_id)).state, CallState.HANGUP_BOT)
        self.assertEqual(a.fake.errors, [])

    # Inbound.

    def inbound_rig(self, allowed: str = CALLER) -> Deferred:
        config = {
            "inboundPolicy": "allowlist",
            "allowFrom": [allowed],
            "inboundGreeting": "Welcome to Acme.",
        }
        return self.rig(config)

    @inlineCallbacks
    def check_allowed(self, a: Adapter, caller: str = CALLER):
        call = yield a.inbound(caller)
        yield a.listening(call)
        self.assertEqual(a.heard(call), ["Welcome to Acme."])
        (live,) = a.manager.live_calls()
        self.assertEqual(live.direction, "inbound")
        self.assertEqual(digits(live.from_number), digits(CALLER))
        yield call.caller_hangup()
        yield wait_for(lambda: not a.manager.live_calls())
        self.assertEqual((yield a.record(live.call_id)).state, a.caller_hangup_state)

    @inlineCallbacks
    def test_inbound_allowed(self):
        a = yield self.inbound_rig()
        yield self.check_allowed(a)

    @inlineCallbacks
    def test_inbound_refused(self):
        a = yield self.inbound_rig()
        call = yield a.inbound(STRANGER)
        yield wait_for(lambda: not a.carrier_live(call))
        self.assertTrue(a.refused(call))
        self.assertEqual(a.heard(call), [])
        self.assertEqual(a.manager.live_calls(), [])
        refusal = [n for n in a.notices if n.kind == "call.refused"]
        self.assertEqual([n.from_number for n in refusal], [STRANGER])

    @inlineCallbacks
    def test_inbound_allowlisted_number_written_another_way(self):
        a = yield self.inbound_rig()
        yield self.check_allowed(a, "+1 (555) 765-4321")

    # Ends.

    @inlineCallbacks
    def test_caller_hang_up(self):
        a, record, call, _ = yield self.answered(False)
        yield a.listening(call)
        yield call.caller_hangup()
        yield wait_for(lambda: not a.manager.live_calls())
        final = yield a.record(record.call_id)
        self.assertEqual(final.state, a.caller_hangup_state)
        self.assertIsNotNone(final.ended_at)
        self.assertFalse(a.carrier_live(call))

    @inlineCallbacks
    def test_bot_hang_up_before_answer(self):
        a = yield self.rig()
        record = yield a.place(None, "conversation")
        call = yield a.fake.when_call(0)
        yield call.ring()
        yield Deferred.fromCoroutine(a.manager.end(record.call_id))
        yield call.when_ended()
        self.assertFalse(a.carrier_live(call))
        yield wait_for(lambda: not a.manager.live_calls())
        self.assertEqual((yield a.record(record.call_id)).state, CallState.HANGUP_BOT)

    @inlineCallbacks
    def test_bot_hang_up_after_answer(self):
        a, record, call, _ = yield self.answered(False)
        yield a.listening(call)
        yield Deferred.fromCoroutine(a.manager.end(record.call_id))
        yield call.when_ended()
        self.assertFalse(a.carrier_live(call))
        yield wait_for(lambda: not a.manager.live_calls())
        final = yield a.record(record.call_id)
        self.assertEqual(final.state, CallState.HANGUP_BOT)
        self.assertIsNotNone(final.answered_at)

    @inlineCallbacks
    def test_ring_timeout(self):
        a = yield self.rig({"ringTimeoutMs": 5000})
        record = yield a.place()
        call = yield a.fake.when_call(0)
        yield call.ring()
        yield call.no_answer()
        yield wait_for(lambda: not a.manager.live_calls())
        final = yield a.record(record.call_id)
        self.assertEqual(final.state, CallState.NO_ANSWER)
        self.assertEqual(a.heard(call), [])

    # Carrier errors and hostile webhooks.

    @inlineCallbacks
    def check_dial_error(self, status: int):
        a = yield self.rig()
        a.fail_next_dial(status)
        error = yield self.assertFailure(a.place(), ProviderError)
        self.assertEqual(error.retryable, status >= 500)
        (record,) = yield Deferred.fromCoroutine(a.manager.recent(5))
        self.assertEqual(record.state, CallState.FAILED)
        self.assertEqual(a.manager.live_calls(), [])
        self.assertEqual([c for c in a.fake.calls if a.carrier_live(c)], [])

    def test_dial_rest_error_4xx(self):
        return self.check_dial_error(400)

    def test_dial_rest_error_5xx(self):
        return self.check_dial_error(503)

    @inlineCallbacks
    def test_bad_signature(self):
        a = yield self.rig()
        record = yield a.place()
        call = yield a.fake.when_call(0)
        before = list(a.notices)
        a.fake.signature_mode = "wrong"
        yield call.ring()
        self.assertEqual(a.hooks(call)[-1].code, 403)
        a.fake.signature_mode = "missing"
        hook = yield a.resend(call)
        self.assertEqual(hook.code, 403)
        self.assertEqual((yield a.record(record.call_id)).state, CallState.INITIATED)
        self.assertEqual(a.notices, before)
        self.flushLoggedErrors()

    @inlineCallbacks
    def test_replayed_webhook(self):
        a = yield self.rig()
        record = yield a.place()
        call = yield a.fake.when_call(0)
        yield call.ring()
        before = list(a.notices)
        stored = yield a.record(record.call_id)
        hook = yield a.resend(call)
        self.assertGreaterEqual(hook.code, 200)
        self.assertLess(hook.code, 300)
        self.assertEqual(a.notices, before)
        self.assertEqual((yield a.record(record.call_id)), stored)

    # Media streams.

    @inlineCallbacks
    def test_stream_reconnect(self):
        a, record, call, stream = yield self.answered(True, "Hello.")
        yield stream.when_mark_echoed("u1:end")
        stream.drop()
        yield stream.when_closed()
        second = yield call.when_stream(1)
        self.assertNotEqual(a.stream_keys(second)["token"], a.stream_keys(stream)["token"])
        speaking = Deferred.fromCoroutine(a.manager.speak(record.call_id, "Still here."))
        yield second.when_mark_echoed("u1:end")
        self.assertTrue((yield speaking).complete)
        self.assertEqual([c.call_id for c in a.manager.live_calls()], [record.call_id])
        self.assertTrue(a.carrier_live(call))

    @inlineCallbacks
    def test_barge_in(self):
        a, record, _call, stream = yield self.answered(True, "Hi.")
        yield stream.when_mark_echoed("u1:end")
        answer = "one two three four five six seven eight nine ten eleven twelve"
        speaking = Deferred.fromCoroutine(a.manager.speak(record.call_id, answer))
        yield stream.when_audio(8000)
        (session,) = a.rig.stt.sessions
        session.listener.speech_started()
        self.assertFalse((yield speaking).complete)
        yield stream.when_clear()
        entry = a.manager.live_calls()[0].transcript[-1]
        self.assertEqual(entry.speaker, BOT)
        self.assertTrue(entry.interrupted)
        self.assertTrue(answer.startswith(entry.text))
        self.assertLess(len(entry.text), len(answer))

    # Touch tones.

    @inlineCallbacks
    def test_dtmf_in_streamed(self):
        a, _record, call, stream = yield self.answered(True, "Hi.")
        yield stream.when_mark_echoed("u1:end")
        yield a.caller_presses(call, "7")
        yield wait_for(lambda: keys(a) == [(USER, "7")], what=f"the key in {keys(a)}")

    @inlineCallbacks
    def test_dtmf_in_not_streamed(self):
        a, _record, call, _ = yield self.answered(False, "Hi.")
        yield a.listening(call)
        yield a.caller_presses(call, "4")
        yield wait_for(lambda: keys(a) == [(USER, "4")], what=f"the key in {keys(a)}")

    @inlineCallbacks
    def test_dtmf_out_streamed(self):
        a, record, call, stream = yield self.answered(True, "Hi.")
        yield stream.when_mark_echoed("u1:end")
        before = len(stream.outbound_audio)
        yield Deferred.fromCoroutine(a.manager.send_dtmf(record.call_id, "12w3"))
        self.assertGreater(len(stream.outbound_audio) - before, 8000 * 0.9)
        self.assertEqual(a.dtmf_sent(call), [], "in-band on the stream, not through the carrier")
        self.assertIsNone(stream.closed_by)
        entry = a.manager.live_calls()[0].transcript[-1]
        self.assertEqual((entry.speaker, entry.kind, entry.text), (BOT, "dtmf", "12w3"))

    @inlineCallbacks
    def test_dtmf_out_not_streamed(self):
        a, record, call, _ = yield self.answered(False, "Hi.")
        yield a.listening(call)
        yield Deferred.fromCoroutine(a.manager.send_dtmf(record.call_id, "12w3"))
        yield wait_for(lambda: a.dtmf_sent(call) == ["12w3"])

    # Restart.

    @inlineCallbacks
    def test_restart_reconciles_with_the_carrier(self):
        a = yield self.rig({"maxConcurrentCalls": 2})
        alive = yield a.place("Hi!", "conversation")
        gone = yield a.place("Bye!", "conversation")
        kept, ended = a.fake.calls
        for call in (kept, ended):
            yield call.answer()
            yield a.listening(call)
        # voicecalld goes away; meanwhile the caller of one call hangs up unseen.
        a.manager.stop()
        a.fake.signature_mode = "missing"
        yield ended.caller_hangup()
        a.fake.signature_mode = "valid"
        self.assertFalse(a.carrier_live(ended))
        asked = [a.lookups(kept), a.lookups(ended)]
        yield a.restart()
        self.assertGreater(a.lookups(kept), asked[0], "the kept call was looked up")
        self.assertGreater(a.lookups(ended), asked[1], "the ended call was looked up")
        self.assertEqual([c.call_id for c in a.manager.live_calls()], [alive.call_id])
        closed = yield a.record(gone.call_id)
        self.assertTrue(closed.state.terminal)
        self.assertTrue(closed.end_reason)
        # The kept call is still ours: its caller's hang-up is applied.
        yield kept.caller_hangup()
        yield wait_for(lambda: not a.manager.live_calls())
        self.assertEqual((yield a.record(alive.call_id)).state, a.caller_hangup_state)
        self.flushLoggedErrors()

    # Realtime: the call is one speech-to-speech session on the carrier's stream.

    @inlineCallbacks
    def test_realtime_call(self):
        voice = ScriptedVoice()
        a = yield self.adapter(self).start({}, False, realtime=voice)
        record = yield a.place(GREETING, "conversation")
        call = yield a.fake.when_call(0)
        yield call.answer()
        stream = yield call.when_stream()
        yield wait_for(lambda: voice.sessions and voice.sessions[0].spoken, what="greeting asked")
        (session,) = voice.sessions
        self.assertEqual(session.spoken, [GREETING])
        session.answer(GREETING, 0.3)
        yield stream.when_mark_echoed("r1:end")
        self.assertEqual(
            a.heard(call), [], "the greeting went over the stream, in the model's voice"
        )
        self.assertEqual(stream.outbound_audio.count(b"\x10"), 2400)
        # The caller speaks; the model hears and answers.
        stream.send_audio(b"\x55" * 800)
        yield wait_for(lambda: len(session.audio) >= 800, what="caller audio at the model")
        session.listener.speech_started()
        session.listener.speech_stopped()
        session.listener.user_transcript("Book a table for two.")
        session.answer("Booked for two.", 0.2)
        yield stream.when_mark_echoed("r2:end")
        yield wait_for(
            lambda: a.manager.live_calls()[0].transcript[-1].text == "Booked for two.",
            what="the model's line in the transcript",
        )
        said = [(e.speaker, e.text) for e in a.manager.live_calls()[0].transcript]
        self.assertEqual(said[-2:], [(USER, "Book a table for two."), (BOT, "Booked for two.")])
        # The caller cuts the model off.
        before = len(stream.outbound_audio)
        session.answer("one two three four five six seven eight", 2.0, done=False)
        yield stream.when_audio(before + 8000)
        session.listener.speech_started()
        yield stream.when_clear()
        (heard_ms,) = session.truncated
        self.assertGreater(heard_ms, 100)
        self.assertLess(heard_ms, 2000)
        session.finish("one two three four five six seven eight")
        # The model says goodbye and hangs up.
        session.answer("Goodbye.", 0.3, done=False)
        session.listener.tool_call("fc-1", END_CALL_TOOL, {})
        session.finish("Goodbye.")
        yield call.when_ended()
        yield wait_for(lambda: not a.manager.live_calls(), what="the call's end")
        final = yield a.record(record.call_id)
        self.assertEqual(final.state, CallState.HANGUP_BOT)
        self.assertEqual(final.transcript[-1].text, "Goodbye.")
        self.assertTrue(any(e.interrupted for e in final.transcript), final.transcript)
        self.assertFalse(a.carrier_live(call))
        self.assertEqual(a.fake.errors, [])

    @inlineCallbacks
    def test_realtime_inbound_and_the_vendor_ending_the_session(self):
        voice = ScriptedVoice()
        config = {
            "inboundPolicy": "allowlist",
            "allowFrom": [CALLER],
            "inboundGreeting": "Welcome to Acme.",
        }
        a = yield self.adapter(self).start(config, False, realtime=voice)
        call = yield a.inbound(CALLER)
        stream = yield call.when_stream()
        yield wait_for(lambda: voice.sessions and voice.sessions[0].spoken, what="greeting asked")
        (session,) = voice.sessions
        self.assertEqual(session.spoken, ["Welcome to Acme."])
        session.answer("Welcome to Acme.", 0.2)
        yield stream.when_mark_echoed("r1:end")
        self.assertEqual(a.heard(call), [])
        (live,) = a.manager.live_calls()
        yield wait_for(lambda: a.manager.live_calls()[0].transcript, what="the greeting stored")
        self.assertEqual(a.manager.live_calls()[0].transcript[0].text, "Welcome to Acme.")
        session.vendor_close("the model's session expired")
        yield call.when_ended()
        yield wait_for(lambda: not a.manager.live_calls(), what="the call's end")
        final = yield a.record(live.call_id)
        self.assertEqual(final.state, CallState.ERROR)
        self.assertIn("the model's session expired", final.end_detail)
        self.assertFalse(a.carrier_live(call))

    # Transfer to a person.

    def transfer(self, a: Adapter, call_id: str, to: str, message: str | None = None):
        return Deferred.fromCoroutine(a.manager.transfer(call_id, to, message))

    @inlineCallbacks
    def check_transfer(self, streaming: bool):
        a, record, call, stream = yield self.answered(streaming, "Hi.")
        if streaming:
            yield stream.when_mark_echoed("u1:end")
        else:
            yield a.listening(call)
        line = "Putting you through to a colleague."
        answer = yield self.transfer(a, record.call_id, PERSON, line)
        self.assertEqual(answer.metadata["transferredTo"], PERSON)
        said = [(e.speaker, e.text) for e in answer.transcript]
        self.assertEqual(said[-1], (BOT, line), "the line was said before the transfer")
        if streaming:
            self.assertEqual(a.rig.tts.texts[-1], line)
        else:
            self.assertEqual(a.heard(call)[-1], line)
        yield wait_for(lambda: a.transferred_to(call) is not None, what="the carrier dialling")
        self.assertEqual(a.transferred_to(call), (PERSON, record.from_number))
        self.check_transfer_wire(a, call, record)
        yield a.person_answers(call)
        yield wait_for(lambda: not a.manager.live_calls(), what="the call handed over")
        final = yield a.record(record.call_id)
        self.assertEqual(final.state, CallState.TRANSFERRED)
        self.assertEqual((final.end_reason, final.end_detail), ("transferred", PERSON))
        self.assertTrue(a.carrier_live(call), "the caller is still on, with the person")
        if stream is not None:
            yield stream.when_closed()
        yield a.person_hangs_up(call)
        yield call.when_ended()
        self.assertEqual((yield a.record(record.call_id)).state, CallState.TRANSFERRED)
        self.assertEqual(a.fake.errors, [])

    def check_transfer_wire(self, a: Adapter, call: Any, record: Any) -> None:
        """The one request each carrier gets for a transfer, in its own format."""
        wire = a.transfer_wire(call)
        if a.name == "twilio":
            self.assertEqual(wire["verbs"], ["Dial"])
            self.assertEqual((wire["callerId"], wire["number"]), (record.from_number, PERSON))
            self.assertEqual(wire["events"], "answered")
            self.assertIn(f"callId={record.call_id}", wire["callback"])
            self.assertEqual(wire["timeLimit"], "14400", "our backstop no longer applies")
        elif a.name == "telnyx":
            leg = base64.b64encode(f"transfer:{record.call_id}".encode()).decode()
            expected = {"to": PERSON, "from": record.from_number, "target_leg_client_state": leg}
            self.assertEqual(wire, expected)
        elif a.name == "plivo":
            dial = (
                f'<Response><Dial callerId="{digits(record.from_number)}">'
                f"<Number>{digits(PERSON)}</Number></Dial></Response>"
            )
            self.assertEqual(
                wire, {"legs": "aleg", "method": "POST", "signed": True, "answer": (200, dial)}
            )

    def test_transfer_not_streamed(self):
        return self.check_transfer(False)

    def test_transfer_streamed(self):
        return self.check_transfer(True)

    @inlineCallbacks
    def test_transfer_nobody_answers(self):
        a, record, call, _ = yield self.answered(False, "Hi.")
        yield a.listening(call)
        yield self.transfer(a, record.call_id, PERSON)
        yield wait_for(lambda: a.transferred_to(call) is not None, what="the carrier dialling")
        yield a.person_does_not_answer(call)
        yield call.when_ended()
        self.assertFalse(a.carrier_live(call), "the caller is not left on a silent line")
        yield wait_for(lambda: not a.manager.live_calls(), what="the end of the call")
        final = yield a.record(record.call_id)
        self.assertEqual(final.state, CallState.TRANSFERRED)
        if a.name == "plivo":
            # Plivo confirms when it fetches the <Dial>, before anyone answers.
            self.assertEqual(final.end_detail, PERSON)
        else:
            self.assertTrue(
                final.end_detail.startswith(f"{PERSON} (ended before the carrier confirmed: "),
                final.end_detail,
            )
        self.assertEqual(a.fake.errors, [])

    @inlineCallbacks
    def test_transfer_the_carrier_refuses(self):
        a, record, call, _ = yield self.answered(False, "Hi.")
        yield a.listening(call)
        a.fail_next_transfer()
        yield self.assertFailure(self.transfer(a, record.call_id, PERSON), ProviderError)
        self.assertIsNone(a.transferred_to(call))
        (live,) = a.manager.live_calls()
        self.assertNotIn("transferredTo", live.metadata)
        # Still ours: it speaks, and a second transfer goes through.
        yield Deferred.fromCoroutine(a.manager.speak(record.call_id, "Sorry, one moment."))
        self.assertEqual(a.heard(call)[-1], "Sorry, one moment.")
        yield self.transfer(a, record.call_id, PERSON)
        yield wait_for(lambda: a.transferred_to(call) is not None, what="the carrier dialling")
        self.assertTrue(a.carrier_live(call))
        self.flushLoggedErrors()

    @inlineCallbacks
    def test_transfer_refused_by_the_toll_fraud_guard(self):
        config = {"outbound": {"allowedPrefixes": ["+1"]}}
        a, record, call, _ = yield self.answered(False, "Hi.", config)
        yield a.listening(call)
        for to, error, why in (
            ("+447700900123", NotAllowed, "allowedPrefixes"),
            ("+19005551234", NotAllowed, "premium-rate"),
            ("555 1234", InvalidArgument, "E.164"),
        ):
            failure = yield self.assertFailure(self.transfer(a, record.call_id, to), error)
            self.assertIn(why, str(failure))
        self.assertIsNone(a.transferred_to(call))
        (live,) = a.manager.live_calls()
        self.assertEqual(live.state, CallState.LISTENING)
        self.assertNotIn("transferredTo", live.metadata)
        refused = [n.to_number for n in a.notices if n.kind == "call.refused"]
        self.assertEqual(refused, ["+447700900123", "+19005551234"])

    @inlineCallbacks
    def test_transfer_of_an_ended_call(self):
        a, record, call, _ = yield self.answered(False, "Hi.")
        yield a.listening(call)
        yield call.caller_hangup()
        yield wait_for(lambda: not a.manager.live_calls())
        yield self.assertFailure(self.transfer(a, record.call_id, PERSON), CallEnded)
        self.assertIsNone(a.transferred_to(call))
        self.assertEqual((yield a.record(record.call_id)).state, a.caller_hangup_state)
