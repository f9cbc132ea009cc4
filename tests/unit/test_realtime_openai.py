"""
OpenAI Realtime speech-to-speech: our real client against a fake vendor on
127.0.0.1 (real reactor, bounded waits), its config block, and its audio.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from tests.fakes.openai_s2s import FakeS2SServer
from tests.unit.vendor_rigs import RealtimeRecorder, Waitable
from voicecalld.config import parse_config
from voicecalld.config.loader import ConfigError
from voicecalld.config.model import OPENAI_S2S_URL, OpenAIRealtimeSettings
from voicecalld.config.secret import Secret
from voicecalld.media.codec import ulaw_decode, ulaw_encode
from voicecalld.realtime.interface import (
    IRealtimeSession,
    IRealtimeVoice,
    RealtimeSetup,
    RealtimeTool,
)
from voicecalld.realtime.openai import (
    BATCH_BYTES,
    CONNECT_TIMEOUT,
    MAX_BUFFER_BYTES,
    OpenAIRealtimeVoice,
    session_url,
)

KEY = "sk-test-not-a-real-key"
FRAME = 160  # 20 ms of 8 kHz mu-law

SETUP = RealtimeSetup(
    instructions="You answer the phone for Anke's bakery.",
    tools=(
        RealtimeTool(
            "openclaw_end_call",
            "Hang up after your last words.",
            {"type": "object", "properties": {}},
        ),
        RealtimeTool(
            "lookup_order",
            "Find an order by its number.",
            {
                "type": "object",
                "properties": {"number": {"type": "string"}},
                "required": ["number"],
            },
        ),
    ),
    call_id="call-1",
)


def tone(rate: int, seconds: float, hz: float = 440.0, amplitude: int = 8000) -> bytes:
    """A sine as s16le PCM."""
    t = np.arange(int(rate * seconds)) / rate
    return (amplitude * np.sin(2 * math.pi * hz * t)).astype("<i2").tobytes()


def rms(pcm: bytes) -> float:
    """Root mean square of s16le PCM."""
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    return float(np.sqrt(np.mean(samples**2)))


def frames_of(ulaw: bytes) -> list[bytes]:
    """C{ulaw} cut into 20 ms frames."""
    return [ulaw[i : i + FRAME] for i in range(0, len(ulaw), FRAME)]


class RecordingListener(Waitable, RealtimeRecorder):
    """Keeps every listener call, in order, as a tuple."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[Any, ...]] = []
        self.tokens: list[str | None] = []

    def record(self, *event: Any) -> None:
        self.events.append(event)
        self.changed()

    def kinds(self) -> list[str]:
        """The kind of every call except audio, in order."""
        return [e[0] for e in self.events if e[0] != "audio"]

    def of(self, kind: str) -> list[tuple[Any, ...]]:
        """The arguments of every call of one kind."""
        return [e[1:] for e in self.events if e[0] == kind]

    def heard(self) -> bytes:
        """All model audio so far."""
        return b"".join(a for (a,) in self.of("audio"))

    def saw(self, kind: str, n: int = 1) -> Deferred:
        """Fires once C{kind} has been called C{n} times."""
        return self.when(lambda: len(self.of(kind)) >= n)


def settings(**overrides: Any) -> OpenAIRealtimeSettings:
    """OpenAI realtime settings with a test key and non-default tuning."""
    values: dict[str, Any] = {
        "api_key": Secret(KEY),
        "voice": "marin",
        "vad_threshold": 0.6,
        "silence_duration_ms": 450,
        "prefix_padding_ms": 250,
    }
    values.update(overrides)
    return OpenAIRealtimeSettings(**values)


