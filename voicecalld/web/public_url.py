"""
The public URL a carrier used to reach us, rebuilt for signature checks.

Twilio and Plivo sign the URL they requested, not the one our server sees
behind a proxy or tunnel.  L{reconstruct} rebuilds it with upstream's rules
(OpenClaw C{webhook-security.ts}), in this order:

 1. a known public URL (config C{publicUrl}, or the tunnel's URL for Twilio)
    wins: its scheme, host and port, with the request's path and query;
 2. forwarding headers (C{X-Forwarded-Proto}, C{X-Forwarded-Host},
    C{X-Forwarded-Port}, C{X-Original-Host}, C{Ngrok-Forwarded-Host}, then
    RFC 7239 C{Forwarded}), only when C{webhookSecurity.allowedHosts} is set
    or C{trustForwardingHeaders} is on, and in either case only when
    C{trustedProxyIPs} is empty or lists the peer; a forwarded host must be
    in C{allowedHosts} when that list is set;
 3. the C{Host} header;
 4. the host of an absolute request target;

then the request's path and query exactly as received.  With
C{tunnel.provider: "ngrok"}, a loopback C{serve.bind} and
C{tunnel.allowNgrokFreeTierLoopbackBypass}, loopback peers count as if
C{trustForwardingHeaders} were on (C{trustedProxyIPs} still applies).  That is
all the option does: the signature is always checked.

Hosts from headers are sanitised as upstream does: first comma item, C{@}
refused, RFC 1123 check, lower-cased, port dropped.  Beyond upstream we keep
IPv6 literals bracketed (and check they are IPv6 addresses), and match
C{trustedProxyIPs} across IPv4 and IPv4-mapped IPv6 spellings.

A signature check needs more than that one URL: L{PublicUrl.candidates}
lists every URL the carrier could have signed (see L{reconstruct}), for any
provider that signs a URL; L{voicecalld.web.signatures} checks a signature
against them.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from attrs import field, frozen

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
_HOSTNAME = re.compile(
    r"^([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\.)*[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$"
)
_PORT = re.compile(r"[0-9]{1,5}")
_FORWARDED_HOST_HEADERS = ("X-Forwarded-Host", "X-Original-Host", "Ngrok-Forwarded-Host")
_LOOPBACK_BINDS = frozenset({"127.0.0.1", "::1", "[::1]", "localhost"})

# Stable names of the rule that chose the URL (PublicUrl.rule).
RULE_PUBLIC_URL = "publicUrl"
RULE_FORWARDED = "forwarded"
RULE_HOST_HEADER = "host"
RULE_REQUEST_TARGET = "target"
RULE_NONE = "none"


def _header_pairs(value: Any) -> tuple[tuple[str, str], ...]:
    """Accept a mapping, pairs, or twisted Headers; keep (lower-case name, value) pairs."""
    if hasattr(value, "getAllRawHeaders"):
        value = [(k, v) for k, vs in value.getAllRawHeaders() for v in vs]
    elif isinstance(value, Mapping):
        value = [
            (k, v) for k, vs in value.items() for v in ([vs] if isinstance(vs, str | bytes) else vs)
        ]
    pairs = []
    for name, item in value:
        if isinstance(name, bytes):
            name = name.decode("latin-1")
        if isinstance(item, bytes):
            item = item.decode("latin-1")
        pairs.append((name.lower(), item))
    return tuple(pairs)


@frozen
class RequestView:
    """
    What URL reconstruction needs to know about one HTTP request.

    C{headers} accepts a mapping (values a string or a list), (name, value)
    pairs or a twisted C{Headers}; lookup is case-insensitive.
    """

    method: str = "POST"
    path_and_query: str = "/"
    headers: tuple[tuple[str, str], ...] = field(default=(), converter=_header_pairs)
    peer: str | None = None
    #: Whether the connection itself is TLS (the scheme of the URL as received).
    secure: bool = False

    def header(self, name: str) -> str | None:
        """One header's value: several lines are joined with C{", "} (as Node does)."""
        wanted = name.lower()
        values = [v for k, v in self.headers if k == wanted]
        if not values:
            return None
        if wanted == "host":
            return values[0]
        return ", ".join(values)


