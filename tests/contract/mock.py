"""
The network-free mock provider behind the contract's L{Adapter} verbs.

The mock has no carrier to fake: its callees ring and answer on timers,
and its callers act through L{ISimulator}.  L{MockCarrier} stands where the
other adapters have a fake, with one L{MockCall} per call that waits for
what the mock does by itself and drives what a caller does.
"""

from __future__ import annotations

import uuid
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.trial.unittest import TestCase

from tests.contract.adapters import FROM, TO, Adapter
from tests.waiting import wait_for
from voicecalld.calls.hub import NoticeHub
from voicecalld.calls.manager import CallManager
from voicecalld.config import parse_config
from voicecalld.errors import NotAllowed
from voicecalld.providers.mock import MockProvider
from voicecalld.store.sqlite import SQLiteCallStore, SynchronousRunner
from voicecalld.values.states import CallState


class MockCall:
    """One mock call, as the contract's scenarios handle a fake carrier's call."""

    def __init__(self, adapter: MockAdapter, call_id: str | None, to: str) -> None:
        self.adapter = adapter
        self.call_id = call_id
        self.to = to
        #: What the mock was asked to say in this call, in order.
        self.said: list[str] = []
        self.refused = call_id is None

    def _live(self) -> Any:
        live = self.adapter.manager.live_calls()
        return next((c for c in live if c.call_id == self.call_id), None)

    @property
    def is_live(self) -> bool:
        return self._live() is not None

    def ring(self) -> Deferred:
        """The mock rings by itself; fires once the call rang."""
        return wait_for(lambda: self.adapter.provider_events(self, "Ringing"), what="ringing")

    def answer(self) -> Deferred:
        """The mock answers by itself; fires once the call was answered."""
        return wait_for(lambda: (self._live() or _Ended).answered_at, what="an answer")

    def when_ended(self) -> Deferred:
        return wait_for(lambda: not self.is_live, what="the end of the call")

    def caller_hangup(self) -> Deferred:
        return self.adapter.rig.provider.simulate_hangup(self._live())

    def say(self, words: str) -> Deferred:
        return self.adapter.rig.provider.simulate_say(self._live(), words)

    def press(self, digits: str) -> Deferred:
        return self.adapter.rig.provider.simulate_dtmf(self._live(), digits)


class _Ended:
    answered_at = True


class MockCarrier:
    """The mock's calls, in the order they were made or came in."""

    def __init__(self) -> None:
        self.calls: list[MockCall] = []
        self.errors: list[str] = []

    def when_call(self, index: int = 0) -> Deferred:
        return wait_for(lambda: self.calls[index] if len(self.calls) > index else None)


class _Rig:
    """What the other adapters' rigs offer, for the mock."""

    def __init__(self, test: TestCase, config: dict[str, Any]) -> None:
        self.settings = parse_config(
            {"provider": "mock", "fromNumber": FROM, **config}, None, {}
        ).settings
        self.provider = MockProvider(reactor)
        self.store = SQLiteCallStore(test.mktemp(), SynchronousRunner())
        self.notices: list[Any] = []
        self.fake = MockCarrier()


class MockAdapter(Adapter):
    """The mock provider: timers answer, L{ISimulator} plays the caller."""

    name = "mock"
    #: The mock's simulated hang-up says who hung up, as upstream's mock does.
    caller_hangup_state = CallState.HANGUP_USER

    def __init__(self, test: TestCase) -> None:
        super().__init__(test)
        self.events: list[Any] = []

    @inlineCallbacks
    def start(self, config: dict[str, Any], streaming: bool):
        rig = self.rig = _Rig(self.test, config)
        yield rig.store.open()
        hub = NoticeHub()
        hub.listen(rig.notices.append)
        rig.manager = CallManager(
            settings=rig.settings,
            store=rig.store,
            provider=rig.provider,
            clock=reactor,
            hub=hub,
            new_id=lambda: str(uuid.uuid4()),
        )
        provider = rig.provider
        place, speak = provider.place_call, provider.speak

        def placed(record: Any) -> Any:
            rig.fake.calls.append(MockCall(self, record.call_id, record.to_number))
            return place(record)

        def spoken(record: Any, text: str) -> Any:
            self.call_for(record.call_id).said.append(text)
            return speak(record, text)

        provider.place_call, provider.speak = placed, spoken
        sink = rig.manager.handle_event

        def seen(event: Any) -> Any:
            self.events.append(event)
            return sink(event)

        provider.start(seen, rig.manager.directory)
        yield Deferred.fromCoroutine(rig.manager.restore())
        rig.manager.start()
        self.test.addCleanup(self._stop)
        return self

    def _stop(self) -> None:
        self.manager.stop()
        self.rig.provider.stop()

    def call_for(self, call_id: str) -> MockCall:
        found = next((c for c in self.fake.calls if c.call_id == call_id), None)
        if found is None:
            found = MockCall(self, call_id, TO)
            self.fake.calls.append(found)
        return found

    def provider_events(self, call: MockCall, kind: str) -> list[Any]:
        """The mock's events of one kind (a class name) for C{call}."""
        return [
            e
            for e in self.events
            if type(e).__name__ == kind and getattr(e, "call_id", None) == call.call_id
        ]

    def heard(self, call: MockCall) -> list[str]:
        return list(call.said)

    def listening(self, call: MockCall) -> Deferred:
        return wait_for(lambda: (call._live() or _Listening).state == CallState.LISTENING)

    @inlineCallbacks
    def inbound(self, from_: str):
        try:
            call_id = yield self.rig.provider.simulate_inbound(from_, FROM)
        except NotAllowed:
            call = MockCall(self, None, FROM)
            self.fake.calls.append(call)
            return call
        return self.call_for(call_id)

    def refused(self, call: MockCall) -> bool:
        return call.refused

    def carrier_live(self, call: MockCall) -> bool:
        return call.call_id is not None and call.is_live

    def dtmf_sent(self, call: MockCall) -> list[str]:
        return [d for cid, d in self.rig.provider.dtmf_sent if cid == call.call_id]

    def transferred_to(self, call: MockCall) -> tuple[str, str | None] | None:
        found = [to for cid, to in self.rig.provider.transfers if cid == call.call_id]
        return (found[-1], None) if found else None


class _Listening:
    state = None
