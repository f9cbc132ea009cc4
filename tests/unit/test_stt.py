"""Streaming STT over OpenAI Realtime: against a live fake on 127.0.0.1, and in memory."""

from __future__ import annotations

import base64
import json
from typing import Any

from autobahn.websocket.protocol import WebSocketProtocol
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from tests.fakes.openai_realtime import FakeRealtimeServer
from tests.unit.vendor_rigs import (
    FRAME,
    FixedResolver,
    LiveFakeCase,
    RecordingListener,
    SessionBasics,
    SttFactoryCase,
    delays,
    frames,
    stub_protocol,
)
from voicecalld.config.model import (
    OPENAI_REALTIME_URL,
    OpenAIStreamingSettings,
    StreamingSettings,
)
from voicecalld.config.secret import Secret
from voicecalld.voice.stt import ISTT
from voicecalld.voice.stt_factory import make_stt
from voicecalld.voice.stt_openai import (
    BATCH_BYTES,
    BATCH_SECONDS,
    CONNECT_TIMEOUT,
    IDLE_AFTER,
    MAX_BUFFER_BYTES,
    OpenAIRealtimeSTT,
)

KEY = "sk-test-not-a-real-key"


def openai_settings(**overrides: Any) -> OpenAIStreamingSettings:
    """OpenAI streaming settings with a test key and non-default tuning."""
    values: dict[str, Any] = {
        "api_key": Secret(KEY),
        "model": "gpt-4o-mini-transcribe",
        "silence_duration_ms": 650,
        "vad_threshold": 0.35,
    }
    values.update(overrides)
    return OpenAIStreamingSettings(**values)


OPENAI_PATH = "/v1/realtime?intent=transcription"


