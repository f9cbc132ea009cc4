"""
Sockets handed over by systemd (C{systemd:} endpoints, socket activation).

Twisted resolves C{systemd:domain=...:name=N} and C{...:index=I} itself; this
module checks the description against what was really passed first, so a
unit that names its sockets differently, or passes none, stops the daemon
with one line saying so instead of a bare C{KeyError}.  With C{index=} and
named sockets, a socket whose name is one of ours but not the one the option
expects (C{--control ...:index=1} landing on C{webhook}) is refused too: the
order was confused.
"""

from __future__ import annotations

from twisted.internet import endpoints
from twisted.python.systemd import ListenFDs

#: The C{FileDescriptorName=} each option expects in voicecalld.socket.
NAMES = {"control": "control", "webhook": "webhook", "metrics": "metrics"}


def is_activated(description: str) -> bool:
    """Whether C{description} is a socket systemd hands over (C{systemd:...})."""
    return description.strip().lower().startswith("systemd:")


def _arguments(description: str) -> dict[str, str]:
    arguments = {}
    for part in description.split(":")[1:]:
        key, _, value = part.partition("=")
        arguments[key.strip().lower()] = value.strip()
    return arguments


def inherited() -> ListenFDs:
    """
    The sockets passed to this process, as Twisted's C{systemd:} endpoint
    sees them: it reads (and removes) C{LISTEN_PID}/C{LISTEN_FDS} from the
    environment when its endpoints module is imported.
    """
    parser = getattr(endpoints, "_SystemdParser", None)
    found = getattr(parser, "_sddaemon", None)
    return found if isinstance(found, ListenFDs) else ListenFDs.fromEnvironment()


def check(option: str, description: str, passed: ListenFDs | None = None) -> str | None:
    """
    The one-line problem with C{--option description} under the sockets this
    process was handed, or None when it is fine (or not a C{systemd:} one).
    """
    if not is_activated(description):
        return None
    passed = inherited() if passed is None else passed
    by_fd = {fd: name for name, fd in passed.inheritedNamedDescriptors().items()}
    names = [by_fd.get(fd, "?") for fd in passed.inheritedDescriptors()]
    count = len(names)
    where = f"--{option} {description}"
    if count == 0:
        return (
            f"{where}: no sockets were passed to this process (LISTEN_FDS, LISTEN_FDNAMES"
            " and LISTEN_PID unset, inconsistent or for another process); start it through"
            " voicecalld.socket"
        )
    arguments = _arguments(description)
    listed = ":".join(names)
    if "name" in arguments:
        if arguments["name"] not in names:
            return (
                f"{where}: no passed socket is named {arguments['name']!r}"
                f" (LISTEN_FDNAMES={listed}); set FileDescriptorName= in voicecalld.socket"
            )
        return None
    try:
        index = int(arguments.get("index", ""))
    except ValueError:
        return f"{where}: give index=N or name=NAME"
    if not 0 <= index < count:
        return f"{where}: index {index} is out of range: {count} sockets were passed ({listed})"
    expected = NAMES.get(option)
    got = names[index]
    if expected and got in NAMES.values() and got != expected:
        return (
            f"{where}: the passed socket at index {index} is named {got!r}, not"
            f" {expected!r} (LISTEN_FDNAMES={listed}); use name={expected}"
        )
    return None
