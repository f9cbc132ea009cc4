"""Where voicecalld keeps things, as the contract fixes them."""

from __future__ import annotations

import os
from collections.abc import Mapping

SOCKET_NAME = "control.sock"
STORE_NAME = "calls.sqlite3"


def state_dir(explicit: str | None, environ: Mapping[str, str]) -> str:
    """C{--state-dir}, else C{$VOICECALLD_STATE_DIR}, else the XDG state home's C{voicecalld}."""
    if explicit:
        return os.path.abspath(os.path.expanduser(explicit))
    if environ.get("VOICECALLD_STATE_DIR"):
        return os.path.abspath(os.path.expanduser(environ["VOICECALLD_STATE_DIR"]))
    home = environ.get("HOME") or os.path.expanduser("~")
    base = environ.get("XDG_STATE_HOME") or os.path.join(home, ".local", "state")
    return os.path.join(base, "voicecalld")


def config_file(explicit: str | None, environ: Mapping[str, str]) -> str | None:
    """
    C{--config}, else C{$VOICECALLD_CONFIG}, else C{$OPENCLAW_CONFIG_PATH}, else
    C{~/.openclaw/openclaw.json} if it exists; None means built-in defaults.
    """
    for candidate in (
        explicit,
        environ.get("VOICECALLD_CONFIG"),
        environ.get("OPENCLAW_CONFIG_PATH"),
    ):
        if candidate:
            return os.path.expanduser(candidate)
    home = environ.get("HOME") or os.path.expanduser("~")
    default = os.path.join(home, ".openclaw", "openclaw.json")
    return default if os.path.exists(default) else None


def control_socket(configured: str | None, environ: Mapping[str, str], state: str) -> str:
    """C{controlSocket}, else C{$VOICECALLD_SOCKET}, else C{<state-dir>/control.sock}."""
    chosen = configured or environ.get("VOICECALLD_SOCKET")
    if chosen:
        return os.path.abspath(os.path.expanduser(chosen))
    return os.path.join(state, SOCKET_NAME)


def ensure_private_dir(path: str) -> None:
    """Create C{path} (and parents) if needed, readable by its owner only."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)
