"""
Streamed TTS against fake OpenAI and ElevenLabs servers, in memory (treq's
C{StubTreq} and a L{Clock}: no sockets, no real time), and provider choice.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from treq.client import HTTPClient
from treq.testing import StubTreq
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent
from zope.interface.verify import verifyObject

from tests.fakes.tts_servers import (
    FakeTtsServer,
    elevenlabs_error,
    elevenlabs_script,
    openai_error,
    openai_script,
    sine_pcm,
    sine_ulaw,
    split,
)
from voicecalld.config.model import TtsSettings
from voicecalld.config.schema import structure
from voicecalld.media.codec import ulaw_decode
from voicecalld.voice.tts import ITTS, Synthesis, TtsError
from voicecalld.voice.tts_elevenlabs import ElevenLabsTTS
from voicecalld.voice.tts_factory import FallbackTTS, make_tts
from voicecalld.voice.tts_openai import OpenAITTS


def tts_settings(raw: dict[str, Any]) -> TtsSettings:
    """Validated C{tts} config, as the daemon builds it."""
    return structure(TtsSettings, raw, (), [])


class Audio:
    """An C{on_audio} that keeps what it is given and can say when the first chunk came."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.first: Deferred[None] = Deferred()

    def __call__(self, ulaw: bytes) -> None:
        self.chunks.append(ulaw)
        if not self.first.called:
            self.first.callback(None)

    @property
    def data(self) -> bytes:
        return b"".join(self.chunks)


class LiveFakeTestCase(TestCase):
    """
    Each test gets a fake vendor server reached through C{StubTreq}, in memory;
    the fake's chunk timers and the clients' timeouts share one L{Clock}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.server = FakeTtsServer(self.clock)
        self.http = StubTreq(self.server.resource())

    def pump(self) -> None:
        """Deliver everything written on both ends, and every chunk that is due now."""
        for _ in range(10_000):
            self.http.flush()
            now = self.clock.seconds()
            if not any(call.getTime() <= now for call in self.clock.getDelayedCalls()):
                return
            self.clock.advance(0)
        raise AssertionError("the fake never stopped sending")

    def result(self, d: Deferred) -> Any:
        """The result of C{d} once everything has been delivered."""
        self.pump()
        return self.successResultOf(d)

    def failure(self, d: Deferred, *kinds: type[BaseException]) -> Any:
        """The exception C{d} failed with once everything has been delivered."""
        self.pump()
        return self.failureResultOf(d, *kinds).value

    def ended(self, index: int = 0) -> bool:
        """Whether the fake's C{index}th request ended with its connection lost."""
        self.pump()
        return self.successResultOf(self.server.requests[index].ended)

    def settings(self, openai: dict | None = None, elevenlabs: dict | None = None, **top):
        providers = {}
        if openai is not None:
            providers["openai"] = {"baseUrl": self.server.openai_base_url, **openai}
        if elevenlabs is not None:
            providers["elevenlabs"] = {"baseUrl": self.server.base_url, **elevenlabs}
        return tts_settings({"providers": providers, **top})

    def openai(self, timeout: float = 30.0, **config: Any) -> OpenAITTS:
        settings = self.settings(openai={"apiKey": "sk-test", **config}).provider_settings("openai")
        return OpenAITTS(settings, self.clock, http=self.http, timeout=timeout)

    def elevenlabs(self, timeout: float = 30.0, **config: Any) -> ElevenLabsTTS:
        raw = {"apiKey": "xi-test", **config}
        settings = self.settings(elevenlabs=raw).provider_settings("elevenlabs")
        return ElevenLabsTTS(settings, self.clock, http=self.http, timeout=timeout)


