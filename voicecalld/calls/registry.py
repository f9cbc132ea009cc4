"""The live-call registry: the one table of the calls being driven."""

from __future__ import annotations

from collections.abc import Iterator

from zope.interface import implementer

from voicecalld.calls.live import LiveCall
from voicecalld.providers.interface import ICallDirectory


@implementer(ICallDirectory)
class LiveRegistry:
    """
    Every live call, by our id and by the provider's.  Providers keep only
    their wire state, keyed by our call id, and find calls here; nothing
    else keeps a table of calls.
    """

    def __init__(self) -> None:
        self._calls: dict[str, LiveCall] = {}
        self._by_provider_id: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self._calls)

    def __iter__(self) -> Iterator[LiveCall]:
        return iter(list(self._calls.values()))

    def add(self, live: LiveCall) -> None:
        """Start driving C{live}."""
        self._calls[live.call_id] = live
        self.index(live)

    def index(self, live: LiveCall) -> None:
        """Find C{live} by its (durable) provider call id from now on."""
        provider_call_id = live.record.provider_call_id
        if provider_call_id is not None:
            self._by_provider_id[provider_call_id] = live.call_id

    def remove(self, live: LiveCall) -> None:
        """Stop driving C{live} (it ended)."""
        self._calls.pop(live.call_id, None)
        provider_call_id = live.record.provider_call_id
        if provider_call_id is not None and self._by_provider_id.get(provider_call_id) == (
            live.call_id
        ):
            del self._by_provider_id[provider_call_id]

    def find(self, call_id: str | None, provider_call_id: str | None = None) -> LiveCall | None:
        """The live call with our id C{call_id}, else with the provider's id."""
        if call_id is not None and call_id in self._calls:
            return self._calls[call_id]
        if provider_call_id is not None:
            ours = self._by_provider_id.get(provider_call_id)
            if ours is not None:
                return self._calls.get(ours)
        return None

    def call_id_for(self, provider_call_id: str) -> str | None:
        """Our id of the live call the provider knows as C{provider_call_id}."""
        return self._by_provider_id.get(provider_call_id)