class LiveFakeTests(LiveFakeCase):
    """Our real WebSocket client against the fake OpenAI, in memory."""

    fake_class = FakeRealtimeServer

    def setUp(self) -> None:
        super().setUp()
        self.url = self.net.url

    def make_stt(self, url: str | None = None, **settings: Any) -> Any:
        return OpenAIRealtimeSTT(
            openai_settings(**settings), url or self.url, self.net.reactor, self.clock
        )

    def feed_for(self, session: Any, seconds: int) -> list[bytes]:
        """Feed a frame, then let a second pass, C{seconds} times (audio keeps flowing)."""
        fed = frames(seconds, start=100 + int(self.clock.seconds()))
        for frame in fed:
            session.feed(frame)
            self.advance(1)
        return fed

    def test_session_update_shape(self):
        """The session is configured with the GA transcription shape and our settings."""
        session = self.open(language="de", prompt="Names: Anke, Jörg")
        self.wait(self.fake.nth_update(1))
        self.wait(self.logs.code_count("stt.open", 1))
        self.assertEqual(self.fake.authorization, f"Bearer {KEY}")
        self.assertEqual(self.fake.paths, ["/v1/realtime"])
        self.assertEqual(
            self.fake.session_updates[0],
            {
                "type": "session.update",
                "session": {
                    "type": "transcription",
                    "audio": {
                        "input": {
                            "format": {"type": "audio/pcmu"},
                            "transcription": {
                                "model": "gpt-4o-mini-transcribe",
                                "language": "de",
                                "prompt": "Names: Anke, Jörg",
                            },
                            "turn_detection": {
                                "type": "server_vad",
                                "threshold": 0.35,
                                "prefix_padding_ms": 300,
                                "silence_duration_ms": 650,
                            },
                        }
                    },
                },
            },
        )
        self.assertEqual(session.state, "open")
        self.assertEqual(delays(self.clock), [])
        self.assert_secret_unlogged(KEY)

    def test_optional_fields_left_out(self):
        """Without a language or prompt the transcription block names only the model."""
        self.open()
        self.wait(self.fake.nth_update(1))
        transcription = self.fake.session_updates[0]["session"]["audio"]["input"]["transcription"]
        self.assertEqual(transcription, {"model": "gpt-4o-mini-transcribe"})

    def test_audio_fed_while_connecting_arrives_in_order(self):
        """Frames fed before the socket is up are sent after the update, then the rest follow."""
        session = self.open()
        early, late = frames(5), frames(6, start=5)
        for frame in early:
            session.feed(frame)
        self.assertEqual(self.fake.opened, 0)
        self.wait(self.fake.audio_at_least(len(b"".join(early))))
        for frame in late:
            session.feed(frame)
        self.advance(BATCH_SECONDS)
        self.wait(self.fake.audio_at_least(len(b"".join(early + late))))
        self.assertEqual(bytes(self.fake.audio), b"".join(early + late))
        kinds = [e["type"] for e in self.fake.received]
        self.assertEqual(kinds[0], "session.update")
        self.assertEqual(set(kinds[1:]), {"input_audio_buffer.append"})
        # 5 early frames in one append, then 4 frames (a full batch) and 2 on the timer.
        self.assertEqual(len(kinds), 4)

    def test_buffer_while_connecting_keeps_the_last_five_seconds(self):
        """Audio beyond 5 s fed before the socket is up is dropped oldest first."""
        session = self.open()
        fed = b"".join(frames(350))  # 7 s
        for i in range(0, len(fed), FRAME):
            session.feed(fed[i : i + FRAME])
        self.wait(self.fake.audio_at_least(MAX_BUFFER_BYTES))
        self.wait(self.logs.code_count("stt.open", 1))
        self.assertEqual(bytes(self.fake.audio), fed[-MAX_BUFFER_BYTES:])

    def test_transcripts_reach_the_listener(self):
        """speech_started, growing partials per item and the final transcript arrive in order."""
        self.open()
        self.wait(self.logs.code_count("stt.open", 1))
        self.fake.speech_started("item_1")
        self.fake.delta("item_1", "Hello")
        self.fake.delta("item_1", " there")
        self.fake.completed("item_1", "Hello there.")
        self.fake.completed("item_2", "   ")
        self.fake.speech_started("item_3")
        self.wait(self.listener.count(5))
        self.assertEqual(
            self.listener.events,
            [
                ("speech_started",),
                ("partial", "Hello"),
                ("partial", "Hello there"),
                ("final", "Hello there."),
                ("speech_started",),
            ],
        )

    def test_error_event_is_a_problem(self):
        """A vendor C{error} event reaches the listener as a problem; the session stays open."""
        session = self.open()
        self.wait(self.logs.code_count("stt.open", 1))
        self.fake.error("Invalid model 'nope'", code="invalid_value")
        self.wait(self.listener.count(1))
        self.assertEqual(
            self.listener.of("problem"), ["speech-to-text error: Invalid model 'nope'"]
        )
        self.assertEqual(session.state, "open")

    def test_reconnects_with_backoff_after_a_drop(self):
        """A mid-call drop: one problem, retries at 1, 2, 4, 8, 16, 16 s, then recovery."""
        session = self.open()
        first = frames(4)
        for frame in first:
            session.feed(frame)
        self.wait(self.fake.audio_at_least(4 * FRAME))
        self.fake.refuse(503)
        self.fake.drop()
        self.wait(self.listener.count(1))
        (message,) = self.listener.of("problem")
        self.assertIn("connection lost", message)
        self.assertEqual(delays(self.clock), [1.0])
        fed: list[bytes] = []
        retries = 1
        for expected in (2.0, 4.0, 8.0, 16.0, 16.0):
            fed += self.feed_for(session, int(delays(self.clock)[0]))
            retries += 1
            self.wait(self.logs.code_count("stt.retry", retries))
            self.assertEqual(delays(self.clock), [expected])
        self.assertEqual(self.fake.refused, 5)
        self.assertEqual(len(self.listener.of("problem")), 1)

        self.fake.accept()
        fed += self.feed_for(session, 16)
        self.wait(self.logs.code_count("stt.recovered", 1))
        self.wait(self.fake.audio_at_least(len(b"".join(first + fed))))
        self.assertEqual(bytes(self.fake.audio), b"".join(first + fed))
        self.assertEqual(len(self.fake.session_updates), 2)
        self.assertEqual(len(self.listener.of("problem")), 1)
        self.assertEqual(session.state, "open")

        # Transcripts flow on the new socket.
        self.fake.completed("item_9", "Still there?")
        self.wait(self.listener.count(2))
        self.assertEqual(self.listener.of("final"), ["Still there?"])

    def test_idle_socket_reopens_on_demand(self):
        """A socket the vendor closes after quiet is not redialled until audio comes again."""
        session = self.open()
        session.feed(b"\x01" * BATCH_BYTES)
        self.wait(self.fake.audio_at_least(BATCH_BYTES))
        self.advance(IDLE_AFTER)
        self.fake.close(1000, "idle timeout")
        self.wait(self.logs.code_count("stt.idle", 1))
        self.assertEqual(session.state, "idle")
        self.assertEqual(delays(self.clock), [])
        self.advance(60)
        self.assertEqual(self.fake.opened, 1)
        self.assertEqual(self.listener.events, [])

        session.feed(b"\x02" * BATCH_BYTES)
        self.wait(self.fake.audio_at_least(2 * BATCH_BYTES))
        self.assertEqual(bytes(self.fake.audio), b"\x01" * BATCH_BYTES + b"\x02" * BATCH_BYTES)
        self.assertEqual(self.fake.opened, 2)
        self.assertEqual(len(self.fake.session_updates), 2)
        self.assertEqual(self.listener.events, [])

    def test_close_stops_everything(self):
        """close() on an open session: socket closed, no timers, no reconnect, feed ignored."""
        session = self.open()
        self.wait(self.logs.code_count("stt.open", 1))
        session.feed(b"\x01" * FRAME)
        self.assertEqual(delays(self.clock), [BATCH_SECONDS])
        self.wait(session.close())
        self.assertEqual(delays(self.clock), [])
        self.wait(self.fake.when(lambda: not self.fake.connected))
        session.feed(b"\x02" * FRAME)
        self.advance(120)
        self.assertEqual(self.fake.opened, 1)
        self.assertEqual(len(self.fake.requests), 1)
        self.assertEqual(self.fake.audio, b"")
        self.assertEqual(self.listener.events, [])
        self.assertEqual(session.state, "closed")

    def test_close_during_backoff(self):
        """close() while waiting to retry cancels the retry."""
        self.fake.refuse(503)
        session = self.open()
        self.wait(self.listener.count(1))
        self.assertIn("503", self.listener.of("problem")[0])
        self.assertEqual(delays(self.clock), [1.0])
        self.wait(session.close())
        self.assertEqual(delays(self.clock), [])
        self.advance(120)
        self.assertEqual(len(self.fake.requests), 1)

    def test_close_while_connecting(self):
        """close() before the socket is up abandons the attempt and leaves no timers."""
        session = self.open()
        self.wait(session.close())
        self.assertEqual(delays(self.clock), [])
        self.assertEqual(self.listener.events, [])

    def test_connection_refused(self):
        """Nothing listening: a problem is reported, feed never raises, a retry is set."""
        self.net.refuse_dials = True
        session = self.open()
        for frame in frames(10):
            session.feed(frame)
        self.wait(self.listener.count(1))
        (message,) = self.listener.of("problem")
        self.assertIn("connection failed", message)
        self.assertIn("refused", message.lower())
        for frame in frames(10):
            session.feed(frame)
        self.assertEqual(session.state, "waiting")
        self.assertEqual(delays(self.clock), [1.0])
        self.assertEqual(self.fake.requests, [])

    def test_connect_timeout(self):
        """No C{session.updated} within 10 s: the socket is dropped and retried."""
        self.fake.ack_updates = False
        session = self.open()
        self.wait(self.fake.nth_update(1))
        self.assertEqual(session.state, "connecting")
        self.advance(CONNECT_TIMEOUT)
        self.wait(self.listener.count(1))
        self.assertIn(f"no session within {CONNECT_TIMEOUT:g} s", self.listener.of("problem")[0])
        self.assertEqual(delays(self.clock), [1.0])
        self.wait(self.fake.when(lambda: not self.fake.connected))


