"""
The realtime bridge alone (a media session's pacer on a Clock, the scripted
model), the call core's handling of its events over a store whose writes
finish when the test says (durable before visible), and building the vendor.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from tests.fakes.realtime_voice import ScriptedVoice
from tests.unit.harness import Harness
from voicecalld.calls.realtime_table import SessionState
from voicecalld.config import parse_config
from voicecalld.errors import ProviderError
from voicecalld.media.pacing import FramePacer, PacingClock
from voicecalld.realtime import bridge
from voicecalld.realtime.bridge import RealtimeBridge
from voicecalld.realtime.factory import chosen_provider, make_realtime
from voicecalld.realtime.interface import END_CALL_TOOL, RealtimeSetup
from voicecalld.realtime.setup import realtime_stream_path
from voicecalld.values import events as ev
from voicecalld.values.record import BOT, USER
from voicecalld.values.states import CallState


class Line:
    """Just enough of a media session: a real pacer on a Clock, and what was sent."""

    def __init__(self, clock: Clock) -> None:
        self.call_id = "call-1"
        self.frames: list[bytes] = []
        self.marks: list[str] = []
        self.clears = 0
        self.events: list[Any] = []
        self.pacer = FramePacer(clock, PacingClock(clock), self.frames.append, self.marks.append)
        self.socket = SimpleNamespace(send_clear=self._clear)

    def _clear(self) -> None:
        self.clears += 1

    def emit(self, event: Any) -> None:
        self.events.append(event)

    def ids(self) -> dict[str, Any]:
        return {"call_id": self.call_id, "provider_call_id": "CA1"}

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


class BridgeAlone(TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.line = Line(self.clock)
        self.voice = ScriptedVoice()
        self.bridge = RealtimeBridge(self.line, self.voice, RealtimeSetup("Be brief."), self.clock)
        (self.session,) = self.voice.sessions

    def play(self, seconds: float) -> None:
        for _ in range(round(seconds / 0.02)):
            self.clock.advance(0.02)

    def test_heard_ms_is_the_last_echoed_mark_plus_the_time_since(self):
        self.session.answer("one two three four", 2.0, done=False)
        self.play(0.5)
        self.assertIn("r1:4000", self.line.marks)
        self.bridge.mark_echoed("r1:4000")
        self.play(0.3)
        self.session.listener.speech_started()
        self.assertEqual(self.session.truncated, [800])
        self.assertEqual(self.line.clears, 1)
        self.assertEqual(self.bridge.state, SessionState.LISTENING)
        self.session.finish("one two three four")
        (line,) = self.line.of(ev.ModelSpeech)
        self.assertTrue(line.interrupted)
        self.assertEqual(line.text, "one")  # 0.8 s of 2 s: 40 % of four words
        self.assertEqual(len(self.line.of(ev.SpeechStarted)), 1)

    def test_heard_ms_never_exceeds_what_was_sent(self):
        self.session.answer("short", 0.1, done=False)
        self.play(2.0)
        self.session.listener.speech_started()
        self.assertEqual(self.session.truncated, [100])

    def test_speech_waits_for_the_models_response_to_end(self):
        self.session.answer("Let me think.", 0.2, done=False)
        said = self.bridge.say("Here you go.")
        self.assertEqual(self.session.spoken, [])
        self.session.finish("Let me think.")
        self.assertEqual(self.session.spoken, ["Here you go."])
        self.session.answer("Here you go.", 0.2)
        self.play(0.4)
        self.bridge.mark_echoed("r2:end")
        playback = self.successResultOf(said)
        self.assertEqual((playback.played, playback.complete), ("Here you go.", True))

    def test_a_transcript_after_the_responses_end_is_still_the_line(self):
        self.session.answer("", 0.2)
        self.play(0.4)
        self.bridge.mark_echoed("r1:end")
        self.assertEqual(self.line.of(ev.ModelSpeech), [])
        self.session.listener.assistant_transcript("Late words.")
        (line,) = self.line.of(ev.ModelSpeech)
        self.assertEqual(line.text, "Late words.")

    def test_a_response_without_any_transcript_is_given_up_on(self):
        self.session.answer("", 0.2)
        self.play(0.4)
        self.bridge.mark_echoed("r1:end")
        self.clock.advance(bridge.TRANSCRIPT_WAIT)
        # Reported without words (the call stops showing "speaking"; no line is stored).
        (line,) = self.line.of(ev.ModelSpeech)
        self.assertEqual(line.text, "")
        self.assertEqual(len(self.line.of(ev.ModelSpeaking)), 1)
        self.assertEqual([c for c in self.clock.getDelayedCalls() if c.active()][1:], [])

    def test_a_speech_the_model_never_begins_fails(self):
        said = self.bridge.say("Hello?")
        self.clock.advance(bridge.SPEAK_TIMEOUT)
        self.failureResultOf(said, ProviderError)

    def test_the_vendor_closing_fails_what_waits_and_hangs_up(self):
        self.session.answer("Hel", 0.2, done=False)
        said = self.bridge.say("Hello")
        self.session.vendor_close("socket lost")
        self.failureResultOf(said, ProviderError)
        (failed,) = self.line.of(ev.Failed)
        self.assertFalse(failed.retryable)
        self.assertIn("socket lost", failed.message)
        self.assertEqual(self.bridge.state, SessionState.CLOSED)
        self.bridge.feed(b"\xff" * 160)
        self.assertEqual(self.session.audio, b"")

    def test_a_session_that_cannot_be_opened_hangs_up(self):
        class Broken:
            name = "broken"

            def open_session(self, listener, setup):
                raise OSError("no route to the vendor")

        line = Line(self.clock)
        broken = RealtimeBridge(line, Broken(), RealtimeSetup("x"), self.clock)
        self.assertFalse(broken.opened)
        self.clock.advance(0)
        self.assertEqual(broken.state, SessionState.CLOSED)
        (failed,) = line.of(ev.Failed)
        self.assertIn("no route to the vendor", failed.message)
        self.failureResultOf(broken.say("Hi"), ProviderError)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)

    def test_a_vendor_that_never_gets_ready_hangs_up(self):
        line = Line(self.clock)
        slow = ScriptedVoice(auto_ready=False)
        late = RealtimeBridge(line, slow, RealtimeSetup("x"), self.clock)
        said = late.say("Hello")
        self.clock.advance(bridge.READY_TIMEOUT)
        self.failureResultOf(said, ProviderError)
        (failed,) = line.of(ev.Failed)
        self.assertIn("not ready", failed.message)
        self.assertTrue(slow.sessions[0].closed)
        self.assertEqual([c for c in self.clock.getDelayedCalls() if c.active()][1:], [])

    def test_greeting_waits_for_ready(self):
        line = Line(self.clock)
        slow = ScriptedVoice(auto_ready=False)
        late = RealtimeBridge(line, slow, RealtimeSetup("x"), self.clock)
        said = late.say("Hello")
        (session,) = slow.sessions
        self.assertEqual(session.spoken, [])
        session.listener.ready()
        self.assertEqual(session.spoken, ["Hello"])
        self.clock.advance(bridge.READY_TIMEOUT)
        self.assertEqual(line.of(ev.Failed), [])
        late.close()
        self.failureResultOf(said, ProviderError)  # the stream went before the model spoke

    def test_our_close_does_not_hang_up(self):
        self.bridge.close()
        self.assertTrue(self.session.closed)
        self.assertEqual(self.line.of(ev.Failed), [])

    def test_end_call_waits_for_an_end_mark_that_never_comes_within_a_bound(self):
        self.session.answer("Bye now.", 1.0, done=False)
        self.session.listener.tool_call("fc-1", END_CALL_TOOL, {})
        self.session.finish("Bye now.")
        self.play(1.0)
        self.assertEqual(self.line.of(ev.ToolCall), [])
        self.play(bridge.MARK_GRACE + 0.2)
        (call,) = self.line.of(ev.ToolCall)
        self.assertEqual((call.tool_call_id, call.name), ("fc-1", END_CALL_TOOL))

    def test_no_media_is_checked_on_a_coarse_timer(self):
        for _ in range(10):
            self.bridge.feed(b"\xff" * 160)
            self.clock.advance(1)
        timers = [c for c in self.clock.getDelayedCalls() if c.active()]
        self.assertLessEqual(len(timers), 1)
        self.clock.advance(bridge.NO_MEDIA_TIMEOUT)
        self.assertEqual(self.line.of(ev.Failed), [])
        self.clock.advance(bridge.NO_MEDIA_GRACE + 0.1)
        (failed,) = self.line.of(ev.Failed)
        self.assertIn("no audio", failed.message)
        self.assertTrue(self.session.closed)


class Streams(TestCase):
    """The media layer's side: a second stream whose session cannot open."""

    def socket(self, sid: str) -> Any:
        return SimpleNamespace(
            stream_id=sid,
            call_ref="CA1",
            send_frame=lambda frame: None,
            send_mark=lambda name: None,
            send_clear=lambda: None,
            close=lambda code, reason: None,
        )

    def test_a_failing_second_bridge_leaves_the_active_stream_be(self):
        from voicecalld.media.session import MediaSessions
        from voicecalld.media.stream import StreamLimits, StreamStart
        from voicecalld.realtime.bridge import bridge_opener

        clock = Clock()
        events: list[Any] = []
        voice = ScriptedVoice()
        opener = bridge_opener(voice, lambda call_id: RealtimeSetup("x", (), call_id), clock)
        sessions = MediaSessions(clock, StreamLimits(), None, events.append, realtime=opener)
        sessions.track("call-1")
        start = StreamStart("MZ1", "CA1", {"token": sessions.issue("call-1", "CA1")})
        first = sessions._started(self.socket("MZ1"), start)
        self.assertIs(sessions.session("call-1"), first)

        def broken(listener: Any, setup: Any) -> Any:
            raise OSError("vendor down")

        voice.open_session = broken
        again = StreamStart("MZ2", "CA1", {"token": sessions.issue("call-1", "CA1")})
        refused = sessions._started(self.socket("MZ2"), again)
        self.assertIsInstance(refused, str)
        clock.advance(1)
        self.assertIs(sessions.session("call-1"), first)
        self.assertFalse(voice.sessions[0].closed)
        self.assertEqual([e for e in events if isinstance(e, ev.Failed)], [])
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        sessions.stop("done")


