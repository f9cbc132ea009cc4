"""A scripted L{IProvider} that records what the call manager asks of it."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import implementer

from voicecalld.errors import ProviderError
from voicecalld.providers.interface import ICallDirectory, IProvider
from voicecalld.values import events as ev
from voicecalld.values.playback import CallStatus, Liveness, Playback
from voicecalld.values.record import CallRecord
from voicecalld.values.states import CallState


@implementer(IProvider)
class RecordingProvider:
    """
    Every request is appended to C{requests} as a tuple.  Speech plays until
    the test calls L{finish_speaking} (or instantly with C{instant_speech});
    failures are injected through the C{fail_*} attributes.
    """

    def __init__(self, name: str = "mock") -> None:
        self.name = name
        self.requests: list[tuple[Any, ...]] = []
        self.sink = None
        self.directory: ICallDirectory | None = None
        self.instant_speech = False
        self.fail_dial: Exception | None = None
        self.fail_hangup: Exception | None = None
        self.fail_speak: Exception | None = None
        self.fail_transfer: Exception | None = None
        self.media = False
        self.statuses: dict[str, CallStatus] = {}
        self.speaking: dict[str, tuple[str, Deferred[Playback]]] = {}
        self.dial_result: Deferred[str] | None = None
        self.store_seen_at_dial: list[Any] = []
        self.on_dial = None
        self.realtime_calls = False

    def start(self, sink: Any, directory: ICallDirectory) -> None:
        self.sink = sink
        self.directory = directory

    def stop(self) -> None:
        self.requests.append(("stop",))

    def emit(self, event: ev.CallEvent) -> Deferred:
        """Report an event to the manager, as a webhook would."""
        return self.sink(event)

    def place_call(self, record: CallRecord) -> Deferred:
        self.requests.append(("place_call", record.call_id, record.to_number))
        if self.on_dial is not None:
            self.on_dial(record)
        if self.fail_dial is not None:
            return fail(self.fail_dial)
        if self.dial_result is not None:
            return self.dial_result
        return succeed(f"P-{record.call_id}")

    def answer(self, record: CallRecord) -> Deferred:
        self.requests.append(("answer", record.call_id))
        return succeed(None)

    def reject(self, event: ev.InboundCall, refusal: ev.Refusal) -> Deferred:
        self.requests.append(("reject", event.provider_call_id, refusal))
        return succeed(None)

    def hangup(self, record: CallRecord, reason: CallState) -> Deferred:
        self.requests.append(("hangup", record.call_id, reason))
        if self.fail_hangup is not None:
            return fail(self.fail_hangup)
        return succeed(None)

    def speak(self, record: CallRecord, text: str) -> Deferred:
        self.requests.append(("speak", record.call_id, text))
        if self.fail_speak is not None:
            return fail(self.fail_speak)
        if self.instant_speech:
            return succeed(Playback(text, text))
        done: Deferred[Playback] = Deferred()
        self.speaking[record.call_id] = (text, done)
        return done

    def finish_speaking(self, call_id: str, **timing: float) -> None:
        """The current utterance on C{call_id} finished playing (C{timing}: Playback times)."""
        text, done = self.speaking.pop(call_id)
        done.callback(Playback(text, text, **timing))

    def interrupt(self, record: CallRecord) -> None:
        self.requests.append(("interrupt", record.call_id))
        if record.call_id in self.speaking:
            text, done = self.speaking.pop(record.call_id)
            done.callback(Playback(text, text.split()[0], complete=False))

    def start_listening(self, record: CallRecord, turn_token: str) -> Deferred:
        self.requests.append(("start_listening", record.call_id))
        return succeed(None)

    def stop_listening(self, record: CallRecord) -> Deferred:
        self.requests.append(("stop_listening", record.call_id))
        return succeed(None)

    def send_dtmf(self, record: CallRecord, digits: str) -> Deferred:
        self.requests.append(("send_dtmf", record.call_id, digits))
        return succeed(None)

    def transfer(self, record: CallRecord, to: str) -> Deferred:
        self.requests.append(("transfer", record.call_id, to))
        if self.fail_transfer is not None:
            return fail(self.fail_transfer)
        return succeed(None)

    def call_status(self, record: CallRecord) -> Deferred:
        self.requests.append(("call_status", record.call_id))
        status = self.statuses.get(record.call_id, CallStatus(Liveness.ALIVE))
        if isinstance(status, Exception):
            return fail(status)
        return succeed(status)

    def waits_for_media(self, record: CallRecord) -> bool:
        return self.media

    def use_public_url(self, url, known) -> None:
        self.requests.append(("use_public_url", url, known))

    def web_resources(self) -> dict:
        return {}

    def forget(self, record: CallRecord) -> None:
        self.requests.append(("forget", record.call_id))

    def realtime(self, record: CallRecord) -> bool:
        return self.realtime_calls

    def tool_result(self, record: CallRecord, tool_call_id: str, output: dict) -> None:
        self.requests.append(("tool_result", record.call_id, tool_call_id, output))

    def kinds(self) -> list[str]:
        """The names of the requests made so far, in order."""
        return [r[0] for r in self.requests]


def provider_error(message: str = "boom") -> ProviderError:
    """A provider failure to inject."""
    return ProviderError(message)


@implementer(ICallDirectory)
class CallBook:
    """
    An L{ICallDirectory} for provider tests without a call manager: the
    test writes in which carrier id is which of our calls.
    """

    def __init__(self, known: dict[str, str] | None = None) -> None:
        self.known = dict(known or {})

    def call_id_for(self, provider_call_id: str) -> str | None:
        return self.known.get(provider_call_id)
