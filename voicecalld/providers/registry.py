"""Which L{IProvider} a config asks for."""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IReactorTime

from voicecalld.config.loader import LoadedConfig
from voicecalld.config.schema import Problem
from voicecalld.providers.interface import IProvider


def _mock(loaded: LoadedConfig, reactor: IReactorTime) -> IProvider:
    from voicecalld.providers.mock import MockProvider

    return MockProvider(reactor, loaded.settings.serve.path)


# Each factory is imported only when chosen, so a daemon loads one provider.
FACTORIES: dict[str, Callable[[LoadedConfig, IReactorTime], IProvider]] = {
    "mock": _mock,
}


def make_provider(loaded: LoadedConfig, reactor: IReactorTime) -> IProvider:
    """Build the configured provider, or raise L{Problem} naming C{provider}."""
    name = loaded.settings.provider
    factory = FACTORIES.get(name)
    if factory is None:
        built = ", ".join(sorted(FACTORIES))
        raise Problem(
            (*loaded.prefix, "provider"),
            f"{name!r} is not available in this voicecalld yet (available: {built})",
        )
    return factory(loaded, reactor)
