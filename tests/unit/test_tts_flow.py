"""
Flow control of a streamed TTS answer: while the listener holds enough audio the
body is not read and its timeout does not run; reading and the timeout go on after.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from twisted.web.client import ResponseDone
from twisted.web.http_headers import Headers

from voicecalld.voice.tts import TtsError
from voicecalld.voice.tts_factory import FallbackTTS
from voicecalld.voice.tts_http import Passthrough, stream_speech


class BodyTransport:
    """The response body's transport: records pauses and resumes."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def pauseProducing(self) -> None:
        self.calls.append("pause")

    def resumeProducing(self) -> None:
        self.calls.append("resume")

    def stopProducing(self) -> None:
        self.calls.append("stop")


class Response:
    code = 200
    headers = Headers({"content-type": ["audio/basic"]})

    def __init__(self) -> None:
        self.transport = BodyTransport()
        self.body: Any = None

    def deliverBody(self, protocol: Any) -> None:
        protocol.makeConnection(self.transport)
        self.body = protocol


class Http:
    def __init__(self) -> None:
        self.response = Response()

    def post(self, url: str, **kwargs: Any) -> Deferred:
        return succeed(self.response)


class HoldTests(TestCase):
    def speak(self, on_audio: Any, timeout: float = 5.0) -> tuple[Deferred, Response, Clock]:
        clock, http = Clock(), Http()
        done = stream_speech(
            provider="fake",
            http=http,
            clock=clock,
            timeout=timeout,
            url="http://127.0.0.1:1/speech",
            headers={},
            body={},
            text="Hello",
            transcoder=Passthrough(),
            on_audio=on_audio,
        )
        return done, http.response, clock

    def test_a_hold_pauses_the_body_and_its_timeout_until_it_fires(self):
        hold: Deferred = Deferred()
        heard: list[bytes] = []

        def on_audio(ulaw: bytes) -> Any:
            heard.append(ulaw)
            return hold if len(heard) == 1 else None

        done, response, clock = self.speak(on_audio)
        response.body.dataReceived(b"\x01" * 800)
        self.assertEqual(response.transport.calls, ["pause"])
        clock.advance(60)  # far past the 5 s timeout: held, not timed out
        self.assertNoResult(done)
        hold.callback(None)
        self.assertEqual(response.transport.calls, ["pause", "resume"])
        response.body.dataReceived(b"\x02" * 800)
        response.body.connectionLost(Failure(ResponseDone()))
        self.assertEqual(self.successResultOf(done).audio_bytes, 1600)
        self.assertEqual(heard, [b"\x01" * 800, b"\x02" * 800])

    def test_the_timeout_runs_again_once_the_hold_is_over(self):
        hold: Deferred = Deferred()
        done, response, clock = self.speak(lambda ulaw: hold)
        response.body.dataReceived(b"\x01" * 800)
        hold.callback(None)
        clock.advance(5.1)
        self.assertIn("timed out", str(self.failureResultOf(done, TtsError).value))

    def test_a_hold_that_fires_after_cancelling_reads_nothing_more(self):
        hold: Deferred = Deferred()
        done, response, clock = self.speak(lambda ulaw: hold)
        response.body.dataReceived(b"\x01" * 800)
        done.addErrback(lambda f: None)
        done.cancel()
        hold.callback(None)
        self.assertEqual(response.transport.calls, ["pause", "stop"])
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_the_fallback_chain_passes_the_hold_on(self):
        hold: Deferred = Deferred()

        class One:
            name = "one"

            def synthesize(self, text: str, on_audio: Any) -> Deferred:
                self.answer = on_audio(b"\x01" * 160)
                return Deferred()

        one = One()
        FallbackTTS([one]).synthesize("Hi", lambda ulaw: hold)
        self.assertIs(one.answer, hold)
