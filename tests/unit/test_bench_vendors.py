"""
The system benchmark's vendor fakes (bench.system.vendors), served on
127.0.0.1 in this process and spoken to by the daemon's own clients: its
OpenAI speech client, its chat body, and its Realtime transcription session.
"""

from __future__ import annotations

import json
import subprocess
import sys

import treq
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol, connectWS
from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool

from bench.system import vendors as v
from tests.fakes.ws_vendor import Waitable
from voicecalld.config.model import OpenAIStreamingSettings, OpenAITtsSettings
from voicecalld.config.secret import Secret
from voicecalld.voice.stt_openai import OpenAIRealtimeSTT
from voicecalld.voice.tts_openai import OpenAITTS

BOUND = 5.0


class Listener(Waitable):
    """What the daemon's transcription session tells a call."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[str, ...]] = []

    def speech_started(self) -> None:
        self._add("speech_started")

    def speech_stopped(self) -> None:
        self._add("speech_stopped")

    def partial(self, text: str) -> None:
        self._add("partial", text)

    def final(self, text: str) -> None:
        self._add("final", text)

    def problem(self, message: str) -> None:
        self._add("problem", message)

    def _add(self, *event: str) -> None:
        self.events.append(event)
        self.changed()

    def finals(self) -> list[str]:
        return [e[1] for e in self.events if e[0] == "final"]


def bounded(d: Deferred) -> Deferred:
    return d.addTimeout(BOUND, reactor)


class VendorsTests(TestCase):
    """One speech request, one chat request and one transcription session."""

    def setUp(self) -> None:
        script = v.Script(
            turn_every=0.2,
            utterance_seconds=0.3,
            barge_in_every=2,
            barge_in_speech=0.0,
            turn_gap=0.0,
            first_byte=0.0,
            speedup=10.0,
        )
        self.vendors = v.Vendors(script, reactor)
        port, factory = v.listen(self.vendors)
        self.addCleanup(port.stopListening)
        self.addCleanup(factory.stop)
        self.urls = v.urls(port.getHost().port)
        self.pool = HTTPConnectionPool(reactor, persistent=False)

    def speak(self, text: str) -> Deferred:
        settings = OpenAITtsSettings(api_key=Secret("sk-test"), base_url=self.urls["openai_base"])
        tts = OpenAITTS(settings, reactor, http=HTTPClient(Agent(reactor, pool=self.pool)))
        audio: list[bytes] = []
        d = tts.synthesize(text, audio.append)
        return d.addCallback(lambda synthesis: (synthesis, b"".join(audio), len(audio)))

    def chat(self, last: str) -> Deferred:
        body = {
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "assistant", "content": "Hello (ref c9.t9)."},
                {"role": "user", "content": last},
            ],
            "max_tokens": 200,
        }
        d = treq.post(
            self.urls["openai_base"] + "/chat/completions",
            data=json.dumps(body).encode(),
            headers={"Content-Type": ["application/json"]},
            pool=self.pool,
        )
        return d.addCallback(lambda r: treq.json_content(r).addCallback(lambda j: (r.code, j)))

    def test_urls(self):
        """The JSON line's URLs are the daemon's TTS/chat base, STT URL and stats."""
        self.assertEqual(
            v.urls(4321),
            {
                "openai_base": "http://127.0.0.1:4321/v1",
                "realtime_url": "ws://127.0.0.1:4321/v1/realtime?intent=transcription",
                "stats": "http://127.0.0.1:4321/stats",
            },
        )

    @inlineCallbacks
    def test_speech(self):
        """Speech is 24 kHz PCM of the scripted length, in several chunks, tied to its turn."""
        synthesis, ulaw, pieces = yield bounded(self.speak("Fine (ref c5.t1). Thanks."))
        self.assertEqual(synthesis.provider, "openai")
        # 0.3 s at 8 kHz mu-law, give or take the resampler's edges.
        self.assertAlmostEqual(len(ulaw), 2400, delta=40)
        self.assertGreater(pieces, 1)
        counts = self.vendors.stats.counts
        self.assertEqual(counts["tts_bytes"], 0.3 * v.PCM_BYTES_PER_SECOND)
        self.assertEqual(counts["tts_done"], 1)
        self.assertEqual([e[1:] for e in self.vendors.stats.events["tts_request"]], [(5, 1)])
        chunks = self.vendors.chunks
        self.assertGreater(len(set(chunks)), len(chunks) // 2)
        self.assertTrue(all(1500 <= c < 6600 and c % 2 for c in chunks))

    @inlineCallbacks
    def test_chat(self):
        """A chat answer is an OpenAI completion carrying the last user turn's tag."""
        code, answer = yield bounded(self.chat("A table (ref c3.t4)."))
        self.assertEqual(code, 200)
        text = answer["choices"][0]["message"]["content"]
        self.assertIn("(ref c3.t4)", text)
        self.assertEqual([e[1:] for e in self.vendors.stats.events["chat"]], [(3, 4)])
        (asked_at, _, _) = self.vendors.stats.events["chat"][0]
        for since, seen in ((asked_at - 1, [[asked_at, 3, 4]]), (asked_at, [])):
            response = yield bounded(
                treq.get(f"{self.urls['stats']}?since={since!r}", pool=self.pool)
            )
            stats = yield treq.json_content(response)
            self.assertEqual(stats["counts"]["chat"], 1)
            self.assertEqual(stats["events"]["chat"], seen)

    @inlineCallbacks
    def test_transcription_script(self):
        """
        The daemon's own session hears a turn after C{turn_every} of audio; once
        the reply to it streams, the next turn barges in halfway through.
        """
        settings = OpenAIStreamingSettings(api_key=Secret("sk-test"))
        stt = OpenAIRealtimeSTT(settings, self.urls["realtime_url"], reactor)
        listener = Listener()
        session = stt.open_session(listener)
        self.addCleanup(session.close)
        frame = b"\x11\x22\x33" + b"\x55" * 157
        for _ in range(12):
            session.feed(frame)
        yield bounded(listener.when(lambda: listener.finals()))
        (sid,) = self.vendors.sessions
        (first,) = listener.finals()
        self.assertEqual(first, f"I would like a table for two at eight (ref c{sid}.t1).")
        kinds = [e[0] for e in listener.events]
        self.assertEqual(kinds, ["speech_started", "partial", "partial", "speech_stopped", "final"])
        self.assertEqual(listener.events[2], ("partial", "I would like a table for two "))
        live = self.vendors.sessions[sid]
        self.assertEqual(live.audio_bytes, 12 * 160)
        self.assertEqual(live.first_audio, "112233555555")

        # The reply, as the daemon gets it: chat, then speech; turn 2 barges in.
        _, answer = yield bounded(self.chat(first))
        reply = answer["choices"][0]["message"]["content"]
        speaking = self.speak(reply)
        yield bounded(listener.when(lambda: len(listener.finals()) == 2))
        yield bounded(speaking)
        self.assertEqual(listener.finals()[1], f"Wait, sorry, one more thing (ref c{sid}.t2).")
        events = self.vendors.stats.events
        self.assertEqual([e[1:] for e in events["barge_in"]], [(sid, 2)])
        self.assertEqual([e[1:] for e in events["completed"]], [(sid, 1), (sid, 2)])
        (barge,) = events["barge_in"]
        (first_byte,) = events["tts_first_byte"]
        self.assertGreaterEqual(barge[0] - first_byte[0], 0.3 * 0.5 - 0.01)
        counts = self.vendors.stats.counts
        self.assertEqual(counts["session_updates"], 1)
        self.assertEqual(counts["appends"], live.appends)