class ScriptedSTT(OpenAIRealtimeSTT):
    """Connections are Deferreds the test fires by hand."""

    def __init__(self, clock: Clock, **settings: Any) -> None:
        super().__init__(openai_settings(**settings), "wss://stt.invalid/v1/realtime", None, clock)
        self.attempts: list[Deferred] = []

    def connect(self, factory: Any) -> Deferred:
        self.factory = factory
        d: Deferred = Deferred()
        self.attempts.append(d)
        return d


class InMemoryTests(SessionBasics, TestCase):
    """The session's rules with the socket replaced: batching, events, backoff, ordering."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.stt = ScriptedSTT(self.clock)
        self.listener = RecordingListener()
        self.session = self.stt.open_session(self.listener)

    def connect(self) -> Any:
        """Let the pending attempt succeed and the session be configured."""
        proto = stub_protocol(self.stt.factory)
        self.stt.attempts[-1].callback(proto)
        proto.onOpen()
        self.assertEqual(proto.sent[-1]["type"], "session.update")
        self.event(proto, type="session.updated", session={})
        self.assertEqual(self.session.state, "open")
        return proto

    def event(self, proto: Any, **event: Any) -> None:
        proto.onMessage(json.dumps(event).encode(), False)

    def appended(self, proto: Any) -> list[int]:
        """The size of each audio append sent on C{proto}."""
        return [
            len(base64.b64decode(m["audio"]))
            for m in proto.sent
            if m["type"] == "input_audio_buffer.append"
        ]

    def test_wss_factory(self):
        """The factory carries the URL's host, TLS and the bearer header."""
        factory = self.stt.factory
        self.assertTrue(factory.isSecure)
        self.assertEqual((factory.host, factory.port), ("stt.invalid", 443))
        self.assertEqual(factory.resource, "/v1/realtime")
        self.assertEqual(factory.headers["Authorization"], f"Bearer {KEY}")

    def test_wss_connects_with_tls(self):
        """A C{wss} URL resolves the host, dials port 443 and opens TLS naming that host."""
        memory = MemoryReactorClock()
        memory.installNameResolver(FixedResolver("192.0.2.7"))
        stt = OpenAIRealtimeSTT(openai_settings(), OPENAI_REALTIME_URL, memory)
        session = stt.open_session(self.listener)
        factory = stt.client_factory(session)
        self.assertEqual((factory.host, factory.resource), ("api.openai.com", OPENAI_PATH))
        ((host, port, connecting, _, _),) = memory.tcpClients
        self.assertEqual((host, port), ("192.0.2.7", 443))
        self.assertEqual(delays(memory), [0.3, CONNECT_TIMEOUT])  # next address; our timeout
        transport = StringTransport()
        protocol = connecting.buildProtocol(IPv4Address("TCP", host, port))
        protocol.makeConnection(transport)
        hello = transport.value()
        self.assertEqual(hello[:1], b"\x16")  # a TLS handshake record: the ClientHello,
        self.assertIn(b"api.openai.com", hello)  # naming the server (SNI)
        self.assertNotIn(b"GET /v1/realtime", hello)  # and no plain HTTP
        closing = session.close()
        self.assertTrue(transport.disconnecting)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.successResultOf(closing)
        self.assertEqual(delays(memory), [])

    def test_batching(self):
        """Frames go out every 80 ms of audio, or 80 ms after the oldest unsent frame."""
        proto = self.connect()
        self.assertEqual(delays(self.clock), [])
        self.session.feed(b"\x00" * FRAME)
        self.assertEqual(self.appended(proto), [])
        self.clock.advance(BATCH_SECONDS - 0.001)
        self.assertEqual(self.appended(proto), [])
        self.clock.advance(0.001)
        self.assertEqual(self.appended(proto), [FRAME])
        for _ in range(4):
            self.session.feed(b"\x00" * FRAME)
        self.assertEqual(self.appended(proto), [FRAME, 4 * FRAME])
        self.assertEqual(delays(self.clock), [])

    def test_no_send_on_a_closing_socket(self):
        """Audio is kept, not lost, while the socket is closing, and sent on the next one."""
        proto = self.connect()
        proto.state = WebSocketProtocol.STATE_CLOSING
        for _ in range(5):
            self.session.feed(b"\x00" * FRAME)
        self.assertEqual(self.appended(proto), [])
        proto.onClose(True, 1000, None)
        self.assertEqual(self.session.state, "waiting")
        self.assertIn("closed by the server (code 1000)", self.listener.of("problem")[0])
        self.clock.advance(1)
        again = self.connect()
        self.assertEqual(self.appended(again), [5 * FRAME])

    def test_message_handling(self):
        """Deltas accumulate per item; finals are trimmed; junk and unknown events are ignored."""
        proto = self.connect()
        self.event(proto, type="input_audio_buffer.speech_started", item_id="a")
        self.event(
            proto,
            type="conversation.item.input_audio_transcription.delta",
            item_id="a",
            delta="one",
        )
        self.event(
            proto,
            type="conversation.item.input_audio_transcription.delta",
            item_id="b",
            delta="two",
        )
        self.event(
            proto,
            type="conversation.item.input_audio_transcription.delta",
            item_id="a",
            delta=" more",
        )
        self.event(
            proto, type="conversation.item.input_audio_transcription.delta", item_id="a", delta=""
        )
        self.event(
            proto,
            type="conversation.item.input_audio_transcription.completed",
            item_id="a",
            transcript=" One more. ",
        )
        self.event(
            proto,
            type="conversation.item.input_audio_transcription.completed",
            item_id="b",
            transcript="",
        )
        self.event(proto, type="rate_limits.updated", rate_limits=[])
        self.event(proto, type="input_audio_buffer.speech_stopped", item_id="a")
        proto.onMessage(b"\x00\x01", True)
        proto.onMessage(b"not json", False)
        proto.onMessage(b"[1, 2]", False)
        self.event(
            proto,
            type="conversation.item.input_audio_transcription.completed",
            item_id=["weird"],
            transcript="Odd but fine",
        )
        self.event(proto, type="error", error={"type": "server_error", "message": "boom"})
        self.event(proto, type="error")
        self.event(
            proto,
            type="conversation.item.input_audio_transcription.failed",
            item_id="c",
            error={"message": "audio unreadable"},
        )
        self.assertEqual(
            self.listener.events,
            [
                ("speech_started",),
                ("partial", "one"),
                ("partial", "two"),
                ("partial", "one more"),
                ("final", "One more."),
                ("speech_stopped",),
                ("final", "Odd but fine"),
                ("problem", "speech-to-text error: boom"),
                ("problem", "speech-to-text error: unknown error"),
                ("problem", "speech-to-text could not transcribe a turn: audio unreadable"),
            ],
        )

    def test_beta_session_event(self):
        """The beta C{transcription_session.updated} also marks the session configured."""
        proto = stub_protocol(self.stt.factory)
        self.stt.attempts[-1].callback(proto)
        proto.onOpen()
        self.event(proto, type="transcription_session.created", session={})
        self.assertEqual(self.session.state, "connecting")
        self.event(proto, type="transcription_session.updated", session={})
        self.assertEqual(self.session.state, "open")

    def test_finals_in_commit_order(self):
        """Completions that arrive out of order are delivered in the order turns were committed."""
        proto = self.connect()
        self.event(proto, type="input_audio_buffer.committed", item_id="a", previous_item_id=None)
        self.event(proto, type="input_audio_buffer.committed", item_id="b", previous_item_id="a")
        self.event(
            proto,
            type="conversation.item.input_audio_transcription.completed",
            item_id="b",
            transcript="Second.",
        )
        self.assertEqual(self.listener.of("final"), [])
        self.event(
            proto,
            type="conversation.item.input_audio_transcription.completed",
            item_id="a",
            transcript="First.",
        )
        self.assertEqual(self.listener.of("final"), ["First.", "Second."])

    def test_a_lost_turn_does_not_hold_the_rest_forever(self):
        """After more than two later turns finish, an unfinished earlier one is given up."""
        proto = self.connect()
        for item in "wxyz":
            self.event(proto, type="input_audio_buffer.committed", item_id=item)
        for item in "xy":
            self.event(
                proto,
                type="conversation.item.input_audio_transcription.completed",
                item_id=item,
                transcript=item.upper(),
            )
        self.assertEqual(self.listener.of("final"), [])
        self.event(
            proto,
            type="conversation.item.input_audio_transcription.completed",
            item_id="z",
            transcript="Z",
        )
        self.assertEqual(self.listener.of("final"), ["X", "Y", "Z"])

    def test_held_turns_are_released_when_the_socket_drops(self):
        """A drop delivers finished turns that were waiting for an earlier one."""
        proto = self.connect()
        self.session.feed(b"\x00" * FRAME)
        self.event(proto, type="input_audio_buffer.committed", item_id="a")
        self.event(proto, type="input_audio_buffer.committed", item_id="b")
        self.event(
            proto,
            type="conversation.item.input_audio_transcription.completed",
            item_id="b",
            transcript="Second.",
        )
        proto.onClose(False, 1006, "peer dropped the TCP connection")
        self.assertEqual(self.listener.of("final"), ["Second."])
        self.assertEqual(len(self.listener.of("problem")), 1)

    def test_backoff_sequence_and_one_problem(self):
        """Failed attempts back off 1, 2, 4, 8, 16, 16 s; one problem per outage."""
        seen = []
        for _ in range(6):
            self.session.feed(b"\x00" * FRAME)
            self.stt.attempts[-1].errback(ConnectionRefusedError())
            seen.append(delays(self.clock)[0])
            self.clock.advance(seen[-1] - 1)
            self.session.feed(b"\x00" * FRAME)
            self.clock.advance(1)
        self.assertEqual(seen, [1, 2, 4, 8, 16, 16])
        self.assertEqual(len(self.stt.attempts), 7)
        self.assertEqual(len(self.listener.of("problem")), 1)
        proto = self.connect()
        self.assertEqual(delays(self.clock), [])
        # A new outage after recovery starts again at 1 s and is reported again.
        proto.onClose(False, 1006, "gone")
        self.assertEqual(delays(self.clock), [1.0])
        self.assertEqual(len(self.listener.of("problem")), 2)

    def test_connect_timeout_cancels_the_attempt(self):
        """An attempt with no answer in 10 s is cancelled and retried."""
        attempt = self.stt.attempts[-1]
        self.clock.advance(CONNECT_TIMEOUT - 0.001)
        self.assertEqual(self.listener.events, [])
        self.clock.advance(0.001)
        self.assertTrue(attempt.called)
        self.assertEqual(len(self.listener.of("problem")), 1)
        self.assertEqual(delays(self.clock), [1.0])

    def test_timeout_waiting_for_the_session(self):
        """A socket that opens but never confirms the session is dropped after 10 s."""
        proto = stub_protocol(self.stt.factory)
        self.stt.attempts[-1].callback(proto)
        proto.onOpen()
        self.clock.advance(CONNECT_TIMEOUT)
        self.assertEqual(proto.closed_with, ("drop", True))
        self.assertEqual(self.session.state, "waiting")
        # Its late close is stale and changes nothing.
        proto.onClose(False, 1006, "aborted")
        self.assertEqual(delays(self.clock), [1.0])
        self.assertEqual(len(self.listener.of("problem")), 1)

    def test_quiet_outage_goes_idle(self):
        """When the retry is due and no audio came for 5 s, wait for audio instead."""
        self.stt.attempts[-1].errback(ConnectionRefusedError())
        self.clock.advance(IDLE_AFTER)
        self.assertEqual(len(self.stt.attempts), 1)
        self.assertEqual(self.session.state, "idle")
        self.assertEqual(delays(self.clock), [])
        self.session.feed(b"\x07" * FRAME)
        self.assertEqual(len(self.stt.attempts), 2)
        proto = self.connect()
        self.assertEqual(self.appended(proto), [FRAME])

    def test_buffer_bound(self):
        """While there is no socket at most 5 s are kept, newest last."""
        for frame in frames(300):
            self.session.feed(frame)
        proto = self.connect()
        fed = b"".join(frames(300))
        sent = b"".join(base64.b64decode(m["audio"]) for m in proto.sent if "audio" in m)
        self.assertEqual(sent, fed[-MAX_BUFFER_BYTES:])

    def test_close_with_an_open_socket(self):
        """close() sends a normal close, fires once the socket is gone, and silences events."""
        proto = self.connect()
        self.session.feed(b"\x00" * FRAME)
        closing = self.session.close()
        self.assertEqual(proto.closed_with, ("close", 1000))
        self.assertNoResult(closing)
        self.event(
            proto,
            type="conversation.item.input_audio_transcription.completed",
            item_id="a",
            transcript="Too late.",
        )
        proto.onClose(True, 1000, None)
        self.successResultOf(closing)
        self.assertEqual(self.listener.events, [])
        self.assertEqual(delays(self.clock), [])
        self.assertEqual(self.appended(proto), [])
        self.successResultOf(self.session.close())

    def test_close_cancels_a_pending_attempt(self):
        """close() while connecting cancels the attempt."""
        attempt = self.stt.attempts[-1]
        self.successResultOf(self.session.close())
        self.assertTrue(attempt.called)
        self.assertEqual(self.listener.events, [])
        self.assertEqual(delays(self.clock), [])

    def test_listener_errors_are_contained(self):
        """A listener that raises is logged; the session carries on."""

        class Broken(RecordingListener):
            def partial(self, text: str) -> None:
                raise ValueError("listener bug")

        listener = Broken()
        session = self.stt.open_session(listener)
        proto = stub_protocol(self.stt.factory)
        self.stt.attempts[-1].callback(proto)
        proto.onOpen()
        self.event(proto, type="session.updated")
        self.event(
            proto, type="conversation.item.input_audio_transcription.delta", item_id="a", delta="hi"
        )
        self.event(
            proto,
            type="conversation.item.input_audio_transcription.completed",
            item_id="a",
            transcript="Hi.",
        )
        self.assertEqual(listener.events, [("final", "Hi.")])
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        session.close()


