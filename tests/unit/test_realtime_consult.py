"""
Exact response matching and C{realtime.consultPolicy: always}: the bridge
alone on a Clock with the scripted model, the call core over a store that
holds its writes, and one whole call on Twilio in memory.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from tests.fakes.realtime_voice import ScriptedVoice
from tests.unit.harness import Harness
from tests.unit.rigs import MemoryRig
from tests.unit.test_realtime_bridge import Line
from voicecalld.config import parse_config
from voicecalld.realtime.bridge import RealtimeBridge
from voicecalld.realtime.interface import CONSULT_TOOL, HOST_CONSULT_PREFIX, RealtimeSetup
from voicecalld.realtime.setup import realtime_setup
from voicecalld.values import events as ev
from voicecalld.values.record import BOT, USER
from voicecalld.values.states import CallState


class _OnAClock(TestCase):
    """A bridge on a Clock; the test plays the model and the carrier's marks."""

    host_consult = False

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.line = Line(self.clock)
        self.voice = ScriptedVoice()
        setup = RealtimeSetup("Be brief.", host_consult=self.host_consult)
        self.bridge = RealtimeBridge(self.line, self.voice, setup, self.clock)
        (self.session,) = self.voice.sessions

    def play(self, seconds: float) -> None:
        for _ in range(round(seconds / 0.02)):
            self.clock.advance(0.02)

    def caller_says(self, words: str, *, late: bool = False, answer: str = "Sure.") -> None:
        """A caller's turn and the model's own answer (the caller's transcript before or after)."""
        listener = self.session.listener
        listener.speech_started()
        listener.speech_stopped()
        if not late:
            listener.user_transcript(words)
        self.session.answer(answer, 0.2, own=True)
        if late:
            listener.user_transcript(words)

    def host_consults(self) -> list[ev.ToolCall]:
        return [
            e for e in self.line.of(ev.ToolCall) if e.tool_call_id.startswith(HOST_CONSULT_PREFIX)
        ]


class ExactMatching(_OnAClock):
    def test_a_model_reply_starting_with_a_speak_never_takes_its_playback(self):
        """The collision: the model's own response starts first; the client's words stay theirs."""
        said = self.bridge.say("Your table is booked.")
        self.assertEqual(self.session.spoken, ["Your table is booked."])
        self.session.answer("Mm-hm, one moment.", 0.2, own=True)
        self.assertNoResult(said)
        self.session.answer("Your table is booked.", 0.4)
        self.play(1.0)
        self.bridge.mark_echoed("r1:end")
        (own,) = self.line.of(ev.ModelSpeech)
        self.assertEqual(own.text, "Mm-hm, one moment.")
        self.assertNoResult(said)
        self.bridge.mark_echoed("r2:end")
        playback = self.successResultOf(said)
        self.assertEqual((playback.played, playback.complete), ("Your table is booked.", True))
        self.assertEqual(len(self.line.of(ev.ModelSpeech)), 1)

    def test_a_response_with_a_token_not_ours_is_the_models_own(self):
        said = self.bridge.say("Hello.")
        self.session.listener.response_started("someone-elses")
        self.session.listener.audio(b"\x10" * 800)
        self.session.finish("Something else.")
        self.play(0.3)
        self.bridge.mark_echoed("r1:end")
        self.assertEqual([e.text for e in self.line.of(ev.ModelSpeech)], ["Something else."])
        self.assertNoResult(said)


class HostConsultOff(_OnAClock):
    def test_without_always_the_host_never_consults(self):
        self.caller_says("What's the weather?")
        self.assertEqual(self.host_consults(), [])

    def test_the_setup_turns_it_on_only_for_always_with_consult_allowed(self):
        def setup(realtime: dict[str, Any]) -> RealtimeSetup:
            settings = parse_config({"inboundPolicy": "open", "realtime": realtime}, None, {})
            return realtime_setup(settings.settings.realtime, "call-1")

        self.assertTrue(setup({"consultPolicy": "always"}).host_consult)
        self.assertFalse(setup({"consultPolicy": "substantive"}).host_consult)
        self.assertFalse(setup({}).host_consult)
        self.assertFalse(setup({"consultPolicy": "always", "toolPolicy": "none"}).host_consult)


