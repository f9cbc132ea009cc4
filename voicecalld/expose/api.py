"""
What the daemon and C{voicecall expose} call: publish the webhook (and the
media-stream paths) and get the public URL back.

Order at start-up, as upstream: config C{publicUrl} > C{tunnel.provider} >
legacy C{tailscale.mode} > the local URL.  A failed tunnel raises
L{ExposeError}; the daemon logs it and falls back to L{local_exposure}.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from attrs import field, frozen
from twisted.internet.defer import Deferred, fail, succeed

from voicecalld.expose.ngrok import NgrokTunnel
from voicecalld.expose.process import ExposeError
from voicecalld.expose.tailscale import Tailscale, check_mode, public_base
from voicecalld.realtime.setup import realtime_stream_path


def _no_stop() -> Deferred[None]:
    return succeed(None)


@frozen
class Exposure:
    """
    Where the webhook can be reached, and how to take it down again.

    @ivar how: C{publicUrl}, C{tailscale-serve}, C{tailscale-funnel},
        C{ngrok}, C{local} or C{off}.
    @ivar public_url: the webhook URL carriers should use (None when off).
    @ivar stream_url: the media-stream WebSocket URL, when streaming is on.
    """

    how: str
    public_url: str | None
    stream_url: str | None = None
    _stop: Callable[[], Deferred[None]] = field(default=_no_stop, alias="stop", repr=False)

    def stop(self) -> Deferred[None]:
        """Undo the exposure (stop ngrok, remove the Tailscale mounts); safe to call once."""
        return self._stop()


def stream_paths(settings: Any) -> list[str]:
    """The WebSocket paths in use: media streams and/or realtime voice."""
    paths = []
    if settings.streaming.enabled:
        paths.append(settings.streaming.stream_path)
    if settings.realtime.enabled:
        paths.append(realtime_stream_path(settings))
    return paths


def _every_stream_path(settings: Any) -> list[str]:
    return [settings.streaming.stream_path, realtime_stream_path(settings)]


def _local_host(bind: str) -> str:
    """Where a local proxy reaches the webhook server bound to C{bind}."""
    if bind in ("", "0.0.0.0", "::", "localhost"):
        return "127.0.0.1"
    return f"[{bind}]" if ":" in bind and not bind.startswith("[") else bind


def tailscale_mounts(settings: Any) -> list[tuple[str, str]]:
    """(public path, local target) pairs: the webhook and the stream paths in use."""
    local = f"http://{_local_host(settings.serve.bind)}:{settings.serve.port}"
    mounts = [(settings.tailscale.path, local + settings.serve.path)]
    for path in stream_paths(settings):
        if path not in (p for p, _ in mounts):
            mounts.append((path, local + path))
    return mounts


def stream_url(public_url: str, settings: Any) -> str | None:
    """C{wss://<host of the public URL><streamPath>}, when streaming is on."""
    if not settings.streaming.enabled:
        return None
    parts = urlsplit(public_url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    return f"{scheme}://{parts.netloc}{settings.streaming.stream_path}"


def local_exposure(settings: Any) -> Exposure:
    """The local URL (what upstream falls back to): carriers cannot reach it from outside."""
    bind = settings.serve.bind
    host = f"[{bind}]" if ":" in bind and not bind.startswith("[") else bind
    url = f"http://{host}:{settings.serve.port}{settings.serve.path}"
    return Exposure("local", url, stream_url(url, settings))


def expose_tailscale(
    settings: Any,
    mode: str,
    *,
    reactor: Any,
    clock: Any = None,
    environ: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> Deferred[Exposure]:
    """Mount the webhook and stream paths with C{tailscale serve|funnel}."""
    return Deferred.fromCoroutine(
        _expose_tailscale(settings, mode, reactor, clock, environ, timeout)
    )


async def _expose_tailscale(settings, mode, reactor, clock, environ, timeout) -> Exposure:
    port = settings.tailscale.port
    check_mode(mode, port)
    tailscale = Tailscale(reactor=reactor, clock=clock, environ=environ, timeout=timeout)
    name = await tailscale.dns_name()
    mounts = tailscale_mounts(settings)
    await tailscale.mount(mode, port, mounts)
    url = public_base(name, port) + settings.tailscale.path

    def stop() -> Deferred[None]:
        return Deferred.fromCoroutine(tailscale.unmount(mode, port, [p for p, _ in mounts]))

    return Exposure(f"tailscale-{mode}", url, stream_url(url, settings), stop=stop)


def unexpose_tailscale(
    settings: Any,
    mode: str = "serve",
    *,
    reactor: Any,
    clock: Any = None,
    environ: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> Deferred[None]:
    """Remove voicecalld's Tailscale mounts (webhook and every stream path), if any."""
    port = settings.tailscale.port
    paths = [settings.tailscale.path]
    paths += [p for p in _every_stream_path(settings) if p not in paths]
    tailscale = Tailscale(reactor=reactor, clock=clock, environ=environ, timeout=timeout)
    return Deferred.fromCoroutine(tailscale.unmount(mode, port, paths))


def expose_ngrok(
    settings: Any,
    *,
    reactor: Any,
    clock: Any = None,
    environ: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> Deferred[Exposure]:
    """Start an ngrok agent for C{serve.port}; the public URL is its URL + C{serve.path}."""
    tunnel = NgrokTunnel(reactor=reactor, clock=clock, environ=environ, timeout=timeout)
    started = tunnel.start(
        settings.serve.port,
        domain=settings.tunnel.ngrok_domain,
        authtoken=settings.tunnel.ngrok_auth_token,
    )

    def exposed(base: str) -> Exposure:
        url = base.rstrip("/") + settings.serve.path
        return Exposure("ngrok", url, stream_url(url, settings), stop=tunnel.stop)

    return started.addCallback(exposed)


def configured_tailscale_mode(settings: Any) -> str | None:
    """C{serve} or C{funnel} from C{tunnel.provider}, else from legacy C{tailscale.mode}."""
    provider = settings.tunnel.provider
    if provider.startswith("tailscale-"):
        return provider.removeprefix("tailscale-")
    if settings.tailscale.mode in ("serve", "funnel"):
        return settings.tailscale.mode
    return None


def expose(
    settings: Any,
    mode: str,
    *,
    reactor: Any,
    clock: Any = None,
    environ: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> Deferred[Exposure]:
    """
    C{voicecall expose --mode funnel|serve|off}: publish through Tailscale,
    or remove the mounts (C{off}, with the configured mode, else C{serve}).
    """
    kwargs = {"reactor": reactor, "clock": clock, "environ": environ, "timeout": timeout}
    if mode == "off":
        undo = configured_tailscale_mode(settings) or "serve"
        return unexpose_tailscale(settings, undo, **kwargs).addCallback(
            lambda _: Exposure("off", None)
        )
    if mode not in ("serve", "funnel"):
        return fail(ExposeError(f"expose mode must be funnel, serve or off, not {mode!r}"))
    return expose_tailscale(settings, mode, **kwargs)


def start_exposure(
    settings: Any,
    *,
    reactor: Any,
    clock: Any = None,
    environ: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> Deferred[Exposure]:
    """
    The daemon's start-up exposure: C{publicUrl} as given, else the tunnel,
    else legacy Tailscale, else the local URL.  Fails with L{ExposeError}.
    """
    kwargs = {"reactor": reactor, "clock": clock, "environ": environ, "timeout": timeout}
    if settings.public_url:
        url = settings.public_url
        return succeed(Exposure("publicUrl", url, stream_url(url, settings)))
    if settings.tunnel.provider == "ngrok":
        return expose_ngrok(settings, **kwargs)
    mode = configured_tailscale_mode(settings)
    if mode is not None:
        return expose_tailscale(settings, mode, **kwargs)
    return succeed(local_exposure(settings))