class LiveTests(TestCase):
    """The real client and the fake vendor over real sockets on 127.0.0.1."""

    timeout = 10

    @inlineCallbacks
    def setUp(self):
        self.fake = FakeS2SServer(reactor)
        yield self.fake.start()
        self.addCleanup(self.fake.stop)
        self.listener = RecordingListener()
        self.logs: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.logs.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.logs.append)

    def assertNear(self, value: float, expected: float, within: float) -> None:
        """C{value} is within C{within} of C{expected}."""
        self.assertTrue(abs(value - expected) <= within, f"{value} is not {expected} ± {within}")

    def open(self, clock: Any = None, setup: RealtimeSetup = SETUP, **overrides: Any) -> Any:
        voice = OpenAIRealtimeVoice(settings(base_url=self.fake.url, **overrides), reactor, clock)
        session = voice.open_session(self.listener, setup)
        self.addCleanup(session.close)
        return session

    @inlineCallbacks
    def ready(self, **overrides: Any) -> Any:
        session = self.open(**overrides)
        yield self.listener.saw("ready")
        return session

    @inlineCallbacks
    def test_connects_and_configures_the_session(self):
        """Bearer key, model in the query, the GA realtime session.update, then ready."""
        session = yield self.ready(reasoning_effort="low")
        self.assertEqual(self.fake.authorization, f"Bearer {KEY}")
        self.assertEqual(self.fake.paths, ["/v1/realtime"])
        self.assertEqual(self.fake.queries, [{"model": "gpt-realtime-2.1"}])
        (update,) = self.fake.session_updates
        self.assertEqual(
            update["session"],
            {
                "type": "realtime",
                "instructions": SETUP.instructions,
                "output_modalities": ["audio"],
                "audio": {
                    "input": {
                        "format": {"type": "audio/pcmu"},
                        "transcription": {"model": "gpt-4o-transcribe"},
                        "turn_detection": {
                            "type": "server_vad",
                            "threshold": 0.6,
                            "prefix_padding_ms": 250,
                            "silence_duration_ms": 450,
                            "create_response": True,
                            "interrupt_response": True,
                        },
                    },
                    "output": {"format": {"type": "audio/pcmu"}, "voice": "marin"},
                },
                "tools": [
                    {
                        "type": "function",
                        "name": "openclaw_end_call",
                        "description": "Hang up after your last words.",
                        "parameters": {"type": "object", "properties": {}},
                    },
                    {
                        "type": "function",
                        "name": "lookup_order",
                        "description": "Find an order by its number.",
                        "parameters": {
                            "type": "object",
                            "properties": {"number": {"type": "string"}},
                            "required": ["number"],
                        },
                    },
                ],
                "tool_choice": "auto",
                "reasoning": {"effort": "low"},
            },
        )
        self.assertEqual(session.state, "ready")
        self.assertEqual(self.listener.kinds(), ["ready"])
        codes = [e.get("code") for e in self.logs if "code" in e]
        self.assertIn("realtime.ready", codes)
        for event in self.logs:
            self.assertNotIn(KEY, formatEvent(event))
            self.assertNotIn(KEY, repr(event))

    @inlineCallbacks
    def test_pcm16_asks_for_24_khz_pcm_both_ways(self):
        """C{audioFormat: pcm16} names audio/pcm at 24 kHz for input and output."""
        yield self.ready(audio_format="pcm16")
        audio = self.fake.session_updates[0]["session"]["audio"]
        pcm = {"type": "audio/pcm", "rate": 24000}
        self.assertEqual((audio["input"]["format"], audio["output"]["format"]), (pcm, pcm))

    @inlineCallbacks
    def test_no_tools_no_tool_choice(self):
        """A setup without tools sends neither C{tools} nor C{tool_choice}."""
        self.open(setup=RealtimeSetup(instructions="Hi"))
        yield self.listener.saw("ready")
        session = self.fake.session_updates[0]["session"]
        self.assertNotIn("tools", session)
        self.assertNotIn("tool_choice", session)
        self.assertNotIn("reasoning", session)

    @inlineCallbacks
    def test_audio_before_ready_is_sent_after_the_update_in_order(self):
        """Frames fed while connecting go out after session.update, before later ones."""
        self.fake.ack_updates = False
        session = self.open()
        early = bytes(range(256)) * 5
        for frame in frames_of(early):
            session.feed(frame)
        yield self.fake.nth_update(1)
        self.assertEqual(bytes(self.fake.audio), b"")
        self.fake.send({"type": "session.updated", "session": {}})
        yield self.fake.audio_at_least(len(early))
        late = bytes(reversed(range(256))) * 2
        for frame in frames_of(late):
            session.feed(frame)
        yield self.fake.audio_at_least(len(early) + len(late))
        self.assertEqual(bytes(self.fake.audio), early + late)
        kinds = [e["type"] for e in self.fake.received]
        self.assertEqual(kinds[0], "session.update")

    @inlineCallbacks
    def test_early_audio_is_bounded(self):
        """At most 5 s is kept before ready: the newest audio."""
        self.fake.ack_updates = False
        session = self.open()
        fed = bytes(i % 251 for i in range(MAX_BUFFER_BYTES + 8 * FRAME))
        for frame in frames_of(fed):
            session.feed(frame)
        yield self.fake.nth_update(1)
        self.fake.send({"type": "session.updated", "session": {}})
        yield self.fake.audio_at_least(MAX_BUFFER_BYTES)
        self.assertEqual(bytes(self.fake.audio), fed[-MAX_BUFFER_BYTES:])

    @inlineCallbacks
    def test_appends_carry_about_100_ms(self):
        """One second of 20 ms frames goes out as about ten appends, not fifty."""
        session = yield self.ready()
        fed = ulaw_encode(tone(8000, 1.0))
        for frame in frames_of(fed):
            session.feed(frame)
        yield self.fake.audio_at_least(len(fed))
        appends = self.fake.of("input_audio_buffer.append")
        self.assertEqual(len(appends), len(fed) // BATCH_BYTES)

    @inlineCallbacks
    def test_a_short_tail_is_sent_after_100_ms(self):
        """Less than a batch still goes out, once the batch time has passed."""
        session = yield self.ready()
        session.feed(b"\x7f" * FRAME)
        yield self.fake.audio_at_least(FRAME)
        self.assertEqual(len(self.fake.of("input_audio_buffer.append")), 1)

    @inlineCallbacks
    def test_pcmu_passes_the_bytes_untouched_both_ways(self):
        """In g711_ulaw mode the fake gets the caller's bytes and we play the model's bytes."""
        session = yield self.ready()
        fed = ulaw_encode(tone(8000, 0.5))
        for frame in frames_of(fed):
            session.feed(frame)
        yield self.fake.audio_at_least(len(fed))
        self.assertEqual(bytes(self.fake.audio), fed)
        spoken = ulaw_encode(tone(8000, 0.4, hz=660))
        self.fake.respond(spoken, chunks=5, transcript="Hello!")
        yield self.listener.saw("response_done")
        self.assertEqual(self.listener.heard(), spoken)

    @inlineCallbacks
    def test_pcm16_resamples_the_caller_to_24_khz(self):
        """In pcm16 mode a 1 s tone reaches the fake as ~1 s of 24 kHz PCM, as loud."""
        session = yield self.ready(audio_format="pcm16")
        source = tone(8000, 1.0)
        fed = ulaw_encode(source)
        for frame in frames_of(fed):
            session.feed(frame)
        expected = 24000 * 2
        yield self.fake.audio_at_least(int(expected * 0.95))
        got = bytes(self.fake.audio)
        self.assertLessEqual(len(got), expected)
        steady = got[24000 // 5 * 2 :]  # past the filter's start
        self.assertNear(rms(steady) / rms(ulaw_decode(fed)), 1.0, 0.05)

    @inlineCallbacks
    def test_pcm16_resamples_the_model_to_8_khz_ulaw(self):
        """In pcm16 mode 0.5 s of 24 kHz model audio plays as 0.5 s of 8 kHz mu-law, as loud."""
        yield self.ready(audio_format="pcm16")
        spoken = tone(24000, 0.5, hz=1000)
        self.fake.respond(spoken, chunks=5, transcript="Hello!")
        yield self.listener.saw("response_done")
        heard = self.listener.heard()
        self.assertNear(len(heard), 4000, 40)
        steady = ulaw_decode(heard)[800:-800]
        self.assertNear(rms(steady) / rms(spoken), 1.0, 0.05)

    @inlineCallbacks
    def test_a_turn_and_a_response_reach_the_listener(self):
        """Speech start/stop, the caller's words, then the model's response, in order."""
        yield self.ready()
        self.fake.speech_started()
        self.fake.speech_stopped()
        self.fake.completed("item_1", "   ")  # nothing said: not a transcript
        self.fake.completed("item_1", " Two rye loaves, please. ")
        self.fake.respond(b"\x55" * 800, chunks=2, transcript=" Two rye loaves it is. ")
        yield self.listener.saw("response_done")
        self.assertEqual(
            self.listener.kinds(),
            [
                "ready",
                "speech_started",
                "speech_stopped",
                "user_transcript",
                "response_started",
                "assistant_transcript",
                "response_done",
            ],
        )
        self.assertEqual(self.listener.of("user_transcript"), [("Two rye loaves, please.",)])
        self.assertEqual(self.listener.of("assistant_transcript"), [("Two rye loaves it is.",)])

    @inlineCallbacks
    def test_a_function_call_and_its_result(self):
        """A call reaches the listener decoded; the result goes back, then a new response."""
        session = yield self.ready()
        self.fake.function_call("call_7", "lookup_order", '{"number": "A-17"}')
        yield self.listener.saw("response_done")
        self.assertEqual(
            self.listener.of("tool_call"), [("call_7", "lookup_order", {"number": "A-17"})]
        )
        session.tool_result("call_7", {"status": "ready", "loaves": 2})
        yield self.fake.count("response.create", 1)
        (item,) = self.fake.items
        self.assertEqual(item["type"], "function_call_output")
        self.assertEqual(item["call_id"], "call_7")
        self.assertEqual(item["output"], '{"status": "ready", "loaves": 2}')
        kinds = [e["type"] for e in self.fake.received]
        self.assertEqual(kinds[-2:], ["conversation.item.create", "response.create"])

    @inlineCallbacks
    def test_bad_tool_arguments_are_an_empty_dict(self):
        """Arguments that are not a JSON object arrive as C{{}}; each call is told once."""
        yield self.ready()
        self.fake.function_call("call_1", "openclaw_end_call", "{not json", name_in_done=True)
        self.fake.function_call("call_2", "lookup_order", '["A-17"]')
        self.fake.function_call("call_3", "lookup_order", "")
        yield self.listener.saw("response_done", 3)
        self.assertEqual(
            self.listener.of("tool_call"),
            [
                ("call_1", "openclaw_end_call", {}),
                ("call_2", "lookup_order", {}),
                ("call_3", "lookup_order", {}),
            ],
        )

    @inlineCallbacks
    def test_a_tool_result_during_a_response_waits_for_its_end(self):
        """response.create is not sent while a response runs: it follows response.done."""
        session = yield self.ready()
        self.fake.start_response()
        yield self.listener.saw("response_started")
        session.tool_result("call_1", {"ok": True})
        yield self.fake.count("conversation.item.create", 1)
        self.assertEqual(self.fake.of("response.create"), [])
        self.fake.finish_response()
        yield self.fake.count("response.create", 1)

    @inlineCallbacks
    def test_speak_asks_for_a_response_saying_the_text(self):
        """speak() is a response.create whose instructions carry the text exactly."""
        session = yield self.ready()
        session.speak("  Hello, this is Anke's bakery.  ")
        session.speak("   ")
        yield self.fake.count("response.create", 1)
        (request,) = self.fake.response_requests
        self.assertTrue(request["instructions"].endswith("\n\nHello, this is Anke's bakery."))
        self.assertIn("word for word", request["instructions"])

    @inlineCallbacks
    def test_speak_before_ready_and_during_a_response_waits(self):
        """A greeting asked for while connecting goes out once ready; a second after the first."""
        self.fake.ack_updates = False
        session = self.open()
        session.speak("Hello.")
        session.speak("Anything else?")
        yield self.fake.nth_update(1)
        self.fake.send({"type": "session.updated", "session": {}})
        yield self.fake.count("response.create", 1)
        self.fake.respond(b"\xff" * 160, chunks=1)
        yield self.fake.count("response.create", 2)
        texts = [r["instructions"].rsplit("\n", 1)[-1] for r in self.fake.response_requests]
        self.assertEqual(texts, ["Hello.", "Anything else?"])

    @inlineCallbacks
    def test_our_response_is_told_by_its_token_even_when_the_vads_starts_first(self):
        """
        The VAD's response starts just as ours is asked: it is told without a
        token, ours is refused as a second active response, asked again after
        the VAD's ends, and told with speak's token (from response.metadata).
        """
        session = yield self.ready()
        token = session.speak("Your table is booked.")
        yield self.fake.count("response.create", 1)
        self.assertEqual(self.fake.response_requests[0]["metadata"], {"voicecalld": token})
        self.fake.start_response(own=True)
        self.fake.unanswered.pop(0)
        self.fake.error(
            "Conversation already has an active response in progress.",
            code="conversation_already_has_active_response",
        )
        self.fake.send_audio(b"\xff" * 160)
        self.fake.finish_response()
        yield self.fake.count("response.create", 2)
        self.fake.respond(b"\xff" * 160, chunks=1, transcript="Your table is booked.")
        yield self.listener.saw("response_started", 2)
        self.assertEqual(self.listener.tokens, [None, token])
        self.assertEqual(self.listener.of("problem"), [])
        self.assertEqual(
            self.fake.response_requests[1]["metadata"], self.fake.response_requests[0]["metadata"]
        )

    @inlineCallbacks
    def test_a_refusal_after_the_vads_response_ended_asks_again_at_once(self):
        """The refusal can trail the VAD response's done: ours is asked again then, not stalled."""
        session = yield self.ready()
        token = session.speak("Booked.")
        yield self.fake.count("response.create", 1)
        self.fake.start_response(own=True)
        self.fake.finish_response()
        self.fake.unanswered.pop(0)
        self.fake.error(
            "Conversation already has an active response in progress.",
            code="conversation_already_has_active_response",
        )
        yield self.fake.count("response.create", 2)
        self.fake.respond(b"\xff" * 160, chunks=1)
        yield self.listener.when(lambda: len(self.listener.tokens) == 2)
        self.assertEqual(self.listener.tokens, [None, token])

    @inlineCallbacks
    def test_relay_adds_the_agents_answer_and_asks_for_a_response(self):
        """relay(): a system note with the answer, then a response.create carrying the token."""
        session = yield self.ready()
        token = session.relay("  The shop opens at nine.  ")
        yield self.fake.count("response.create", 1)
        (item,) = [e["item"] for e in self.fake.of("conversation.item.create")]
        self.assertEqual((item["type"], item["role"]), ("message", "system"))
        self.assertTrue(item["content"][0]["text"].endswith("\n\nThe shop opens at nine."))
        self.assertEqual(self.fake.response_requests, [{"metadata": {"voicecalld": token}}])
        self.fake.respond(b"\xff" * 160, chunks=1)
        yield self.listener.saw("response_done")
        self.assertEqual(self.listener.tokens, [token])

    @inlineCallbacks
    def test_truncate_cancels_and_cuts_the_audio_item(self):
        """Barge-in: response.cancel, then a truncate at what was heard (never past what came)."""
        session = yield self.ready()
        self.fake.start_response()
        self.fake.send_audio(b"\x20" * 8000, chunks=4, item="item_out_9")  # 1000 ms
        yield self.listener.when(lambda: len(self.listener.heard()) == 8000)
        session.truncate(640)
        yield self.fake.when(lambda: self.fake.truncations)
        self.assertEqual(self.fake.cancels, 1)
        (cut,) = self.fake.truncations
        self.assertEqual(
            (cut["item_id"], cut["content_index"], cut["audio_end_ms"]), ("item_out_9", 0, 640)
        )
        # The cancelled response's late audio is not played.
        yield self.listener.saw("response_done")
        self.fake.start_response()
        self.fake.send_audio(b"\x21" * 800, item="item_out_10")
        self.fake.finish_response()
        yield self.listener.saw("response_done", 2)
        self.assertEqual(self.listener.heard(), b"\x20" * 8000 + b"\x21" * 800)
        session.truncate(5000)
        yield self.fake.when(lambda: len(self.fake.truncations) == 2)
        self.assertEqual(self.fake.truncations[1]["audio_end_ms"], 100)
        self.assertEqual(self.listener.of("problem"), [])

    @inlineCallbacks
    def test_truncate_after_the_vad_cancelled_is_quiet(self):
        """A cancel that finds no response (the VAD got there first) is no problem."""
        session = yield self.ready()
        self.fake.start_response()
        self.fake.send_audio(b"\x20" * 800)
        yield self.listener.saw("audio")
        self.fake.active_response = None  # the server cancelled it itself
        session.truncate(50)
        yield self.fake.when(lambda: self.fake.truncations)
        self.fake.error("a real problem", code="invalid_value")
        yield self.listener.saw("problem")
        self.assertEqual(self.listener.of("problem"), [("realtime error: a real problem",)])

    @inlineCallbacks
    def test_a_failed_response_is_a_problem(self):
        """response.done with status failed says why, and the response is over."""
        yield self.ready()
        self.fake.start_response()
        self.fake.finish_response("failed")
        yield self.listener.saw("response_done")
        self.assertEqual(
            self.listener.of("problem"), [("realtime response failed: the model failed",)]
        )

    @inlineCallbacks
    def test_vendor_close_ends_the_session_once(self):
        """The vendor closing the socket is closed(reason), once; nothing after, no reconnect."""
        session = yield self.ready()
        self.fake.close(4000, "internal error")
        yield self.listener.saw("closed")
        self.assertIn("internal error", self.listener.of("closed")[0][0])
        self.assertEqual(session.state, "closed")
        session.feed(b"\xff" * FRAME)
        session.speak("Hello?")
        yield session.close()
        self.assertEqual(self.listener.kinds(), ["ready", "closed"])
        self.assertEqual(self.fake.opened, 1)

    @inlineCallbacks
    def test_a_dropped_socket_ends_the_session(self):
        """A socket cut without a close handshake is closed(reason) too."""
        yield self.ready()
        self.fake.drop()
        yield self.listener.saw("closed")
        self.assertEqual(self.listener.kinds(), ["ready", "closed"])

    @inlineCallbacks
    def test_a_refused_handshake_ends_the_session(self):
        """An HTTP refusal (bad key, no quota) is closed(reason) before any ready."""
        self.fake.refuse(401)
        self.open()
        yield self.listener.saw("closed")
        self.assertEqual(self.listener.kinds(), ["closed"])
        self.assertIn("401", self.listener.of("closed")[0][0])

    @inlineCallbacks
    def test_nothing_listening_ends_the_session(self):
        """A refused TCP connection is closed(reason)."""
        url = self.fake.url
        yield self.fake.stop()
        voice = OpenAIRealtimeVoice(settings(base_url=url), reactor)
        session = voice.open_session(self.listener, SETUP)
        yield self.listener.saw("closed")
        self.assertIn("could not connect", self.listener.of("closed")[0][0])
        yield session.close()
        self.assertEqual(self.listener.kinds(), ["closed"])

    @inlineCallbacks
    def test_no_session_updated_times_out(self):
        """No session.updated within the connect timeout ends the session."""
        self.fake.ack_updates = False
        clock = Clock()
        self.open(clock=clock)
        yield self.fake.nth_update(1)
        clock.advance(CONNECT_TIMEOUT)
        yield self.listener.saw("closed")
        self.assertIn("no session within", self.listener.of("closed")[0][0])
        yield self.fake.when(lambda: not self.fake.connected)

    @inlineCallbacks
    def test_close_tells_closed_once_and_fires_when_the_socket_is_gone(self):
        """close(): closed once, the Deferred fires once the vendor saw the socket go."""
        session = yield self.ready()
        closing = session.close()
        again = session.close()
        self.assertEqual(self.listener.kinds(), ["ready", "closed"])
        yield closing
        yield again
        self.assertEqual(self.fake.closed, 1)
        self.assertEqual(self.listener.kinds(), ["ready", "closed"])

    @inlineCallbacks
    def test_close_while_connecting(self):
        """Closing before the socket is up stops the attempt; closed once."""
        session = self.open()
        yield session.close()
        self.assertEqual(self.listener.kinds(), ["closed"])
        yield self.fake.when(lambda: not self.fake.connected)

    @inlineCallbacks
    def test_listener_errors_are_contained(self):
        """A listener that raises does not stop the session."""
        session = yield self.ready()

        def boom(*args: Any) -> None:
            raise RuntimeError("listener bug")

        self.listener.response_started = boom
        self.fake.respond(b"\x55" * 160, chunks=1, transcript="Hi")
        yield self.listener.saw("response_done")
        self.assertEqual(session.state, "ready")
        self.flushLoggedErrors(RuntimeError)


class ObjectTests(TestCase):
    """The objects themselves: interfaces, URL, early exits."""

    def test_interfaces(self):
        memory = MemoryReactorClock()
        voice = OpenAIRealtimeVoice(settings(base_url="ws://127.0.0.1:9/v1/realtime"), memory)
        self.assertTrue(verifyObject(IRealtimeVoice, voice))
        self.assertEqual(voice.name, "openai")
        session = voice.open_session(RecordingListener(), SETUP)
        self.assertTrue(verifyObject(IRealtimeSession, session))
        session.close()

    def test_url(self):
        self.assertEqual(
            session_url(settings()), "wss://api.openai.com/v1/realtime?model=gpt-realtime-2.1"
        )
        self.assertEqual(
            session_url(settings(base_url="wss://proxy.example/v1/realtime?x=1", model="m 1")),
            "wss://proxy.example/v1/realtime?x=1&model=m+1",
        )

    def test_feed_never_raises(self):
        voice = OpenAIRealtimeVoice(
            settings(base_url="ws://127.0.0.1:9/v1/realtime"), MemoryReactorClock()
        )
        session = voice.open_session(RecordingListener(), SETUP)
        session.feed(None)  # type: ignore[arg-type]
        session.feed(b"\xff" * FRAME)
        session.close()
        self.flushLoggedErrors(TypeError)


def realtime(block: dict[str, Any], environ: dict[str, str] | None = None, **extra: Any) -> Any:
    base = {
        "provider": "twilio",
        "fromNumber": "+15550001111",
        "twilio": {"accountSid": "AC1", "authToken": "t"},
        "publicUrl": "https://voice.example.com/voice/webhook",
        "inboundPolicy": "open",
        "realtime": {"providers": {"openai": block}, **extra},
    }
    return parse_config(base, None, environ or {})


class ConfigTests(TestCase):
    """C{realtime.providers.openai} as a typed block."""

    def test_defaults(self):
        s = realtime({}).settings.realtime.providers["openai"]
        self.assertEqual(
            (s.base_url, s.model, s.chosen_voice, s.audio_format),
            (OPENAI_S2S_URL, "gpt-realtime-2.1", "alloy", "g711_ulaw"),
        )
        self.assertEqual(
            (s.vad_threshold, s.silence_duration_ms, s.prefix_padding_ms), (0.5, 500, 300)
        )
        self.assertEqual((s.temperature, s.reasoning_effort, s.api_key), (None, None, None))

    def test_values(self):
        block = {
            "apiKey": "sk-x",
            "baseUrl": "wss://proxy.example/v1/realtime",
            "model": "gpt-realtime-2.1-mini",
            "speakerVoice": "cedar",
            "vadThreshold": 0.7,
            "silenceDurationMs": 700,
            "prefixPaddingMs": 200,
            "temperature": 0.8,
            "reasoningEffort": "low",
            "audioFormat": "pcm16",
        }
        s = realtime(block).settings.realtime.providers["openai"]
        self.assertEqual(s.api_key.reveal(), "sk-x")
        self.assertEqual(s.chosen_voice, "cedar")
        self.assertEqual((s.temperature, s.reasoning_effort, s.audio_format), (0.8, "low", "pcm16"))
        both = realtime({"voice": "marin", "speakerVoice": "cedar"})
        self.assertEqual(both.settings.realtime.providers["openai"].chosen_voice, "cedar")

    def test_unknown_keys_are_noted_not_fatal(self):
        loaded = realtime({"azureEndpoint": "https://x.openai.azure.com", "model": "m"})
        self.assertEqual(loaded.settings.realtime.providers["openai"].model, "m")
        self.assertIn(
            "realtime.providers.openai.azureEndpoint",
            [".".join(n.path) for n in loaded.notes],
        )

    def test_bad_values_name_the_key(self):
        for block, key in (
            ({"audioFormat": "opus"}, "audioFormat"),
            ({"vadThreshold": 2}, "vadThreshold"),
            ({"baseUrl": "https://api.openai.com/v1/realtime"}, "baseUrl"),
            ({"reasoningEffort": "max"}, "reasoningEffort"),
        ):
            with self.assertRaises(ConfigError) as caught:
                realtime(block)
            (problem,) = caught.exception.problems
            self.assertEqual(".".join(problem.path), f"realtime.providers.openai.{key}")

    def test_key_from_the_environment(self):
        environ = {"OPENAI_API_KEY": "sk-env"}
        on = realtime({}, environ, enabled=True, provider="openai")
        self.assertEqual(on.settings.realtime.providers["openai"].api_key.reveal(), "sk-env")
        own = realtime({"apiKey": "sk-own"}, environ, enabled=True)
        self.assertEqual(own.settings.realtime.providers["openai"].api_key.reveal(), "sk-own")
        google = realtime({}, environ, enabled=True, provider="google")
        self.assertIsNone(google.settings.realtime.providers["openai"].api_key)
        off = realtime({}, environ)
        self.assertIsNone(off.settings.realtime.providers["openai"].api_key)
