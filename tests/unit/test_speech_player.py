"""Speaking into a stream: streamed TTS, marks, barge-in, vendor failures."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from tests.fakes.tts import ScriptedTTS
from voicecalld.errors import ProviderError
from voicecalld.media.pacing import SILENCE_FRAME, FramePacer, PacingClock
from voicecalld.media.speech import SpeechPlayer


class Stream:
    """What a media stream was asked to send."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.frames: list[bytes] = []
        self.marks: list[str] = []
        self.clears = 0

    def frame(self, data: bytes) -> None:
        self.frames.append(data)

    def mark(self, name: str) -> None:
        self.marks.append(name)

    def clear(self) -> None:
        self.clears += 1


class PlayerTests(TestCase):
    """One utterance at a time, played when its end mark comes back."""

    def setUp(self):
        self.clock = Clock()
        self.stream = Stream(self.clock)
        self.pacer = FramePacer(
            self.clock, PacingClock(self.clock), self.stream.frame, self.stream.mark
        )
        self.tts = ScriptedTTS(self.clock)
        self.problems: list[str] = []
        self.player = SpeechPlayer(
            self.clock, self.pacer, self.stream.clear, self.tts, self.problems.append
        )

    def play_for(self, seconds: float) -> None:
        for _ in range(int(seconds / 0.02)):
            self.clock.advance(0.02)

    def test_audio_goes_out_while_the_vendor_is_still_speaking(self):
        d = self.player.say("Hello there, how are you today?")
        self.play_for(0.1)
        self.assertTrue(self.stream.frames)
        self.assertTrue(all(f == SILENCE_FRAME for f in self.stream.frames))
        silent = len(self.stream.frames)
        self.tts.deliver(b"\x01" * 800)
        self.assertEqual(self.stream.frames[silent], b"\x01" * 160)
        self.tts.deliver(b"\x02" * 4000)
        self.tts.finish()
        self.play_for(1.0)
        self.assertEqual(self.stream.marks, ["u1:4800", "u1:end"])
        self.assertNoResult(d)
        self.player.mark_echoed("u1:end")
        playback = self.successResultOf(d)
        self.assertTrue(playback.complete)
        self.assertEqual(playback.played, "Hello there, how are you today?")

    def test_barge_in_keeps_only_what_was_heard(self):
        d = self.player.say("one two three four five six seven eight")
        self.tts.deliver(b"\x01" * 16000)
        self.tts.finish()
        self.play_for(0.6)
        self.player.mark_echoed("u1:4000")
        self.assertTrue(self.player.interrupt())
        self.assertEqual(self.stream.clears, 1)
        playback = self.successResultOf(d)
        self.assertFalse(playback.complete)
        self.assertEqual(playback.played, "one two")
        sent = len(self.stream.frames)
        self.play_for(1.0)
        self.assertEqual(len(self.stream.frames), sent)
        self.assertFalse(self.player.interrupt())

    def test_barge_in_during_synthesis_cancels_the_vendor_request(self):
        d = self.player.say("a long answer that is still being synthesized")
        self.tts.deliver(b"\x01" * 1600)
        self.player.interrupt()
        self.assertTrue(self.tts.last.cancelled)
        self.assertFalse(self.successResultOf(d).complete)
        self.tts.deliver(b"\x02" * 1600)
        self.assertNotIn(b"\x02" * 160, self.stream.frames)

    def test_vendor_failure_before_audio_fails_the_utterance(self):
        d = self.player.say("hello")
        self.tts.fail("503 from vendor")
        self.failureResultOf(d, ProviderError)
        self.assertEqual(self.problems, ["speech synthesis failed: 503 from vendor"])
        self.assertFalse(self.player.speaking)
        d2 = self.player.say("again")
        self.assertNoResult(d2)

    def test_vendor_failure_mid_utterance_ends_it_cleanly(self):
        d = self.player.say("one two three four")
        self.tts.deliver(b"\x01" * 4000)
        self.tts.fail("connection lost")
        self.play_for(1.0)
        self.assertEqual(self.stream.marks[-1], "u1:end")
        self.player.mark_echoed("u1:end")
        playback = self.successResultOf(d)
        self.assertFalse(playback.complete)
        self.assertEqual(len(self.problems), 1)

    def test_a_lost_end_mark_does_not_hang_the_call(self):
        d = self.player.say("hi")
        self.tts.deliver(b"\x01" * 1600)
        self.tts.finish()
        self.play_for(5.0)
        self.assertTrue(self.successResultOf(d).complete)

    def test_stream_gone_mid_utterance(self):
        d = self.player.say("hi there")
        self.tts.deliver(b"\x01" * 1600)
        self.player.stop()
        self.assertFalse(self.successResultOf(d).complete)
        self.assertEqual(self.stream.clears, 0)

    def test_no_tts_configured(self):
        player = SpeechPlayer(self.clock, self.pacer, self.stream.clear, None, print)
        self.assertRaises(ProviderError, player.say, "hi")


class LookaheadTests(TestCase):
    """A TTS far ahead of playback is asked to hold, and let go once playback catches up."""

    setUp = PlayerTests.setUp
    play_for = PlayerTests.play_for

    def test_the_tts_holds_past_the_high_mark_and_goes_on_at_the_low_one(self):
        from voicecalld.media.speech import LOOKAHEAD_HIGH, LOOKAHEAD_LOW

        d = self.player.say("a long answer")
        second = 8000
        self.assertIsNone(self.tts.last.on_audio(b"\x01" * second))
        hold = self.tts.last.on_audio(b"\x02" * int(second * LOOKAHEAD_HIGH))
        self.assertIsNotNone(hold)
        self.assertIsNone(self.tts.last.on_audio(b"\x03" * 800))  # read while pausing: kept
        self.play_for(LOOKAHEAD_HIGH + 1 - LOOKAHEAD_LOW - 0.2)
        self.assertNoResult(hold)
        self.play_for(0.4)
        self.successResultOf(hold)
        self.assertLessEqual(self.pacer.backlog(), LOOKAHEAD_LOW)
        self.tts.finish()
        self.play_for(LOOKAHEAD_LOW + 0.5)
        self.player.mark_echoed("u1:end")
        self.assertTrue(self.successResultOf(d).complete)
        sent = b"".join(f for f in self.stream.frames if f != SILENCE_FRAME)
        self.assertEqual(
            sent, b"\x01" * second + b"\x02" * int(second * LOOKAHEAD_HIGH) + b"\x03" * 800
        )

    def test_barge_in_lets_a_held_tts_go(self):
        self.player.say("a long answer")
        hold = self.tts.last.on_audio(b"\x01" * 8000 * 5)
        self.player.interrupt()
        self.successResultOf(hold)
        self.assertTrue(self.tts.last.cancelled)
