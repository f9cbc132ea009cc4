"""systemd's readiness protocol (sd_notify), for Type=notify units."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping


def sd_notify(state: str, environ: Mapping[str, str] | None = None) -> bool:
    """Tell systemd C{state} (e.g. C{READY=1}); False when not run by systemd."""
    address = (environ if environ is not None else os.environ).get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        try:
            sock.sendto(state.encode(), address)
        except OSError:
            return False
    return True
