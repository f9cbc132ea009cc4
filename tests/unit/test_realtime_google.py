"""
Gemini Live as the realtime voice: its settings, and our real WebSocket
client against the fake Gemini Live server on 127.0.0.1 (real reactor for
the sockets, a L{Clock} for the session's own timers; every wait is bounded).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from tests.fakes.gemini_live import INPUT_MIME, PATH, FakeGeminiLive
from tests.unit.vendor_rigs import RealtimeRecorder
from tests.waiting import wait_for
from voicecalld.config import ConfigError, parse_config
from voicecalld.config.model import GEMINI_LIVE_URL, GoogleRealtimeSettings
from voicecalld.config.secret import Secret
from voicecalld.media.codec import ulaw_decode, ulaw_encode
from voicecalld.realtime.google import (
    BATCH_BYTES,
    CONNECT_TIMEOUT,
    MAX_BUFFER_BYTES,
    MAX_RESUMES,
    RELAY_PROMPT,
    RESUME_WINDOW,
    SPEAK_PROMPT,
    GeminiLiveSession,
    GeminiLiveVoice,
    setup_message,
)
from voicecalld.realtime.interface import (
    END_CALL_TOOL,
    IRealtimeListener,
    IRealtimeSession,
    IRealtimeVoice,
    RealtimeSetup,
    RealtimeTool,
)

KEY = "AIza-test-not-a-real-key"
GEMINI_HOST = "generativelanguage.googleapis.com"
WAIT = 10.0
SETUP = RealtimeSetup(
    instructions="You answer the phone for Anke.",
    tools=(
        RealtimeTool(END_CALL_TOOL, "Hang up after your last words."),
        RealtimeTool(
            "lookup",
            "Find a booking.",
            {"type": "object", "properties": {"ref": {"type": "string"}}, "required": ["ref"]},
        ),
    ),
    call_id="call-1",
)


def tone(hz: float, seconds: float, rate: int, level: float = 8000.0) -> bytes:
    """A sine tone as s16le PCM."""
    t = np.arange(int(seconds * rate)) / rate
    return (np.sin(2 * np.pi * hz * t) * level).astype("<i2").tobytes()


def dominant_hz(pcm: bytes, rate: int) -> float:
    """The strongest frequency of some s16le PCM."""
    samples = np.frombuffer(pcm, dtype="<i2").astype(float)
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[int(np.argmax(spectrum))])


def bounded(d: Deferred, timeout: float = WAIT) -> Deferred:
    """C{d}, failing the test if it has not fired within C{timeout} seconds."""
    return d.addTimeout(timeout, reactor)


class RecordingListener(RealtimeRecorder):
    """Keeps every listener call in order as a tuple; the audio itself goes to C{played}."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.played = bytearray()
        self.tokens: list[str | None] = []
        self._waiters: list[tuple[Any, Deferred]] = []

    def audio(self, ulaw: bytes) -> None:
        self.played += ulaw
        self.record("audio")

    def record(self, *event: Any) -> None:
        self.events.append(event)
        waiting, self._waiters = self._waiters, []
        for condition, d in waiting:
            if condition():
                # The test goes on once the session has handled the whole message.
                reactor.callLater(0, d.callback, None)
            else:
                self._waiters.append((condition, d))

    def when(self, condition: Any) -> Deferred:
        """Fires as soon as C{condition()} holds."""
        if condition():
            return succeed(None)
        d: Deferred = Deferred()
        self._waiters.append((condition, d))
        return bounded(d)

    def saw(self, *event: Any) -> Deferred:
        """Fires once C{event} has been recorded."""
        return self.when(lambda: event in self.events)

    def kinds(self) -> list[Any]:
        """The events without audio, as recorded."""
        return [e if len(e) > 1 else e[0] for e in self.events if e != ("audio",)]


def google_settings(**overrides: Any) -> GoogleRealtimeSettings:
    """Gemini settings with a test key."""
    values: dict[str, Any] = {"api_key": Secret(KEY)}
    values.update(overrides)
    return GoogleRealtimeSettings(**values)