class HostConsult(_OnAClock):
    host_consult = True

    def test_an_answer_without_a_consult_is_put_to_the_agent_and_relayed(self):
        self.caller_says("What's the weather in Lyon?")
        (asked,) = self.host_consults()
        self.assertEqual(asked.name, CONSULT_TOOL)
        self.assertEqual(asked.arguments, {"question": "What's the weather in Lyon?"})
        self.bridge.tool_result(asked.tool_call_id, {"answer": "  Sunny, 21 degrees.  "})
        self.assertEqual(self.session.relayed, ["Sunny, 21 degrees."])
        self.assertEqual(self.session.results, [], "never a function result to the vendor")
        # The relay's response is the model's line, and not a caller's turn to consult on.
        self.session.answer("It is sunny in Lyon, 21 degrees.", 0.2)
        self.play(1.0)
        self.bridge.mark_echoed("r1:end")
        self.bridge.mark_echoed("r2:end")
        self.assertEqual(
            [e.text for e in self.line.of(ev.ModelSpeech)],
            ["Sure.", "It is sunny in Lyon, 21 degrees."],
        )
        self.assertEqual(len(self.host_consults()), 1)

    def test_a_transcript_after_the_response_still_gets_its_consult(self):
        self.caller_says("Is the pool open?", late=True)
        (asked,) = self.host_consults()
        self.assertEqual(asked.arguments, {"question": "Is the pool open?"})

    def test_no_host_consult_when_the_model_consulted(self):
        listener = self.session.listener
        listener.speech_started()
        listener.speech_stopped()
        listener.user_transcript("Is the pool open?")
        listener.response_started()
        listener.tool_call("fc-1", CONSULT_TOOL, {"question": "Pool open?"})
        listener.response_done()
        self.assertEqual(self.host_consults(), [])
        self.assertEqual(len(self.line.of(ev.ToolCall)), 1)

    def test_an_answer_after_the_caller_spoke_again_is_dropped(self):
        self.caller_says("Is the pool open?")
        (asked,) = self.host_consults()
        self.session.listener.speech_started()
        self.bridge.tool_result(asked.tool_call_id, {"answer": "Until eight."})
        self.assertEqual(self.session.relayed, [])

    def test_no_answer_an_error_or_a_closed_session_says_nothing(self):
        self.caller_says("One?")
        self.caller_says("Two?")
        self.caller_says("Three?")
        first, second, third = self.host_consults()
        self.bridge.tool_result(first.tool_call_id, {"answer": "stale"})
        self.bridge.tool_result(third.tool_call_id, {"error": "the agent had no answer"})
        self.bridge.tool_result(second.tool_call_id, {"status": "cancelled"})
        self.caller_says("Four?")
        (*_, fourth) = self.host_consults()
        self.bridge.close()
        self.bridge.tool_result(fourth.tool_call_id, {"answer": "Too late."})
        self.assertEqual(self.session.relayed, [])


class HostConsultInTheCore(TestCase):
    """The host's consult is the model's: the same responder, record and result path."""

    def test_the_core_asks_the_responder_and_answers_the_bridge(self):
        h = Harness(self)
        h.provider.realtime_calls = True
        call_id = h.answered_call()
        asked = []
        h.manager.replies.consult = lambda record, q: (
            asked.append((record.call_id, q)) or succeed("Until eight.")
        )
        h.store.holding = True
        applying = h.provider.emit(
            ev.ToolCall(
                call_id=call_id,
                tool_call_id=f"{HOST_CONSULT_PREFIX}3",
                name=CONSULT_TOOL,
                arguments={"question": "Is the pool open?"},
            )
        )
        h.store.release_all()
        h.ok(applying)
        self.assertEqual(asked, [(call_id, "Is the pool open?")])
        (result,) = [r for r in h.provider.requests if r[0] == "tool_result"]
        self.assertEqual(result[2:], (f"{HOST_CONSULT_PREFIX}3", {"answer": "Until eight."}))


class HostConsultOnTwilio(TestCase):
    """A whole call: the model answers without consulting; the agent's answer is said."""

    def test_the_agents_answer_is_said_and_stored(self):
        voice = ScriptedVoice()
        rig = MemoryRig(self, {"realtime": {"consultPolicy": "always"}}, realtime=voice)
        record = rig.initiate("Hello.", "conversation")
        call = rig.run(rig.fake.when_call(0))
        rig.run(call.answer())
        stream = rig.run(call.when_stream())
        rig.until(lambda: voice.sessions and voice.sessions[0].spoken)
        (session,) = voice.sessions
        self.assertTrue(session.setup.host_consult)
        session.answer("Hello.", 0.5)
        rig.run(stream.when_mark_echoed("r1:end"))
        asked = []
        answering: Deferred = Deferred()

        def consult(record: Any, question: str) -> Deferred:
            asked.append((record.call_id, question))
            return answering

        rig.manager.replies.consult = consult
        session.listener.speech_started()
        session.listener.speech_stopped()
        session.listener.user_transcript("When do you open?")
        session.answer("Good question.", 0.5, own=True)
        rig.run(stream.when_mark_echoed("r2:end"))
        rig.until(lambda: asked)
        self.assertEqual(asked, [(record.call_id, "When do you open?")])
        answering.callback("We open at nine.")
        rig.until(lambda: session.relayed)
        self.assertEqual(session.relayed, ["We open at nine."])
        session.answer("We open at nine.", 0.5)
        rig.run(stream.when_mark_echoed("r3:end"))

        def lines() -> list[tuple[str, str]]:
            (live,) = rig.manager.live_calls()
            return [(e.speaker, e.text) for e in live.transcript]

        rig.until(lambda: (BOT, "We open at nine.") in lines())
        self.assertEqual(
            lines()[-3:],
            [(USER, "When do you open?"), (BOT, "Good question."), (BOT, "We open at nine.")],
        )
        (live,) = rig.manager.live_calls()
        self.assertIn(live.state, (CallState.LISTENING, CallState.SPEAKING))
