"""
Which text-to-speech providers a config asks for, built and chained.

Only providers that can give telephony audio are used: OpenAI (24 kHz PCM,
resampled here) and ElevenLabs (mu-law 8 kHz from the vendor).  Microsoft/Edge
and any other configured provider are skipped, as upstream does.

L{CallVoices} holds the plugin's TTS and one per C{numbers.<E.164>.tts}
route (deep-merged over the plugin's C{tts}), each built once at start; a
call speaks with its route's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import treq
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from voicecalld.config.merge import deep_merge
from voicecalld.config.model import TtsSettings, VoiceCallSettings
from voicecalld.config.schema import structure, unstructure
from voicecalld.values.record import CallRecord
from voicecalld.values.route import route_of
from voicecalld.voice.tts import DEFAULT_TIMEOUT_MS, ITTS, Synthesis, TtsError

log = Logger()

TELEPHONY_PROVIDERS = ("openai", "elevenlabs")


@implementer(ITTS)
class FallbackTTS:
    """Try each provider in turn; the next one only when the last failed before any audio."""

    def __init__(self, chain: Sequence[Any]) -> None:
        if not chain:
            raise ValueError("FallbackTTS needs at least one provider")
        self.chain = tuple(chain)
        self.name = self.chain[0].name

    def synthesize(self, text: str, on_audio: Callable[[bytes], object]) -> Deferred[Synthesis]:
        """Synthesize with the first provider that works; see L{ITTS.synthesize}."""
        return _Attempts(self.chain, text, on_audio).start()


class _Attempts:
    """One utterance going down a L{FallbackTTS} chain."""

    def __init__(self, chain: tuple[Any, ...], text: str, on_audio: Callable[[bytes], object]):
        self._chain = chain
        self._text = text
        self._on_audio = on_audio
        self._delivered = 0
        self._current: Deferred[Synthesis] | None = None
        self._cancelled = False
        self.done: Deferred[Synthesis] = Deferred(self._cancel)

    def start(self) -> Deferred[Synthesis]:
        self._try(0)
        return self.done

    def _deliver(self, ulaw: bytes) -> object:
        self._delivered += len(ulaw)
        return self._on_audio(ulaw)

    def _try(self, index: int) -> None:
        current = self._chain[index].synthesize(self._text, self._deliver)
        self._current = current
        current.addCallbacks(self._succeeded, self._failed, errbackArgs=(index,))

    def _succeeded(self, synthesis: Synthesis) -> None:
        self._current = None
        if not self._cancelled:
            self.done.callback(synthesis)

    def _failed(self, failure: Failure, index: int) -> None:
        self._current = None
        if self._cancelled:
            return
        last = index + 1 == len(self._chain)
        if self._delivered or last or not failure.check(TtsError):
            self.done.errback(failure)
            return
        log.warn(
            "TTS fallback used from={source} to={target} ({error})",
            source=self._chain[index].name,
            target=self._chain[index + 1].name,
            error=failure.getErrorMessage(),
        )
        self._try(index + 1)

    def _cancel(self, done: Deferred[Synthesis]) -> None:
        self._cancelled = True
        if self._current is not None:
            current, self._current = self._current, None
            current.cancel()


def make_tts(tts: TtsSettings, clock: IReactorTime, http: Any = treq) -> Any:
    """
    The telephony TTS from config: an L{ITTS}, or None when no provider is usable.

    C{tts.provider} comes first, then the other telephony provider; providers
    that cannot give telephony audio are skipped with one warning.  Several
    usable providers make a L{FallbackTTS}.  C{http} is C{treq} or a
    C{treq.client.HTTPClient}.
    """
    from voicecalld.voice.tts_elevenlabs import ElevenLabsTTS
    from voicecalld.voice.tts_openai import OpenAITTS

    makers = {"openai": OpenAITTS, "elevenlabs": ElevenLabsTTS}
    order = [tts.provider] if tts.provider else []
    order += [name for name in TELEPHONY_PROVIDERS if name not in order]
    skipped = [name for name in order if name not in TELEPHONY_PROVIDERS]
    skipped += [name for name in tts.providers if name not in skipped + order]
    if skipped:
        log.warn(
            "TTS providers skipped for calls (no telephony audio): {skipped}",
            skipped=", ".join(skipped),
        )
    timeout = (tts.timeout_ms or DEFAULT_TIMEOUT_MS) / 1000
    usable, unusable = [], []
    for name in order:
        if name not in TELEPHONY_PROVIDERS:
            continue
        settings = tts.provider_settings(name)
        why = _unusable(name, settings)
        if why is None:
            usable.append(makers[name](settings, clock, http=http, timeout=timeout))
        else:
            unusable.append(why)
    if not usable:
        log.warn("No TTS for calls: {reasons}", reasons="; ".join(unusable))
        return None
    if tts.provider in TELEPHONY_PROVIDERS and usable[0].name != tts.provider:
        log.warn(
            "TTS provider {configured} is not usable ({reason}); using {used}",
            configured=tts.provider,
            reason=unusable[0],
            used=usable[0].name,
        )
    if len(usable) == 1:
        return usable[0]
    return FallbackTTS(usable)


def _unusable(name: str, settings: Any) -> str | None:
    """Why a telephony provider cannot be used, or None when it can."""
    if settings.api_key is not None:
        return None
    if name == "openai":
        return None if settings.base_url is not None else "openai has no apiKey or baseUrl"
    return f"{name} has no apiKey"


def route_tts(settings: VoiceCallSettings, number: str) -> TtsSettings:
    """C{numbers.<number>.tts} deep-merged over the plugin's C{tts} (keys resolved)."""
    override = settings.numbers[number].tts or {}
    merged = deep_merge(unstructure(settings.tts, redact=False), override)
    return structure(TtsSettings, merged, ("numbers", number, "tts"), [], strict=False)


class CallVoices:
    """
    The TTS each call speaks with: its route's (C{numbers.<dialled>.tts}),
    else the plugin's.  Built once, at start.
    """

    def __init__(self, default: Any, routes: dict[str, Any] | None = None) -> None:
        self.default = default
        self._routes = dict(routes or {})

    def for_record(self, record: CallRecord) -> Any:
        """The L{ITTS} for this call (None: no telephony TTS)."""
        route = route_of(record)
        if route is not None and route.has_tts and route.number in self._routes:
            return self._routes[route.number]
        return self.default

    def __len__(self) -> int:
        """How many distinct TTS set-ups there are (the plugin's and the routes')."""
        return 1 + len(self._routes)


def make_call_voices(settings: VoiceCallSettings, clock: IReactorTime, http: Any = treq) -> Any:
    """
    The plugin's TTS and each route's, as L{CallVoices}; None when no TTS at
    all is usable (as L{make_tts}).
    """
    default = make_tts(settings.tts, clock, http=http)
    routes = {}
    for number, route in sorted(settings.numbers.items()):
        if route.tts:
            tts = make_tts(route_tts(settings, number), clock, http=http)
            routes[number] = tts
            log.info(
                "TTS for calls to {number}: {name}",
                number=number,
                name=tts.name if tts is not None else "none usable",
                log_code="tts.route",
            )
    if default is None and not any(routes.values()):
        return None
    return CallVoices(default, routes)
