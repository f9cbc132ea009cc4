"""
Where the CLI finds the daemon's control socket, reading no more than it must.

C{--socket}, else C{$VOICECALLD_SOCKET}, else the config file's
C{controlSocket}, else C{<state-dir>/control.sock}.  Only the one key is read
from the config: nothing else in it is checked and no secret is looked up, so
a config the daemon would refuse for another reason does not hide the socket.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from voicecalld import paths

_PLUGIN = ("plugins", "entries", "voice-call", "config")


def socket_path(explicit: str | None, environ: Mapping[str, str]) -> str:
    """The control socket's absolute path, as the CLI and the shim choose it."""
    if explicit:
        return os.path.abspath(os.path.expanduser(explicit))
    if environ.get("VOICECALLD_SOCKET"):
        return paths.control_socket(None, environ, "")
    configured = configured_socket(paths.config_file(None, environ))
    return paths.control_socket(configured, environ, paths.state_dir(None, environ))


def configured_socket(config: str | None) -> str | None:
    """
    The C{controlSocket} of the JSON5 file at C{config} (a whole OpenClaw
    config, read at C{plugins.entries.voice-call.config}, or a bare plugin
    config), or None when it sets none or cannot be read as JSON5.
    """
    if config is None:
        return None
    import json5

    try:
        with open(config, encoding="utf-8") as handle:
            data: Any = json5.loads(handle.read())
    except (OSError, ValueError, RecursionError):
        return None
    if isinstance(data, dict) and "plugins" in data:
        for key in _PLUGIN:
            data = data.get(key) if isinstance(data, dict) else None
    value = data.get("controlSocket") if isinstance(data, dict) else None
    return value if isinstance(value, str) and value else None
