"""
Which realtime voice a config asks for: C{realtime.provider}, or (unset) the
first of L{PRIORITY} that C{realtime.providers} configures.  Each vendor
module is imported only when chosen; one that is not in this build, or an
unknown provider id, is a warning and realtime is skipped (as upstream).
"""

from __future__ import annotations

import importlib
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from voicecalld.config.model import RealtimeSettings

# Upstream's provider priority for an unset realtime.provider.
PRIORITY = ("google", "openai")
VENDORS = {
    "openai": ("voicecalld.realtime.openai", "OpenAIRealtimeVoice"),
    "google": ("voicecalld.realtime.google", "GeminiLiveVoice"),
}

log = Logger()


def chosen_provider(settings: RealtimeSettings) -> str | None:
    """The realtime provider id to use, if any."""
    if settings.provider:
        return settings.provider
    return next((name for name in PRIORITY if provider_block(settings, name) is not None), None)


def provider_block(settings: RealtimeSettings, name: str) -> Any:
    """C{realtime.providers.<name>}, whether the config holds it as a map or typed settings."""
    providers = settings.providers
    if isinstance(providers, dict):
        return providers.get(name)
    return getattr(providers, name, None)


def make_realtime(settings: RealtimeSettings, reactor: IReactorTime) -> Any:
    """The L{IRealtimeVoice} of C{realtime.*}, or None (with a warning) when there is none."""
    if not settings.enabled:
        return None
    name = chosen_provider(settings)
    if name is None:
        log.warn(
            "realtime.enabled is set but no realtime provider is configured"
            " (realtime.providers.google or .openai); realtime is skipped",
            log_code="realtime.no_provider",
        )
        return None
    vendor = VENDORS.get(name)
    if vendor is None:
        log.warn(
            "realtime.provider {name!r} is unknown (known: {known}); realtime is skipped",
            name=name,
            known=", ".join(sorted(VENDORS)),
            log_code="realtime.unknown_provider",
        )
        return None
    module_name, class_name = vendor
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError):
        log.warn(
            "realtime provider {name!r} is not built into this voicecalld; realtime is skipped",
            name=name,
            log_code="realtime.not_built",
        )
        return None
    block = provider_block(settings, name)
    if block is None:
        log.warn(
            "realtime.provider is {name!r} but realtime.providers.{name} is not configured;"
            " realtime is skipped",
            name=name,
            log_code="realtime.no_provider_block",
        )
        return None
    return cls(block, reactor)