def from_twisted_request(request: Any) -> RequestView:
    """Build a L{RequestView} from a C{twisted.web} request."""
    address = request.getClientAddress()
    is_secure = getattr(request, "isSecure", None)
    return RequestView(
        method=request.method.decode("latin-1"),
        path_and_query=request.uri.decode("latin-1"),
        headers=request.requestHeaders,
        peer=getattr(address, "host", None),
        secure=bool(is_secure is not None and is_secure()),
    )


@frozen
class UrlRules:
    """The settings that decide how the public URL is rebuilt."""

    public_url: str | None = None
    allowed_hosts: tuple[str, ...] = ()
    trust_forwarding_headers: bool = False
    trusted_proxy_ips: tuple[str, ...] = ()
    ngrok_loopback_bypass: bool = False

    @classmethod
    def from_settings(
        cls, settings: Any, *, public_url: Any = ..., ngrok_bypass_allowed: bool = True
    ) -> UrlRules:
        """
        Rules from a C{VoiceCallSettings}.

        @param public_url: the known public URL; defaults to config
            C{publicUrl}.  For Twilio pass the resolved URL (C{publicUrl}, else
            the tunnel's); for Plivo leave the default (upstream never gives
            Plivo a tunnel URL).
        @param ngrok_bypass_allowed: False for providers upstream never gives
            the ngrok option (Plivo).
        """
        security = settings.webhook_security
        tunnel = settings.tunnel
        bypass = (
            ngrok_bypass_allowed
            and tunnel.provider == "ngrok"
            and is_loopback_bind(settings.serve.bind)
            and tunnel.allow_ngrok_free_tier_loopback_bypass
        )
        return cls(
            public_url=settings.public_url if public_url is ... else public_url,
            allowed_hosts=tuple(security.allowed_hosts),
            trust_forwarding_headers=security.trust_forwarding_headers,
            trusted_proxy_ips=tuple(security.trusted_proxy_ips),
            ngrok_loopback_bypass=bypass,
        )


@frozen
class PublicUrl:
    """
    The rebuilt URL, every URL a carrier could have signed, and which rule
    decided.

    C{url} is upstream's URL (the rules above).  C{candidates} starts with
    it and lists, most likely first and without repeats, the URLs to check a
    signature against (see L{reconstruct}).  C{reason} is for log lines.
    """

    url: str
    candidates: tuple[str, ...]
    rule: str
    reason: str


def is_loopback_bind(bind: str) -> bool:
    """Whether C{serve.bind} is loopback as upstream counts it (127.0.0.1, ::1, localhost)."""
    return bind.strip().lower() in _LOOPBACK_BINDS


def is_loopback_peer(peer: str | None) -> bool:
    """Upstream's loopback peers for the ngrok option: 127.0.0.1, ::1 and ::ffff:127.*."""
    if not peer:
        return False
    return peer in ("127.0.0.1", "::1") or peer.lower().startswith("::ffff:127.")


def _valid_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text.split("%", 1)[0])
    except ValueError:
        return False
    return True


def extract_hostname(value: str) -> str | None:
    """
    The host of a C{Host}-style value (port dropped, lower-cased), or None.

    IPv6 literals keep their brackets so that they can go into a URL.
    """
    if not value:
        return None
    if value.startswith("["):
        end = value.find("]")
        if end == -1:
            return None
        inner = value[1:end]
        if not _valid_ipv6(inner):
            return None
        return f"[{inner.lower()}]"
    if "@" in value:
        return None
    hostname = value.split(":", 1)[0]
    if len(hostname) > 253 or not _HOSTNAME.match(hostname):
        return None
    return hostname.lower()