class StreamingTests(LiveFakeTestCase):
    """Audio is handed on as it arrives, and has the right shape."""

    def test_openai_audio_arrives_before_the_vendor_finishes(self):
        release: Deferred[None] = Deferred()
        self.server.openai = openai_script(hold_last=release)
        audio = Audio()
        d = self.openai().synthesize("Hello there", audio)
        self.pump()
        self.successResultOf(audio.first)
        self.assertNoResult(d)
        self.assertEqual(self.server.requests[0].chunks_sent, 3)
        release.callback(None)
        synthesis = self.result(d)
        self.assertIsInstance(synthesis, Synthesis)
        self.assertEqual((synthesis.provider, synthesis.text), ("openai", "Hello there"))
        self.assertEqual(synthesis.audio_bytes, len(audio.data))
        self.assertLessEqual(synthesis.requested_at, synthesis.first_byte_at)
        self.assertLessEqual(synthesis.first_byte_at, synthesis.finished_at)

    def test_elevenlabs_audio_arrives_before_the_vendor_finishes(self):
        release: Deferred[None] = Deferred()
        self.server.elevenlabs = elevenlabs_script(hold_last=release)
        audio = Audio()
        d = self.elevenlabs().synthesize("Hello there", audio)
        self.pump()
        self.successResultOf(audio.first)
        self.assertNoResult(d)
        release.callback(None)
        self.assertEqual(self.result(d).provider, "elevenlabs")

    def test_first_byte_and_finish_times_come_from_the_clock(self):
        self.server.openai = openai_script(delay=0.25)
        self.clock.advance(100)
        d = self.openai().synthesize("Hi", Audio())
        self.pump()
        for _ in range(4):
            self.clock.advance(0.25)
            self.pump()
        synthesis = self.successResultOf(d)
        self.assertEqual(synthesis.requested_at, 100)
        self.assertEqual(synthesis.first_byte_at, 100)
        self.assertEqual(synthesis.finished_at, 101)

    def test_openai_24khz_becomes_8khz_mu_law_with_the_tone_kept(self):
        self.server.openai = openai_script(chunks=split(sine_pcm(1.0, freq=500), 7))
        audio = Audio()
        synthesis = self.result(self.openai().synthesize("One second", audio))
        self.assertApproximates(len(audio.data), 8000, 8)
        self.assertEqual(synthesis.audio_bytes, len(audio.data))
        pcm = np.frombuffer(ulaw_decode(audio.data), dtype="<i2")[200:-200].astype(float)
        peak = np.argmax(np.abs(np.fft.rfft(pcm))) * 8000 / len(pcm)
        self.assertApproximates(peak, 500, 10)

    def test_elevenlabs_mu_law_passes_through_unchanged(self):
        sent = sine_ulaw(0.3)
        self.server.elevenlabs = elevenlabs_script(chunks=split(sent, 3))
        audio = Audio()
        synthesis = self.result(self.elevenlabs().synthesize("Hi", audio))
        self.assertEqual(audio.data, sent)
        self.assertEqual(synthesis.audio_bytes, len(sent))

    def test_blank_text_gives_no_audio_and_no_request(self):
        audio = Audio()
        synthesis = self.successResultOf(self.openai().synthesize("  ", audio))
        self.assertEqual((synthesis.audio_bytes, audio.chunks), (0, []))
        self.pump()
        self.assertEqual(self.server.requests, [])

    def test_clients_provide_itts(self):
        for tts in (self.openai(), self.elevenlabs(), FallbackTTS([self.openai()])):
            self.assertTrue(verifyObject(ITTS, tts))


