"""
Can a carrier reach the public URL?  A start-up check, without any lookups.

Current upstream refuses to start a real provider whose public URL is
loopback, private or CGNAT space; voicecalld warns instead (tests and private
carriers use such URLs).  DNS names other than C{localhost} are assumed
public: resolving them would block and prove little.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_PRIVATE_V4 = tuple(
    ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
)
_LINK_LOCAL_V4 = ipaddress.ip_network("169.254.0.0/16")
_UNIQUE_LOCAL_V6 = ipaddress.ip_network("fc00::/7")
_LINK_LOCAL_V6 = ipaddress.ip_network("fe80::/10")

# Stable kinds returned by classify_host (None means "assumed public").
LOCALHOST = "localhost"
LOOPBACK = "loopback"
UNSPECIFIED = "unspecified"
PRIVATE = "private"
LINK_LOCAL = "link-local"
CGNAT = "cgnat"
NO_HOST = "no-host"

_WHY = {
    LOCALHOST: "{host} is this machine only",
    LOOPBACK: "{host} is a loopback address (this machine only)",
    UNSPECIFIED: "{host} is the unspecified address, not a destination",
    PRIVATE: "{host} is a private address (RFC 1918 / unique local)",
    LINK_LOCAL: "{host} is a link-local address",
    CGNAT: "{host} is carrier-grade NAT space (100.64.0.0/10, e.g. a Tailscale IP)",
    NO_HOST: "the URL has no host",
}


def classify_host(host: str) -> str | None:
    """The kind of non-public host C{host} is, or None if it may be public."""
    host = host.strip().lower().rstrip(".")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host:
        return NO_HOST
    if host == "localhost" or host.endswith(".localhost"):
        return LOCALHOST
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_unspecified:
        return UNSPECIFIED
    if address.is_loopback:
        return LOOPBACK
    if isinstance(address, ipaddress.IPv4Address):
        if address in _CGNAT:
            return CGNAT
        if any(address in net for net in _PRIVATE_V4):
            return PRIVATE
        if address in _LINK_LOCAL_V4:
            return LINK_LOCAL
        return None
    if address in _UNIQUE_LOCAL_V6:
        return PRIVATE
    if address in _LINK_LOCAL_V6:
        return LINK_LOCAL
    return None


def unreachable_reason(url: str) -> str | None:
    """Why carriers cannot reach C{url}, or None when its host may be public."""
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        host = ""
    kind = classify_host(host)
    if kind is None:
        return None
    return _WHY[kind].format(host=host)


def unreachable_warning(url: str) -> str | None:
    """
    The one-line start-up warning for C{url}, or None for a public host.

    For example C{carriers cannot reach http://127.0.0.1:3334/voice/webhook:
    127.0.0.1 is a loopback address (this machine only); set publicUrl or
    tunnel.provider}.
    """
    why = unreachable_reason(url)
    if why is None:
        return None
    return f"carriers cannot reach {url}: {why}; set publicUrl or tunnel.provider"


def provider_warning(provider: str, url: str) -> str | None:
    """L{unreachable_warning} for a real provider; None for C{mock}, which has no carrier."""
    if provider == "mock":
        return None
    return unreachable_warning(url)
