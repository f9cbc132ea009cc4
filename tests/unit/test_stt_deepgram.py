"""Streaming STT over Deepgram: the real client against the fake, the config, the factory."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import TestCase

from tests.fakes.deepgram import FakeDeepgramServer
from tests.unit.vendor_rigs import (
    FRAME,
    LiveFakeCase,
    RecordingListener,
    ScriptedDials,
    SessionBasics,
    SttFactoryCase,
    delays,
    frames,
    stub_protocol,
)
from voicecalld.config import ConfigError, parse_config
from voicecalld.config.model import DeepgramStreamingSettings, StreamingSettings
from voicecalld.config.secret import Secret
from voicecalld.voice.stt_deepgram import KEEPALIVE_AFTER, KEEPALIVE_CHECK, DeepgramSTT
from voicecalld.voice.stt_factory import make_stt
from voicecalld.voice.stt_socket import MAX_BUFFER_BYTES

KEY = "dg-test-not-a-real-key"
BATCH = 800  # 100 ms of 8 kHz mu-law


def deepgram_settings(**overrides: Any) -> DeepgramStreamingSettings:
    """Deepgram settings with a test key pointing at the in-memory fake."""
    values: dict[str, Any] = {
        "api_key": Secret(KEY),
        "base_url": "ws://127.0.0.1:8443/v1/listen",
    }
    values.update(overrides)
    return DeepgramStreamingSettings(**values)


class LiveFakeTests(LiveFakeCase):
    """Our real client against the fake Deepgram, in memory, timers on a L{Clock}."""

    fake_class = FakeDeepgramServer

    def make_stt(self, **settings: Any) -> Any:
        return DeepgramSTT(deepgram_settings(**settings), self.net.reactor, self.clock)

    def test_handshake(self):
        """The settings ride in the query, the key in a Token header, and never in a log."""
        session = self.open(language="de", endpointing_ms=650)
        self.wait(self.logs.code_count("stt.open", 1))
        self.assertEqual(self.fake.authorization, f"Token {KEY}")
        self.assertEqual(self.fake.paths, ["/v1/listen"])
        self.assertEqual(
            self.fake.query,
            {
                "model": "nova-3",
                "encoding": "mulaw",
                "sample_rate": "8000",
                "channels": "1",
                "interim_results": "true",
                "endpointing": "650",
                "vad_events": "true",
                "punctuate": "true",
                "smart_format": "true",
                "utterance_end_ms": "1000",
                "language": "de",
            },
        )
        self.assertEqual(session.state, "open")
        self.assert_secret_unlogged(KEY)

    def test_no_interim_results_means_no_utterance_end(self):
        """Without interim results Deepgram refuses utterance_end_ms, so it is left out."""
        self.open(interim_results=False)
        self.wait(self.logs.code_count("stt.open", 1))
        self.assertEqual(self.fake.query["interim_results"], "false")
        self.assertNotIn("utterance_end_ms", self.fake.query)
        self.assertNotIn("language", self.fake.query)

    def test_audio_is_binary_in_order_and_batched(self):
        """Audio fed while connecting, then live, arrives untouched as ~100 ms binary frames."""
        session = self.open()
        fed = self.feed_early_and_late(session)
        self.assertEqual(bytes(self.fake.audio), b"".join(fed))
        self.assertEqual(self.fake.frames, [3 * FRAME, BATCH, BATCH, 2 * FRAME])
        self.assertEqual(self.fake.bad_messages, [])

    def test_buffer_while_connecting_is_bounded(self):
        """Seven seconds fed before the socket is up: the last five arrive."""
        session = self.open()
        fed = b"".join(frames(350))
        for i in range(0, len(fed), FRAME):
            session.feed(fed[i : i + FRAME])
        self.wait(self.fake.audio_at_least(MAX_BUFFER_BYTES))
        self.assertEqual(bytes(self.fake.audio), fed[-MAX_BUFFER_BYTES:])

    def test_a_turn_with_interims_and_speech_final(self):
        """Interims grow the partial; final segments add up; speech_final ends the turn."""
        self.opened()
        self.fake.speech_started()
        self.fake.interim("I would")
        self.fake.final_segment("I would like")
        self.fake.interim("to book")
        self.fake.final_segment("to book a table.", speech_final=True)
        self.wait(self.listener.count(7))
        self.assertEqual(
            self.listener.events,
            [
                ("speech_started",),
                ("partial", "I would"),
                ("partial", "I would like"),
                ("partial", "I would like to book"),
                ("partial", "I would like to book a table."),
                ("speech_stopped",),
                ("final", "I would like to book a table."),
            ],
        )

    def test_first_words_start_speech_without_vad_events(self):
        """No SpeechStarted: the first non-empty interim is the barge-in signal; blanks are not."""
        self.opened()
        self.fake.interim("")
        self.fake.interim("Hello")
        self.wait(self.listener.count(2))
        self.assertEqual(self.listener.events, [("speech_started",), ("partial", "Hello")])

    def test_utterance_end_closes_a_turn_of_final_segments(self):
        """Segments settled without speech_final end as one turn on UtteranceEnd."""
        self.opened()
        self.fake.final_segment("Yes,")
        self.fake.final_segment("that's right.")
        self.fake.utterance_end()
        self.fake.utterance_end()  # a second one with nothing pending says nothing
        self.wait(self.listener.count(5))
        self.assertEqual(
            self.listener.events[-2:], [("speech_stopped",), ("final", "Yes, that's right.")]
        )
        self.assertEqual(self.listener.of("final"), ["Yes, that's right."])

    def test_two_turns(self):
        """Each turn starts and ends on its own."""
        self.opened()
        self.fake.final_segment("One.", speech_final=True)
        self.fake.final_segment("Two.", speech_final=True)
        self.wait(self.listener.count(8))
        self.assertEqual(self.listener.of("final"), ["One.", "Two."])
        self.assertEqual([e[0] for e in self.listener.events].count("speech_started"), 2)

    def test_keepalive_while_no_audio(self):
        """An open socket with no audio gets a KeepAlive; one with audio flowing does not."""
        session = self.opened()
        for _ in range(10):
            session.feed(b"\x01" * FRAME)
            self.advance(KEEPALIVE_CHECK)
        self.assertEqual(self.fake.controls, [])
        self.advance(KEEPALIVE_AFTER + KEEPALIVE_CHECK)
        self.wait(self.fake.control_count("KeepAlive", 1))
        self.advance(KEEPALIVE_AFTER + KEEPALIVE_CHECK)
        self.wait(self.fake.control_count("KeepAlive", 2))
        self.assertEqual(self.fake.opened, 1)
        self.assertEqual(session.state, "open")

    def test_close_says_close_stream(self):
        """close() sends CloseStream; Deepgram's Metadata and close end it; no timers left."""
        session = self.opened()
        session.feed(b"\x01" * BATCH)
        self.wait(self.fake.audio_at_least(BATCH))
        closing = session.close()
        self.wait(self.fake.control_count("CloseStream", 1))
        self.wait(closing)
        self.assertEqual(delays(self.clock), [])
        self.assertEqual(self.listener.events, [])
        self.assertEqual(self.fake.bad_messages, [])

    def test_reconnects_after_a_drop(self):
        """A mid-call drop: one problem, a retry after 1 s, audio and turns flow again."""
        session = self.opened()
        session.feed(b"\x01" * BATCH)
        self.wait(self.fake.audio_at_least(BATCH))
        self.fake.drop()
        self.wait(self.listener.count(1))
        self.assertIn("connection lost", self.listener.of("problem")[0])
        session.feed(b"\x02" * BATCH)
        self.assertEqual(delays(self.clock), [1.0])
        self.advance(1)
        self.wait(self.logs.code_count("stt.recovered", 1))
        self.wait(self.fake.audio_at_least(2 * BATCH))
        self.assertEqual(bytes(self.fake.audio), b"\x01" * BATCH + b"\x02" * BATCH)
        self.fake.final_segment("Still there?", speech_final=True)
        self.wait(self.listener.count(4))
        self.assertEqual(self.listener.of("final"), ["Still there?"])
        self.assertEqual(len(self.listener.of("problem")), 1)

    def test_refused_handshake_is_a_problem(self):
        """A 401 from Deepgram: a problem naming it, and a retry."""
        self.fake.refuse(401)
        session = self.open()
        self.wait(self.listener.count(1))
        self.assertIn("401", self.listener.of("problem")[0])
        self.assertEqual(session.state, "waiting")
        self.assertEqual(delays(self.clock), [1.0])

    def test_server_close_mid_turn_delivers_settled_words(self):
        """The socket closes with settled segments pending: they become the turn's final."""
        session = self.opened()
        session.feed(b"\x01" * BATCH)
        self.fake.final_segment("Call me back")
        self.wait(self.listener.count(2))
        self.fake.close(1011, "NET-0001")
        self.wait(self.listener.count(5))
        self.assertEqual(
            self.listener.events[2:4], [("speech_stopped",), ("final", "Call me back")]
        )
        self.assertIn("NET-0001", self.listener.of("problem")[0])