class RequestShapeTests(LiveFakeTestCase):
    """What the vendors are sent."""

    def test_openai_request(self):
        tts = self.openai(
            model="gpt-4o-mini-tts",
            speakerVoice="coral",
            speed=1.25,
            instructions="Warm and calm.",
        )
        self.result(tts.synthesize("Your table is ready.", Audio()))
        (request,) = self.server.requests
        self.assertEqual(request.path, "/v1/audio/speech")
        self.assertEqual(request.headers["authorization"], "Bearer sk-test")
        self.assertTrue(request.headers["content-type"].startswith("application/json"))
        self.assertEqual(
            request.body,
            {
                "model": "gpt-4o-mini-tts",
                "input": "Your table is ready.",
                "voice": "coral",
                "response_format": "pcm",
                "speed": 1.25,
                "instructions": "Warm and calm.",
            },
        )

    def test_openai_defaults_and_no_instructions_for_tts_1(self):
        self.result(self.openai(model="tts-1", instructions="ignored").synthesize("Hi", Audio()))
        (request,) = self.server.requests
        self.assertEqual(
            request.body,
            {"model": "tts-1", "input": "Hi", "voice": "alloy", "response_format": "pcm"},
        )

    def test_openai_compatible_server_without_key_and_trailing_slash(self):
        raw = {"baseUrl": self.server.openai_base_url + "/"}
        settings = tts_settings({"providers": {"openai": raw}}).provider_settings("openai")
        self.result(OpenAITTS(settings, self.clock, http=self.http).synthesize("Hi", Audio()))
        (request,) = self.server.requests
        self.assertEqual(request.path, "/v1/audio/speech")
        self.assertNotIn("authorization", request.headers)

    def test_elevenlabs_request(self):
        tts = self.elevenlabs(
            speakerVoiceId="voice123",
            modelId="eleven_flash_v2_5",
            seed=7,
            languageCode="en",
            applyTextNormalization="on",
            voiceSettings={"stability": 0.4, "similarityBoost": 0.8, "useSpeakerBoost": True},
        )
        self.result(tts.synthesize("Your table is ready.", Audio()))
        (request,) = self.server.requests
        self.assertEqual(request.path, "/v1/text-to-speech/voice123/stream")
        self.assertEqual(request.args, {"output_format": ["ulaw_8000"]})
        self.assertEqual(request.headers["xi-api-key"], "xi-test")
        self.assertNotIn("authorization", request.headers)
        self.assertEqual(
            request.body,
            {
                "text": "Your table is ready.",
                "model_id": "eleven_flash_v2_5",
                "voice_settings": {
                    "stability": 0.4,
                    "similarity_boost": 0.8,
                    "use_speaker_boost": True,
                },
                "seed": 7,
                "language_code": "en",
                "apply_text_normalization": "on",
            },
        )

    def test_elevenlabs_defaults(self):
        self.result(self.elevenlabs().synthesize("Hi", Audio()))
        (request,) = self.server.requests
        self.assertEqual(request.path, "/v1/text-to-speech/pMsXgVXv3BLzUgSXRplE/stream")
        self.assertEqual(request.body, {"text": "Hi", "model_id": "eleven_multilingual_v2"})


class FailureTests(LiveFakeTestCase):
    """Errors become TtsError with a message users may see."""

    def test_openai_http_error_carries_the_vendor_message(self):
        message = "Incorrect API key provided: sk-te**st."
        self.server.openai = openai_script(status=401, error=openai_error(message))
        audio = Audio()
        error = self.failure(self.openai().synthesize("Hi", audio), TtsError)
        self.assertEqual(str(error), f"openai TTS failed: HTTP 401: {message}")
        self.assertEqual((error.provider, error.status), ("openai", 401))
        self.assertEqual(audio.chunks, [])

    def test_elevenlabs_http_error_carries_the_vendor_message(self):
        error_body = elevenlabs_error("Voice not found", "voice_not_found")
        self.server.elevenlabs = elevenlabs_script(status=404, error=error_body)
        error = self.failure(self.elevenlabs().synthesize("Hi", Audio()), TtsError)
        self.assertEqual(str(error), "elevenlabs TTS failed: HTTP 404: Voice not found")

    def test_a_key_echoed_by_the_vendor_is_scrubbed(self):
        error_body = openai_error("Key sk-test is revoked")
        self.server.openai = openai_script(status=403, error=error_body)
        error = self.failure(self.openai().synthesize("Hi", Audio()), TtsError)
        self.assertNotIn("sk-test", str(error))
        self.assertIn("<redacted>", str(error))

    def test_mid_stream_drop_fails_after_partial_audio(self):
        self.server.openai = openai_script(drop_after=2)
        audio = Audio()
        error = self.failure(self.openai().synthesize("Hi", audio), TtsError)
        self.assertIn("audio stream broke", str(error))
        self.assertGreater(len(audio.data), 0)
        self.assertLess(len(audio.data), 4000)

    def test_connection_refused(self):
        memory = MemoryReactorClock()
        raw = {"apiKey": "sk-test", "baseUrl": "http://127.0.0.1:9/v1"}
        settings = tts_settings({"providers": {"openai": raw}}).provider_settings("openai")
        tts = OpenAITTS(settings, memory, http=HTTPClient(Agent(memory)))
        d = tts.synthesize("Hi", Audio())
        ((host, port, factory, _timeout, _bind),) = memory.tcpClients
        self.assertEqual((host, port), ("127.0.0.1", 9))
        factory.clientConnectionFailed(None, Failure(ConnectionRefusedError()))
        memory.advance(1)  # the name endpoint gives up on its last address
        error = self.failureResultOf(d, TtsError).value
        self.assertIn("refused", str(error))

    def test_json_instead_of_audio_is_a_malformed_stream(self):
        self.server.openai = openai_script(content_type="application/json", chunks=[b"{}"])
        error = self.failure(self.openai().synthesize("Hi", Audio()), TtsError)
        self.assertIn("malformed stream", str(error))

    def test_an_empty_answer_is_an_error(self):
        self.server.elevenlabs = elevenlabs_script(chunks=[])
        error = self.failure(self.elevenlabs().synthesize("Hi", Audio()), TtsError)
        self.assertIn("no audio", str(error))

    def test_a_failing_on_audio_stops_the_stream(self):
        release: Deferred[None] = Deferred()
        self.server.openai = openai_script(hold_last=release)

        def on_audio(ulaw: bytes) -> None:
            raise ZeroDivisionError()

        self.failure(self.openai().synthesize("Hi", on_audio), ZeroDivisionError)
        self.assertTrue(self.ended())