class SettingsTests(TestCase):
    """C{realtime.providers.google}: defaults, upstream's names, env fallbacks, errors."""

    def realtime(self, google: dict | None = None, environ: dict | None = None, **rt: Any) -> Any:
        block: dict[str, Any] = dict(rt)
        if google is not None:
            block["providers"] = {"google": google}
        plugin: dict[str, Any] = {"realtime": block}
        if rt.get("enabled"):
            plugin.update(
                provider="twilio",
                fromNumber="+15550001111",
                inboundPolicy="open",
                twilio={"accountSid": "AC1", "authToken": "t"},
            )
        return parse_config(plugin, None, environ or {}).settings.realtime

    def test_defaults(self):
        s = self.realtime({})
        google = s.providers["google"]
        self.assertIsInstance(google, GoogleRealtimeSettings)
        self.assertEqual(
            (google.model, google.voice_name, google.base_url, google.api_key),
            ("gemini-3.1-flash-live-preview", "Kore", GEMINI_LIVE_URL, None),
        )
        self.assertEqual((google.session_resumption, google.context_window_compression), (1, 1))
        self.assertFalse(google.automatic_activity_detection_disabled)
        self.assertNotIn("key=", GEMINI_LIVE_URL)

    def test_every_tunable(self):
        google = self.realtime(
            {
                "apiKey": "AIza-file",
                "baseUrl": "ws://127.0.0.1:9/ws/live",
                "model": "models/gemini-live-x",
                "voice": "Puck",
                "speakerVoice": "Charon",
                "sessionResumption": False,
                "contextWindowCompression": False,
                "silenceDurationMs": 700,
                "startSensitivity": "low",
                "endSensitivity": "END_SENSITIVITY_HIGH",
                "temperature": 0.6,
                "activityHandling": "no-interruption",
                "turnCoverage": "TURN_INCLUDES_ALL_INPUT",
                "automaticActivityDetectionDisabled": True,
            }
        ).providers["google"]
        self.assertEqual(google.api_key.reveal(), "AIza-file")
        self.assertEqual(google.voice_name, "Charon")  # speakerVoice wins over voice
        setup = setup_message(google, RealtimeSetup(instructions=""))["setup"]
        self.assertEqual(setup["model"], "models/gemini-live-x")
        self.assertEqual(setup["generationConfig"]["temperature"], 0.6)
        self.assertEqual(
            setup["realtimeInputConfig"],
            {
                "automaticActivityDetection": {
                    "disabled": True,
                    "startOfSpeechSensitivity": "START_SENSITIVITY_LOW",
                    "endOfSpeechSensitivity": "END_SENSITIVITY_HIGH",
                    "silenceDurationMs": 700,
                },
                "activityHandling": "NO_INTERRUPTION",
                "turnCoverage": "TURN_INCLUDES_ALL_INPUT",
            },
        )
        self.assertNotIn("sessionResumption", setup)
        self.assertNotIn("contextWindowCompression", setup)
        self.assertNotIn("systemInstruction", setup)

    def test_non_positive_temperature_is_left_out(self):
        for value in (0, -1):
            google = self.realtime({"temperature": value}).providers["google"]
            setup = setup_message(google, SETUP)["setup"]
            self.assertNotIn("temperature", setup["generationConfig"])

    def test_key_from_the_environment(self):
        both = {"GEMINI_API_KEY": "gem", "GOOGLE_API_KEY": "goo"}
        for environ, provider, expected in (
            (both, None, "gem"),
            ({"GOOGLE_API_KEY": "goo"}, "google", "goo"),
        ):
            extra = {} if provider is None else {"provider": provider}
            s = self.realtime(None, environ, enabled=True, **extra)
            self.assertEqual(s.providers["google"].api_key.reveal(), expected)
        # The file wins; another provider or realtime off takes nothing.
        s = self.realtime({"apiKey": "file"}, both, enabled=True)
        self.assertEqual(s.providers["google"].api_key.reveal(), "file")
        self.assertNotIn(
            "google", self.realtime(None, both, enabled=True, provider="openai").providers
        )
        self.assertNotIn("google", self.realtime(None, both).providers)

    def test_key_from_openclaw_models_block(self):
        """In a whole OpenClaw config, models.providers.google.apiKey comes before the env."""
        plugin = {
            "provider": "twilio",
            "fromNumber": "+15550001111",
            "inboundPolicy": "open",
            "twilio": {"accountSid": "AC1", "authToken": "t"},
            "realtime": {"enabled": True, "provider": "google"},
        }
        data = {
            "plugins": {"entries": {"voice-call": {"config": plugin}}},
            "models": {"providers": {"google": {"apiKey": "from-models"}}},
        }
        s = parse_config(data, None, {"GEMINI_API_KEY": "gem"}).settings
        self.assertEqual(s.realtime.providers["google"].api_key.reveal(), "from-models")
        plugin["realtime"]["providers"] = {"google": {"apiKey": "own"}}
        s = parse_config(data, None, {}).settings
        self.assertEqual(s.realtime.providers["google"].api_key.reveal(), "own")

    def test_bad_values_name_their_key(self):
        for block, words in (
            ({"startSensitivity": "medium"}, "realtime.providers.google.startSensitivity"),
            ({"baseUrl": "https://x.example"}, "is not an absolute ws:// or wss:// URL"),
            ({"voice": ""}, "realtime.providers.google.voice: must not be empty"),
            ({"vadThreshold": 0.5}, "realtime.providers.google.vadThreshold: unknown key"),
            ({"apiKey": {"source": "env"}}, "realtime.providers.google.apiKey"),
        ):
            with self.subTest(block=block):
                with self.assertRaises(ConfigError) as raised:
                    parse_config({"realtime": {"providers": {"google": block}}}, "/etc/o.json", {})
                self.assertIn(words, str(raised.exception))
                self.assertIn("/etc/o.json", str(raised.exception))

    def test_other_providers_stay_blobs(self):
        s = self.realtime(None, providers={"acme": {"apiKey": "k", "anything": 1}})
        self.assertEqual(s.providers["acme"], {"apiKey": "k", "anything": 1})


