"""
Exposing the webhook port to carriers: Tailscale Serve/Funnel and ngrok,
driven as child processes without blocking the reactor.

The daemon calls L{start_exposure} at start-up (and L{Exposure.stop} at
shutdown); C{voicecall expose --mode funnel|serve|off} calls L{expose}.
"""

from voicecalld.expose.api import (
    Exposure,
    configured_tailscale_mode,
    expose,
    expose_ngrok,
    expose_tailscale,
    local_exposure,
    start_exposure,
    stream_paths,
    tailscale_mounts,
    unexpose_tailscale,
)
from voicecalld.expose.process import ExposeError, ToolMissing

__all__ = [
    "ExposeError",
    "Exposure",
    "ToolMissing",
    "configured_tailscale_mode",
    "expose",
    "expose_ngrok",
    "expose_tailscale",
    "local_exposure",
    "start_exposure",
    "stream_paths",
    "tailscale_mounts",
    "unexpose_tailscale",
]