class TimeoutTests(LiveFakeTestCase):
    """The timeout bounds the wait for headers and for each next chunk."""

    def test_no_answer_times_out(self):
        self.server.openai = openai_script(hold_headers=Deferred())
        audio = Audio()
        d = self.openai(timeout=5).synthesize("Hi", audio)
        self.pump()
        self.clock.advance(4.9)
        self.assertNoResult(d)
        self.clock.advance(0.1)
        error = self.failure(d, TtsError)
        self.assertEqual(
            str(error), "openai TTS failed: timed out after 5 s waiting for the vendor"
        )
        self.assertEqual(audio.chunks, [])
        self.assertTrue(self.ended())

    def test_a_stall_mid_stream_times_out(self):
        self.server.openai = openai_script(hold_last=Deferred())
        audio = Audio()
        d = self.openai(timeout=5).synthesize("Hi", audio)
        self.pump()
        self.successResultOf(audio.first)
        self.clock.advance(4.9)
        self.assertNoResult(d)
        self.clock.advance(0.1)
        error = self.failure(d, TtsError)
        self.assertIn("timed out after 5 s mid-stream", str(error))
        self.assertTrue(self.ended())

    def test_the_timeout_comes_from_the_config(self):
        self.server.openai = openai_script(hold_headers=Deferred())
        raw = {
            "timeoutMs": 2500,
            "providers": {"openai": {"apiKey": "k", "baseUrl": "http://x/v1"}},
        }
        d = make_tts(tts_settings(raw), self.clock, http=self.http).synthesize("Hi", Audio())
        self.pump()
        self.clock.advance(2.499)
        self.assertNoResult(d)
        self.clock.advance(0.001)
        error = self.failure(d, TtsError)
        self.assertIn("timed out after 2.5 s", str(error))


class CancelTests(LiveFakeTestCase):
    """Cancelling stops audio at once and closes the connection."""

    def test_cancel_mid_stream(self):
        release: Deferred[None] = Deferred()
        self.server.openai = openai_script(hold_last=release)
        audio = Audio()
        d = self.openai().synthesize("Hi", audio)
        self.pump()
        self.successResultOf(audio.first)
        delivered = len(audio.chunks)
        d.cancel()
        self.failure(d, CancelledError)
        self.assertTrue(self.ended())
        release.callback(None)
        self.pump()
        self.assertEqual(len(audio.chunks), delivered)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_cancel_before_the_answer(self):
        hold: Deferred[None] = Deferred()
        self.server.elevenlabs = elevenlabs_script(hold_headers=hold)
        audio = Audio()
        d = self.elevenlabs().synthesize("Hi", audio)
        d.cancel()
        self.failure(d, CancelledError)
        self.assertEqual(audio.chunks, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])