class CoreDurableFirst(TestCase):
    """Model lines, caller turns and tool calls, over a store that holds its writes."""

    def setUp(self) -> None:
        self.h = Harness(self)
        self.h.provider.realtime_calls = True
        self.call_id = self.h.answered_call()

    def live(self) -> Any:
        (live,) = self.h.manager.live_calls()
        return live

    def test_a_model_line_is_visible_only_once_stored(self):
        h = self.h
        h.store.holding = True
        stages = {"modelFirstAudio": 412.0, "total": 420.0}
        applying = h.provider.emit(
            ev.ModelSpeech(
                call_id=self.call_id, text="It is noon.", at=h.clock.seconds(), stages=stages
            )
        )
        self.assertNoResult(applying)
        self.assertNotIn("It is noon.", [e.text for e in self.live().transcript])
        self.assertNotIn("turn.latency", h.kinds())
        h.store.release_all()
        self.successResultOf(applying)
        entry = self.live().transcript[-1]
        self.assertEqual((entry.speaker, entry.text), (BOT, "It is noon."))
        self.assertEqual(h.stored(self.call_id).metadata["lastTurnLatency"], stages)
        self.assertIn("turn.latency", h.kinds())

    def test_a_caller_turn_is_stored_first_and_never_asks_for_a_reply(self):
        h = self.h
        asked = len(h.provider.requests)
        h.store.holding = True
        applying = h.provider.emit(ev.Speech(call_id=self.call_id, text="What time is it?"))
        self.assertNoResult(applying)
        self.assertNotEqual(self.live().transcript[-1].text, "What time is it?")
        h.store.release_all()
        self.successResultOf(applying)
        self.assertEqual(self.live().transcript[-1].speaker, USER)
        self.assertEqual(h.stored(self.call_id).transcript[-1].text, "What time is it?")
        (live,) = h.manager._registry
        self.assertEqual(live.turn.machine.state.name, "IDLE")
        self.assertNotIn("speak", h.provider.kinds()[asked:])

    def test_end_call_hangs_up_through_the_lifecycle(self):
        h = self.h
        h.ok(
            h.provider.emit(
                ev.ToolCall(call_id=self.call_id, tool_call_id="fc", name=END_CALL_TOOL)
            )
        )
        self.assertIn(("hangup", self.call_id, CallState.HANGUP_BOT), h.provider.requests)

    def test_a_failed_hang_up_answers_the_model_with_an_error(self):
        h = self.h
        h.provider.fail_hangup = ProviderError("carrier said no")
        h.ok(
            h.provider.emit(
                ev.ToolCall(call_id=self.call_id, tool_call_id="fc", name=END_CALL_TOOL)
            )
        )
        (result,) = [r for r in h.provider.requests if r[0] == "tool_result"]
        self.assertEqual(result[2], "fc")
        self.assertIn("carrier said no", result[3]["error"])
        self.assertEqual(len(h.manager.live_calls()), 1)

    def test_an_unknown_function_gets_an_error(self):
        h = self.h
        h.ok(h.provider.emit(ev.ToolCall(call_id=self.call_id, tool_call_id="x", name="launch")))
        (result,) = [r for r in h.provider.requests if r[0] == "tool_result"]
        self.assertEqual(result[3], {"error": "unknown function launch"})

    def test_consult_with_no_responder_is_an_error_not_a_crash(self):
        h = self.h
        h.ok(
            h.provider.emit(
                ev.ToolCall(
                    call_id=self.call_id,
                    tool_call_id="c",
                    name="openclaw_agent_consult",
                    arguments={"question": "Hi?"},
                )
            )
        )
        (result,) = [r for r in h.provider.requests if r[0] == "tool_result"]
        self.assertEqual(result[3], {"error": "the agent had no answer"})


