"""
Pacing outbound audio: 20 ms mu-law frames on an absolute clock.

Each L{FramePacer} (one per media stream) gives frame M{n} of a run the due
time M{t0 + n·20 ms} and sends it a small lead before that, so the provider
always holds a little audio and never a burst.  Lateness does not drift the
schedule: a late tick catches up on the frames now due.  After a long stall
the schedule restarts at "now" rather than flooding the socket.

One L{PacingClock} ticks for every pacer, so a thousand streams cost one
timer, not fifty thousand a second.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from attrs import frozen
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from voicecalld.media.codec import FRAME_BYTES

FRAME_SECONDS = 0.020
DEFAULT_LEAD = 0.060
SILENCE_FRAME = b"\xff" * FRAME_BYTES
# Behind by more than this: restart the schedule instead of bursting.
MAX_DEBT = 0.200


@frozen
class Mark:
    """A named point in the outbound audio (sent when the audio before it is sent)."""

    name: str


@frozen
class Notify:
    """Call C{fn(now)} when the audio queued before this point has been sent."""

    fn: Callable[[float], object]


class PacingClock:
    """Ticks every 20 ms (absolute) while any pacer has something to send."""

    def __init__(self, clock: IReactorTime, period: float = FRAME_SECONDS) -> None:
        self._clock = clock
        self._period = period
        self._active: set[FramePacer] = set()
        self._timer: IDelayedCall | None = None
        self._next: float = 0.0
        # Queued audio frames sent after their due time, over all pacers.
        self.late_frames = 0
        # Told how late each tick ran after its schedule, in seconds (metrics).
        self.on_tick: Callable[[float], object] | None = None

    def activate(self, pacer: FramePacer) -> None:
        """Start ticking C{pacer} until it says it is idle."""
        self._active.add(pacer)
        if self._timer is None:
            self._next = self._clock.seconds() + self._period
            self._timer = self._clock.callLater(self._period, self._tick)

    def deactivate(self, pacer: FramePacer) -> None:
        """Stop ticking C{pacer} (and stop the clock when no pacer is left)."""
        self._active.discard(pacer)
        if not self._active and self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None

    def _tick(self) -> None:
        now = self._clock.seconds()
        if self.on_tick is not None:
            self.on_tick(max(0.0, now - self._next))
        for pacer in list(self._active):
            if not pacer.tick(now):
                self._active.discard(pacer)
        if not self._active:
            self._timer = None
            return
        self._next += self._period
        if self._next < now:
            self._next = now + self._period
        self._timer = self._clock.callLater(self._next - now, self._tick)


class FramePacer:
    """
    Queues one stream's outbound audio and marks and sends them on time.

    C{send_frame(frame)} and C{send_mark(name)} are the stream's; while
    C{keepalive} is set and nothing is queued, silence frames keep time
    (a caller hears nothing while speech is being synthesized).
    """

    def __init__(
        self,
        clock: IReactorTime,
        ticker: PacingClock,
        send_frame: Callable[[bytes], object],
        send_mark: Callable[[str], object],
        lead: float = DEFAULT_LEAD,
    ) -> None:
        self._clock = clock
        self._ticker = ticker
        self._send_frame = send_frame
        self._send_mark = send_mark
        self.lead = lead
        # Audio (bytes of one or more whole frames), marks and notifications, in order.
        self._queue: deque[bytes | Mark | Notify] = deque()
        # How much of the audio at the head of the queue has been sent.
        self._offset = 0
        self._partial = bytearray()
        self._due: float | None = None
        self._keepalive = False
        self.frames_sent = 0
        self.queued_frames = 0
        self._stopped = False
        # (frames, fn): call fn() once no more than that many frames are queued.
        self._low: tuple[int, Callable[[], object]] | None = None

    @property
    def keepalive(self) -> bool:
        """Whether silence is sent while nothing is queued."""
        return self._keepalive

    @keepalive.setter
    def keepalive(self, on: bool) -> None:
        self._keepalive = on
        if on:
            self._start()

    def audio(self, ulaw: bytes) -> None:
        """Queue mu-law audio of any length (whole frames go out; the rest waits)."""
        partial = self._partial
        held = len(partial)
        total = held + len(ulaw)
        whole = total - total % FRAME_BYTES
        if whole == 0:
            partial += ulaw
            return
        # Whole frames stay in one chunk (as they came, when aligned); tick slices them out.
        cut = whole - held
        if held:
            chunk = b"".join((partial, memoryview(ulaw)[:cut]))
            partial.clear()
        elif cut == len(ulaw) and ulaw.__class__ is bytes:
            chunk = ulaw
        else:
            chunk = bytes(memoryview(ulaw)[:cut])
        if cut < len(ulaw):
            partial += memoryview(ulaw)[cut:]
        self._queue.append(chunk)
        self.queued_frames += whole // FRAME_BYTES
        self._start()

    def mark(self, name: str) -> None:
        """Queue a mark after the whole frames queued so far."""
        self._queue.append(Mark(name))
        self._start()

    def notify(self, fn: Callable[[float], object]) -> None:
        """Call C{fn(now)} once what is queued so far has gone out."""
        self._queue.append(Notify(fn))
        self._start()

    def when_below(self, seconds: float, fn: Callable[[], object]) -> None:
        """
        Call C{fn()} once no more than C{seconds} of audio is queued (at once if
        so already, or when the queue is cleared); one such call is kept at a time.
        """
        frames = int(seconds / FRAME_SECONDS)
        if self.queued_frames <= frames:
            fn()
        else:
            self._low = (frames, fn)

    def _release(self) -> None:
        low, self._low = self._low, None
        if low is not None:
            low[1]()

    def end(self, name: str) -> None:
        """End an utterance: pad its last partial frame with silence, then mark it."""
        if self._partial:
            self._partial += SILENCE_FRAME[len(self._partial) :]
            self._queue.append(bytes(self._partial))
            self.queued_frames += 1
            self._partial.clear()
        self.mark(name)

    def clear(self) -> int:
        """Drop everything queued (barge-in); returns how many frames were dropped."""
        dropped = self.queued_frames + (1 if self._partial else 0)
        self._queue.clear()
        self._offset = 0
        self._partial.clear()
        self.queued_frames = 0
        self._keepalive = False
        self._release()
        return dropped

    def backlog(self) -> float:
        """Seconds of audio queued and not yet sent."""
        return self.queued_frames * FRAME_SECONDS

    def stop(self) -> None:
        """Drop everything and stop ticking for good (the stream went away)."""
        self.clear()
        self._stopped = True
        self._ticker.deactivate(self)
        self._due = None

    def _start(self) -> None:
        if self._stopped:
            self.clear()
            return
        now = self._clock.seconds()
        if self._due is None or self._due < now - MAX_DEBT:
            self._due = now
        if self.tick(now):
            self._ticker.activate(self)

    def tick(self, now: float) -> bool:
        """Send what is due by C{now} plus the lead; False once idle."""
        if self._due is None:
            return False
        if self._due < now - MAX_DEBT:
            self._due = now
        horizon = now + self.lead
        queue = self._queue
        while self._due <= horizon:
            if queue:
                item = queue[0]
                if item.__class__ is not bytes:
                    queue.popleft()
                    self._control(item, now)
                    continue
                offset = self._offset
                if offset == 0 and len(item) == FRAME_BYTES:
                    queue.popleft()
                else:
                    end = offset + FRAME_BYTES
                    if end >= len(item):
                        queue.popleft()
                        self._offset = 0
                    else:
                        self._offset = end
                    item = item[offset:end]
                self.queued_frames -= 1
                if self._due < now:
                    self._ticker.late_frames += 1
            elif self._keepalive and self._due <= now:
                # Silence goes out just in time, never ahead, so speech that
                # arrives next is not queued behind it.
                item = SILENCE_FRAME
            else:
                break
            self._send_frame(item)
            self.frames_sent += 1
            self._due += FRAME_SECONDS
        while queue and queue[0].__class__ is not bytes:
            self._control(queue.popleft(), now)
        low = self._low
        if low is not None and self.queued_frames <= low[0]:
            self._release()
        return bool(queue) or self._keepalive

    def _control(self, item: Mark | Notify, now: float) -> None:
        if item.__class__ is Mark:
            self._send_mark(item.name)
        else:
            item.fn(now)