class _Raw(WebSocketClientProtocol):
    """A plain autobahn client that records what the server sends."""

    def onOpen(self) -> None:
        self.factory.client = self
        self.factory.seen.add("open")

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.factory.seen.add("message", json.loads(payload))

    def onPong(self, payload: bytes) -> None:
        self.factory.seen.add("pong", payload)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.factory.seen.add("close", wasClean)


class Seen(Waitable):
    """Events, in order, with waiting."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple] = []

    def add(self, *event: object) -> None:
        self.events.append(event)
        self.changed()

    def kinds(self) -> list[str]:
        return [e[0] for e in self.events]


class WebSocketTests(TestCase):
    """The transcription socket's RFC 6455 side: pings, refusals, a clean close."""

    @inlineCallbacks
    def test_ping_error_close(self):
        vendors = v.Vendors(v.Script(), reactor)
        port, server = v.listen(vendors)
        self.addCleanup(port.stopListening)
        self.addCleanup(server.stop)
        factory = WebSocketClientFactory(v.urls(port.getHost().port)["realtime_url"])
        factory.setProtocolOptions(openHandshakeTimeout=0, closeHandshakeTimeout=0)
        factory.protocol = _Raw
        factory.seen = seen = Seen()
        connectWS(factory)
        yield bounded(seen.when(lambda: "message" in seen.kinds()))
        self.assertEqual(seen.events[1][1]["type"], "session.created")
        client = factory.client
        client.sendPing(b"are you there")
        client.sendMessage(b'{"type":"response.create"}')
        yield bounded(seen.when(lambda: len(seen.events) == 4))
        self.assertEqual(seen.events[2], ("pong", b"are you there"))
        self.assertEqual(seen.events[3][1]["type"], "error")
        self.assertEqual(seen.events[3][1]["error"]["code"], "invalid_value")
        client.sendClose(1000)
        yield bounded(seen.when(lambda: "close" in seen.kinds()))
        self.assertEqual(seen.events[-1], ("close", True))
        self.assertEqual(vendors.stats.counts["pings"], 1)
        self.assertEqual(vendors.stats.counts["sessions_closed"], 1)


class CommandLineTests(TestCase):
    """C{python -m bench.system.vendors} prints its URLs, then ends at stdin's EOF."""

    def test_json_line(self):
        child = subprocess.Popen(
            [sys.executable, "-m", "bench.system.vendors", "--turn-every", "2"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            line = json.loads(child.stdout.readline())
            self.assertEqual(set(line), {"openai_base", "realtime_url", "stats"})
            self.assertTrue(line["realtime_url"].startswith("ws://127.0.0.1:"))
            child.stdin.close()
            self.assertEqual(child.wait(timeout=BOUND), 0)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
            child.stdout.close()