def _first_item_host(value: str) -> str | None:
    first = value.split(",", 1)[0].strip()
    return extract_hostname(first) if first else None


def _ip_forms(text: str) -> set[str]:
    """A peer or proxy address in every spelling we treat as the same address."""
    forms = {text}
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return forms
    forms.add(str(address))
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        forms.add(str(address.ipv4_mapped))
    elif isinstance(address, ipaddress.IPv4Address):
        forms.add(f"::ffff:{address}")
    return forms


def _proxy_listed(peer: str | None, proxies: Iterable[str]) -> bool:
    if not peer:
        return False
    mine = _ip_forms(peer)
    return any(mine & _ip_forms(entry) for entry in proxies)


def _parse_forwarded(value: str) -> dict[str, str]:
    """The parameters of the first element of an RFC 7239 C{Forwarded} header."""
    params: dict[str, str] = {}
    i, n = 0, len(value)
    while i < n:
        while i < n and value[i] in " \t;":
            i += 1
        start = i
        while i < n and value[i] not in "=;,":
            i += 1
        key = value[start:i].strip().lower()
        if i >= n or value[i] != "=":
            if i < n and value[i] == ",":
                break
            continue
        i += 1
        if i < n and value[i] == '"':
            i += 1
            chars = []
            while i < n and value[i] != '"':
                if value[i] == "\\" and i + 1 < n:
                    i += 1
                chars.append(value[i])
                i += 1
            i += 1
            item = "".join(chars)
        else:
            start = i
            while i < n and value[i] not in ";,":
                i += 1
            item = value[start:i].strip()
        if key and key not in params:
            params[key] = item
        while i < n and value[i] in " \t":
            i += 1
        if i < n and value[i] == ",":
            break
    return params


def _split_target(target: str) -> tuple[str | None, str]:
    """(authority of an absolute-form target or None, path and query)."""
    lowered = target[:8].lower()
    if lowered.startswith(("http://", "https://")):
        rest = target.split("://", 1)[1]
        slash = rest.find("/")
        query = rest.find("?")
        cut = min(p for p in (slash, query, len(rest)) if p != -1)
        path = rest[cut:]
        if not path.startswith("/"):
            path = "/" + path
        return rest[:cut], path
    if not target.startswith("/"):
        return None, "/" + target if target not in ("", "*") else "/"
    return None, target


def _compose(scheme: str, userinfo: str, host: str, port: int | None, path: str) -> str:
    if port is not None and _DEFAULT_PORTS.get(scheme) == port:
        port = None
    netloc = f"{userinfo}{host}" + (f":{port}" if port is not None else "")
    return f"{scheme}://{netloc}{path}"


def _host_header_port(host: str | None) -> int | None:
    """The port of the C{Host} header, as upstream reads it (443 counts as none)."""
    if not host:
        return None
    try:
        port = urlsplit("https://" + host.strip()).port
    except ValueError:
        return None
    return None if port in (None, 443) else port


