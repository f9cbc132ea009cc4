"""Public URL reconstruction: every rule, as a table of peer + headers + config -> URL."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse, urlsplit

from attrs import frozen
from hypothesis import given, settings
from hypothesis import strategies as st
from twilio.request_validator import add_port, remove_port
from twisted.internet.address import IPv4Address
from twisted.trial import unittest
from twisted.web.test.requesthelper import DummyRequest

from voicecalld.config.loader import parse_config
from voicecalld.web.public_url import (
    RULE_FORWARDED,
    RULE_HOST_HEADER,
    RULE_NONE,
    RULE_PUBLIC_URL,
    RULE_REQUEST_TARGET,
    RequestView,
    UrlRules,
    extract_hostname,
    from_twisted_request,
    is_loopback_bind,
    is_loopback_peer,
    port_variants,
    reconstruct,
    redacted,
)

PATH = "/voice/webhook?callId=abc&type=status"


@frozen
class Case:
    """One row: what the request and config look like, and the URL that must be checked."""

    name: str
    url: str
    rule: str
    headers: Any = ()
    peer: str | None = "203.0.113.9"
    rules: UrlRules = UrlRules()
    path: str = PATH
    reason: str | None = None


ALLOWED = UrlRules(allowed_hosts=("voice.example.com",))
TRUST_ALL = UrlRules(trust_forwarding_headers=True)
PROXY = UrlRules(trust_forwarding_headers=True, trusted_proxy_ips=("10.0.0.1",))
NGROK = UrlRules(ngrok_loopback_bypass=True)
FWD = {"Host": "127.0.0.1:3334", "X-Forwarded-Host": "voice.example.com"}

CASES = [
    # 1. publicUrl wins over everything, keeping the request's path and query.
    Case(
        "publicUrl wins over headers",
        "https://pub.example.com/voice/webhook?callId=abc&type=status",
        RULE_PUBLIC_URL,
        FWD,
        rules=UrlRules(
            public_url="https://pub.example.com/other?x=1", trust_forwarding_headers=True
        ),
        reason="publicUrl",
    ),
    Case(
        "publicUrl keeps a non-default port and lower-cases the host",
        "https://pub.example.com:8443/voice/webhook?callId=abc&type=status",
        RULE_PUBLIC_URL,
        {"Host": "evil.example.net"},
        rules=UrlRules(public_url="https://Pub.Example.COM:8443/voice/webhook"),
    ),
    Case(
        "publicUrl drops a default port",
        "http://pub.example.com/voice/webhook?callId=abc&type=status",
        RULE_PUBLIC_URL,
        rules=UrlRules(public_url="http://pub.example.com:80/voice/webhook"),
    ),
    Case(
        "publicUrl path replaced by the request's (no query)",
        "https://pub.example.com/voice/webhook",
        RULE_PUBLIC_URL,
        path="/voice/webhook",
        rules=UrlRules(public_url="https://pub.example.com/voice/webhook?stale=1"),
    ),
    # 2. Forwarding headers need allowedHosts or trustForwardingHeaders...
    Case(
        "forwarded headers ignored without allowedHosts or trust",
        "https://127.0.0.1/voice/webhook?callId=abc&type=status",
        RULE_HOST_HEADER,
        FWD,
        reason="forwarded headers ignored: webhookSecurity.allowedHosts and trustForwardingHeaders",
    ),
    Case(
        "allowedHosts lists the forwarded host",
        "https://voice.example.com/voice/webhook?callId=abc&type=status",
        RULE_FORWARDED,
        FWD,
        rules=ALLOWED,
        reason="forwarded headers from 203.0.113.9 (trustedProxyIPs is empty),"
        " via X-Forwarded-Host",
    ),
    Case(
        "allowedHosts does not list the forwarded host",
        "https://127.0.0.1/voice/webhook?callId=abc&type=status",
        RULE_HOST_HEADER,
        {"Host": "127.0.0.1:3334", "X-Forwarded-Host": "evil.example.net"},
        rules=ALLOWED,
        reason="X-Forwarded-Host evil.example.net is not in webhookSecurity.allowedHosts",
    ),
    Case(
        "allowedHosts entries are normalised (port, case)",
        "https://voice.example.com/voice/webhook?callId=abc&type=status",
        RULE_FORWARDED,
        FWD,
        rules=UrlRules(allowed_hosts=(" Voice.Example.com:443 ",)),
    ),
    Case(
        "allowedHosts of only invalid entries counts as unset",
        "https://127.0.0.1/voice/webhook?callId=abc&type=status",
        RULE_HOST_HEADER,
        FWD,
        rules=UrlRules(allowed_hosts=("bad_host!",)),
    ),
    Case(
        "trustForwardingHeaders takes any valid forwarded host",
        "https://anything.example.org/voice/webhook?callId=abc&type=status",
        RULE_FORWARDED,
        {"Host": "127.0.0.1:3334", "X-Forwarded-Host": "Anything.Example.org"},
        rules=TRUST_ALL,
    ),
    # ...and a listed peer when trustedProxyIPs is set.
    Case(
        "trusted proxy listed",
        "https://voice.example.com/voice/webhook?callId=abc&type=status",
        RULE_FORWARDED,
        FWD,
        peer="10.0.0.1",
        rules=PROXY,
        reason="forwarded headers from trusted proxy 10.0.0.1, via X-Forwarded-Host",
    ),
    Case(
        "untrusted peer: proxy list set, peer not in it",
        "https://127.0.0.1/voice/webhook?callId=abc&type=status",
        RULE_HOST_HEADER,
        FWD,
        peer="10.0.0.2",
        rules=PROXY,
        reason="10.0.0.2 is not in webhookSecurity.trustedProxyIPs",
    ),
    Case(
        "untrusted peer with allowedHosts and a proxy list",
        "https://127.0.0.1/voice/webhook?callId=abc&type=status",
        RULE_HOST_HEADER,
        FWD,
        peer="198.51.100.7",
        rules=UrlRules(allowed_hosts=("voice.example.com",), trusted_proxy_ips=("10.0.0.1",)),
    ),
    Case(
        "unknown peer with a proxy list is untrusted",
        "https://127.0.0.1/voice/webhook?callId=abc&type=status",
        RULE_HOST_HEADER,
        FWD,
        peer=None,
        rules=PROXY,
    ),
    Case(
        "IPv4-mapped peer matches an IPv4 proxy entry",
        "https://voice.example.com/voice/webhook?callId=abc&type=status",
        RULE_FORWARDED,
        FWD,
        peer="::ffff:10.0.0.1",
        rules=PROXY,
    ),
    Case(
        "IPv4 peer matches an IPv4-mapped proxy entry",
        "https://voice.example.com/voice/webhook?callId=abc&type=status",
        RULE_FORWARDED,
        FWD,
        peer="10.0.0.1",
        rules=UrlRules(trust_forwarding_headers=True, trusted_proxy_ips=("::FFFF:10.0.0.1",)),
    ),
    Case(
        "a different mapped address does not match",
        "https://127.0.0.1/voice/webhook?callId=abc&type=status",
        RULE_HOST_HEADER,
        FWD,
        peer="::ffff:10.0.0.10",
        rules=PROXY,
    ),
    Case(
        "empty strings in trustedProxyIPs are ignored",
        "https://voice.example.com/voice/webhook?callId=abc&type=status",
        RULE_FORWARDED,
        FWD,
        rules=UrlRules(trust_forwarding_headers=True, trusted_proxy_ips=("",)),
    ),
    # Which forwarding header, in upstream's order.
    Case(
        "X-Original-Host when X-Forwarded-Host is absent",
        "https://orig.example.com/voice/webhook?callId=abc&type=status",
        RULE_FORWARDED,
        {"Host": "h.example.com", "X-Original-Host": "orig.example.com"},
        rules=TRUST_ALL,
        reason="via X-Original-Host",
    ),
    Case(
        "Ngrok-Forwarded-Host last of the X- family",
        "https://abc.ngrok-free.app/voice/webhook?callId=abc&type=status",
        RULE_FORWARDED,
        {"Host": "h.example.com", "Ngrok-Forwarded-Host": "abc.ngrok-free.app"},
        rules=TRUST_ALL,
    ),
    Case(
        "X-Forwarded-Host beats X-Original-Host",
        "https://a.example.com/voice/webhook?callId=abc&type=status",
        RULE_FORWARDED,
        {"X-Forwarded-Host": "a.example.com", "X-Original-Host": "b.example.com"},
        rules=TRUST_ALL,
    ),
    Case(
        "an invalid forwarded host falls through to the next header",
        "https://b.example.com/voice/webhook?callId=abc&type=status",
        RULE_FORWARDED,
        {"X-Forwarded-Host": "bad_host", "X-Original-Host": "b.example.com"},
        rules=TRUST_ALL,
    ),
    Case(
        "a disallowed forwarded host falls through to an allowed one",
        "https://voice.example.com/voice/webhook?callId=abc&type=status",
        RULE_FORWARDED,
        {"X-Forwarded-Host": "evil.example.net", "Ngrok-Forwarded-Host": "voice.example.com"},
        rules=ALLOWED,
    ),
    Case(
        "first comma item of X-Forwarded-Host",
        "https://voice.example.com/voice/webhook?callId=abc&type=status",
        RULE_FORWARDED,
        {"X-Forwarded-Host": "voice.example.com, evil.example.net"},
        rules=ALLOWED,
    ),
    Case(
        "repeated X-Forwarded-Host lines: the first wins",
        "https://voice.example.com/voice/webhook?callId=abc&type=status",
        RULE_FORWARDED,
        [("X-Forwarded-Host", "voice.example.com"), ("X-Forwarded-Host", "evil.example.net")],
        rules=ALLOWED,
    ),
    Case(
        "@ in the forwarded host is refused",
        "https://h.example.com/voice/webhook?callId=abc&type=status",
        RULE_HOST_HEADER,
        {"Host": "h.example.com", "X-Forwarded-Host": "evil.example.net:80@voice.example.com"},
        rules=TRUST_ALL,
        reason="is not a valid host",
    ),
    Case(
        "@ in the Host header is refused too",
        "https:///voice/webhook?callId=abc&type=status",
        RULE_NONE,
        {"Host": "evil.example.net@voice.example.com"},
        reason="no usable host",
    ),
    Case(
        "forwarded host port is dropped",
        "https://voice.example.com/voice/webhook?callId=abc&type=status",
        RULE_FORWARDED,
        {"X-Forwarded-Host": "voice.example.com:8443"},
        rules=ALLOWED,
    ),
    Case(
        "non-RFC-1123 forwarded host refused",
        "https://h.example.com/voice/webhook?callId=abc&type=status",
        RULE_HOST_HEADER,
        {"Host": "h.example.com", "X-Forwarded-Host": "-bad-.example.com"},
        rules=TRUST_ALL,
    ),
    Case(
        "IPv6 forwarded host keeps its brackets",
        "https://[2001:db8::1]/voice/webhook?callId=abc&type=status",
        RULE_FORWARDED,
        {"X-Forwarded-Host": "[2001:DB8::1]:8443"},
        rules=TRUST_ALL,
    ),
    Case(
        "a bracketed non-address is refused",
        "https://h.example.com/voice/webhook?callId=abc&type=status",
        RULE_HOST_HEADER,
        {"Host": "h.example.com", "X-Forwarded-Host": "[evil/path]"},
        rules=TRUST_ALL,
    ),
    # Scheme and port from trusted headers.
    Case(
        "X-Forwarded-Proto http is honoured when trusted",
        "http://voice.example.com/voice/webhook?callId=abc&type=status",
        RULE_FORWARDED,
        {**FWD, "X-Forwarded-Proto": "http"},
        rules=ALLOWED,
    ),
    Case(
        "X-Forwarded-Proto applies even when the host comes from Host",
        "http://h.example.com/voice/webhook?callId=abc&type=status",
        RULE_HOST_HEADER,
        {"Host": "h.example.com", "X-Forwarded-Proto": "http"},
        rules=TRUST_ALL,
    ),
    Case(
        "X-Forwarded-Proto ignored when untrusted",
        "https://h.example.com/voice/webhook?callId=abc&type=status",
        RULE_HOST_HEADER,
        {"Host": "h.example.com", "X-Forwarded-Proto": "http"},
    ),
    Case(
        "an unknown X-Forwarded-Proto keeps https",
        "https://voice.example.com/voice/webhook?callId=abc&type=status",
        RULE_FORWARDED,
        {**FWD, "X-Forwarded-Proto": "gopher"},
        rules=ALLOWED,
    ),
    Case(
        "X-Forwarded-Port added when not the default",
        "https://voice.example.com:8443/voice/webhook?callId=abc&type=status",
        RULE_FORWARDED,
        {**FWD, "X-Forwarded-Port": "8443"},
        rules=ALLOWED,
    ),
    Case(
        "X-Forwarded-Port 443 for https is left out",
        "https://voice.example.com/voice/webhook?callId=abc&type=status",
        RULE_FORWARDED,
        {**FWD, "X-Forwarded-Port": "443"},
        rules=ALLOWED,
    ),
    Case(
        "X-Forwarded-Port ignored when untrusted",
        "https://127.0.0.1/voice/webhook?callId=abc&type=status",
        RULE_HOST_HEADER,
        {**FWD, "X-Forwarded-Port": "8443"},
    ),
    Case(
        "a junk X-Forwarded-Port is ignored",
        "https://voice.example.com/voice/webhook?callId=abc&type=status",
        RULE_FORWARDED,
        {**FWD, "X-Forwarded-Port": "99999"},
        rules=ALLOWED,
    ),
    # RFC 7239 Forwarded.
    Case(
        "Forwarded host and proto",
        "http://voice.example.com/voice/webhook?callId=abc&type=status",
        RULE_FORWARDED,
        {"Host": "127.0.0.1", "Forwarded": 'for=192.0.2.60;proto=http;host="voice.example.com"'},
        rules=ALLOWED,
        reason="via Forwarded",
    ),
    Case(
        "Forwarded: only the first element counts",
        "https://127.0.0.1/voice/webhook?callId=abc&type=status",
        RULE_HOST_HEADER,
        {"Host": "127.0.0.1", "Forwarded": "for=1.2.3.4, host=voice.example.com"},
        rules=ALLOWED,
    ),
    Case(
        "Forwarded host must be allowed",
        "https://127.0.0.1/voice/webhook?callId=abc&type=status",
        RULE_HOST_HEADER,
        {"Host": "127.0.0.1", "Forwarded": "host=evil.example.net;proto=https"},
        rules=ALLOWED,
    ),
    Case(
        "Forwarded ignored when untrusted",
        "https://127.0.0.1/voice/webhook?callId=abc&type=status",
        RULE_HOST_HEADER,
        {"Host": "127.0.0.1", "Forwarded": "host=voice.example.com;proto=http"},
    ),
    Case(
        "X- headers beat Forwarded",
        "https://a.example.com/voice/webhook?callId=abc&type=status",
        RULE_FORWARDED,
        {"X-Forwarded-Host": "a.example.com", "Forwarded": "host=b.example.com"},
        rules=TRUST_ALL,
    ),
    # ngrok free-tier loopback option.
    Case(
        "ngrok option trusts a loopback peer",
        "https://abc.ngrok-free.app/voice/webhook?callId=abc&type=status",
        RULE_FORWARDED,
        {"Host": "127.0.0.1:3334", "X-Forwarded-Host": "abc.ngrok-free.app"},
        peer="127.0.0.1",
        rules=NGROK,
        reason="loopback peer 127.0.0.1 (tunnel.allowNgrokFreeTierLoopbackBypass)",
    ),
    Case(
        "ngrok option trusts ::1",
        "https://abc.ngrok-free.app/voice/webhook?callId=abc&type=status",
        RULE_FORWARDED,
        {"X-Forwarded-Host": "abc.ngrok-free.app"},
        peer="::1",
        rules=NGROK,
    ),
    Case(
        "ngrok option trusts ::ffff:127.x",
        "https://abc.ngrok-free.app/voice/webhook?callId=abc&type=status",
        RULE_FORWARDED,
        {"X-Forwarded-Host": "abc.ngrok-free.app"},
        peer="::ffff:127.0.0.5",
        rules=NGROK,
    ),
    Case(
        "ngrok option does not trust a non-loopback peer",
        "https://127.0.0.1/voice/webhook?callId=abc&type=status",
        RULE_HOST_HEADER,
        {"Host": "127.0.0.1:3334", "X-Forwarded-Host": "abc.ngrok-free.app"},
        peer="203.0.113.9",
        rules=NGROK,
    ),
    Case(
        "ngrok option: loopback peer still subject to trustedProxyIPs",
        "https://127.0.0.1/voice/webhook?callId=abc&type=status",
        RULE_HOST_HEADER,
        {"Host": "127.0.0.1:3334", "X-Forwarded-Host": "abc.ngrok-free.app"},
        peer="127.0.0.1",
        rules=UrlRules(ngrok_loopback_bypass=True, trusted_proxy_ips=("10.0.0.1",)),
    ),
    Case(
        "ngrok option: allowedHosts still applies",
        "https://127.0.0.1/voice/webhook?callId=abc&type=status",
        RULE_HOST_HEADER,
        {"Host": "127.0.0.1:3334", "X-Forwarded-Host": "abc.ngrok-free.app"},
        peer="127.0.0.1",
        rules=UrlRules(ngrok_loopback_bypass=True, allowed_hosts=("voice.example.com",)),
    ),
    # 3. Host header, then the request target.
    Case(
        "Host header, port dropped, lower-cased",
        "https://h.example.com/voice/webhook?callId=abc&type=status",
        RULE_HOST_HEADER,
        {"Host": "H.Example.com:3334"},
        reason="Host header",
    ),
    Case(
        "Host header is not checked against allowedHosts",
        "https://h.example.com/voice/webhook?callId=abc&type=status",
        RULE_HOST_HEADER,
        {"Host": "h.example.com"},
        rules=ALLOWED,
    ),
    Case(
        "absolute request target when there is no Host",
        "https://t.example.com/voice/webhook?callId=abc&type=status",
        RULE_REQUEST_TARGET,
        {},
        path="http://T.example.com:3334/voice/webhook?callId=abc&type=status",
    ),
    Case(
        "no host at all",
        "https:///voice/webhook?callId=abc&type=status",
        RULE_NONE,
        {},
    ),
    Case(
        "path and query kept exactly as received",
        "https://h.example.com/voice/webhook?b=2&a=%20x&a=1",
        RULE_HOST_HEADER,
        {"Host": "h.example.com"},
        path="/voice/webhook?b=2&a=%20x&a=1",
    ),
]


class ReconstructTableTests(unittest.TestCase):
    """Each rule of upstream's reconstruction, one row per situation."""

    def test_table(self) -> None:
        for case in CASES:
            view = RequestView(path_and_query=case.path, headers=case.headers, peer=case.peer)
            result = reconstruct(view, case.rules)
            self.assertEqual(result.url, case.url, case.name)
            self.assertEqual(result.rule, case.rule, case.name)
            self.assertEqual(result.candidates[0], result.url, case.name)
            if case.reason is not None:
                self.assertIn(case.reason, result.reason, case.name)


