"""Outbound audio pacing: 20 ms frames on an absolute clock, measured against a Clock."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from voicecalld.media.pacing import (
    DEFAULT_LEAD,
    FRAME_SECONDS,
    SILENCE_FRAME,
    FramePacer,
    PacingClock,
)


class Recorder:
    """What the pacer sent, and when."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.frames: list[tuple[float, bytes]] = []
        self.marks: list[tuple[float, str, int]] = []

    def frame(self, data: bytes) -> None:
        self.frames.append((self.clock.seconds(), data))

    def mark(self, name: str) -> None:
        self.marks.append((self.clock.seconds(), name, len(self.frames)))


def pacer(lead: float = DEFAULT_LEAD) -> tuple[Clock, FramePacer, Recorder, PacingClock]:
    clock = Clock()
    clock.advance(1000)
    ticker = PacingClock(clock)
    recorder = Recorder(clock)
    return clock, FramePacer(clock, ticker, recorder.frame, recorder.mark, lead), recorder, ticker


def run(clock: Clock, seconds: float, step: float = FRAME_SECONDS) -> None:
    end = clock.seconds() + seconds
    while clock.seconds() < end - 1e-9:
        clock.advance(min(step, end - clock.seconds()))


class PacingTests(TestCase):
    """Two seconds of speech go out as 100 frames, each on time, none in a burst."""

    def test_two_seconds_of_speech(self):
        clock, p, rec, _ = pacer()
        start = clock.seconds()
        p.audio(bytes(range(256)) * 62 + b"\x01" * 128)  # 16,000 bytes = 2 s
        p.end("u1:end")
        run(clock, 2.5)
        self.assertEqual(len(rec.frames), 100)
        for n, (sent, frame) in enumerate(rec.frames):
            due = start + n * FRAME_SECONDS
            self.assertGreaterEqual(sent, due - DEFAULT_LEAD - FRAME_SECONDS - 1e-9, n)
            self.assertLessEqual(sent, max(start, due - DEFAULT_LEAD) + 1e-9, n)
            self.assertEqual(len(frame), 160)
        first_burst = [t for t, _ in rec.frames if t == start]
        self.assertEqual(len(first_burst), round(DEFAULT_LEAD / FRAME_SECONDS) + 1)
        ((mark_time, name, after),) = rec.marks
        self.assertEqual((name, after), ("u1:end", 100))
        self.assertAlmostEqual(mark_time, rec.frames[-1][0])
        last = rec.frames[-1][0] - start
        self.assertLessEqual(abs(last - (2.0 - FRAME_SECONDS - DEFAULT_LEAD)), FRAME_SECONDS)

    def test_late_ticks_catch_up_without_drifting(self):
        clock, p, rec, _ = pacer()
        start = clock.seconds()
        p.audio(b"\x10" * 160 * 200)
        run(clock, 3.0, step=0.037)
        expected = 150 + round(DEFAULT_LEAD / FRAME_SECONDS) + 1
        self.assertLessEqual(abs(len(rec.frames) - expected), 1)
        elapsed = clock.seconds() - start
        ahead = len(rec.frames) * FRAME_SECONDS - elapsed
        self.assertLessEqual(ahead, DEFAULT_LEAD + FRAME_SECONDS + 1e-9)

    def test_a_long_stall_restarts_the_schedule_instead_of_flooding(self):
        clock, p, rec, _ticker = pacer()
        p.audio(b"\x10" * 160 * 500)
        run(clock, 0.2)
        sent = len(rec.frames)
        clock.advance(5.0)  # the reactor was blocked for five seconds
        burst = len(rec.frames) - sent
        self.assertLessEqual(burst, round(DEFAULT_LEAD / FRAME_SECONDS) + 2)

    def test_first_frame_goes_out_as_soon_as_a_frame_of_audio_arrived(self):
        _clock, p, rec, _ = pacer()
        p.audio(b"\x20" * 100)
        self.assertEqual(rec.frames, [])
        p.audio(b"\x20" * 60)
        self.assertEqual(len(rec.frames), 1)

    def test_marks_follow_their_audio_and_partial_frames_are_padded(self):
        clock, p, rec, _ = pacer()
        p.audio(b"\x01" * 400)
        p.mark("u1:320")
        p.end("u1:end")
        run(clock, 0.5)
        self.assertEqual([len(f) for _, f in rec.frames], [160, 160, 160])
        self.assertEqual(rec.frames[-1][1][80:], b"\xff" * 80)
        self.assertEqual(
            [(name, after) for _, name, after in rec.marks], [("u1:320", 2), ("u1:end", 3)]
        )

    def test_clear_drops_everything_queued_at_once(self):
        clock, p, rec, _ = pacer()
        p.audio(b"\x01" * 160 * 50)
        run(clock, 0.1)
        dropped = p.clear()
        sent = len(rec.frames)
        self.assertEqual(dropped, 50 - sent)
        run(clock, 1.0)
        self.assertEqual(len(rec.frames), sent)

    def test_keepalive_silence_while_waiting_for_speech(self):
        clock, p, rec, _ = pacer()
        p.keepalive = True
        run(clock, 0.2)
        self.assertTrue(rec.frames)
        self.assertTrue(all(f == SILENCE_FRAME for _, f in rec.frames))
        p.keepalive = False
        count = len(rec.frames)
        run(clock, 0.2)
        self.assertEqual(len(rec.frames), count)

    def test_one_timer_serves_every_stream(self):
        clock = Clock()
        ticker = PacingClock(clock)
        recorders = [Recorder(clock) for _ in range(50)]
        pacers = [FramePacer(clock, ticker, r.frame, r.mark) for r in recorders]
        for p in pacers:
            p.audio(b"\x01" * 160 * 10)
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        run(clock, 0.5)
        self.assertTrue(all(len(r.frames) == 10 for r in recorders))
        self.assertEqual(clock.getDelayedCalls(), [])


