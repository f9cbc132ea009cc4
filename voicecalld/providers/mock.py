"""
The mock provider: calls with no network, for trying voicecalld out and for tests.

Outbound calls ring after L{RING_DELAY} and answer after L{ANSWER_DELAY}
seconds, except to numbers ending in C{0001} (never answered: the ring
timeout ends them), C{0002} (busy) and, with answering-machine detection,
C{0003} (an answering machine that beeps after L{MACHINE_GREETING} seconds;
every other callee is reported human).  Speech "plays" for a time that grows
with its length (L{CHARS_PER_SECOND}) and may be interrupted by the caller.
The caller's side is driven with C{voicecall simulate ...} (L{ISimulator}).
Its webhook accepts upstream's mock JSON events (C{{"event": {...}}}).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.web import resource
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from voicecalld.errors import NotAllowed, ProviderError
from voicecalld.providers.interface import ICallDirectory, IProvider, ISimulator
from voicecalld.values import events as ev
from voicecalld.values.events import Accepted, Refused
from voicecalld.values.playback import CallStatus, Liveness, Playback
from voicecalld.values.record import CallRecord
from voicecalld.values.states import CallState

RING_DELAY = 0.2
ANSWER_DELAY = 0.6
CHARS_PER_SECOND = 15.0
MIN_PLAYBACK = 0.3
NO_ANSWER_SUFFIX = "0001"
BUSY_SUFFIX = "0002"
MACHINE_SUFFIX = "0003"
DETECTION_DELAY = 1.0
MACHINE_GREETING = 3.0

Sink = Callable[[ev.CallEvent], Deferred]


class _Utterance:
    """Speech being "played" on a mock call."""

    def __init__(self, text: str, started: float, duration: float, timer: IDelayedCall) -> None:
        self.text = text
        self.started = started
        self.duration = duration
        self.timer = timer
        self.done: Deferred[Playback] = Deferred()

    def heard(self, now: float) -> str:
        """The words played so far (whole words only)."""
        share = min(1.0, max(0.0, (now - self.started) / self.duration))
        words = self.text.split()
        return " ".join(words[: int(len(words) * share)])


@implementer(IProvider, ISimulator)
class MockProvider:
    """L{IProvider} with imaginary callees and callers."""

    name = "mock"
    log = Logger()

    def __init__(self, clock: IReactorTime, webhook_path: str = "/voice/webhook") -> None:
        self._clock = clock
        self._webhook_path = webhook_path
        self._sink: Sink | None = None
        self._playing: dict[str, _Utterance] = {}
        self._timers: dict[str, list[IDelayedCall]] = {}
        self.dtmf_sent: list[tuple[str, str]] = []
        self.transfers: list[tuple[str, str]] = []

    def start(self, sink: Sink, directory: ICallDirectory) -> None:
        # Mock events always name our call id: the directory is not needed.
        self._sink = sink

    def stop(self) -> None:
        for timers in self._timers.values():
            for timer in timers:
                if timer.active():
                    timer.cancel()
        self._timers.clear()

    def _later(self, record: CallRecord, delay: float, event: ev.CallEvent) -> None:
        timer = self._clock.callLater(delay, self._emit, event)
        self._timers.setdefault(record.call_id, []).append(timer)

    def _emit(self, event: ev.CallEvent) -> Deferred:
        if self._sink is None:
            raise RuntimeError("the mock provider was not started")
        d = self._sink(event)
        d.addErrback(lambda f: self.log.failure("mock event {event!r} failed", f, event=event))
        return d

    def place_call(self, record: CallRecord) -> Deferred:
        provider_call_id = f"mock-{record.call_id}"
        if record.metadata.get("dtmfSequence"):
            self.dtmf_sent.append((record.call_id, record.metadata["dtmfSequence"]))
        ids = {"call_id": record.call_id, "provider_call_id": provider_call_id}
        self._later(record, RING_DELAY, ev.Ringing(**ids))
        if record.to_number.endswith(BUSY_SUFFIX):
            self._later(record, ANSWER_DELAY, ev.Ended(reason=CallState.BUSY, **ids))
        elif not record.to_number.endswith(NO_ANSWER_SUFFIX):
            self._later(record, ANSWER_DELAY, ev.Answered(**ids))
            if record.machine_detection:
                self._detect(record, ids)
        return succeed(provider_call_id)

    def _detect(self, record: CallRecord, ids: dict[str, Any]) -> None:
        """Who answered, a moment after the answer: a machine beeps a little later."""
        at = ANSWER_DELAY + DETECTION_DELAY
        if not record.to_number.endswith(MACHINE_SUFFIX):
            self._later(record, at, ev.MachineDetected(answered_by=ev.HUMAN, raw="human", **ids))
            return
        self._later(record, at, ev.MachineDetected(answered_by=ev.MACHINE, raw="machine", **ids))
        beep = ev.MachineDetected(answered_by=ev.MACHINE, message_end=True, raw="beep", **ids)
        self._later(record, at + MACHINE_GREETING, beep)

    def answer(self, record: CallRecord) -> Deferred:
        self._later(
            record,
            RING_DELAY,
            ev.Answered(call_id=record.call_id, provider_call_id=record.provider_call_id),
        )
        return succeed(None)

    def reject(self, event: ev.InboundCall, refusal: ev.Refusal) -> Deferred:
        return succeed(None)

    def hangup(self, record: CallRecord, reason: CallState) -> Deferred:
        self.interrupt(record)
        return succeed(None)

    def speak(self, record: CallRecord, text: str) -> Deferred:
        if record.call_id in self._playing:
            raise ProviderError("mock: already speaking on this call")
        duration = max(MIN_PLAYBACK, len(text) / CHARS_PER_SECOND)
        timer = self._clock.callLater(duration, self._played, record.call_id)
        utterance = _Utterance(text, self._clock.seconds(), duration, timer)
        self._playing[record.call_id] = utterance
        return utterance.done

    def _played(self, call_id: str) -> None:
        utterance = self._playing.pop(call_id, None)
        if utterance is not None:
            utterance.done.callback(Playback(utterance.text, utterance.text, complete=True))

    def interrupt(self, record: CallRecord) -> None:
        utterance = self._playing.pop(record.call_id, None)
        if utterance is None:
            return
        if utterance.timer.active():
            utterance.timer.cancel()
        heard = utterance.heard(self._clock.seconds())
        utterance.done.callback(Playback(utterance.text, heard, complete=False))

    def start_listening(self, record: CallRecord, turn_token: str) -> Deferred:
        return succeed(None)

    def stop_listening(self, record: CallRecord) -> Deferred:
        return succeed(None)

    def send_dtmf(self, record: CallRecord, digits: str) -> Deferred:
        self.dtmf_sent.append((record.call_id, digits))
        return succeed(None)

    def transfer(self, record: CallRecord, to: str) -> Deferred:
        # The mock's carrier takes every transfer and confirms it at once.
        self.transfers.append((record.call_id, to))
        self._later(
            record,
            0,
            ev.Transferred(
                call_id=record.call_id, provider_call_id=record.provider_call_id, detail=to
            ),
        )
        return succeed(None)

    def call_status(self, record: CallRecord) -> Deferred:
        # Upstream's mock rule: a call is over only if its id says so.
        pid = record.provider_call_id or ""
        if any(word in pid for word in ("stale", "ended", "completed")):
            return succeed(CallStatus(Liveness.ENDED, CallState.COMPLETED))
        return succeed(CallStatus(Liveness.ALIVE, answered=record.answered_at is not None))

    def waits_for_media(self, record: CallRecord) -> bool:
        return False

    def use_public_url(self, url: str | None, known: bool) -> None:
        """The mock has no carrier to tell."""

    def web_resources(self) -> dict[str, resource.IResource]:
        return {self._webhook_path: MockWebhook(self._emit)}

    def realtime(self, record: CallRecord) -> bool:
        return False

    def tool_result(self, record: CallRecord, tool_call_id: str, output: dict) -> None:
        """The mock runs no realtime sessions."""

    def forget(self, record: CallRecord) -> None:
        self.interrupt(record)
        for timer in self._timers.pop(record.call_id, []):
            if timer.active():
                timer.cancel()

    # -- ISimulator ----------------------------------------------------------

    def simulate_inbound(self, from_number: str, to_number: str) -> Deferred:
        event = ev.InboundCall(
            provider_call_id=f"mock-in-{uuid.uuid4()}", from_number=from_number, to_number=to_number
        )

        def outcome(result: Any) -> str:
            if isinstance(result, Refused):
                raise NotAllowed(f"inbound call refused: {result.reason}")
            if isinstance(result, Accepted):
                return result.call_id
            raise ProviderError(f"inbound call not created ({result})")

        return self._emit(event).addCallback(outcome)

    def simulate_say(self, record: CallRecord, text: str) -> Deferred:
        ids = {"call_id": record.call_id, "provider_call_id": record.provider_call_id}
        self._emit(ev.SpeechStarted(**ids))
        return self._emit(ev.Speech(text=text, final=True, **ids))

    def simulate_dtmf(self, record: CallRecord, digits: str) -> Deferred:
        return self._emit(
            ev.Dtmf(digits=digits, call_id=record.call_id, provider_call_id=record.provider_call_id)
        )

    def simulate_hangup(self, record: CallRecord) -> Deferred:
        return self._emit(
            ev.Ended(
                reason=CallState.HANGUP_USER,
                call_id=record.call_id,
                provider_call_id=record.provider_call_id,
            )
        )


class MockWebhook(resource.Resource):
    """
    Upstream's mock webhook: a JSON body C{{"event": {...}}} or
    C{{"events": [...]}}, each with C{type} and C{callId}.
    """

    isLeaf = True
    log = Logger()

    def __init__(self, emit: Callable[[ev.CallEvent], Deferred]) -> None:
        super().__init__()
        self._emit = emit

    def render_POST(self, request):
        try:
            body = json.loads(request.content.read() or b"{}")
            items = body.get("events") or [body.get("event")]
            events = [_mock_event(item) for item in items]
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            request.setResponseCode(400)
            return f"bad mock event: {e}\n".encode()

        async def apply() -> None:
            for event in events:
                await self._emit(event)

        def done(_: object) -> None:
            request.write(b"OK")
            request.finish()

        def failed(failure) -> None:
            self.log.failure("mock webhook events failed", failure)
            request.setResponseCode(500)
            request.write(b"internal error\n")
            request.finish()

        Deferred.fromCoroutine(apply()).addCallbacks(done, failed)
        return NOT_DONE_YET


_MOCK_TYPES = {
    "call.ringing": lambda ids, e: ev.Ringing(**ids),
    "call.answered": lambda ids, e: ev.Answered(**ids),
    "call.speech": lambda ids, e: ev.Speech(
        text=str(e["transcript"]), final=e.get("isFinal", True), **ids
    ),
    "call.dtmf": lambda ids, e: ev.Dtmf(digits=str(e["digits"]), **ids),
    "call.ended": lambda ids, e: ev.Ended(reason=_end_reason(e.get("reason", "completed")), **ids),
    "call.error": lambda ids, e: ev.Failed(
        message=str(e.get("error", "unknown error")),
        retryable=bool(e.get("retryable", False)),
        **ids,
    ),
}


def _mock_event(item: dict[str, Any]) -> ev.CallEvent:
    ids = {
        "call_id": str(item["callId"]),
        "provider_call_id": item.get("providerCallId"),
        "dedupe_key": item.get("id"),
    }
    make = _MOCK_TYPES.get(item["type"])
    if make is None:
        raise ValueError(f"unknown type {item['type']!r}")
    return make(ids, item)


def _end_reason(value: Any) -> CallState:
    reason = CallState(value)
    if not reason.terminal:
        raise ValueError(f"{value!r} is not an end reason")
    return reason
