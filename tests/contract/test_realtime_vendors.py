"""
Whole realtime calls with the real vendor clients: the carrier's rig (its
real provider, media stream, bridge and call manager against the carrier's
fake) and the real L{OpenAIRealtimeVoice} or L{GeminiLiveVoice}, configured
by C{realtime.providers.<id>.baseUrl} to talk to the vendor's fake on
127.0.0.1 in the vendor's own protocol.  Real reactor, bounded waits.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.trial.unittest import TestCase

from tests.contract.adapters import PlivoAdapter, TelnyxAdapter, TwilioAdapter
from tests.fakes.gemini_live import FakeGeminiLive
from tests.fakes.openai_s2s import FakeS2SServer
from tests.waiting import wait_for
from voicecalld.config import parse_config
from voicecalld.media.codec import ulaw_decode, ulaw_encode
from voicecalld.realtime.factory import make_realtime
from voicecalld.realtime.interface import CONSULT_TOOL, END_CALL_TOOL
from voicecalld.values.record import BOT, USER
from voicecalld.values.states import CallState

GREETING = "Hello, this is Anke's bakery calling about your order."
KEY = "sk-realtime-test-key"


def tone(rate: int, seconds: float, hz: float = 440.0, amplitude: int = 8000) -> bytes:
    """A sine as s16le PCM."""
    t = np.arange(int(rate * seconds)) / rate
    return (amplitude * np.sin(2 * math.pi * hz * t)).astype("<i2").tobytes()


def pitch(pcm: bytes, rate: int) -> float:
    """The strongest frequency in s16le PCM at C{rate}, in Hz."""
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    spectrum = np.abs(np.fft.rfft(samples))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[int(np.argmax(spectrum[1:])) + 1])


def rms(pcm: bytes) -> float:
    """Root mean square of s16le PCM."""
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    return float(np.sqrt(np.mean(samples**2))) if len(samples) else 0.0


#: 200 ms of the caller speaking, as the carrier sends it.
CALLER = ulaw_encode(tone(8000, 0.2, 300.0))


def voice_for(realtime: dict[str, Any]) -> Any:
    """The realtime voice the daemon builds from C{realtime} (the factory's choice)."""
    settings = parse_config(
        {
            "provider": "mock",
            "fromNumber": "+15550001111",
            "inboundPolicy": "open",
            "realtime": {"enabled": True, **realtime},
        },
        None,
        {},
    ).settings
    voice = make_realtime(settings.realtime, reactor)
    assert voice is not None
    return voice


class _Vendor:
    """What a scenario asks of the vendor's fake; one subclass per vendor."""

    name = ""

    def __init__(self, test: TestCase) -> None:
        self.test = test
        self.fake: Any = None

    @inlineCallbacks
    def start(self):
        self.fake = self.make()
        url = yield self.fake.start()
        self.test.addCleanup(self.fake.stop)
        return self.block(url)

    def make(self) -> Any:
        raise NotImplementedError

    def block(self, url: str) -> dict[str, Any]:
        """C{realtime} for the fake at C{url}."""
        raise NotImplementedError


class _OpenAI(_Vendor):
    """OpenAI Realtime (GA), in C{g711_ulaw} or C{pcm16}."""

    audio_format = "g711_ulaw"

    def make(self) -> FakeS2SServer:
        return FakeS2SServer(reactor)

    def block(self, url: str) -> dict[str, Any]:
        return {
            "provider": "openai",
            "providers": {
                "openai": {"apiKey": KEY, "baseUrl": url, "audioFormat": self.audio_format}
            },
        }

    def model_audio(self, seconds: float) -> bytes:
        """C{seconds} of the model's voice in the session's output format."""
        if self.audio_format == "pcm16":
            return tone(24000, seconds)
        return ulaw_encode(tone(8000, seconds))

    def bytes_per_ms(self) -> int:
        return 48 if self.audio_format == "pcm16" else 8

    def asked_to_say(self, n: int) -> Deferred:
        """Fires with the instructions of the C{n}th response.create."""
        d = self.fake.count("response.create", n)
        return d.addCallback(lambda _: self.fake.response_requests[n - 1].get("instructions", ""))

    def respond(self, text: str, seconds: float) -> None:
        self.fake.respond(self.model_audio(seconds), chunks=8, transcript=text)


class OpenAIUlaw(_OpenAI):
    name = "openai-g711_ulaw"


class OpenAIPcm16(_OpenAI):
    name = "openai-pcm16"
    audio_format = "pcm16"


class _Scenarios:
    """The whole-call scenarios, for one carrier adapter and one vendor."""

    timeout = 30
    adapter: Any = None
    vendor: Any = None

    @inlineCallbacks
    def answered(self, config: dict[str, Any] | None = None):
        """A conversation call placed, answered and streaming to the model; its parts."""
        self.v = self.vendor(self)
        block = yield self.v.start()
        realtime = {**block, **(config or {})}
        voice = voice_for(realtime)
        a = yield self.adapter(self).start({"realtime": realtime}, False, realtime=voice)
        record = yield a.place(GREETING, "conversation")
        call = yield a.fake.when_call(0)
        yield call.answer()
        stream = yield call.when_stream()
        return a, record, call, stream

    def live(self, a: Any) -> Any:
        (live,) = a.manager.live_calls()
        return live

    @inlineCallbacks
    def greeted(self, config: dict[str, Any] | None = None):
        a, record, call, stream = yield self.answered(config)
        said = yield self.v.asked_to_say(1)
        self.assertIn(GREETING, said)
        self.v.respond(GREETING, 0.6)
        yield stream.when_mark_echoed("r1:end")
        yield wait_for(lambda: self.live(a).state == CallState.LISTENING, what="listening")
        return a, record, call, stream

    @inlineCallbacks
    def test_greeting_turn_transcripts_speak_consult_and_end_call(self):
        a, record, call, stream = yield self.answered()
        fake = self.v.fake
        # The session as configured, then the greeting as the model's first response.
        yield fake.nth_update(1)
        (update,) = fake.session_updates
        audio = update["session"]["audio"]
        wanted = (
            {"type": "audio/pcm", "rate": 24000}
            if self.v.audio_format == "pcm16"
            else {"type": "audio/pcmu"}
        )
        self.assertEqual(audio["input"]["format"], wanted)
        self.assertEqual(audio["output"]["format"], wanted)
        tools = [t["name"] for t in update["session"]["tools"]]
        self.assertIn(END_CALL_TOOL, tools)
        self.assertIn(CONSULT_TOOL, tools)
        said = yield self.v.asked_to_say(1)
        self.assertIn(GREETING, said)
        before = len(stream.outbound_audio)
        self.v.respond(GREETING, 0.6)
        yield stream.when_mark_echoed("r1:end")
        heard = stream.outbound_audio[before:]
        self.assertLess(abs(len(heard) - 4800), 400)
        self.assertGreater(rms(ulaw_decode(heard)), 3000, "the model's voice, not silence")
        yield wait_for(lambda: self.live(a).state == CallState.LISTENING, what="listening")

        # The caller speaks: the vendor hears it in the session's format.
        yield stream.send_audio(CALLER)
        if self.v.audio_format == "pcm16":
            yield fake.audio_at_least(len(CALLER) * 6 - 600)
            self.assertGreater(rms(bytes(fake.audio)), 3000)
            self.assertLess(abs(pitch(bytes(fake.audio), 24000) - 300), 15)
        else:
            yield fake.audio_at_least(len(CALLER))
            self.assertEqual(bytes(fake.audio[: len(CALLER)]), CALLER)
        fake.speech_started()
        fake.speech_stopped()
        fake.completed("item_1", "When will my cake be ready?")
        yield wait_for(
            lambda: self.live(a).transcript[-1].speaker == USER, what="the caller's words"
        )
        self.v.respond("It is ready at noon.", 0.4)
        yield stream.when_mark_echoed("r2:end")
        yield wait_for(
            lambda: self.live(a).transcript[-1].text == "It is ready at noon.",
            what="the model's words",
        )

        # voicecall speak: said through the model.
        speaking = Deferred.fromCoroutine(a.manager.speak(record.call_id, "Your cake is boxed."))
        said = yield self.v.asked_to_say(2)
        self.assertIn("Your cake is boxed.", said)
        self.v.respond("Your cake is boxed.", 0.4)
        playback = yield speaking
        self.assertTrue(playback.complete)

        # A consult, answered by the responder, goes back as a function_call_output.
        asked = []

        def consult(record, question):
            asked.append(question)
            return succeed("The shop closes at six.")

        a.manager.replies.consult = consult
        fake.function_call("fc-consult", CONSULT_TOOL, json.dumps({"question": "Closing time?"}))
        yield fake.when(lambda: any(i.get("type") == "function_call_output" for i in fake.items))
        (output,) = [i for i in fake.items if i.get("type") == "function_call_output"]
        self.assertEqual(asked, ["Closing time?"])
        self.assertEqual(output["call_id"], "fc-consult")
        self.assertEqual(json.loads(output["output"]), {"answer": "The shop closes at six."})
        yield self.v.asked_to_say(3)  # the model is asked to go on with the answer

        # Last words and openclaw_end_call in one response: they play, then the hang-up.
        before = len(stream.outbound_audio)
        fake.start_response()
        fake.send_audio(self.v.model_audio(0.8), chunks=4, item="item_bye")
        fake.transcript("Goodbye!", item="item_bye")
        fc = {
            "id": "item_fc_bye",
            "type": "function_call",
            "status": "completed",
            "call_id": "fc-end",
            "name": END_CALL_TOOL,
            "arguments": "{}",
        }
        fake.finish_response(
            output=[{"id": "item_bye", "type": "message", "role": "assistant"}, fc]
        )
        yield call.when_ended()
        yield wait_for(lambda: not a.manager.live_calls(), what="the call's end")
        final = yield a.record(record.call_id)
        self.assertEqual(final.state, CallState.HANGUP_BOT)
        said = [(e.speaker, e.text) for e in final.transcript]
        self.assertEqual(said[0], (BOT, GREETING))
        self.assertIn((USER, "When will my cake be ready?"), said)
        self.assertEqual(said[-1], (BOT, "Goodbye!"))
        self.assertLess(abs(len(stream.outbound_audio) - before - 6400), 400)
        self.assertFalse(a.carrier_live(call))
        yield fake.when(lambda: not fake.connected)
        self.assertEqual(a.fake.errors, [])

    @inlineCallbacks
    def test_barge_in_clears_the_carrier_and_truncates_the_item(self):
        a, _record, _call, stream = yield self.greeted()
        fake = self.v.fake
        before = len(stream.outbound_audio)
        fake.start_response()
        fake.send_audio(self.v.model_audio(3.0), chunks=30, item="item_long")
        # The model is done generating (its words are known) long before they have played.
        fake.transcript("one two three four five six seven eight nine ten", item="item_long")
        yield stream.when_audio(before + 4000)
        fake.speech_started()
        yield stream.when_clear()
        yield fake.when(lambda: fake.truncations)
        (cut,) = fake.truncations
        self.assertEqual(cut["item_id"], "item_long")
        self.assertGreaterEqual(fake.cancels, 1)
        heard_ms = cut["audio_end_ms"]
        _at, dropped = stream.clears[0]
        played_ms = (len(stream.outbound_audio) - before - dropped) / 8
        self.assertGreater(heard_ms, 100)
        self.assertLess(heard_ms, 3000)
        self.assertLess(abs(heard_ms - played_ms), 250, (heard_ms, played_ms))
        # The cut response's words are kept as far as they were heard; the next one plays.
        yield wait_for(
            lambda: self.live(a).transcript[-1].interrupted, what="the cut reply in the record"
        )
        cut_text = self.live(a).transcript[-1].text
        self.assertTrue("one two three four five six seven eight nine ten".startswith(cut_text))
        self.assertLess(len(cut_text), 49)
        fake.completed("item_2", "Stop, please.")
        after = len(stream.outbound_audio)
        self.v.respond("Sorry, go ahead.", 0.4)
        yield wait_for(
            lambda: self.live(a).transcript[-1].text == "Sorry, go ahead.", what="the next reply"
        )
        self.assertLess(abs(len(stream.outbound_audio) - after - 3200), 400)
        said = [(e.speaker, e.text) for e in self.live(a).transcript]
        self.assertIn((USER, "Stop, please."), said)
        self.assertEqual(len(a.manager.live_calls()), 1)

    @inlineCallbacks
    def test_the_vendor_closing_the_session_hangs_up(self):
        a, record, call, _stream = yield self.greeted()
        self.v.fake.close(1011, "session expired")
        yield call.when_ended()
        yield wait_for(lambda: not a.manager.live_calls(), what="the call's end")
        final = yield a.record(record.call_id)
        self.assertEqual(final.state, CallState.ERROR)
        self.assertFalse(a.carrier_live(call))


class TwilioOpenAIUlaw(_Scenarios, TestCase):
    adapter = TwilioAdapter
    vendor = OpenAIUlaw

    @inlineCallbacks
    def test_a_failed_hang_up_is_told_to_the_model(self):
        a, _record, _call, _stream = yield self.greeted()
        fake = self.v.fake
        a.fake.fail_next("update", 500, 20500, "Internal error")
        fake.function_call("fc-end", END_CALL_TOOL, "{}")
        yield fake.when(lambda: any(i.get("call_id") == "fc-end" for i in fake.items))
        (output,) = [i for i in fake.items if i.get("call_id") == "fc-end"]
        self.assertEqual(output["type"], "function_call_output")
        self.assertIn("error", json.loads(output["output"]))
        self.assertEqual(len(a.manager.live_calls()), 1)
        self.assertEqual(self.live(a).state, CallState.LISTENING)


class TwilioOpenAIPcm16(_Scenarios, TestCase):
    adapter = TwilioAdapter
    vendor = OpenAIPcm16


class TelnyxOpenAIUlaw(_Scenarios, TestCase):
    adapter = TelnyxAdapter
    vendor = OpenAIUlaw


class TelnyxOpenAIPcm16(_Scenarios, TestCase):
    adapter = TelnyxAdapter
    vendor = OpenAIPcm16


class _GeminiScenarios:
    """The same calls with Gemini Live (BidiGenerateContent) as the model."""

    timeout = 30
    adapter: Any = None

    @inlineCallbacks
    def answered(self):
        self.gemini = FakeGeminiLive(reactor)
        url = yield self.gemini.start()
        self.addCleanup(self.gemini.stop)
        realtime = {"provider": "google", "providers": {"google": {"apiKey": KEY, "baseUrl": url}}}
        voice = voice_for(realtime)
        a = yield self.adapter(self).start({"realtime": realtime}, False, realtime=voice)
        record = yield a.place(GREETING, "conversation")
        call = yield a.fake.when_call(0)
        yield call.answer()
        stream = yield call.when_stream()
        return a, record, call, stream

    def live(self, a: Any) -> Any:
        (live,) = a.manager.live_calls()
        return live

    def asked_to_say(self, n: int) -> Deferred:
        """Fires with the text of the C{n}th clientContent turn."""
        fake = self.gemini
        d = fake.when(lambda: len(fake.messages("clientContent")) >= n)
        return d.addCallback(
            lambda _: fake.messages("clientContent")[n - 1]["turns"][0]["parts"][0]["text"]
        )

    def respond(self, text: str, seconds: float) -> None:
        pcm = tone(24000, seconds)
        step = 24000 * 2 // 10
        for start in range(0, len(pcm), step):
            self.gemini.model_audio(pcm[start : start + step])
        self.gemini.said(text)
        self.gemini.generation_complete()
        self.gemini.turn_complete()

    @inlineCallbacks
    def greeted(self):
        a, record, call, stream = yield self.answered()
        said = yield self.asked_to_say(1)
        self.assertIn(GREETING, said)
        self.respond(GREETING, 0.6)
        yield stream.when_mark_echoed("r1:end")
        yield wait_for(lambda: self.live(a).state == CallState.LISTENING, what="listening")
        return a, record, call, stream

    @inlineCallbacks
    def test_greeting_turn_transcripts_speak_consult_and_end_call(self):
        a, record, call, stream = yield self.answered()
        fake = self.gemini
        yield fake.when(lambda: fake.setups)
        (setup,) = fake.setups
        self.assertEqual(fake.requests[0].get("x-goog-api-key"), KEY)
        names = [f["name"] for t in setup["tools"] for f in t.get("functionDeclarations", [])]
        self.assertIn(END_CALL_TOOL, names)
        self.assertIn(CONSULT_TOOL, names)
        said = yield self.asked_to_say(1)
        self.assertIn(GREETING, said)
        self.respond(GREETING, 0.6)
        yield stream.when_mark_echoed("r1:end")
        self.assertLess(abs(len(stream.outbound_audio) - 4800), 400)
        self.assertGreater(rms(ulaw_decode(stream.outbound_audio)), 3000)
        yield wait_for(lambda: self.live(a).state == CallState.LISTENING, what="listening")

        # The caller's audio reaches Gemini as 16 kHz PCM.
        yield stream.send_audio(CALLER)
        yield fake.when(lambda: len(fake.audio) >= len(CALLER) * 2)
        self.assertGreater(rms(bytes(fake.audio)), 3000)
        self.assertLess(abs(pitch(bytes(fake.audio), 16000) - 300), 15)
        fake.heard("When will my cake")
        fake.heard(" be ready?")
        self.respond("It is ready at noon.", 0.4)
        yield stream.when_mark_echoed("r2:end")
        yield wait_for(
            lambda: self.live(a).transcript[-1].text == "It is ready at noon.",
            what="the model's words",
        )
        said = [(e.speaker, e.text) for e in self.live(a).transcript]
        self.assertIn((USER, "When will my cake be ready?"), said)

        speaking = Deferred.fromCoroutine(a.manager.speak(record.call_id, "Your cake is boxed."))
        said = yield self.asked_to_say(2)
        self.assertIn("Your cake is boxed.", said)
        self.respond("Your cake is boxed.", 0.4)
        playback = yield speaking
        self.assertTrue(playback.complete)

        asked = []
        a.manager.replies.consult = lambda record, q: asked.append(q) or succeed("Six o'clock.")
        fake.tool_call("fc-consult", CONSULT_TOOL, {"question": "Closing time?"})
        yield fake.when(lambda: fake.messages("toolResponse"))
        ((answer,),) = [m["functionResponses"] for m in fake.messages("toolResponse")]
        self.assertEqual(asked, ["Closing time?"])
        self.assertEqual(answer["id"], "fc-consult")
        self.assertEqual(answer["name"], CONSULT_TOOL)
        self.assertEqual(answer["response"], {"answer": "Six o'clock."})

        pcm = tone(24000, 0.8)
        fake.model_audio(pcm, text="Goodbye!")
        fake.tool_call("fc-end", END_CALL_TOOL, {})
        fake.turn_complete()
        yield call.when_ended()
        yield wait_for(lambda: not a.manager.live_calls(), what="the call's end")
        final = yield a.record(record.call_id)
        self.assertEqual(final.state, CallState.HANGUP_BOT)
        self.assertEqual(final.transcript[-1].text, "Goodbye!")
        self.assertGreaterEqual(len(stream.outbound_audio), 4800 + 3200 + 3200 + 6000)
        self.assertEqual(a.fake.errors, [])

    @inlineCallbacks
    def test_barge_in_clears_the_carrier(self):
        a, _record, _call, stream = yield self.greeted()
        before = len(stream.outbound_audio)
        pcm = tone(24000, 3.0)
        step = 24000 * 2 // 10
        for start in range(0, len(pcm), step):
            self.gemini.model_audio(pcm[start : start + step])
        yield stream.when_audio(before + 4000)
        self.gemini.said("one two three four five six seven eight nine ten")
        self.gemini.interrupted()
        yield stream.when_clear()
        # What Gemini still sends of the cut turn is not played.
        self.gemini.model_audio(tone(24000, 0.5))
        self.gemini.turn_complete()
        yield wait_for(
            lambda: self.live(a).transcript[-1].interrupted, what="the cut reply in the record"
        )
        self.gemini.heard("Stop, please.")
        after = len(stream.outbound_audio)
        self.respond("Sorry, go ahead.", 0.4)
        yield wait_for(
            lambda: self.live(a).transcript[-1].text == "Sorry, go ahead.", what="the next reply"
        )
        self.assertLess(abs(len(stream.outbound_audio) - after - 3200), 400)
        said = [(e.speaker, e.text) for e in self.live(a).transcript]
        self.assertIn((USER, "Stop, please."), said)
        self.assertEqual(len(a.manager.live_calls()), 1)

    @inlineCallbacks
    def test_the_vendor_closing_the_session_hangs_up(self):
        a, record, call, _stream = yield self.greeted()
        self.gemini.close(1011, "session expired")
        yield call.when_ended()
        yield wait_for(lambda: not a.manager.live_calls(), what="the call's end")
        final = yield a.record(record.call_id)
        self.assertEqual(final.state, CallState.ERROR)


class TwilioGemini(_GeminiScenarios, TestCase):
    adapter = TwilioAdapter


class TelnyxGemini(_GeminiScenarios, TestCase):
    adapter = TelnyxAdapter


class PlivoOpenAIUlaw(_Scenarios, TestCase):
    adapter = PlivoAdapter
    vendor = OpenAIUlaw


class PlivoGemini(_GeminiScenarios, TestCase):
    adapter = PlivoAdapter
