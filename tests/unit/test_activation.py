"""Checking C{systemd:} endpoints against the sockets really passed, and the watchdog interval."""

from __future__ import annotations

import os

from twisted.python.systemd import ListenFDs
from twisted.trial.unittest import SynchronousTestCase

from voicecalld.activation import check, is_activated
from voicecalld.sdnotify import watchdog_interval

PASSED = ListenFDs([3, 4], ("control", "webhook"))


class CheckTests(SynchronousTestCase):
    def test_other_endpoints_are_not_checked(self):
        self.assertFalse(is_activated("unix:/run/x.sock"))
        self.assertIsNone(check("control", "unix:/run/x.sock", ListenFDs([], ())))

    def test_names_and_matching_indexes_pass(self):
        self.assertIsNone(check("control", "systemd:domain=UNIX:name=control", PASSED))
        self.assertIsNone(check("control", "systemd:domain=UNIX:index=0", PASSED))
        self.assertIsNone(check("webhook", "systemd:domain=INET:index=1", PASSED))

    def test_an_unnamed_socket_by_index_passes(self):
        passed = ListenFDs([3, 4], ("voicecalld.socket", "voicecalld.socket"))
        self.assertIsNone(check("webhook", "systemd:domain=INET:index=1", passed))

    def test_a_confused_order_is_one_line(self):
        problem = check("control", "systemd:domain=UNIX:index=1", PASSED)
        self.assertEqual(
            problem,
            "--control systemd:domain=UNIX:index=1: the passed socket at index 1 is named"
            " 'webhook', not 'control' (LISTEN_FDNAMES=control:webhook); use name=control",
        )

    def test_a_missing_name(self):
        problem = check("webhook", "systemd:domain=INET:name=web", PASSED)
        self.assertIn("no passed socket is named 'web' (LISTEN_FDNAMES=control:webhook)", problem)

    def test_out_of_range_and_nothing_passed(self):
        self.assertIn("index 2 is out of range", check("webhook", "systemd:index=2", PASSED))
        nothing = check("control", "systemd:domain=UNIX:index=0", ListenFDs([], ()))
        self.assertIn("no sockets were passed to this process", nothing)


class WatchdogTests(SynchronousTestCase):
    def test_half_of_watchdog_usec(self):
        self.assertEqual(watchdog_interval({"WATCHDOG_USEC": "30000000"}), 15.0)

    def test_for_this_process_only(self):
        mine = {"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid())}
        self.assertEqual(watchdog_interval(mine), 0.5)
        self.assertIsNone(watchdog_interval({**mine, "WATCHDOG_PID": "1"}))

    def test_unset_or_bad(self):
        self.assertIsNone(watchdog_interval({}))
        self.assertIsNone(watchdog_interval({"WATCHDOG_USEC": "soon"}))
        self.assertIsNone(watchdog_interval({"WATCHDOG_USEC": "0"}))
