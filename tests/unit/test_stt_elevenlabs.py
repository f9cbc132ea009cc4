"""Streaming STT over ElevenLabs realtime: the real client against the fake, config, factory."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import TestCase

from tests.fakes.elevenlabs_stt import FakeElevenLabsSTTServer
from tests.unit.vendor_rigs import (
    LiveFakeCase,
    RecordingListener,
    ScriptedDials,
    SessionBasics,
    SttFactoryCase,
    delays,
    stub_protocol,
)
from voicecalld.config import ConfigError, parse_config
from voicecalld.config.model import ElevenLabsStreamingSettings, StreamingSettings
from voicecalld.config.secret import Secret
from voicecalld.voice.stt_elevenlabs import ElevenLabsRealtimeSTT, realtime_url
from voicecalld.voice.stt_factory import make_stt
from voicecalld.voice.stt_socket import CONNECT_TIMEOUT

KEY = "xi-test-not-a-real-key"
BATCH = 800  # 100 ms of 8 kHz mu-law


def eleven_settings(**overrides: Any) -> ElevenLabsStreamingSettings:
    """ElevenLabs settings with a test key pointing at the in-memory fake."""
    values: dict[str, Any] = {"api_key": Secret(KEY), "base_url": "ws://127.0.0.1:8443"}
    values.update(overrides)
    return ElevenLabsStreamingSettings(**values)


class LiveFakeTests(LiveFakeCase):
    """Our real client against the fake ElevenLabs, in memory, timers on a L{Clock}."""

    fake_class = FakeElevenLabsSTTServer

    def make_stt(self, **settings: Any) -> Any:
        return ElevenLabsRealtimeSTT(eleven_settings(**settings), self.net.reactor, self.clock)

    def test_handshake(self):
        """Path, query and the xi-api-key header as the API wants; the key in no log."""
        session = self.open(language_code="fr", vad_silence_threshold_secs=0.8)
        self.wait(self.logs.code_count("stt.open", 1))
        self.assertEqual(self.fake.api_key, KEY)
        self.assertEqual(self.fake.paths, ["/v1/speech-to-text/realtime"])
        self.assertEqual(
            self.fake.query,
            {
                "model_id": "scribe_v2_realtime",
                "audio_format": "ulaw_8000",
                "commit_strategy": "vad",
                "language_code": "fr",
                "vad_silence_threshold_secs": "0.8",
            },
        )
        self.assertEqual(session.state, "open")
        self.assert_secret_unlogged(KEY)

    def test_audio_chunks_in_order_and_batched(self):
        """Audio fed while connecting, then live, arrives untouched in ~100 ms chunks."""
        session = self.open()
        fed = self.feed_early_and_late(session)
        self.assertEqual(bytes(self.fake.audio), b"".join(fed))
        self.assertEqual(
            self.fake.chunks,
            [{"message_type": "input_audio_chunk", "commit": False, "sample_rate": 8000}] * 4,
        )

    def test_waits_for_session_started(self):
        """Audio is held until session_started; without it the attempt times out and retries."""
        self.fake.greet = False
        session = self.open()
        session.feed(b"\x01" * BATCH)
        self.net.pump()
        self.assertEqual(self.fake.opened, 1)
        self.assertEqual(session.state, "connecting")
        self.assertEqual(self.fake.audio, b"")
        self.advance(CONNECT_TIMEOUT)
        self.wait(self.listener.count(1))
        self.assertIn("no session within", self.listener.of("problem")[0])
        self.fake.greet = True
        session.feed(b"\x02" * BATCH)
        self.advance(1)
        self.wait(self.fake.audio_at_least(2 * BATCH))
        self.assertEqual(bytes(self.fake.audio), b"\x01" * BATCH + b"\x02" * BATCH)

    def test_turns(self):
        """Partials (the first starts speech), then a commit: speech stopped and the final."""
        self.opened()
        self.fake.partial("")
        self.fake.partial("Can you")
        self.fake.partial("Can you hear me")
        self.fake.committed("Can you hear me?")
        self.fake.partial("Good")
        self.fake.committed("Good.", with_timestamps=True)
        self.wait(self.listener.count(9))
        self.assertEqual(
            self.listener.events,
            [
                ("speech_started",),
                ("partial", "Can you"),
                ("partial", "Can you hear me"),
                ("speech_stopped",),
                ("final", "Can you hear me?"),
                ("speech_started",),
                ("partial", "Good"),
                ("speech_stopped",),
                ("final", "Good."),
            ],
        )

    def test_timestamps_only_commit_is_a_final(self):
        """A committed_transcript_with_timestamps on its own still ends the turn."""
        self.opened()
        self.fake.partial("Bye")
        self.fake.send(
            {"message_type": "committed_transcript_with_timestamps", "text": "Bye.", "words": []}
        )
        self.wait(self.listener.count(4))
        self.assertEqual(self.listener.of("final"), ["Bye."])

    def test_errors_are_problems(self):
        """The error family reaches the listener; the session stays up."""
        session = self.opened()
        self.fake.error("quota_exceeded", "Quota exceeded")
        self.fake.error("input_error", "Invalid audio format")
        self.wait(self.listener.count(2))
        self.assertEqual(
            self.listener.of("problem"),
            [
                "speech-to-text error (quota_exceeded): Quota exceeded",
                "speech-to-text error (input_error): Invalid audio format",
            ],
        )
        self.assertEqual(session.state, "open")

    def test_reconnects_after_a_drop(self):
        """A mid-call drop: one problem, a retry after 1 s, audio and turns flow again."""
        session = self.opened()
        session.feed(b"\x01" * BATCH)
        self.wait(self.fake.audio_at_least(BATCH))
        self.fake.partial("Half a")
        self.wait(self.listener.count(2))
        self.fake.drop()
        self.wait(self.listener.count(3))
        self.assertIn("connection lost", self.listener.of("problem")[0])
        session.feed(b"\x02" * BATCH)
        self.assertEqual(delays(self.clock), [1.0])
        self.advance(1)
        self.wait(self.logs.code_count("stt.recovered", 1))
        self.wait(self.fake.audio_at_least(2 * BATCH))
        self.fake.partial("Hello again")
        self.fake.committed("Hello again.")
        self.wait(self.listener.count(7))
        self.assertEqual(self.listener.events[3][0], "speech_started")
        self.assertEqual(self.listener.of("final"), ["Hello again."])

    def test_refused_and_closed(self):
        """A 401 is a problem with a retry; close() then leaves no timers and no socket."""
        self.fake.refuse(401)
        session = self.open()
        self.wait(self.listener.count(1))
        self.assertIn("401", self.listener.of("problem")[0])
        self.wait(session.close())
        self.assertEqual(delays(self.clock), [])
        self.advance(60)
        self.assertEqual(len(self.fake.requests), 1)


class InMemoryTests(ScriptedDials, SessionBasics, TestCase):
    """The provider and session without a network."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.stt = ElevenLabsRealtimeSTT(eleven_settings(), None, self.clock)
        self.attempts: list[Deferred] = []
        self.stt.connect = self.dial  # type: ignore[method-assign]
        self.listener = RecordingListener()
        self.session = self.stt.open_session(self.listener)

    def test_chunk_is_valid_json(self):
        """The hand-built chunk message is the JSON the API documents."""
        self.assertEqual(
            json.loads(self.stt.chunk(b"\xff\x7f")),
            {
                "message_type": "input_audio_chunk",
                "commit": False,
                "sample_rate": 8000,
                "audio_base_64": "/38=",
            },
        )

    def test_urls(self):
        """http(s) bases become ws(s); a base that already names the path keeps it."""
        for base, url in (
            ("wss://api.elevenlabs.io", "wss://api.elevenlabs.io/v1/speech-to-text/realtime"),
            ("https://api.elevenlabs.io/", "wss://api.elevenlabs.io/v1/speech-to-text/realtime"),
            ("http://127.0.0.1:9", "ws://127.0.0.1:9/v1/speech-to-text/realtime"),
            (
                "wss://eu.example.com/v1/speech-to-text/realtime",
                "wss://eu.example.com/v1/speech-to-text/realtime",
            ),
        ):
            got = realtime_url(ElevenLabsStreamingSettings(base_url=base))
            self.assertEqual(got.split("?")[0], url)
        self.assertEqual(
            realtime_url(ElevenLabsStreamingSettings()).split("?")[1],
            "model_id=scribe_v2_realtime&audio_format=ulaw_8000&commit_strategy=vad",
        )

    def test_junk_is_ignored(self):
        """Binary frames, non-JSON and unknown message types change nothing."""
        proto = stub_protocol(self.factory)
        self.attempts[-1].callback(proto)
        proto.onOpen()
        proto.onMessage(json.dumps({"message_type": "session_started"}).encode(), False)
        self.assertEqual(self.session.state, "open")
        proto.onMessage(b"\x00", True)
        proto.onMessage(b"nope", False)
        proto.onMessage(json.dumps({"message_type": "vad_score", "score": 0.2}).encode(), False)
        proto.onMessage(json.dumps({"message_type": "partial_transcript"}).encode(), False)
        proto.onMessage(json.dumps(["not", "an", "object"]).encode(), False)
        self.assertEqual(self.listener.events, [])
        self.assertEqual(proto.sent, [])