@frozen
class Signed:
    """One row: a request and config, and every URL its signature is checked against."""

    name: str
    candidates: tuple[str, ...]
    headers: Any = ()
    rules: UrlRules = UrlRules()
    path: str = "/w?x=1"
    secure: bool = False


MYAPP = "https://mycompany.com/myapp.php"
TRUSTED = UrlRules(trust_forwarding_headers=True)
SIGNED_CASES = [
    # A known public URL: upstream's URL, the URL as written, the Host port.
    Signed(
        "publicUrl: upstream's URL, then the explicit default port",
        ("https://p.example.com/w?x=1", "https://p.example.com:443/w?x=1"),
        {"Host": "p.example.com"},
        UrlRules(public_url="https://p.example.com/w"),
    ),
    Signed(
        "publicUrl served from another path by a proxy",
        (
            "https://mycompany.com/voice/webhook?foo=1&bar=2",
            "https://mycompany.com:443/voice/webhook?foo=1&bar=2",
            "https://mycompany.com/myapp.php?foo=1&bar=2",
            "https://mycompany.com:443/myapp.php?foo=1&bar=2",
            "https://mycompany.com:3334/voice/webhook?foo=1&bar=2",
        ),
        {"Host": "127.0.0.1:3334", "X-Forwarded-Host": "evil.example.net"},
        UrlRules(public_url=MYAPP, trust_forwarding_headers=True),
        "/voice/webhook?foo=1&bar=2",
    ),
    Signed(
        "publicUrl with a non-default port, and the Host header's port",
        (
            "https://p.example.com:8443/w?x=1",
            "https://p.example.com/w?x=1",
            "https://p.example.com:3334/w?x=1",
        ),
        {"Host": "localhost:3334"},
        UrlRules(public_url="https://p.example.com:8443/w"),
    ),
    Signed(
        "publicUrl written with its default port",
        ("https://p.example.com/w?x=1", "https://p.example.com:443/w?x=1"),
        {"Host": "p.example.com:443"},
        UrlRules(public_url="https://p.example.com:443/w"),
    ),
    Signed(
        "publicUrl over http: :80 is the default",
        ("http://p.example.com/w?x=1", "http://p.example.com:80/w?x=1"),
        rules=UrlRules(public_url="http://p.example.com/w"),
    ),
    Signed(
        "publicUrl's own query is replaced by the request's, even by none",
        ("https://p.example.com/w", "https://p.example.com:443/w"),
        rules=UrlRules(public_url="https://p.example.com/w?stale=1"),
        path="/w",
    ),
    Signed(
        "an empty query is kept as received, and tried without (as the SDK does)",
        (
            "https://p.example.com/w?",
            "https://p.example.com:443/w?",
            "https://p.example.com/w",
            "https://p.example.com:443/w",
        ),
        rules=UrlRules(public_url="https://p.example.com/w"),
        path="/w?",
    ),
    Signed(
        "publicUrl with a fragment (Twilio's connection overrides)",
        (
            "https://p.example.com/w?x=1",
            "https://p.example.com:443/w?x=1",
            "https://p.example.com/w?x=1#ct=2000",
            "https://p.example.com:443/w?x=1#ct=2000",
        ),
        rules=UrlRules(public_url="https://p.example.com/w#ct=2000"),
    ),
    Signed(
        "publicUrl without a path",
        (
            "https://p.example.com/w?x=1",
            "https://p.example.com:443/w?x=1",
            "https://p.example.com?x=1",
            "https://p.example.com:443?x=1",
        ),
        rules=UrlRules(public_url="https://p.example.com"),
    ),
    Signed(
        "publicUrl: a TLS connection changes nothing",
        ("https://p.example.com/w?x=1", "https://p.example.com:443/w?x=1"),
        {"Host": "internal.example"},
        UrlRules(public_url="https://p.example.com/w"),
        secure=True,
    ),
    # No public URL: upstream's URL, the Host port, the URL as received.
    Signed(
        "plain connection with a bare Host",
        (
            "https://p.example.com/w?x=1",
            "https://p.example.com:443/w?x=1",
            "http://p.example.com/w?x=1",
            "http://p.example.com:80/w?x=1",
        ),
        {"Host": "p.example.com"},
    ),
    Signed(
        "TLS connection with a bare Host",
        ("https://p.example.com/w?x=1", "https://p.example.com:443/w?x=1"),
        {"Host": "P.example.com"},
        secure=True,
    ),
    Signed(
        "Host with :443",
        (
            "https://p.example.com/w?x=1",
            "https://p.example.com:443/w?x=1",
            "http://p.example.com:443/w?x=1",
            "http://p.example.com/w?x=1",
        ),
        {"Host": "p.example.com:443"},
    ),
    Signed(
        "direct to the daemon's port over plain HTTP",
        (
            "https://203.0.113.5/w?x=1",
            "https://203.0.113.5:443/w?x=1",
            "https://203.0.113.5:3334/w?x=1",
            "http://203.0.113.5:3334/w?x=1",
            "http://203.0.113.5/w?x=1",
        ),
        {"Host": "203.0.113.5:3334"},
    ),
    Signed(
        "IPv6 Host with a port",
        (
            "https://[2001:db8::1]/w?x=1",
            "https://[2001:db8::1]:443/w?x=1",
            "https://[2001:db8::1]:8080/w?x=1",
            "http://[2001:db8::1]:8080/w?x=1",
            "http://[2001:db8::1]/w?x=1",
        ),
        {"Host": "[2001:db8::1]:8080"},
    ),
    Signed(
        "a bad Host port is dropped from the URL as received",
        (
            "https://p.example.com/w?x=1",
            "https://p.example.com:443/w?x=1",
            "http://p.example.com/w?x=1",
            "http://p.example.com:80/w?x=1",
        ),
        {"Host": "p.example.com:99999"},
    ),
    Signed(
        "trusted forwarded port, then the Host port, then as received",
        (
            "https://v.example.com:8443/w?x=1",
            "https://v.example.com/w?x=1",
            "https://v.example.com:3334/w?x=1",
            "http://127.0.0.1:3334/w?x=1",
            "http://127.0.0.1/w?x=1",
        ),
        {"Host": "127.0.0.1:3334", "X-Forwarded-Host": "v.example.com", "X-Forwarded-Port": "8443"},
        TRUSTED,
    ),
    Signed(
        "trusted forwarded http with Host :80",
        ("http://p.example.com/w?x=1", "http://p.example.com:80/w?x=1"),
        {"Host": "p.example.com:80", "X-Forwarded-Proto": "http"},
        TRUSTED,
    ),
    Signed(
        "untrusted forwarded headers shape no candidate",
        (
            "https://127.0.0.1/w?x=1",
            "https://127.0.0.1:443/w?x=1",
            "https://127.0.0.1:3334/w?x=1",
            "http://127.0.0.1:3334/w?x=1",
            "http://127.0.0.1/w?x=1",
        ),
        {
            "Host": "127.0.0.1:3334",
            "X-Forwarded-Host": "evil.example.net",
            "X-Forwarded-Proto": "http",
            "X-Forwarded-Port": "8080",
            "Forwarded": "host=evil.example.net;proto=http",
        },
    ),
    Signed(
        "forwarded host outside allowedHosts shapes no candidate",
        (
            "https://127.0.0.1/w?x=1",
            "https://127.0.0.1:443/w?x=1",
            "https://127.0.0.1:3334/w?x=1",
            "http://127.0.0.1:3334/w?x=1",
            "http://127.0.0.1/w?x=1",
        ),
        {"Host": "127.0.0.1:3334", "X-Forwarded-Host": "evil.example.net"},
        UrlRules(allowed_hosts=("voice.example.com",)),
    ),
    Signed(
        "absolute request target without Host",
        (
            "https://t.example.com/w?x=1",
            "https://t.example.com:443/w?x=1",
            "http://t.example.com/w?x=1",
            "http://t.example.com:80/w?x=1",
        ),
        path="http://t.example.com/w?x=1",
    ),
    Signed("no usable host: one URL, no variants", ("https:///w?x=1",), {"Host": "a@b"}),
]


