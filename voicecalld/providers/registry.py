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


def _twilio(loaded: LoadedConfig, reactor: IReactorTime) -> IProvider:
    from voicecalld.expose import local_exposure
    from voicecalld.providers.twilio.provider import TwilioProvider
    from voicecalld.voice.stt_factory import make_stt
    from voicecalld.voice.tts_factory import make_tts

    settings = loaded.settings
    streaming = settings.streaming.enabled
    return TwilioProvider(
        settings,
        reactor,
        public_url=settings.public_url or local_exposure(settings).public_url,
        known_public_url=settings.public_url,
        tts=make_tts(settings.tts, reactor) if streaming else None,
        stt=make_stt(settings.streaming, reactor) if streaming else None,
        frame_lead=settings.streaming.frame_lead_ms / 1000.0,
    )


def _telnyx(loaded: LoadedConfig, reactor: IReactorTime) -> IProvider:
    from voicecalld.expose import local_exposure
    from voicecalld.providers.telnyx.provider import TelnyxProvider
    from voicecalld.providers.telnyx.signature import configured_key
    from voicecalld.voice.stt_factory import make_stt
    from voicecalld.voice.tts_factory import make_tts

    settings = loaded.settings
    streaming = settings.streaming.enabled
    return TelnyxProvider(
        settings,
        reactor,
        public_url=settings.public_url or local_exposure(settings).public_url,
        known_public_url=settings.public_url,
        public_key=configured_key(settings.telnyx.public_key, (*loaded.prefix, "telnyx")),
        tts=make_tts(settings.tts, reactor) if streaming else None,
        stt=make_stt(settings.streaming, reactor) if streaming else None,
        frame_lead=settings.streaming.frame_lead_ms / 1000.0,
    )


# Each factory is imported only when chosen, so a daemon loads one provider.
FACTORIES: dict[str, Callable[[LoadedConfig, IReactorTime], IProvider]] = {
    "mock": _mock,
    "twilio": _twilio,
    "telnyx": _telnyx,
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