class ConfigTests(TestCase):
    """The C{streaming.providers.elevenlabs} block, its defaults and its environment."""

    def test_defaults(self):
        """Upstream's defaults: scribe_v2_realtime, ulaw_8000 at 8 kHz, VAD commits."""
        s = ElevenLabsStreamingSettings()
        self.assertEqual(
            (s.model_id, s.audio_format, s.sample_rate, s.commit_strategy, s.language_code),
            ("scribe_v2_realtime", "ulaw_8000", 8000, "vad", None),
        )
        self.assertEqual(s.base_url, "wss://api.elevenlabs.io")

    def test_block_parses(self):
        """The camel-case keys reach the settings."""
        streaming = parse_config(
            {
                "streaming": {
                    "provider": "elevenlabs",
                    "providers": {
                        "elevenlabs": {
                            "apiKey": "xi-file",
                            "modelId": "scribe_v2_realtime",
                            "languageCode": "de",
                            "vadThreshold": 0.6,
                            "baseUrl": "https://api.eu.elevenlabs.io",
                        }
                    },
                }
            },
            None,
            {},
        ).settings.streaming
        xi = streaming.providers["elevenlabs"]
        self.assertEqual(xi.api_key.reveal(), "xi-file")
        self.assertEqual(
            (xi.language_code, xi.vad_threshold, xi.base_url),
            ("de", 0.6, "https://api.eu.elevenlabs.io"),
        )

    def test_environment(self):
        """With elevenlabs selected, ELEVENLABS_API_KEY (or XI_API_KEY) fills the key."""
        config = {"streaming": {"enabled": True, "provider": "elevenlabs"}}
        for env in ({"ELEVENLABS_API_KEY": "xi-env"}, {"XI_API_KEY": "xi-env"}):
            xi = parse_config(config, None, env).settings.streaming.providers["elevenlabs"]
            self.assertEqual(xi.api_key.reveal(), "xi-env")

    def test_bad_values_name_the_key(self):
        """Another audio format or commit strategy is refused with its key path."""
        for block, key in (
            ({"audioFormat": "pcm_16000"}, "streaming.providers.elevenlabs.audioFormat"),
            ({"commitStrategy": "manual"}, "streaming.providers.elevenlabs.commitStrategy"),
            ({"baseUrl": "ftp://x"}, "streaming.providers.elevenlabs.baseUrl"),
        ):
            with self.assertRaises(ConfigError) as raised:
                parse_config(
                    {"streaming": {"providers": {"elevenlabs": block}}}, "/etc/openclaw.json", {}
                )
            self.assertIn(key, str(raised.exception))

    def test_unknown_provider_block_is_noted(self):
        """A block for a provider voicecalld lacks is kept, with a note naming the built ones."""
        loaded = parse_config({"streaming": {"providers": {"mistral": {"x": 1}}}}, None, {})
        notes = " ".join(str(n) for n in loaded.notes)
        self.assertIn("'mistral'", notes)
        self.assertIn("'deepgram'", notes)


class FactoryTests(SttFactoryCase):
    """make_stt picks ElevenLabs by C{streaming.provider}; unknown providers are skipped."""

    def test_elevenlabs(self):
        """With a key: an ElevenLabsRealtimeSTT for the base URL."""
        settings = StreamingSettings(
            provider="elevenlabs", providers={"elevenlabs": eleven_settings()}
        )
        stt = make_stt(settings, MemoryReactorClock())
        self.assertIsInstance(stt, ElevenLabsRealtimeSTT)
        self.assertTrue(stt.url.startswith("ws://127.0.0.1:8443/v1/speech-to-text/realtime?"))
        self.assertEqual(self.warnings(), [])

    def test_no_key(self):
        """No key: None and one warning naming the key and its variable."""
        settings = StreamingSettings(provider="elevenlabs")
        self.assertIsNone(make_stt(settings, MemoryReactorClock()))
        (warning,) = self.warnings()
        self.assertIn("ELEVENLABS_API_KEY", warning)

    def test_unknown(self):
        """An unknown provider: None and one warning naming it."""
        settings = StreamingSettings(provider="mistral")
        self.assertIsNone(make_stt(settings, MemoryReactorClock()))
        (warning,) = self.warnings()
        self.assertIn("'mistral'", warning)