class CandidateTests(unittest.TestCase):
    """Every URL a carrier could have signed, most likely first."""

    def test_table(self) -> None:
        for case in SIGNED_CASES:
            view = RequestView(path_and_query=case.path, headers=case.headers, secure=case.secure)
            result = reconstruct(view, case.rules)
            self.assertEqual(result.candidates, case.candidates, case.name)
            self.assertEqual(result.url, case.candidates[0], case.name)

    def test_port_variants_follow_the_sdk(self) -> None:
        """Our variants of a URL are the forms the SDK's validator tries, plus the URL itself."""
        for url in (
            "https://h.example.com/w?x=1",
            "https://h.example.com:443/w",
            "https://h.example.com:8443/w",
            "http://h.example.com/w",
            "http://h.example.com:80/w",
            "http://h.example.com:3334/w?a=:1",
            "https://h.example.com?x=1",
        ):
            parsed = urlparse(url)
            expected = {url, remove_port(parsed), add_port(parsed)}
            self.assertEqual(set(port_variants(url)), expected, url)
            self.assertEqual(port_variants(url)[0], url)

    def test_port_variants_leave_odd_urls_alone(self) -> None:
        for url in ("https:///w", "https://h:/w", "ftp://h/w", "not a url", "https://[::1/w"):
            self.assertEqual(port_variants(url), (url,), url)

    def test_ipv6_literals(self) -> None:
        # The SDK's own port removal cuts an IPv6 literal at its first colon.
        self.assertEqual(
            port_variants("https://[::1]:8443/w"), ("https://[::1]:8443/w", "https://[::1]/w")
        )
        self.assertEqual(port_variants("http://[::1]/w"), ("http://[::1]/w", "http://[::1]:80/w"))

    def test_user_info_keeps_its_place(self) -> None:
        self.assertEqual(
            port_variants("https://u:p@h.example.com:8443/w"),
            ("https://u:p@h.example.com:8443/w", "https://u:p@h.example.com/w"),
        )

    def test_redacted(self) -> None:
        table = [
            ("https://u:secret@h.example.com/w?x=1", "https://u:***@h.example.com/w?x=1"),
            ("https://u@h.example.com/w", "https://u@h.example.com/w"),
            ("https://h.example.com/w?a=b@c:d", "https://h.example.com/w?a=b@c:d"),
            ("https://u:s@[::1]:80#f", "https://u:***@[::1]:80#f"),
        ]
        for url, expected in table:
            self.assertEqual(redacted(url), expected, url)


