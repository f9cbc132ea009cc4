"""
The daemon's service tree and its start-up order.

Twisted's C{MultiService} ignores Deferreds returned by its children's
C{startService}, so start-up is one explicit sequence instead: open the
store, restore and reconcile calls, then listen (webhooks, control socket,
metrics), then tell systemd C{READY=1}.  If any socket cannot be bound the
daemon says which and why, and exits non-zero: a daemon without its sockets
is worse than none.  A call store that lost its data is refused (exit 2, as
for a bad config: only the operator can fix it, so systemd does not retry).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

from twisted.application import service
from twisted.internet.defer import Deferred
from twisted.internet.error import ReactorNotRunning
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.web.server import Site

from voicecalld import __version__
from voicecalld.activation import is_activated
from voicecalld.calls.manager import CallManager
from voicecalld.config.loader import LoadedConfig
from voicecalld.config.model import VoiceCallSettings
from voicecalld.control.server import ControlFactory, PeerPolicy
from voicecalld.expose.exposer import Exposer
from voicecalld.metrics import Metrics, MetricsResource
from voicecalld.providers.interface import IProvider
from voicecalld.sdnotify import sd_notify, watchdog_interval
from voicecalld.store.guard import StoreRefused
from voicecalld.store.interface import ICallStore
from voicecalld.store.retention import Retention
from voicecalld.store.timed import TimedStore
from voicecalld.values.states import CallState
from voicecalld.voice.chat import make_chat_responder
from voicecalld.voice.replies import ReplyRouter
from voicecalld.web.guard import GuardedSite
from voicecalld.web.limits import WebLimits
from voicecalld.web.site import build_root

EXIT_STARTUP_FAILED = 1
EXIT_STORE_REFUSED = 2


class Listener:
    """One socket the daemon serves: what it is, where, and what it serves."""

    def __init__(
        self, what: str, description: str, endpoint: IStreamServerEndpoint, factory: Factory
    ) -> None:
        self.what = what
        self.description = description
        self.endpoint = endpoint
        self.factory = factory
        self.port: IListeningPort | None = None
        #: Handed over by systemd: the socket outlives this process.
        self.adopted = is_activated(description)


class StartupFailed(Exception):
    """The daemon cannot start; the message says why, in one line."""

    def __init__(self, message: str, exit_code: int = EXIT_STARTUP_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class VoiceCallDaemon(service.MultiService):
    """Store, call manager, provider, web site and control server, started in order."""

    log = Logger()

    def __init__(
        self,
        *,
        loaded: LoadedConfig,
        store: ICallStore,
        provider: IProvider,
        manager: CallManager,
        listeners: list[Listener],
        reactor: Any,
        warnings: list[str],
        metrics: Metrics | None = None,
        exposer: Exposer | None = None,
        notify: Callable[[str], object] = sd_notify,
        retention: Retention | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__()
        self.loaded = loaded
        self.store = store
        self.provider = provider
        self.manager = manager
        self.listeners = listeners
        self.metrics = metrics
        self.exposer = exposer
        self.retention = retention
        self._reactor = reactor
        self._warnings = warnings
        self._notify = notify
        self._environ = os.environ if environ is None else environ
        self._watchdog: LoopingCall | None = None
        self._terminating = False
        self.ready: Deferred[None] = Deferred()
        #: Fires with the number of calls a drain had to end, once it is over.
        self.drained: Deferred[int] = Deferred()
        # (calls live when the drain began, calls it ended as shutdown), once over.
        self._drain_outcome: tuple[int, int] | None = None
        #: Whether the stop finished: everything stored and the store closed.
        self.stopped = False

    def startService(self) -> None:
        super().startService()
        d = Deferred.fromCoroutine(self._start())
        d.addCallbacks(self.ready.callback, self._failed)

    async def _start(self) -> None:
        for warning in self._warnings:
            self.log.warn("config: {warning}", warning=warning)
        source = self.loaded.source or "built-in defaults (mock provider)"
        self.log.info(
            "voicecalld {version} starting: provider {provider}, config {source}",
            version=__version__,
            provider=self.provider.name,
            source=source,
        )
        try:
            await self.store.open()
        except StoreRefused as e:
            raise StartupFailed(str(e), EXIT_STORE_REFUSED) from e
        except Exception as e:
            raise StartupFailed(f"cannot open the call store {self.store.path}: {e}") from e
        if self.exposer is not None:
            await self.exposer.start()
        self.provider.start(self.manager.handle_event, self.manager.directory)
        restoring = len(await self.store.live_calls())
        if restoring:
            self._notify(f"STATUS=restoring {_calls(restoring)}")
        await self.manager.restore()
        for listener in self.listeners:
            try:
                listener.port = await listener.endpoint.listen(listener.factory)
            except Exception as e:
                raise StartupFailed(
                    f"cannot listen for {listener.what} on {listener.description}: {_reason(e)}"
                ) from e
            self.log.info(
                "listening for {what} on {where} ({address})",
                what=listener.what,
                where=listener.description,
                address=_address(listener.port),
            )
        self.manager.start()
        if self.retention is not None:
            self.retention.start()
        if self.metrics is not None:
            self.metrics.health.start()
            self.metrics.ready = True
        live = len(self.manager.live_calls())
        self._notify(f"READY=1\nSTATUS=ready: {live} live call{'' if live == 1 else 's'}")
        self.log.info("voicecalld ready")
        interval = watchdog_interval(self._environ)
        if interval is not None:
            self._watchdog = LoopingCall(self._notify, "WATCHDOG=1")
            self._watchdog.clock = self._reactor
            self._watchdog.start(interval, now=True)

    def terminate(self) -> None:
        """
        SIGTERM: with C{shutdown.mode: drain} the first one drains (no new
        calls; live ones may finish for C{shutdown.drainSeconds}, then end as
        C{shutdown}), then stops; otherwise, or on a second one, stop now.
        Stopping always flushes the store, so nothing acknowledged is lost.
        """
        shutdown = self.loaded.settings.shutdown
        if self._terminating or shutdown.mode != "drain" or not self.ready.called:
            self._stop_reactor()
            return
        self._terminating = True
        d = Deferred.fromCoroutine(self._drain(shutdown.drain_seconds))
        d.addErrback(lambda f: self.log.failure("draining failed", f))
        d.addBoth(lambda _: self._stop_reactor())

    async def _drain(self, seconds: int) -> None:
        self.manager.begin_drain()
        if self.metrics is not None:
            self.metrics.ready = False
        live = began = len(self.manager.live_calls())
        self.log.info(
            "draining: {live} live calls may finish within {seconds} s; no new calls",
            live=live,
            seconds=seconds,
            log_code="daemon.draining",
        )
        self._notify(f"STATUS=draining {_calls(live)}")
        deadline = self._reactor.seconds() + seconds
        while live and self._reactor.seconds() < deadline:
            await _later(self._reactor, min(DRAIN_POLL, deadline - self._reactor.seconds()))
            now = len(self.manager.live_calls())
            if now != live:
                live = now
                self._notify(f"STATUS=draining {_calls(live)}")
        ended = 0
        if live:
            ended = await self.manager.end_all(
                CallState.SHUTDOWN, f"still live after draining for {seconds} s"
            )
        self.log.info(
            "drained: {ended} calls ended as shutdown", ended=ended, log_code="daemon.drained"
        )
        self._drain_outcome = (began, ended)
        self.drained.callback(ended)

    def _stop_reactor(self) -> None:
        try:
            self._reactor.stop()
        except ReactorNotRunning:
            pass

    def _failed(self, failure: Any) -> None:
        message = (
            str(failure.value)
            if failure.check(StartupFailed)
            else f"start-up failed: {failure.getErrorMessage()}"
        )
        if not failure.check(StartupFailed):
            self.log.failure("start-up failed", failure)
        self.log.critical("voicecalld: {message}", message=message)
        print(f"voicecalld: {message}", file=sys.__stderr__, flush=True)
        self.ready.errback(failure)
        code = failure.value.exit_code if failure.check(StartupFailed) else EXIT_STARTUP_FAILED
        self._reactor.addSystemEventTrigger("after", "shutdown", _exit, code)
        self._reactor.callWhenRunning(self._reactor.stop)

    def stopService(self) -> Deferred:
        super().stopService()
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        self._log_stopping()
        self._notify("STOPPING=1\nSTATUS=stopping")
        if self._watchdog is not None and self._watchdog.running:
            self._watchdog.stop()
        if self.metrics is not None:
            self.metrics.ready = False
            self.metrics.stopping = True
            self.metrics.health.stop()
        self.manager.stop()
        for listener in self.listeners:
            await _stop_listening(listener)
        await _maybe(self.provider.stop())
        await self.manager.settle()
        if self.exposer is not None:
            await self.exposer.stop()
        if self.retention is not None:
            await self.retention.stop()
        await self.store.close()
        self.log.info("voicecalld stopped")
        self.stopped = True

    def _log_stopping(self) -> None:
        """One line on what becomes of the calls: drained, or left for the next process."""
        live = len(self.manager.live_calls())
        if self._drain_outcome is not None and not live:
            began, ended = self._drain_outcome
            self.log.info(
                "voicecalld stopping: drained {drained}, {ended} ended as shutdown;"
                " no call is left with the carrier",
                drained=_calls(began),
                ended=ended,
                live=0,
                log_code="daemon.stopping",
            )
            return
        self.log.info(
            "voicecalld stopping: {left} left with the carrier for the next process to restore",
            left=_calls(live),
            live=live,
            log_code="daemon.stopping",
        )


DRAIN_POLL = 0.25


def _calls(n: int) -> str:
    return f"{n} call{'' if n == 1 else 's'}"


def _later(clock: Any, seconds: float) -> Deferred:
    d: Deferred[None] = Deferred()
    clock.callLater(max(seconds, 0.0), d.callback, None)
    return d


async def _stop_listening(listener: Listener) -> None:
    """
    Stop accepting on C{listener}.  A socket systemd handed over is only no
    longer read: closing it would unlink a UNIX socket's file (Twisted's port
    does on C{connectionLost}), and clients queued in its backlog wait for the
    next process instead.  Out of the reactor's readers, the reactor's own
    shutdown does not close it either; the process's exit drops this copy.
    """
    port, listener.port = listener.port, None
    if port is None:
        return
    if listener.adopted and hasattr(port, "stopReading"):
        port.stopReading()
        return
    await _maybe(port.stopListening())


async def _maybe(result: Any) -> None:
    if isinstance(result, Deferred):
        await result


def _address(port: IListeningPort) -> str:
    host = port.getHost()
    if hasattr(host, "port"):
        return f"{host.host}:{host.port}"
    return str(getattr(host, "name", host))


def _reason(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    if "Address already in use" in text or "Cannot acquire lock" in text:
        text += " (is another voicecalld running with the same port or state directory?)"
    return text


def _exit(code: int) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def make_site(provider: IProvider, reactor: Any, settings: VoiceCallSettings) -> Site:
    """The webhook site with the provider's resources, behind the input limits."""
    # Room for every media socket the config allows, plus the webhooks.
    limits = WebLimits(max_connections=settings.streaming.max_connections + 256)
    resources = provider.web_resources()
    site = GuardedSite(build_root(resources), reactor=reactor, limits=limits)
    site.noisy = False
    # The outcome tallies of the webhook resources, for metrics.
    site.tallies = [r.outcomes for r in resources.values() if hasattr(r, "outcomes")]
    return site


