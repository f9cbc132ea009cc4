"""
Realtime calls end to end on Twilio, in memory: the fake Twilio's media
stream bridged to a scripted speech-to-speech model (L{ScriptedVoice}),
through the real provider, call manager and store
(L{tests.unit.rigs.MemoryRig}); the test plays the model and lets time pass.
"""

from __future__ import annotations

from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.trial.unittest import TestCase

from tests.fakes.realtime_voice import ScriptedVoice
from tests.unit.rigs import MemoryRig
from voicecalld.realtime import bridge
from voicecalld.realtime.interface import CONSULT_TOOL, END_CALL_TOOL
from voicecalld.values.record import BOT, USER
from voicecalld.values.states import CallState

GREETING = "Hi there, this is the assistant calling."


class RealtimeOnTwilio(TestCase):
    """One call, one model session: greeting, turns, barge-in, tools, ends."""

    def answered(self, config=None):
        voice = ScriptedVoice()
        rig = MemoryRig(self, config or {}, realtime=voice)
        rig.realtime = voice
        record = rig.initiate(GREETING, "conversation")
        call = rig.run(rig.fake.when_call(0))
        rig.run(call.answer())
        stream = rig.run(call.when_stream())
        rig.until(lambda: voice.sessions and voice.sessions[0].spoken)
        (session,) = voice.sessions
        return rig, record, call, stream, session

    def greeted(self, config=None):
        rig, record, call, stream, session = self.answered(config)
        session.answer(GREETING, 1.0)
        rig.run(stream.when_mark_echoed("r1:end"))
        rig.until(lambda: self.live(rig).state == CallState.LISTENING)
        return rig, record, call, stream, session

    def live(self, rig):
        (live,) = rig.manager.live_calls()
        return live

    def test_the_greeting_is_the_models_opening_turn(self):
        rig, _record, call, stream, session = self.answered()
        self.assertEqual(session.spoken, [GREETING])
        self.assertEqual(call.verbs_named("Say"), [], "no TwiML <Say>: the stream stays")
        self.assertIn("openclaw_end_call", [t.name for t in session.setup.tools])
        self.assertIn(CONSULT_TOOL, [t.name for t in session.setup.tools])
        self.assertTrue(stream.url.endswith("/voice/stream/realtime"), stream.url)
        session.answer("Hi there, this is your assistant.", 1.0)
        rig.run(stream.when_mark_echoed("r1:end"))
        self.assertEqual(stream.outbound_audio, b"\x10" * 8000)
        rig.until(lambda: self.live(rig).state == CallState.LISTENING)
        (entry,) = self.live(rig).transcript
        self.assertEqual((entry.speaker, entry.text), (BOT, "Hi there, this is your assistant."))
        self.assertIsNone(self.live(rig).initial_message)

    def test_caller_turns_go_to_the_model_not_the_reply_router(self):
        rig, record, _call, stream, session = self.greeted()
        asked = []
        rig.manager.replies.reply = lambda *a: asked.append(a) or succeed("no")
        rig.run(stream.send_audio(b"\x55" * 1600))
        rig.until(lambda: len(session.audio) >= 1600)
        session.listener.speech_started()
        session.listener.speech_stopped()
        session.listener.user_transcript("What time is it?")
        rig.until(lambda: self.live(rig).transcript[-1].speaker == USER)
        rig.reactor.advance(0.3)
        session.answer("It is noon.", 0.5)
        rig.until(lambda: self.live(rig).state == CallState.SPEAKING)
        rig.run(stream.when_mark_echoed("r2:end"))
        rig.until(lambda: self.live(rig).state == CallState.LISTENING)
        rig.until(lambda: self.live(rig).transcript[-1].text == "It is noon.")
        self.assertEqual(asked, [])
        stages = self.live(rig).metadata["lastTurnLatency"]
        self.assertAlmostEqual(stages["modelFirstAudio"], 300.0, delta=1)
        self.assertLess(stages["oursToFirstFrame"], 25)
        self.assertIn("turn.latency", rig.kinds())
        stored = rig.run(rig.store.load(record.call_id))
        self.assertEqual(
            [e.text for e in stored.transcript][-2:], ["What time is it?", "It is noon."]
        )

    def test_barge_in_clears_and_truncates_to_what_was_heard(self):
        rig, _record, _call, stream, session = self.greeted()
        words = "one two three four five six seven eight nine ten eleven twelve"
        session.answer(words, 3.0, done=False)
        before = len(stream.outbound_audio)
        rig.run(stream.when_audio(before + 8000))
        session.listener.speech_started()
        rig.run(stream.when_clear())
        (heard_ms,) = session.truncated
        _at, dropped = stream.clears[0]
        played_ms = (len(stream.outbound_audio) - before - dropped) / 8
        self.assertLess(abs(heard_ms - played_ms), 80, (heard_ms, played_ms))
        # Audio of the cut response still in flight is not played.
        sent = len(stream.outbound_audio)
        session.listener.audio(b"\x10" * 1600)
        rig.reactor.advance(0.5)
        rig.pump()
        self.assertEqual(len(stream.outbound_audio), sent)
        session.finish(words)
        rig.until(lambda: self.live(rig).transcript[-1].interrupted)
        entry = self.live(rig).transcript[-1]
        self.assertTrue(words.startswith(entry.text))
        self.assertLess(len(entry.text), len(words))
        self.assertGreater(len(entry.text), 0)

    def test_speak_goes_through_the_model(self):
        rig, record, _call, _stream, session = self.greeted()
        said = Deferred.fromCoroutine(rig.manager.speak(record.call_id, "Your table is booked."))
        rig.until(lambda: session.spoken[-1:] == ["Your table is booked."])
        session.answer("Your table is booked.", 0.6)
        playback = rig.run(said)
        self.assertTrue(playback.complete)
        self.assertEqual(playback.played, "Your table is booked.")
        rig.until(lambda: self.live(rig).transcript[-1].text == "Your table is booked.")
        self.assertEqual(
            [e.text for e in self.live(rig).transcript].count("Your table is booked."), 1
        )

    def test_continue_asks_through_the_model_and_gets_the_callers_words(self):
        rig, record, _call, _stream, session = self.greeted()
        answer = Deferred.fromCoroutine(rig.manager.continue_call(record.call_id, "Your name?"))
        rig.until(lambda: session.spoken[-1:] == ["Your name?"])
        session.answer("Your name?", 0.4)
        rig.until(lambda: self.live(rig).state == CallState.LISTENING)
        session.listener.user_transcript("Ann")
        self.assertEqual(rig.run(answer), "Ann")

    def test_end_call_waits_for_the_last_words_then_hangs_up(self):
        rig, record, call, stream, session = self.greeted()
        hangup, hung_up_at = rig.provider.hangup, []
        rig.provider.hangup = lambda r, why: (
            hung_up_at.append(rig.reactor.seconds()) or hangup(r, why)
        )
        asked_at = rig.reactor.seconds()
        session.answer("Goodbye!", 1.0, done=False)
        session.listener.tool_call("fc-1", END_CALL_TOOL, {})
        session.finish("Goodbye!")
        rig.run(stream.when_mark_echoed("r2:end"))
        played_at = stream.marks_echoed[-1][0]
        rig.until(lambda: not rig.manager.live_calls())
        final = rig.record(record.call_id)
        self.assertEqual(final.state, CallState.HANGUP_BOT)
        self.assertEqual(final.transcript[-1].text, "Goodbye!")
        self.assertFalse(call.is_live)
        hangups = [r for r in rig.fake.requests if r.get("Status") == "completed"]
        self.assertEqual(len(hangups), 1)
        self.assertGreaterEqual(hung_up_at[0], played_at)
        self.assertGreater(played_at - asked_at, 0.95)

    def test_a_failed_hang_up_is_reported_to_the_model(self):
        rig, _record, _call, _stream, session = self.greeted()
        rig.fake.fail_next("update", 500, 20500, "Internal error")
        session.listener.tool_call("fc-2", END_CALL_TOOL, {})
        rig.until(lambda: session.results)
        ((call_id, output),) = session.results
        self.assertEqual(call_id, "fc-2")
        self.assertIn("error", output)
        self.assertEqual(self.live(rig).state, CallState.LISTENING)

    def test_consult_asks_the_responder_and_returns_its_answer(self):
        rig, record, _call, _stream, session = self.greeted()
        asked = []

        def consult(record, question):
            asked.append((record.call_id, question))
            return succeed("The shop opens at nine.")

        rig.manager.replies.consult = consult
        session.listener.tool_call("fc-3", CONSULT_TOOL, {"question": "When does it open?"})
        rig.until(lambda: session.results)
        self.assertEqual(asked, [(record.call_id, "When does it open?")])
        self.assertEqual(session.results, [("fc-3", {"answer": "The shop opens at nine."})])

    def test_a_cancelled_consult_says_so_and_the_call_stays_up(self):
        rig, _record, _call, _stream, session = self.greeted()
        pending: Deferred = Deferred()
        rig.manager.replies.consult = lambda record, question: pending
        session.listener.tool_call("fc-4", CONSULT_TOOL, {"question": "Anything?"})
        pending.errback(CancelledError())
        rig.until(lambda: session.results)
        self.assertEqual(session.results, [("fc-4", {"status": "cancelled"})])
        self.assertEqual(len(rig.manager.live_calls()), 1)

    def test_a_consult_after_the_call_ended_is_dropped(self):
        rig, record, _call, _stream, session = self.greeted()
        cancelled = []
        pending: Deferred = Deferred(canceller=cancelled.append)
        rig.manager.replies.consult = lambda record, question: pending
        session.listener.tool_call("fc-5", CONSULT_TOOL, {"question": "Anything?"})
        rig.run(Deferred.fromCoroutine(rig.manager.end(record.call_id)))
        rig.pump()
        self.assertEqual(cancelled, [pending], "the consult is freed at once")
        self.assertEqual(session.results, [])
        self.assertTrue(session.closed)

    def test_tool_policy_none_offers_no_consult(self):
        *_, session = self.answered({"realtime": {"toolPolicy": "none"}})
        self.assertEqual([t.name for t in session.setup.tools], [END_CALL_TOOL])

    def test_custom_tools_are_offered_and_answered_by_the_responder(self):
        tool = {
            "type": "function",
            "name": "check_order",
            "description": "Look up an order",
            "parameters": {"type": "object", "properties": {"id": {"type": "string"}}},
        }
        rig, _record, _call, _stream, session = self.greeted({"realtime": {"tools": [tool]}})
        self.assertIn("check_order", [t.name for t in session.setup.tools])
        asked = []
        rig.manager.replies.consult = lambda record, q: asked.append(q) or succeed("shipped")
        session.listener.tool_call("fc-6", "check_order", {"id": "A1"})
        rig.until(lambda: session.results)
        self.assertEqual(session.results, [("fc-6", {"result": "shipped"})])
        self.assertIn("check_order", asked[0])
        self.assertIn('"A1"', asked[0])

    def test_the_vendor_closing_the_session_hangs_up(self):
        rig, record, call, _stream, session = self.greeted()
        session.vendor_close("session expired")
        rig.until(lambda: not rig.manager.live_calls())
        final = rig.record(record.call_id)
        self.assertEqual(final.state, CallState.ERROR)
        self.assertIn("session expired", final.end_detail)
        self.assertFalse(call.is_live)

    def test_no_caller_audio_for_thirty_seconds_hangs_up(self):
        rig, record, _call, stream, _session = self.greeted()
        stopped = stream.frames[-1][0] if stream.frames else rig.reactor.seconds()
        rig.until(lambda: not rig.manager.live_calls(), limit=60)
        final = rig.record(record.call_id)
        self.assertEqual(final.state, CallState.ERROR)
        self.assertIn("no audio", final.end_detail)
        waited = rig.reactor.seconds() - stopped
        limit = bridge.NO_MEDIA_TIMEOUT + bridge.NO_MEDIA_GRACE
        self.assertGreaterEqual(waited, limit - 1.5)
        self.assertLess(waited, limit + bridge.NO_MEDIA_CHECK_EVERY + 1)

    def test_an_inbound_call_is_greeted_by_the_model(self):
        voice = ScriptedVoice()
        rig = MemoryRig(self, {"inboundGreeting": "Acme, how can I help?"}, realtime=voice)
        call = rig.run(rig.fake.inbound_call("+15557654321", "+15550001111", rig.url))
        stream = rig.run(call.when_stream())
        rig.until(lambda: voice.sessions and voice.sessions[0].spoken)
        (session,) = voice.sessions
        self.assertEqual(session.spoken, ["Acme, how can I help?"])
        session.answer("Acme, how can I help?", 0.5)
        rig.run(stream.when_mark_echoed("r1:end"))
        rig.until(lambda: self.live(rig).transcript)
        self.assertEqual(self.live(rig).transcript[0].text, "Acme, how can I help?")
        self.assertEqual(call.verbs_named("Say"), [])

    def test_a_replaced_stream_gets_a_new_session_and_the_call_goes_on(self):
        rig, record, call, stream, session = self.greeted()
        stream.drop()
        rig.until(lambda: len(call.streams) == 2)
        second = call.streams[1]
        rig.until(lambda: len(rig.realtime.sessions) == 2)
        self.assertTrue(session.closed)
        self.assertEqual(len(rig.manager.live_calls()), 1)
        said = Deferred.fromCoroutine(rig.manager.speak(record.call_id, "Still here."))
        new = rig.realtime.sessions[1]
        rig.until(lambda: new.spoken == ["Still here."])
        new.answer("Still here.", 0.3)
        self.assertTrue(rig.run(said).complete)
        rig.run(second.when_mark_echoed("r1:end"))

    def test_a_notify_call_says_its_message_through_the_model_then_hangs_up(self):
        voice = ScriptedVoice()
        rig = MemoryRig(self, {"outbound": {"notifyHangupDelaySec": 1}}, realtime=voice)
        record = rig.initiate("Your parcel has arrived.", "notify")
        call = rig.run(rig.fake.when_call(0))
        rig.run(call.answer())
        stream = rig.run(call.when_stream())
        rig.until(lambda: voice.sessions and voice.sessions[0].spoken)
        (session,) = voice.sessions
        self.assertEqual(session.spoken, ["Your parcel has arrived."])
        session.answer("Your parcel has arrived.", 0.8)
        rig.run(stream.when_mark_echoed("r1:end"))
        rig.until(lambda: not rig.manager.live_calls())
        final = rig.record(record.call_id)
        self.assertEqual(final.state, CallState.HANGUP_BOT)
        self.assertEqual([e.text for e in final.transcript], ["Your parcel has arrived."])
        self.assertTrue(session.closed)