class SettingsTests(unittest.TestCase):
    """L{UrlRules.from_settings} gates the ngrok option exactly as upstream does."""

    def rules(self, config: dict[str, Any], **kwargs: Any) -> UrlRules:
        return UrlRules.from_settings(parse_config(config, None, {}).settings, **kwargs)

    def test_copies_webhook_security(self) -> None:
        rules = self.rules(
            {
                "publicUrl": "https://p.example.com/voice/webhook",
                "webhookSecurity": {
                    "allowedHosts": ["a.example.com"],
                    "trustForwardingHeaders": True,
                    "trustedProxyIPs": ["10.0.0.1"],
                },
            }
        )
        self.assertEqual(
            rules,
            UrlRules(
                public_url="https://p.example.com/voice/webhook",
                allowed_hosts=("a.example.com",),
                trust_forwarding_headers=True,
                trusted_proxy_ips=("10.0.0.1",),
            ),
        )

    def test_resolved_public_url_overrides_config(self) -> None:
        rules = self.rules({}, public_url="https://t.ngrok-free.app/voice/webhook")
        self.assertEqual(rules.public_url, "https://t.ngrok-free.app/voice/webhook")

    def test_ngrok_bypass_gating(self) -> None:
        table = [
            ("ngrok", "127.0.0.1", True, True),
            ("ngrok", "::1", True, True),
            ("ngrok", "localhost", True, True),
            ("ngrok", "0.0.0.0", True, False),
            ("ngrok", "192.168.1.5", True, False),
            ("ngrok", "127.0.0.1", False, False),
            ("tailscale-funnel", "127.0.0.1", True, False),
            ("none", "127.0.0.1", True, False),
        ]
        for provider, bind, option, expected in table:
            config = {
                "serve": {"bind": bind},
                "tunnel": {"provider": provider, "allowNgrokFreeTierLoopbackBypass": option},
            }
            self.assertEqual(
                self.rules(config).ngrok_loopback_bypass, expected, (provider, bind, option)
            )

    def test_plivo_never_gets_the_ngrok_option(self) -> None:
        config = {
            "tunnel": {"provider": "ngrok", "allowNgrokFreeTierLoopbackBypass": True},
        }
        self.assertFalse(self.rules(config, ngrok_bypass_allowed=False).ngrok_loopback_bypass)

    def test_non_loopback_bind_refuses_loopback_peer(self) -> None:
        rules = self.rules(
            {
                "serve": {"bind": "0.0.0.0"},
                "tunnel": {"provider": "ngrok", "allowNgrokFreeTierLoopbackBypass": True},
            }
        )
        view = RequestView(
            path_and_query="/w",
            headers={"Host": "127.0.0.1", "X-Forwarded-Host": "x.ngrok-free.app"},
            peer="127.0.0.1",
        )
        self.assertEqual(reconstruct(view, rules).url, "https://127.0.0.1/w")