class FallbackTests(LiveFakeTestCase):
    """FallbackTTS tries the next provider only when nothing was said yet."""

    def both(self, **top: Any) -> Any:
        settings = self.settings(openai={"apiKey": "sk-test"}, elevenlabs={"apiKey": "xi"}, **top)
        return make_tts(settings, self.clock, http=self.http)

    def test_falls_back_when_the_first_fails_before_audio(self):
        logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.server.openai = openai_script(status=500, error=openai_error("Server error", "x"))
        audio = Audio()
        tts = self.both()
        self.assertIsInstance(tts, FallbackTTS)
        synthesis = self.result(tts.synthesize("Hi", audio))
        self.assertEqual(synthesis.provider, "elevenlabs")
        self.assertEqual([r.vendor for r in self.server.requests], ["openai", "elevenlabs"])
        self.assertEqual(len(audio.data), synthesis.audio_bytes)
        texts = [formatEvent(e) for e in logged if "fallback" in e.get("log_format", "")]
        self.assertEqual(len(texts), 1)
        self.assertTrue(texts[0].startswith("TTS fallback used from=openai to=elevenlabs"))
        self.assertIn("HTTP 500: Server error", texts[0])

    def test_no_fallback_after_partial_audio(self):
        self.server.elevenlabs = elevenlabs_script(drop_after=2)
        audio = Audio()
        tts = self.both(provider="elevenlabs")
        self.failure(tts.synthesize("Hi", audio), TtsError)
        self.assertEqual([r.vendor for r in self.server.requests], ["elevenlabs"])
        self.assertGreater(len(audio.data), 0)

    def test_the_last_failure_is_reported(self):
        self.server.openai = openai_script(status=500, error=openai_error("down"))
        self.server.elevenlabs = elevenlabs_script(status=401, error=elevenlabs_error("bad key"))
        error = self.failure(self.both().synthesize("Hi", Audio()), TtsError)
        self.assertEqual(str(error), "elevenlabs TTS failed: HTTP 401: bad key")

    def test_cancel_reaches_the_provider_speaking(self):
        release: Deferred[None] = Deferred()
        self.server.openai = openai_script(hold_last=release)
        audio = Audio()
        d = self.both().synthesize("Hi", audio)
        self.pump()
        self.successResultOf(audio.first)
        d.cancel()
        self.failure(d, CancelledError)
        self.assertTrue(self.ended())
        self.assertEqual(len(self.server.requests), 1)


class ProviderChoiceTests(TestCase):
    """make_tts picks providers as upstream does (no network here)."""

    def choose(self, raw: dict[str, Any]) -> tuple[list[str] | None, list[str]]:
        logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        tts = make_tts(tts_settings(raw), Clock(), http=object())
        names = None
        if tts is not None:
            names = [p.name for p in tts.chain] if isinstance(tts, FallbackTTS) else [tts.name]
        return names, [formatEvent(e) for e in logged if e.get("log_level").name == "warn"]

    def test_choice_table(self):
        key = {"apiKey": "k"}
        local = {"baseUrl": "http://127.0.0.1:8000/v1"}
        cases = [
            ({"provider": "openai", "providers": {"openai": key}}, ["openai"], []),
            ({"providers": {"openai": key, "elevenlabs": key}}, ["openai", "elevenlabs"], []),
            (
                {"provider": "elevenlabs", "providers": {"openai": key, "elevenlabs": key}},
                ["elevenlabs", "openai"],
                [],
            ),
            ({"providers": {"elevenlabs": key}}, ["elevenlabs"], []),
            ({"providers": {"openai": local}}, ["openai"], []),
            (
                {"provider": "edge", "providers": {"edge": {}, "openai": key}},
                ["openai"],
                ["TTS providers skipped for calls (no telephony audio): edge"],
            ),
            (
                {"provider": "microsoft", "providers": {"microsoft": {}, "elevenlabs": key}},
                ["elevenlabs"],
                ["TTS providers skipped for calls (no telephony audio): microsoft"],
            ),
            (
                {"provider": "google", "providers": {"edge": {}, "openai": key}},
                ["openai"],
                ["TTS providers skipped for calls (no telephony audio): google, edge"],
            ),
            (
                {"provider": "elevenlabs", "providers": {"openai": key}},
                ["openai"],
                ["TTS provider elevenlabs is not usable (elevenlabs has no apiKey); using openai"],
            ),
            (
                {"providers": {"openai": {"model": "tts-1"}}},
                None,
                ["No TTS for calls: openai has no apiKey or baseUrl; elevenlabs has no apiKey"],
            ),
            (
                {"provider": "edge", "providers": {"edge": {}}},
                None,
                [
                    "TTS providers skipped for calls (no telephony audio): edge",
                    "No TTS for calls: openai has no apiKey or baseUrl; elevenlabs has no apiKey",
                ],
            ),
        ]
        for raw, names, warnings in cases:
            with self.subTest(raw=raw):
                self.assertEqual(self.choose(raw), (names, warnings))

    def test_keys_are_never_logged(self):
        logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        raw = {"provider": "edge", "providers": {"edge": {}, "openai": {"apiKey": "sk-secret"}}}
        make_tts(tts_settings(raw), Clock())
        for event in logged:
            self.assertNotIn("sk-secret", formatEvent(event) + repr(event))