class LogCapture:
    """Every log event while a test runs."""

    def __init__(self, test: TestCase) -> None:
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        test.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    @property
    def codes(self) -> list[str]:
        """The C{code} of each realtime event, in order."""
        return [e["code"] for e in self.events if str(e.get("code", "")).startswith("realtime.")]

    def text(self) -> str:
        """Every event as text, with its fields."""
        return "\n".join(f"{formatEvent(e)} {e!r}" for e in self.events)


class LiveTests(TestCase):
    """Our client against the fake Gemini Live on 127.0.0.1."""

    timeout = 30

    @inlineCallbacks
    def setUp(self):
        self.fake = FakeGeminiLive(reactor)
        self.url = yield self.fake.start()
        self.addCleanup(self.fake.stop)
        self.clock = Clock()
        self.listener = RecordingListener()
        self.logs = LogCapture(self)

    def open(self, setup: RealtimeSetup = SETUP, **settings: Any) -> GeminiLiveSession:
        settings.setdefault("base_url", self.url)
        voice = GeminiLiveVoice(google_settings(**settings), reactor, self.clock)
        session = voice.open_session(self.listener, setup)
        self.addCleanup(self.closed, session)
        return session

    @inlineCallbacks
    def closed(self, session: GeminiLiveSession):
        yield bounded(session.close())
        yield bounded(self.fake.when(lambda: not self.fake.connected))
        self.assertEqual([e[0] for e in self.listener.events].count("closed"), 1)

    @inlineCallbacks
    def ready(self, **settings: Any):
        session = self.open(**settings)
        yield self.listener.saw("ready")
        return session

    @inlineCallbacks
    def test_handshake_and_setup(self):
        """The path, the key in a header (never the URL), and the whole setup message."""
        yield self.ready()
        self.assertEqual(self.fake.paths, [PATH])
        self.assertEqual(self.fake.queries, [{}])
        self.assertEqual(self.fake.requests[0]["x-goog-api-key"], KEY)
        self.assertEqual(
            self.fake.setups[0],
            {
                "model": "models/gemini-3.1-flash-live-preview",
                "generationConfig": {
                    "responseModalities": ["AUDIO"],
                    "speechConfig": {"voiceConfig": {"prebuiltVoiceConfig": {"voiceName": "Kore"}}},
                },
                "inputAudioTranscription": {},
                "outputAudioTranscription": {},
                "systemInstruction": {"parts": [{"text": "You answer the phone for Anke."}]},
                "tools": [
                    {
                        "functionDeclarations": [
                            {
                                "name": END_CALL_TOOL,
                                "description": "Hang up after your last words.",
                                "parametersJsonSchema": {"type": "object", "properties": {}},
                            },
                            {
                                "name": "lookup",
                                "description": "Find a booking.",
                                "parametersJsonSchema": {
                                    "type": "object",
                                    "properties": {"ref": {"type": "string"}},
                                    "required": ["ref"],
                                },
                            },
                        ]
                    }
                ],
                "sessionResumption": {},
                "contextWindowCompression": {"slidingWindow": {}},
            },
        )
        self.assertEqual(self.listener.kinds(), ["ready"])
        self.assertIn("realtime.open", self.logs.codes)

    @inlineCallbacks
    def test_ready_only_after_setup_complete(self):
        """Audio and speech asked for before setupComplete wait for it, then go in order."""
        self.fake.ack_setup = False
        session = self.open()
        yield bounded(self.fake.when(lambda: self.fake.setups))
        session.feed(ulaw_encode(tone(1000, 0.4, 8000)))
        session.speak("Hello, this is Anke's phone.")
        self.assertEqual(self.listener.kinds(), [])
        self.fake.setup_complete()
        yield self.listener.saw("ready")
        yield bounded(self.fake.when(lambda: self.fake.messages("clientContent")))
        self.assertEqual(len(self.fake.audio_messages), 4)
        self.assertEqual(
            self.fake.received[-1],
            {
                "clientContent": {
                    "turns": [
                        {
                            "role": "user",
                            "parts": [{"text": SPEAK_PROMPT + "Hello, this is Anke's phone."}],
                        }
                    ],
                    "turnComplete": True,
                }
            },
        )

    @inlineCallbacks
    def test_a_response_already_running_never_takes_speaks_token(self):
        """
        speak() during the model's own response: that response is told with
        no token; the next one to begin (Gemini answers turns in order) has it.
        """
        session = yield self.ready()
        self.fake.said("Sure,")
        yield self.listener.saw("response_started")
        token = session.speak("One moment please.")
        yield bounded(self.fake.when(lambda: self.fake.messages("clientContent")))
        self.fake.turn_complete()
        yield self.listener.saw("response_done")
        self.fake.said("One moment please.")
        self.fake.turn_complete()
        yield self.listener.when(lambda: self.listener.kinds().count("response_done") == 2)
        self.assertEqual(self.listener.tokens, [None, token])

    @inlineCallbacks
    def test_relay_is_a_user_turn_with_the_agents_answer(self):
        """relay(): a clientContent turn handing over the answer; its response has the token."""
        session = yield self.ready()
        token = session.relay("The shop opens at nine.")
        yield bounded(self.fake.when(lambda: self.fake.messages("clientContent")))
        (content,) = self.fake.messages("clientContent")
        text = RELAY_PROMPT + "The shop opens at nine."
        self.assertEqual(content["turns"], [{"role": "user", "parts": [{"text": text}]}])
        self.fake.said("It opens at nine.")
        yield self.listener.saw("response_started")
        self.assertEqual(self.listener.tokens, [token])

    @inlineCallbacks
    def test_caller_audio_reaches_gemini_as_16k_pcm(self):
        """20 ms mu-law frames go up as 16 kHz PCM in ~100 ms messages, the tone intact."""
        session = yield self.ready()
        phone = ulaw_encode(tone(1000, 1.0, 8000))
        for i in range(0, len(phone), 160):
            session.feed(phone[i : i + 160])
        yield bounded(self.fake.when(lambda: len(self.fake.audio_messages) == 10))
        self.assertTrue(
            all(
                m["realtimeInput"]["audio"]["mimeType"] == INPUT_MIME
                for m in self.fake.received
                if "realtimeInput" in m
            )
        )
        # 100 ms at 16 kHz is 3200 bytes; the resampler gives ~30 ms blocks and
        # holds ~40 ms back, so messages are 60 to 120 ms.
        self.assertTrue(all(1880 <= n <= 3760 for n in self.fake.audio_messages))
        self.assertTrue(32000 - 3200 < len(self.fake.audio) <= 32000, len(self.fake.audio))
        self.assertAlmostEqual(dominant_hz(bytes(self.fake.audio), 16000), 1000, delta=5)

    @inlineCallbacks
    def test_a_partial_batch_goes_after_100_ms(self):
        """Less than a batch waits 100 ms at most (the resampler gives ~30 ms blocks)."""
        session = yield self.ready()
        for _ in range(2):
            session.feed(b"\xff" * 480)
            self.assertEqual(
                [
                    round(c.getTime() - self.clock.seconds(), 3)
                    for c in self.clock.getDelayedCalls()
                ][-1],
                0.1,
            )
            self.clock.advance(0.1)
        yield bounded(self.fake.when(lambda: len(self.fake.audio_messages) == 1))
        self.assertEqual(self.fake.audio_messages, [1880])

    @inlineCallbacks
    def test_audio_before_ready_is_bounded(self):
        self.fake.ack_setup = False
        session = self.open()
        yield bounded(self.fake.when(lambda: self.fake.setups))
        session.feed(b"\xff" * (MAX_BUFFER_BYTES + 8000))
        self.fake.setup_complete()
        yield bounded(self.fake.when(lambda: len(self.fake.audio_messages) == 50))
        self.assertEqual(MAX_BUFFER_BYTES // BATCH_BYTES, 50)
        self.assertIn("realtime.dropped", self.logs.codes)

    @inlineCallbacks
    def test_model_audio_reaches_the_phone_as_8k_ulaw(self):
        """24 kHz PCM from the model comes out as 8 kHz mu-law, the tone intact, none lost."""
        yield self.ready()
        speech = tone(440, 1.0, 24000)
        for i in range(0, len(speech), 4800):
            self.fake.model_audio(speech[i : i + 4800])
        self.fake.turn_complete()
        yield self.listener.saw("response_done")
        self.assertEqual(len(self.listener.played), 8000)
        pcm = ulaw_decode(bytes(self.listener.played))
        self.assertAlmostEqual(dominant_hz(pcm, 8000), 440, delta=3)
        self.assertEqual(self.listener.kinds(), ["ready", "response_started", "response_done"])

    @inlineCallbacks
    def test_other_output_rates_are_honoured(self):
        yield self.ready()
        self.fake.model_audio(tone(300, 0.5, 16000, level=6000), rate=16000)
        self.fake.turn_complete()
        yield self.listener.saw("response_done")
        self.assertEqual(len(self.listener.played), 4000)
        self.assertAlmostEqual(
            dominant_hz(ulaw_decode(bytes(self.listener.played)), 8000), 300, delta=4
        )

    @inlineCallbacks
    def test_a_conversation_turn(self):
        """The caller's words, then the model's answer: the events in their order."""
        yield self.ready()
        self.fake.heard("I'd like to")
        self.fake.heard(" book a table.")
        self.fake.model_audio(tone(440, 0.2, 24000), text="Sure,")
        self.fake.said(" for how many?")
        self.fake.heard(" Tonight.")  # late words of the caller's turn
        self.fake.generation_complete()
        self.fake.turn_complete()
        yield self.listener.saw("response_done")
        self.assertEqual(
            self.listener.kinds(),
            [
                "ready",
                "speech_started",
                "speech_stopped",
                ("user_transcript", "I'd like to book a table."),
                "response_started",
                ("user_transcript", "Tonight."),
                ("assistant_transcript", "Sure, for how many?"),
                "response_done",
            ],
        )

    @inlineCallbacks
    def test_barge_in(self):
        """interrupted: speech started, the cut response ends, its leftovers are dropped."""
        yield self.ready()
        self.fake.model_audio(tone(440, 0.2, 24000), text="Our opening hours are")
        yield self.listener.saw("response_started")
        heard = len(self.listener.played)
        self.fake.interrupted()
        self.fake.model_audio(tone(440, 0.2, 24000), text=" nine to five")
        self.fake.turn_complete()
        self.fake.heard("Wait, sorry.")
        self.fake.model_audio(tone(440, 0.1, 24000), text="Yes?")
        self.fake.turn_complete()
        yield self.listener.when(lambda: self.listener.kinds().count("response_done") == 2)
        self.assertEqual(
            self.listener.kinds(),
            [
                "ready",
                "response_started",
                "speech_started",
                ("assistant_transcript", "Our opening hours are"),
                "response_done",
                "speech_stopped",
                ("user_transcript", "Wait, sorry."),
                "response_started",
                ("assistant_transcript", "Yes?"),
                "response_done",
            ],
        )
        # Only the first answer's audio and the new one's came through.
        self.assertLess(len(self.listener.played) - heard, 800 + 80)

    @inlineCallbacks
    def test_truncate_sends_nothing_and_ends_the_response(self):
        session = yield self.ready()
        self.fake.model_audio(tone(440, 0.2, 24000), text="Let me")
        yield self.listener.saw("response_started")
        sent = len(self.fake.received)
        session.truncate(120)
        self.fake.model_audio(tone(440, 0.2, 24000), text=" check")
        self.fake.turn_complete()
        self.fake.model_audio(tone(440, 0.1, 24000), text="Next.")
        self.fake.turn_complete()
        yield self.listener.when(lambda: self.listener.kinds().count("response_done") == 2)
        self.assertEqual(len(self.fake.received), sent)
        self.assertEqual(
            self.listener.kinds()[1:],
            [
                "response_started",
                ("assistant_transcript", "Let me"),
                "response_done",
                "response_started",
                ("assistant_transcript", "Next."),
                "response_done",
            ],
        )

    @inlineCallbacks
    def test_tool_call_and_result(self):
        session = yield self.ready()
        self.fake.heard("Is booking A7 confirmed?")
        self.fake.tool_call("fc-1", "lookup", {"ref": "A7"})
        self.fake.tool_call("fc-2", END_CALL_TOOL)
        yield self.listener.saw("tool_call", "fc-2", END_CALL_TOOL, {})
        self.assertEqual(
            self.listener.kinds()[1:],
            [
                "speech_started",
                "speech_stopped",
                ("user_transcript", "Is booking A7 confirmed?"),
                ("tool_call", "fc-1", "lookup", {"ref": "A7"}),
                ("tool_call", "fc-2", END_CALL_TOOL, {}),
            ],
        )
        session.tool_result("fc-1", {"status": "confirmed"})
        session.tool_result("fc-2", {"ok": True})
        yield bounded(self.fake.when(lambda: len(self.fake.messages("toolResponse")) == 2))
        self.assertEqual(
            self.fake.messages("toolResponse"),
            [
                {
                    "functionResponses": [
                        {"id": "fc-1", "name": "lookup", "response": {"status": "confirmed"}}
                    ]
                },
                {
                    "functionResponses": [
                        {"id": "fc-2", "name": END_CALL_TOOL, "response": {"ok": True}}
                    ]
                },
            ],
        )

    @inlineCallbacks
    def test_go_away_without_a_handle_closes_once(self):
        session = yield self.ready()
        self.fake.go_away("5s")
        yield self.listener.saw("closed", "the server is ending the session (goAway, 5s left)")
        yield bounded(self.fake.when(lambda: not self.fake.connected))
        session.feed(b"\xff" * 800)
        session.speak("too late")
        yield bounded(session.close())
        self.assertEqual([e[0] for e in self.listener.events].count("closed"), 1)
        self.assertEqual(self.listener.kinds()[-1][0], "closed")
        self.assertEqual(self.fake.opened, 1)

    @inlineCallbacks
    def test_go_away_resumes_on_a_new_socket(self):
        """With a resumption handle, goAway moves the session on; the listener sees no seam."""
        session = yield self.ready()
        self.fake.resumption("handle-1")
        yield wait_for(lambda: session.resumption_handle == "handle-1", WAIT, "the handle")
        self.fake.model_audio(tone(440, 0.1, 24000), text="One moment")
        yield self.listener.saw("response_started")
        self.fake.ack_setup = False
        self.fake.go_away("5s")
        yield bounded(self.fake.when(lambda: len(self.fake.setups) == 2))
        self.assertEqual(session.state, "resuming")
        self.assertEqual(self.fake.setups[1]["sessionResumption"], {"handle": "handle-1"})
        self.assertEqual(
            {k: v for k, v in self.fake.setups[1].items() if k != "sessionResumption"},
            {k: v for k, v in self.fake.setups[0].items() if k != "sessionResumption"},
        )
        session.feed(b"\xff" * 1600)  # kept until the new socket is set up
        session.speak("Still there?")
        self.assertEqual(self.fake.audio_messages, [])
        self.fake.setup_complete()
        yield bounded(self.fake.when(lambda: self.fake.messages("clientContent")))
        self.assertEqual(len(self.fake.audio_messages), 2)
        self.fake.model_audio(tone(440, 0.1, 24000), text="Yes.")
        self.fake.turn_complete()
        yield self.listener.saw("assistant_transcript", "Yes.")
        self.assertEqual(
            self.listener.kinds(),
            [
                "ready",
                "response_started",
                ("assistant_transcript", "One moment"),
                "response_done",
                "response_started",
                ("assistant_transcript", "Yes."),
                "response_done",
            ],
        )
        self.assertEqual(self.fake.opened, 2)
        self.assertIn("realtime.resumed", self.logs.codes)
        yield bounded(self.fake.when(lambda: self.fake.closed == 1))

    @inlineCallbacks
    def test_a_dropped_socket_resumes(self):
        session = yield self.ready()
        self.fake.resumption("handle-2")
        yield wait_for(lambda: session.resumption_handle == "handle-2", WAIT, "the handle")
        self.fake.drop()
        yield bounded(self.fake.when(lambda: len(self.fake.setups) == 2))
        self.assertEqual(self.fake.setups[1]["sessionResumption"], {"handle": "handle-2"})
        ((problem, message),) = self.listener.kinds()[1:]
        self.assertEqual(problem, "problem")
        self.assertTrue(message.startswith("realtime socket lost ("), message)
        self.assertTrue(message.endswith("); resuming the session"), message)

    @inlineCallbacks
    def test_resuming_too_often_closes(self):
        session = yield self.ready()
        for n in range(1, MAX_RESUMES + 1):
            self.fake.resumption(f"h{n}")
            yield wait_for(lambda n=n: session.resumption_handle == f"h{n}", WAIT, "the handle")
            self.fake.go_away()
            yield bounded(self.fake.when(lambda n=n: len(self.fake.setups) == n + 1))
            yield wait_for(lambda: session.state == "open", WAIT, "the new socket")
            self.clock.advance(RESUME_WINDOW / (MAX_RESUMES + 1))
        self.fake.go_away()
        yield self.listener.when(lambda: self.listener.kinds()[-1][0] == "closed")
        self.assertEqual(self.fake.opened, MAX_RESUMES + 1)

    @inlineCallbacks
    def test_a_failed_resumption_closes(self):
        session = yield self.ready()
        self.fake.resumption("handle-3")
        yield wait_for(lambda: session.resumption_handle == "handle-3", WAIT, "the handle")
        self.fake.refuse(503)
        self.fake.drop()
        yield self.listener.when(lambda: self.listener.kinds()[-1][0] == "closed")
        self.assertIn("could not reconnect to 127.0.0.1", self.listener.kinds()[-1][1])
        self.assertEqual(self.fake.refused, 1)

    @inlineCallbacks
    def test_resumption_can_be_turned_off(self):
        yield self.ready(session_resumption=False)
        self.assertNotIn("sessionResumption", self.fake.setups[0])
        self.fake.resumption("handle-4")
        self.fake.go_away()
        yield self.listener.when(lambda: self.listener.kinds()[-1][0] == "closed")
        self.assertEqual(self.fake.opened, 1)

    @inlineCallbacks
    def test_server_close_and_drop(self):
        yield self.ready()
        self.fake.close(1011, "Internal error encountered.")
        yield self.listener.saw(
            "closed", "closed by the server (code 1011: Internal error encountered.)"
        )
        self.assertIn("realtime.closed", self.logs.codes)

    @inlineCallbacks
    def test_a_dropped_socket_closes(self):
        yield self.ready()
        self.fake.drop()
        yield self.listener.when(lambda: self.listener.kinds()[-1][0] == "closed")

    @inlineCallbacks
    def test_a_refused_handshake_closes(self):
        self.fake.refuse(403)
        self.open()
        yield self.listener.when(lambda: self.listener.events)
        ((kind, reason),) = self.listener.events
        self.assertEqual(kind, "closed")
        self.assertIn("403", reason)

    @inlineCallbacks
    def test_no_setup_complete_times_out(self):
        self.fake.ack_setup = False
        self.open()
        yield bounded(self.fake.when(lambda: self.fake.setups))
        self.clock.advance(CONNECT_TIMEOUT)
        self.assertEqual(
            self.listener.events,
            [("closed", f"no session from 127.0.0.1 within {CONNECT_TIMEOUT:g} s")],
        )
        yield bounded(self.fake.when(lambda: not self.fake.connected))

    @inlineCallbacks
    def test_close_ends_the_session(self):
        session = yield self.ready()
        yield bounded(session.close())
        self.assertEqual(self.listener.kinds()[-1], ("closed", "closed by voicecalld"))
        self.assertFalse(self.fake.connected)
        self.assertEqual(self.fake.rejected, [])

    @inlineCallbacks
    def test_close_while_connecting(self):
        session = self.open()
        yield bounded(session.close())
        self.assertEqual(self.listener.events, [("closed", "closed by voicecalld")])

    @inlineCallbacks
    def test_a_bad_message_is_a_problem(self):
        yield self.ready()
        self.fake.binary = False
        self.fake._latest().sendMessage(b"not json", isBinary=False)
        yield self.listener.saw("problem", "realtime server sent a message that is not JSON")
        self.fake.content(
            modelTurn={"parts": [{"inlineData": {"mimeType": "audio/pcm", "data": "%%"}}]}
        )
        yield self.listener.saw("problem", "realtime server sent audio that is not base64")

    @inlineCallbacks
    def test_the_key_is_never_logged(self):
        session = yield self.ready(base_url=self.url + "?alt=json")
        self.fake.go_away()
        yield self.listener.when(lambda: self.listener.kinds()[-1][0] == "closed")
        yield bounded(session.close())
        self.assertNotIn(KEY, self.logs.text())
        self.assertNotIn("?alt", self.logs.text())
        self.assertEqual(self.fake.queries, [{"alt": "json"}])


class TlsTests(TestCase):
    def test_wss_connects_with_tls(self):
        """Google's C{wss} URL dials port 443 and opens TLS naming the host; the key is no query."""
        from tests.unit.vendor_rigs import FixedResolver

        memory = MemoryReactorClock()
        memory.installNameResolver(FixedResolver("192.0.2.7"))
        voice = GeminiLiveVoice(google_settings(), memory, Clock())
        session = voice.open_session(RecordingListener(), SETUP)
        factory = voice.client_factory(session)
        self.assertEqual((factory.host, factory.port, factory.isSecure), (GEMINI_HOST, 443, True))
        self.assertEqual(factory.resource, PATH)
        self.assertEqual(factory.headers, {"x-goog-api-key": KEY})
        ((host, port, connecting, _, _),) = memory.tcpClients
        self.assertEqual((host, port), ("192.0.2.7", 443))
        transport = StringTransport()
        protocol = connecting.buildProtocol(IPv4Address("TCP", host, port))
        protocol.makeConnection(transport)
        hello = transport.value()
        self.assertEqual(hello[:1], b"\x16")  # a TLS ClientHello,
        self.assertIn(GEMINI_HOST.encode(), hello)  # naming the server (SNI)
        closing = session.close()
        protocol.connectionLost(Failure(ConnectionDone()))
        self.successResultOf(closing)


class InterfaceTests(TestCase):
    def test_interfaces(self):
        voice = GeminiLiveVoice(google_settings(base_url="ws://127.0.0.1:9/x"), reactor, Clock())
        self.assertTrue(verifyObject(IRealtimeVoice, voice))
        self.assertEqual(voice.name, "google")
        session = voice.open_session(RecordingListener(), SETUP)
        self.assertTrue(verifyObject(IRealtimeSession, session))
        self.assertTrue(verifyObject(IRealtimeListener, RecordingListener()))
        return session.close()