class HelperTests(unittest.TestCase):
    """The small predicates behind the rules."""

    def test_extract_hostname(self) -> None:
        table = [
            ("Example.COM", "example.com"),
            ("example.com:8080", "example.com"),
            ("a@b.com", None),
            ("", None),
            ("exa_mple.com", None),
            ("example.com.", None),
            ("x" * 64 + ".com", None),
            ("[::1]:80", "[::1]"),
            ("[::1", None),
            ("10.0.0.1:3334", "10.0.0.1"),
        ]
        for value, expected in table:
            self.assertEqual(extract_hostname(value), expected, value)

    def test_loopback_peer(self) -> None:
        for peer in ("127.0.0.1", "::1", "::ffff:127.0.0.1", "::ffff:127.9.9.9"):
            self.assertTrue(is_loopback_peer(peer), peer)
        for peer in (None, "", "127.0.0.2", "10.0.0.1", "::2", "::ffff:10.0.0.1"):
            self.assertFalse(is_loopback_peer(peer), peer)

    def test_loopback_bind(self) -> None:
        for bind in ("127.0.0.1", "::1", "localhost", "LOCALHOST"):
            self.assertTrue(is_loopback_bind(bind), bind)
        for bind in ("0.0.0.0", "::", "10.0.0.1", "127.0.0.2"):
            self.assertFalse(is_loopback_bind(bind), bind)

    def test_header_lookup_is_case_insensitive(self) -> None:
        view = RequestView(headers=[(b"X-Forwarded-Host", b"a"), ("x-forwarded-host", "b")])
        self.assertEqual(view.header("X-FORWARDED-HOST"), "a, b")
        self.assertIsNone(view.header("Host"))

    def test_from_twisted_request(self) -> None:
        request = DummyRequest([b"voice", b"webhook"])
        request.method = b"POST"
        request.uri = b"/voice/webhook?callId=1"
        request.requestHeaders.addRawHeader(b"Host", b"h.example.com")
        request.client = IPv4Address("TCP", "10.1.2.3", 5555)
        view = from_twisted_request(request)
        self.assertEqual(
            (view.method, view.path_and_query, view.header("host"), view.peer),
            ("POST", "/voice/webhook?callId=1", "h.example.com", "10.1.2.3"),
        )