class MakeSttTests(SttFactoryCase):
    """Choosing the provider from the config."""

    def test_openai(self):
        """With a key, unset or openai/openai-realtime provider gives the OpenAI STT."""
        for provider in (None, "openai", "openai-realtime"):
            settings = StreamingSettings(
                provider=provider,
                providers={"openai": openai_settings()},
                stt_url="ws://127.0.0.1:9/v1/realtime",
            )
            stt = make_stt(settings, MemoryReactorClock())
            self.assertIsInstance(stt, OpenAIRealtimeSTT)
            verifyObject(ISTT, stt)
            self.assertEqual(stt.url, "ws://127.0.0.1:9/v1/realtime")
        self.assertEqual(self.warnings(), [])

    def test_no_key(self):
        """No OpenAI key: None and one warning that does not crash anything."""
        for providers in ({}, {"openai": OpenAIStreamingSettings()}):
            del self.logs.events[:]
            self.assertIsNone(
                make_stt(StreamingSettings(providers=providers), MemoryReactorClock())
            )
            (warning,) = self.warnings()
            self.assertIn("OpenAI key", warning)

    def test_other_provider(self):
        """A provider voicecalld does not have: None and one warning naming it."""
        settings = StreamingSettings(provider="acme-stt", providers={"openai": openai_settings()})
        self.assertIsNone(make_stt(settings, MemoryReactorClock()))
        (warning,) = self.warnings()
        self.assertIn("acme-stt", warning)