def port_variants(url: str) -> tuple[str, ...]:
    """
    C{url}, then the one other form Twilio's SDK also accepts: without its
    port when it has one, else with its scheme's default port (C{:443} for
    https and wss, C{:80} for http and ws).  Twilio's own signing is not
    consistent about ports.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return (url,)
    if not parts.hostname:
        return (url,)
    start = url.find("://") + 3
    netloc = parts.netloc
    if start < 3 or url[start : start + len(netloc)] != netloc:
        return (url,)
    userinfo, at, hostport = netloc.rpartition("@")
    colon = hostport.rfind(":")
    has_port = colon > hostport.rfind("]")
    if has_port and port is None:
        return (url,)  # an empty port ("host:"): leave it alone
    if has_port:
        bare = hostport[:colon]
    elif parts.scheme.lower() in _DEFAULT_PORTS:
        bare = f"{hostport}:{_DEFAULT_PORTS[parts.scheme.lower()]}"
    else:
        return (url,)
    other = url[:start] + userinfo + at + bare + url[start + len(netloc) :]
    return (url, other)


def redacted(url: str) -> str:
    """C{url} fit for a log line: a password in its user info becomes C{***}."""
    start = url.find("://") + 3
    end = min((i for i in (url.find(c, start) for c in "/?#") if i != -1), default=len(url))
    userinfo, at, hostport = url[start:end].rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.split(":", 1)[0]
    return f"{url[:start]}{user}:***@{hostport}{url[end:]}"


def _with_port_variants(urls: Iterable[str]) -> tuple[str, ...]:
    """
    Each URL and its port variants, without repeats; a URL ending in an empty
    query or fragment also without it (Twilio's SDK drops them).
    """
    seen: dict[str, None] = {}
    for url in urls:
        forms = [url]
        bare = url.removesuffix("#")
        bare = bare.removesuffix("?") if "#" not in bare else bare
        if bare != url:
            forms.append(bare)
        for form in forms:
            for variant in port_variants(form):
                seen.setdefault(variant, None)
    return tuple(seen)


def _query_of(path_and_query: str) -> str | None:
    """The query string as received (None when the target has no C{?})."""
    _, mark, query = path_and_query.partition("?")
    return query if mark else None


def _as_configured(public_url: str, query: str | None) -> list[str]:
    """
    C{publicUrl} exactly as written, its own query replaced by the request's
    (a proxy may serve it from another path); with and without its fragment.
    """
    base, hash_mark, fragment = public_url.partition("#")
    base = base.partition("?")[0]
    url = base if query is None else f"{base}?{query}"
    return [url, f"{url}#{fragment}"] if hash_mark else [url]


def _as_received(view: RequestView, path: str, target_authority: str | None) -> str | None:
    """The URL as it reached us: the connection's scheme, C{Host} with its port, the target."""
    authority = (view.header("Host") or target_authority or "").strip()
    host = extract_hostname(authority)
    if host is None:
        return None
    port = ""
    rest = authority[authority.find("]") + 1 :] if authority.startswith("[") else authority
    if ":" in rest:
        raw = rest.rsplit(":", 1)[1]
        if _PORT.fullmatch(raw) and 0 < int(raw) < 65536:
            port = f":{int(raw)}"
    scheme = "https" if view.secure else "http"
    return f"{scheme}://{host}{port}{path}"


def _from_public_url(
    public_url: str, view: RequestView, path: str, host_port: int | None
) -> PublicUrl:
    try:
        parts = urlsplit(public_url)
        port = parts.port
        hostname = parts.hostname
    except ValueError:
        parts, port, hostname = None, None, None
    if parts is None or not parts.scheme or not hostname:
        return PublicUrl(public_url, (public_url,), RULE_PUBLIC_URL, "publicUrl (unparsable)")
    scheme = parts.scheme.lower()
    host = f"[{hostname}]" if ":" in hostname else hostname
    userinfo = parts.netloc.rpartition("@")[0]
    userinfo = f"{userinfo}@" if userinfo else ""
    upstream = _compose(scheme, userinfo, host, port, path)
    urls = [upstream, *_as_configured(public_url, _query_of(view.path_and_query))]
    if host_port is not None:
        urls.append(_compose(scheme, userinfo, host, host_port, path))
    return PublicUrl(upstream, _with_port_variants(urls), RULE_PUBLIC_URL, "publicUrl")


def _trust(view: RequestView, rules: UrlRules, allowed: frozenset[str]) -> tuple[bool, str]:
    """Whether forwarding headers are trusted, and a phrase saying why (not)."""
    peer = view.peer or "unknown peer"
    bypass = rules.ngrok_loopback_bypass and is_loopback_peer(view.peer)
    if not (allowed or rules.trust_forwarding_headers or bypass):
        return False, (
            "forwarded headers ignored: webhookSecurity.allowedHosts and"
            " trustForwardingHeaders are unset"
        )
    proxies = [p for p in rules.trusted_proxy_ips if p]
    if proxies and not _proxy_listed(view.peer, proxies):
        return False, f"forwarded headers ignored: {peer} is not in webhookSecurity.trustedProxyIPs"
    if proxies:
        return True, f"trusted proxy {peer}"
    if bypass and not (allowed or rules.trust_forwarding_headers):
        return True, f"loopback peer {peer} (tunnel.allowNgrokFreeTierLoopbackBypass)"
    return True, f"{peer} (trustedProxyIPs is empty)"


def reconstruct(view: RequestView, rules: UrlRules) -> PublicUrl:
    """
    Rebuild the URL the carrier requested (see the module docstring for the
    rules), and list every URL it could have signed, each first as built and
    then in its other L{port_variants} form:

     - with a known public URL: upstream's URL (its origin with the
       request's path and query); the public URL exactly as written with
       the request's query (a reverse proxy may serve C{/myapp.php} from
       C{serve.path}), with and without its fragment; upstream's URL with
       the C{Host} header's port;
     - without one: upstream's URL; the same with the C{Host} header's
       port; the URL as received (the connection's scheme, the C{Host}
       header with its port, the request's path and query).

    Forwarding headers only ever shape upstream's URL, under upstream's
    trust rules.
    """
    target_authority, path = _split_target(view.path_and_query)
    host_header = view.header("Host")
    host_port = _host_header_port(host_header)
    if rules.public_url:
        return _from_public_url(rules.public_url, view, path, host_port)

    allowed = frozenset(
        h for h in (extract_hostname(a.strip()) for a in rules.allowed_hosts) if h is not None
    )
    trusted, why = _trust(view, rules, allowed)
    forwarded = _parse_forwarded(view.header("Forwarded") or "") if trusted else {}

    scheme, port = "https", None
    host: str | None = None
    rule, reason = RULE_NONE, ""
    notes: list[str] = []
    if trusted:
        proto = view.header("X-Forwarded-Proto")
        proto = proto.split(",", 1)[0] if proto else forwarded.get("proto", "")
        if proto.strip().lower() in ("http", "https"):
            scheme = proto.strip().lower()
        raw_port = (view.header("X-Forwarded-Port") or "").split(",", 1)[0].strip()
        if _PORT.fullmatch(raw_port) and 0 < int(raw_port) < 65536:
            port = int(raw_port)
        sources = [(name, view.header(name)) for name in _FORWARDED_HOST_HEADERS]
        sources.append(("Forwarded", forwarded.get("host")))
        for name, value in sources:
            if not value:
                continue
            candidate = _first_item_host(value)
            if candidate is None:
                notes.append(f"{name} {value.strip()!r} is not a valid host")
            elif allowed and candidate not in allowed:
                notes.append(f"{name} {candidate} is not in webhookSecurity.allowedHosts")
            else:
                host, rule = candidate, RULE_FORWARDED
                reason = f"forwarded headers from {why}, via {name}"
                break
    elif any(view.header(n) for n in (*_FORWARDED_HOST_HEADERS, "Forwarded")):
        notes.append(why)

    if host is None and host_header:
        host = _first_item_host(host_header)
        if host is not None:
            rule, reason = RULE_HOST_HEADER, "Host header"
    if host is None and target_authority:
        host = extract_hostname(target_authority)
        if host is not None:
            rule, reason = RULE_REQUEST_TARGET, "request target"
    if host is None:
        host, rule, reason = "", RULE_NONE, "no usable host"
    if notes:
        reason += " (" + "; ".join(notes) + ")"
    upstream = _compose(scheme, "", host, port, path)
    urls = [upstream]
    if host_port is not None:
        urls.append(_compose(scheme, "", host, host_port, path))
    received = _as_received(view, path, target_authority)
    if received is not None:
        urls.append(received)
    return PublicUrl(upstream, _with_port_variants(urls), rule, reason)