class FuzzTests(unittest.TestCase):
    """Whatever the headers say, reconstruction never fails and never lets a header shape the URL
    beyond a clean host."""

    @settings(max_examples=300, deadline=None)
    @given(
        headers=st.dictionaries(
            st.sampled_from(
                [
                    "Host",
                    "X-Forwarded-Host",
                    "X-Forwarded-Proto",
                    "X-Forwarded-Port",
                    "X-Original-Host",
                    "Ngrok-Forwarded-Host",
                    "Forwarded",
                ]
            ),
            st.text(max_size=40),
        ),
        peer=st.one_of(st.none(), st.sampled_from(["127.0.0.1", "::1", "10.0.0.1", "x"])),
        trust=st.booleans(),
        path=st.text(max_size=30),
    )
    def test_never_fails_and_keeps_the_authority_clean(
        self, headers: dict[str, str], peer: str | None, trust: bool, path: str
    ) -> None:
        rules = UrlRules(trust_forwarding_headers=trust, ngrok_loopback_bypass=True)
        for secure in (False, True):
            view = RequestView(path_and_query=path, headers=headers, peer=peer, secure=secure)
            result = reconstruct(view, rules)
            self.assertEqual(result.candidates[0], result.url)
            self.assertEqual(len(set(result.candidates)), len(result.candidates))
            for url in result.candidates:
                scheme, rest = url.split("://", 1)
                self.assertIn(scheme, ("http", "https"))
                authority = rest.split("/", 1)[0]
                for bad in "@/?# \t\r\n,\\":
                    self.assertNotIn(bad, authority)

    @settings(max_examples=200, deadline=None)
    @given(
        headers=st.dictionaries(
            st.sampled_from(
                ["Host", "X-Forwarded-Host", "X-Forwarded-Proto", "X-Forwarded-Port", "Forwarded"]
            ),
            st.text(max_size=40),
        ),
        trust=st.booleans(),
        secure=st.booleans(),
        path=st.text(max_size=30),
    )
    def test_public_url_pins_scheme_and_host(
        self, headers: dict[str, str], trust: bool, secure: bool, path: str
    ) -> None:
        rules = UrlRules(
            public_url="https://pub.example.com/voice/webhook", trust_forwarding_headers=trust
        )
        view = RequestView(path_and_query=path, headers=headers, peer="10.0.0.1", secure=secure)
        for url in reconstruct(view, rules).candidates:
            self.assertTrue(url.startswith("https://pub.example.com"), url)
            self.assertEqual(urlsplit(url).hostname, "pub.example.com", url)

    @settings(max_examples=200, deadline=None)
    @given(
        forwarded=st.dictionaries(
            st.sampled_from(
                [
                    "X-Forwarded-Host",
                    "X-Forwarded-Proto",
                    "X-Forwarded-Port",
                    "X-Original-Host",
                    "Ngrok-Forwarded-Host",
                    "Forwarded",
                ]
            ),
            st.text(max_size=40) | st.just("evil.example.net"),
        ),
        host=st.sampled_from(["", "p.example.com", "p.example.com:8080", "[::1]:3334"]),
        allowed=st.booleans(),
        path=st.sampled_from(["/w", "/w?x=1", "/w?"]),
    )
    def test_untrusted_forwarding_headers_change_no_candidate(
        self, forwarded: dict[str, str], host: str, allowed: bool, path: str
    ) -> None:
        # Not trusted: neither allowedHosts nor trust, or a proxy list without this peer.
        rules = (
            UrlRules(allowed_hosts=("evil.example.net",), trusted_proxy_ips=("10.9.9.9",))
            if allowed
            else UrlRules()
        )
        bare = {"Host": host} if host else {}
        with_headers = RequestView(path_and_query=path, headers={**forwarded, **bare}, peer="::1")
        without = RequestView(path_and_query=path, headers=bare, peer="::1")
        self.assertEqual(
            reconstruct(with_headers, rules).candidates, reconstruct(without, rules).candidates
        )