def vendors_of(settings: VoiceCallSettings) -> dict[str, str]:
    """The configured vendor of each kind of vendor error, for the metrics' C{vendor} label."""
    return {
        "tts": settings.tts.provider or "openai",
        "stt": settings.streaming.provider or "openai",
        "realtime": settings.realtime.provider or "none",
        "reply": "responder",
        "provider": settings.provider,
        "playback": settings.provider,
        "hangup": settings.provider,
    }


def _webhook_tallies(site: Any) -> list[Any]:
    """The guard's refusal tally and each webhook resource's outcome tally."""
    return [site.refusals, *site.tallies]


def _media_of(provider: IProvider) -> list[tuple[Any, Any]]:
    """The provider's media stream factory and pacing clock, if it streams."""
    media = getattr(provider, "media", None)
    if media is None or not hasattr(media, "factory"):
        return []
    return [(media.factory, media.ticker)]


def _ticker_of(provider: IProvider) -> Any:
    media = getattr(provider, "media", None)
    return getattr(media, "ticker", None)


def build(
    loaded: LoadedConfig,
    *,
    store: ICallStore,
    provider: IProvider,
    reactor: Any,
    webhook: tuple[str, IStreamServerEndpoint],
    control: tuple[str, IStreamServerEndpoint, str | None],
    metrics: tuple[str, IStreamServerEndpoint] | None,
    warnings: list[str],
    environ: Mapping[str, str] | None = None,
) -> VoiceCallDaemon:
    """Assemble the daemon from its parts (the real ones, or fakes in tests)."""
    settings = loaded.settings
    collector = None
    if metrics is not None:
        collector = Metrics(reactor, provider=settings.provider, vendors=vendors_of(settings))
        store = TimedStore(store, reactor, collector.store_commit)
    fallback = make_chat_responder(settings, environ or {}, reactor)
    replies = ReplyRouter(reactor, settings.response_timeout_ms / 1000.0, fallback=fallback)
    manager = CallManager(
        settings=settings, store=store, provider=provider, clock=reactor, replies=replies
    )
    control_description, control_endpoint, socket_path = control
    exposer = Exposer(loaded.settings, provider, reactor)
    control_factory = ControlFactory(
        manager, provider, PeerPolicy(socket_path), exposer=exposer, clock=reactor
    )
    control_factory.noisy = False
    site = make_site(provider, reactor, settings)
    listeners = [
        Listener("webhooks", webhook[0], webhook[1], site),
        Listener("control clients", control_description, control_endpoint, control_factory),
    ]
    if metrics is not None and collector is not None:
        collector.follow(manager.hub)
        collector.live_calls(manager.live_calls)
        collector.control(control_factory.tally)
        collector.webhooks(lambda: _webhook_tallies(site))
        collector.media(lambda: _media_of(provider))
        ticker = _ticker_of(provider)
        if ticker is not None:
            ticker.on_tick = collector.pacing_lateness.observe
        collector.store(store)
        collector.gauge(
            "control_clients",
            "Connected control clients.",
            lambda: len(control_factory.clients),
        )
        collector.gauge(
            "responders",
            "Connected reply responders.",
            lambda: manager.replies.connected,
        )
        metrics_site = Site(MetricsResource(collector))
        metrics_site.noisy = False
        listeners.append(Listener("metrics", metrics[0], metrics[1], metrics_site))
    return VoiceCallDaemon(
        loaded=loaded,
        store=store,
        provider=provider,
        manager=manager,
        listeners=listeners,
        reactor=reactor,
        warnings=warnings,
        metrics=collector,
        exposer=exposer,
        retention=Retention(store, reactor, settings.retention_days),
        environ=environ,
    )