class InMemoryTests(ScriptedDials, SessionBasics, TestCase):
    """Message handling with the socket replaced by a recorder."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.stt = DeepgramSTT(deepgram_settings(), None, self.clock)
        self.attempts: list[Any] = []
        self.stt.connect = self.dial  # type: ignore[method-assign]
        self.listener = RecordingListener()
        self.session = self.stt.open_session(self.listener)
        self.proto = stub_protocol(self.factory)
        self.proto.sendMessage = self._record
        self.sent: list[Any] = []
        self.attempts[-1].callback(self.proto)
        self.proto.onOpen()

    def _record(self, payload: bytes, isBinary: bool = False) -> None:
        self.sent.append(payload if isBinary else json.loads(payload))

    def event(self, **event: Any) -> None:
        self.proto.onMessage(json.dumps(event).encode(), False)

    def test_error_and_junk(self):
        """An Error message is a problem; junk, Metadata and unknown types change nothing."""
        self.proto.onMessage(b"not json", False)
        self.proto.onMessage(b"\x00\x01", True)
        self.event(type="Metadata", request_id="r1")
        self.event(type="Whatever")
        self.event(type="Results", channel="odd", is_final=True, speech_final=True)
        self.event(type="Results", channel={"alternatives": []}, is_final=False)
        self.assertEqual(self.listener.events, [])
        self.event(type="Error", description="Model not found", variant="model")
        self.assertEqual(self.listener.of("problem"), ["speech-to-text error: Model not found"])
        self.assertEqual(self.session.state, "open")

    def test_keepalive_timer_stops_with_the_socket(self):
        """The keepalive check runs only while open; close() leaves no timer."""
        self.assertEqual(delays(self.clock), [KEEPALIVE_CHECK])
        self.proto.onClose(False, None, None)
        self.assertNotIn(KEEPALIVE_CHECK, delays(self.clock))
        self.session.close()
        self.assertEqual(delays(self.clock), [])


class ConfigTests(TestCase):
    """The C{streaming.providers.deepgram} block, its defaults and its environment."""

    def test_defaults(self):
        """Upstream's defaults: nova-3, mu-law 8 kHz, 800 ms endpointing, interim results."""
        s = DeepgramStreamingSettings()
        self.assertEqual(
            (s.model, s.encoding, s.sample_rate, s.endpointing_ms, s.interim_results),
            ("nova-3", "mulaw", 8000, 800, True),
        )
        self.assertEqual(s.base_url, "wss://api.deepgram.com/v1/listen")
        self.assertIsNone(s.language)

    def test_block_parses(self):
        """The camel-case keys reach the settings; the key is a secret."""
        streaming = parse_config(
            {
                "streaming": {
                    "enabled": True,
                    "provider": "deepgram",
                    "providers": {
                        "deepgram": {
                            "apiKey": "dg-file",
                            "model": "nova-3-general",
                            "endpointingMs": 500,
                            "interimResults": False,
                            "language": "en-GB",
                            "baseUrl": "wss://dg.example.com/v1/listen",
                        }
                    },
                }
            },
            None,
            {},
        ).settings.streaming
        dg = streaming.providers["deepgram"]
        self.assertEqual(dg.api_key.reveal(), "dg-file")
        self.assertNotIn("dg-file", repr(dg))
        self.assertEqual(
            (dg.model, dg.endpointing_ms, dg.interim_results, dg.language, dg.base_url),
            ("nova-3-general", 500, False, "en-GB", "wss://dg.example.com/v1/listen"),
        )

    def test_environment(self):
        """With deepgram selected, DEEPGRAM_API_KEY and DEEPGRAM_BASE_URL fill the block."""
        env = {"DEEPGRAM_API_KEY": "dg-env", "DEEPGRAM_BASE_URL": "ws://127.0.0.1:9/v1/listen"}
        config = {"streaming": {"enabled": True, "provider": "deepgram"}}
        dg = parse_config(config, None, env).settings.streaming.providers["deepgram"]
        self.assertEqual((dg.api_key.reveal(), dg.base_url), ("dg-env", env["DEEPGRAM_BASE_URL"]))
        other = parse_config({"streaming": {"enabled": True}}, None, env).settings.streaming
        self.assertNotIn("deepgram", other.providers)

    def test_bad_values_name_the_key(self):
        """Another encoding or a non-WebSocket base URL is refused with its key path."""
        for block, key in (
            ({"encoding": "linear16"}, "streaming.providers.deepgram.encoding"),
            ({"sampleRate": 16000}, "streaming.providers.deepgram.sampleRate"),
            ({"baseUrl": "https://api.deepgram.com"}, "streaming.providers.deepgram.baseUrl"),
            ({"endpointingMs": 0}, "streaming.providers.deepgram.endpointingMs"),
        ):
            with self.assertRaises(ConfigError) as raised:
                parse_config(
                    {"streaming": {"providers": {"deepgram": block}}}, "/etc/openclaw.json", {}
                )
            self.assertIn(key, str(raised.exception))
            self.assertIn("/etc/openclaw.json", str(raised.exception))

    def test_key_from_a_secret_ref(self):
        """The key may be a SecretRef, resolved like every other secret."""
        config = {
            "provider": "twilio",
            "fromNumber": "+15550001111",
            "twilio": {"accountSid": "AC1", "authToken": "t"},
            "streaming": {
                "enabled": True,
                "provider": "deepgram",
                "providers": {"deepgram": {"apiKey": "${DG_KEY}"}},
            },
        }
        whole = {"plugins": {"entries": {"voice-call": {"config": config}}}}
        dg = parse_config(whole, None, {"DG_KEY": "dg-ref"}).settings.streaming.providers
        self.assertEqual(dg["deepgram"].api_key.reveal(), "dg-ref")

    def test_a_bad_provider_is_an_error_not_a_crash(self):
        """A non-string streaming.provider is named as such, environment or not."""
        with self.assertRaises(ConfigError) as raised:
            parse_config(
                {"streaming": {"enabled": True, "provider": ["deepgram"]}},
                None,
                {"DEEPGRAM_API_KEY": "dg-env"},
            )
        self.assertIn("streaming.provider", str(raised.exception))

    def test_env_base_url_is_blamed_on_its_variable(self):
        """A bad DEEPGRAM_BASE_URL is named in the error."""
        with self.assertRaises(ConfigError) as raised:
            parse_config(
                {"streaming": {"enabled": True, "provider": "deepgram"}},
                None,
                {"DEEPGRAM_BASE_URL": "not a url"},
            )
        self.assertIn("$DEEPGRAM_BASE_URL", str(raised.exception))


class FactoryTests(SttFactoryCase):
    """make_stt picks Deepgram by C{streaming.provider}."""

    def test_deepgram(self):
        """With a key: a DeepgramSTT dialling the base URL with the settings."""
        settings = StreamingSettings(
            provider="deepgram", providers={"deepgram": deepgram_settings()}
        )
        stt = make_stt(settings, MemoryReactorClock())
        self.assertIsInstance(stt, DeepgramSTT)
        self.assertTrue(stt.url.startswith("ws://127.0.0.1:8443/v1/listen?model=nova-3&"))
        self.assertEqual(self.warnings(), [])

    def test_no_key(self):
        """No key: None and one warning naming where the key goes."""
        for providers in ({}, {"deepgram": DeepgramStreamingSettings()}):
            del self.logs.events[:]
            settings = StreamingSettings(provider="deepgram", providers=providers)
            self.assertIsNone(make_stt(settings, MemoryReactorClock()))
            (warning,) = self.warnings()
            self.assertIn("DEEPGRAM_API_KEY", warning)
            self.assertIn("streaming.providers.deepgram.apiKey", warning)