def _realtime(config: dict[str, Any]) -> Any:
    return parse_config({"inboundPolicy": "open", "realtime": config}, None, {}).settings


class Building(TestCase):
    def test_the_provider_is_chosen_by_upstreams_priority(self):
        s = _realtime({"providers": {"openai": {}, "google": {}}}).realtime
        self.assertEqual(chosen_provider(s), "google")
        s = _realtime({"providers": {"openai": {}}}).realtime
        self.assertEqual(chosen_provider(s), "openai")
        s = _realtime({"provider": "openai", "providers": {"google": {}}}).realtime
        self.assertEqual(chosen_provider(s), "openai")

    def test_unknown_missing_or_unbuilt_vendors_skip_realtime(self):
        clock = Clock()
        self.assertIsNone(make_realtime(_realtime({"enabled": False}).realtime, clock))
        self.assertIsNone(make_realtime(_realtime({"enabled": True}).realtime, clock))
        unknown = _realtime({"enabled": True, "provider": "acme"}).realtime
        self.assertIsNone(make_realtime(unknown, clock))

    def test_the_vendor_class_is_built_with_its_block_and_the_reactor(self):
        import sys
        import types

        built = []
        module = types.ModuleType("voicecalld.realtime.openai")

        class OpenAIRealtimeVoice:
            name = "openai"

            def __init__(self, block, reactor):
                built.append((block, reactor))

        module.OpenAIRealtimeVoice = OpenAIRealtimeVoice
        real = sys.modules.get("voicecalld.realtime.openai")
        sys.modules["voicecalld.realtime.openai"] = module
        self.addCleanup(
            lambda: (
                sys.modules.pop("voicecalld.realtime.openai")
                if real is None
                else sys.modules.__setitem__("voicecalld.realtime.openai", real)
            )
        )
        clock = Clock()
        s = _realtime({"enabled": True, "providers": {"openai": {"model": "m"}}}).realtime
        voice = make_realtime(s, clock)
        self.assertIsInstance(voice, OpenAIRealtimeVoice)
        ((block, reactor),) = built
        self.assertIs(reactor, clock)
        self.assertIsNotNone(block)

    def test_the_daemon_wires_the_voice_into_the_carrier(self):
        import sys
        import types

        from voicecalld.providers.registry import make_provider

        module = types.ModuleType("voicecalld.realtime.google")

        class GeminiLiveVoice:
            name = "google"

            def __init__(self, block, reactor):
                self.block = block

        module.GeminiLiveVoice = GeminiLiveVoice
        real = sys.modules.get("voicecalld.realtime.google")
        sys.modules["voicecalld.realtime.google"] = module
        self.addCleanup(
            lambda: (
                sys.modules.pop("voicecalld.realtime.google")
                if real is None
                else sys.modules.__setitem__("voicecalld.realtime.google", real)
            )
        )
        loaded = parse_config(
            {
                "provider": "telnyx",
                "fromNumber": "+15550001111",
                "publicUrl": "https://voice.example.com/voice/webhook",
                "skipSignatureVerification": True,
                "inboundPolicy": "open",
                "telnyx": {"apiKey": "k", "connectionId": "c"},
                "realtime": {"enabled": True, "providers": {"google": {}, "openai": {}}},
            },
            None,
            {},
        )
        provider = make_provider(loaded, Clock())
        self.assertIsInstance(provider.realtime_voice, GeminiLiveVoice)
        self.assertIsNone(provider.tts)
        self.assertIsNone(provider.stt)
        self.assertTrue(provider.streaming)
        self.assertIn("/voice/stream/realtime", provider.web_resources())
        self.assertEqual(provider.stream_url(), "wss://voice.example.com/voice/stream/realtime")

    def test_the_stream_path_defaults_beside_the_webhook(self):
        self.assertEqual(realtime_stream_path(_realtime({})), "/voice/stream/realtime")
        s = parse_config({"serve": {"path": "/hooks/call"}}, None, {}).settings
        self.assertEqual(realtime_stream_path(s), "/hooks/call/stream/realtime")
        s = parse_config({"realtime": {"streamPath": "/rt"}}, None, {}).settings
        self.assertEqual(realtime_stream_path(s), "/rt")
