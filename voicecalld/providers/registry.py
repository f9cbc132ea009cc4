"""Which L{IProvider} a config asks for."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IReactorTime

from voicecalld.config.loader import LoadedConfig
from voicecalld.config.schema import Problem
from voicecalld.providers.interface import IProvider


def _mock(loaded: LoadedConfig, reactor: IReactorTime) -> IProvider:
    from voicecalld.providers.mock import MockProvider

    return MockProvider(reactor, loaded.settings.serve.path)


def _carrier_options(loaded: LoadedConfig, reactor: IReactorTime) -> dict[str, Any]:
    """What every carrier provider is built with: URLs, TTS and STT, or the realtime voice."""
    from voicecalld.expose import local_exposure
    from voicecalld.realtime.factory import make_realtime
    from voicecalld.voice.stt_factory import make_stt
    from voicecalld.voice.tts_factory import make_call_voices

    settings = loaded.settings
    realtime = make_realtime(settings.realtime, reactor)
    # Realtime calls need no TTS or STT: the model hears and speaks.
    streaming = settings.streaming.enabled and realtime is None
    return {
        "public_url": settings.public_url or local_exposure(settings).public_url,
        "known_public_url": settings.public_url,
        "tts": make_call_voices(settings, reactor) if streaming else None,
        "stt": make_stt(settings.streaming, reactor) if streaming else None,
        "realtime": realtime,
        "frame_lead": settings.streaming.frame_lead_ms / 1000.0,
    }


def _twilio(loaded: LoadedConfig, reactor: IReactorTime) -> IProvider:
    from voicecalld.providers.twilio.provider import TwilioProvider

    return TwilioProvider(loaded.settings, reactor, **_carrier_options(loaded, reactor))


def _telnyx(loaded: LoadedConfig, reactor: IReactorTime) -> IProvider:
    from voicecalld.providers.telnyx.provider import TelnyxProvider
    from voicecalld.providers.telnyx.signature import configured_key

    key = configured_key(loaded.settings.telnyx.public_key, (*loaded.prefix, "telnyx"))
    return TelnyxProvider(
        loaded.settings, reactor, public_key=key, **_carrier_options(loaded, reactor)
    )


def _plivo(loaded: LoadedConfig, reactor: IReactorTime) -> IProvider:
    from voicecalld.providers.plivo.provider import PlivoProvider

    return PlivoProvider(loaded.settings, reactor, **_carrier_options(loaded, reactor))


# Each factory is imported only when chosen, so a daemon loads one provider.
FACTORIES: dict[str, Callable[[LoadedConfig, IReactorTime], IProvider]] = {
    "mock": _mock,
    "twilio": _twilio,
    "telnyx": _telnyx,
    "plivo": _plivo,
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