class StoppedPacerTests(TestCase):
    """After its stream is gone, a pacer sends nothing more, whatever still arrives."""

    def test_audio_after_stop_is_dropped(self):
        clock, p, rec, _ = pacer()
        p.stop()
        p.audio(b"\x01" * 1600)
        p.mark("late")
        p.keepalive = True
        run(clock, 0.5)
        self.assertEqual((rec.frames, rec.marks), ([], []))
        self.assertEqual(clock.getDelayedCalls(), [])


class ChunkedQueueTests(TestCase):
    """Audio in chunks of any size goes out as the same frames, marks between the same ones."""

    @settings(max_examples=60, deadline=None)
    @given(
        st.lists(
            st.one_of(
                st.binary(min_size=0, max_size=700).map(lambda b: ("audio", b)),
                st.integers(0, 9).map(lambda n: ("mark", f"m{n}")),
                st.integers(0, 9).map(lambda n: ("end", f"e{n}")),
                st.just(("wait", 0.04)),
            ),
            max_size=30,
        )
    )
    def test_frames_and_marks_are_the_audio_cut_in_order(self, script):
        clock, p, rec, _ = pacer()
        expected_frames: list[bytes] = []
        expected_marks: list[tuple[str, int]] = []
        pending = b""
        for kind, value in script:
            if kind == "audio":
                pending += value
                while len(pending) >= 160:
                    expected_frames.append(pending[:160])
                    pending = pending[160:]
                p.audio(value)
            elif kind == "mark":
                expected_marks.append((value, len(expected_frames)))
                p.mark(value)
            elif kind == "end":
                if pending:
                    expected_frames.append(pending + SILENCE_FRAME[len(pending) :])
                    pending = b""
                expected_marks.append((value, len(expected_frames)))
                p.end(value)
            else:
                run(clock, value)
            self.assertAlmostEqual(p.backlog(), p.queued_frames * FRAME_SECONDS)
        run(clock, len(expected_frames) * FRAME_SECONDS + 1)
        self.assertEqual([frame for _, frame in rec.frames], expected_frames)
        self.assertEqual([(name, at) for _, name, at in rec.marks], expected_marks)
        self.assertEqual(p.queued_frames, 0)

    def test_clear_counts_a_half_sent_chunk_by_its_frames_left(self):
        clock, p, rec, _ = pacer(lead=0.0)
        p.audio(b"\x01" * 1600 + b"\x02" * 80)  # ten frames and a half
        run(clock, 3 * FRAME_SECONDS + 0.001)
        sent = len(rec.frames)
        self.assertEqual(p.clear(), 10 - sent + 1)
        self.assertEqual(p.backlog(), 0.0)
        p.audio(b"\x03" * 160)
        run(clock, 0.1)
        self.assertEqual(rec.frames[-1][1], b"\x03" * 160)


class LowWaterTests(TestCase):
    """when_below tells once the queue has drained to a level (the TTS may send more)."""

    def test_told_once_drained_at_once_when_already_low_and_on_clear(self):
        clock, p, _rec, _ = pacer(lead=0.0)
        told: list[float] = []
        p.audio(b"\x01" * 160 * 100)  # 2 s
        p.when_below(0.5, lambda: told.append(p.backlog()))
        run(clock, 1.0)
        self.assertEqual(told, [])
        run(clock, 0.6)
        self.assertEqual(len(told), 1)
        self.assertLessEqual(told[0], 0.5)
        p.when_below(1.0, lambda: told.append(-1.0))
        self.assertEqual(told[-1], -1.0)  # already below
        p.audio(b"\x01" * 160 * 100)
        p.when_below(0.1, lambda: told.append(-2.0))
        p.clear()
        self.assertEqual(told[-1], -2.0)
