"""Start-up reachability check of the resolved public URL."""

from __future__ import annotations

from twisted.trial import unittest

from voicecalld.web.reachability import (
    CGNAT,
    LINK_LOCAL,
    LOCALHOST,
    LOOPBACK,
    NO_HOST,
    PRIVATE,
    UNSPECIFIED,
    classify_host,
    provider_warning,
    unreachable_reason,
    unreachable_warning,
)


class ClassifyTests(unittest.TestCase):
    """Each kind of address carriers cannot reach, and public ones."""

    def test_table(self) -> None:
        table = [
            ("localhost", LOCALHOST),
            ("LOCALHOST", LOCALHOST),
            ("app.localhost", LOCALHOST),
            ("127.0.0.1", LOOPBACK),
            ("127.8.9.10", LOOPBACK),
            ("::1", LOOPBACK),
            ("[::1]", LOOPBACK),
            ("::ffff:127.0.0.1", LOOPBACK),
            ("0.0.0.0", UNSPECIFIED),
            ("::", UNSPECIFIED),
            ("10.1.2.3", PRIVATE),
            ("172.16.0.1", PRIVATE),
            ("172.31.255.254", PRIVATE),
            ("192.168.1.1", PRIVATE),
            ("::ffff:192.168.1.1", PRIVATE),
            ("fc00::1", PRIVATE),
            ("fd12:3456::1", PRIVATE),
            ("169.254.169.254", LINK_LOCAL),
            ("fe80::1", LINK_LOCAL),
            ("100.64.0.1", CGNAT),
            ("100.101.102.103", CGNAT),
            ("100.127.255.255", CGNAT),
            ("", NO_HOST),
            # Public, or assumed public.
            ("8.8.8.8", None),
            ("172.32.0.1", None),
            ("172.15.255.255", None),
            ("100.63.255.255", None),
            ("100.128.0.0", None),
            ("192.169.0.1", None),
            ("2001:4860::8888", None),
            ("example.com", None),
            ("voice.tailnet-1234.ts.net", None),
            ("internal.corp", None),
        ]
        for host, expected in table:
            self.assertEqual(classify_host(host), expected, host)


class WarningTests(unittest.TestCase):
    """The one-line warning text."""

    def test_loopback_warning(self) -> None:
        self.assertEqual(
            unreachable_warning("http://127.0.0.1:3334/voice/webhook"),
            "carriers cannot reach http://127.0.0.1:3334/voice/webhook: 127.0.0.1 is a"
            " loopback address (this machine only); set publicUrl or tunnel.provider",
        )

    def test_each_kind_names_why(self) -> None:
        table = [
            ("http://localhost:3334/w", "localhost is this machine only"),
            ("http://0.0.0.0:3334/w", "unspecified address"),
            ("https://10.0.0.5/w", "private address"),
            ("https://[fd00::5]/w", "private address"),
            ("https://100.100.1.1/w", "carrier-grade NAT"),
            ("https://169.254.1.1/w", "link-local"),
            ("https:///w", "the URL has no host"),
        ]
        for url, why in table:
            warning = unreachable_warning(url)
            self.assertIsNotNone(warning, url)
            self.assertTrue(warning.startswith(f"carriers cannot reach {url}: "), warning)
            self.assertIn(why, warning)
            self.assertNotIn("\n", warning)

    def test_public_hosts_give_none(self) -> None:
        for url in (
            "https://voice.example.com/voice/webhook",
            "https://8.8.8.8/w",
            "https://abc.ngrok-free.app/voice/webhook",
            "https://box.tail1234.ts.net:8443/voice/webhook",
        ):
            self.assertIsNone(unreachable_warning(url), url)
            self.assertIsNone(unreachable_reason(url), url)

    def test_mock_provider_never_warns(self) -> None:
        self.assertIsNone(provider_warning("mock", "http://127.0.0.1:3334/voice/webhook"))
        self.assertIsNotNone(provider_warning("twilio", "http://127.0.0.1:3334/voice/webhook"))
        self.assertIsNone(provider_warning("telnyx", "https://voice.example.com/voice/webhook"))
