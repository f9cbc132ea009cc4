"""The daemon's current exposure, changed at start-up and by C{voicecall expose}."""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger

from voicecalld.config.model import VoiceCallSettings
from voicecalld.expose.api import Exposure, expose, local_exposure, start_exposure
from voicecalld.expose.process import ExposeError
from voicecalld.providers.interface import IProvider
from voicecalld.web.reachability import provider_warning

_NOT_PUBLIC = ("local", "off")


class Exposer:
    """
    Knows where carriers reach the webhook, and tells the provider: the
    public URL its calls and signature checks use follows every change.
    """

    log = Logger()

    def __init__(self, settings: VoiceCallSettings, provider: IProvider, reactor: Any) -> None:
        self._settings = settings
        self._provider = provider
        self._reactor = reactor
        self.current: Exposure | None = None

    async def start(self) -> Exposure:
        """Expose as configured (C{publicUrl}, tunnel, legacy Tailscale, else local)."""
        try:
            exposure = await start_exposure(self._settings, reactor=self._reactor)
        except ExposeError as e:
            self.log.warn(
                "exposing the webhook failed: {error}; using the local URL",
                error=str(e),
                log_code="expose.failed",
            )
            exposure = local_exposure(self._settings)
        self._use(exposure)
        return exposure

    async def change(self, mode: str) -> Exposure:
        """C{voicecall expose --mode funnel|serve|off}."""
        if self.current is not None and self.current.how not in ("publicUrl", "local"):
            await self.current.stop()
            self.current = None
        exposure = await expose(self._settings, mode, reactor=self._reactor)
        if exposure.public_url is None:
            exposure = (
                Exposure("publicUrl", self._settings.public_url)
                if self._settings.public_url
                else local_exposure(self._settings)
            )
        self._use(exposure)
        return exposure

    async def stop(self) -> None:
        """Take down what start-up or C{expose} set up."""
        if self.current is not None:
            exposure, self.current = self.current, None
            try:
                await exposure.stop()
            except ExposeError as e:
                self.log.warn("removing the exposure failed: {error}", error=str(e))

    def _use(self, exposure: Exposure) -> None:
        self.current = exposure
        self._provider.use_public_url(exposure.public_url, known=exposure.how not in _NOT_PUBLIC)
        self.log.info(
            "webhook URL: {url} ({how})",
            url=exposure.public_url,
            how=exposure.how,
            log_code="expose.url",
        )
        warning = provider_warning(self._settings.provider, exposure.public_url or "")
        if warning:
            self.log.warn("{warning}", warning=warning, log_code="expose.unreachable")
