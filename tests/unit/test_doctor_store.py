"""
C{voicecall doctor}'s store-space check as an operator reads it: a state
directory with room, one filling up, a full one and a read-only one (the
last two injected, no tiny file system needed).
"""

from __future__ import annotations

import errno
import os

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from voicecalld.cli.doctor import LOW_FREE_BYTES, check_store_space, render, report


class _FS:
    """What C{os.statvfs} answers for a file system with C{free} bytes left."""

    def __init__(self, free: int) -> None:
        self.f_frsize = 4096
        self.f_bavail = free // 4096


def failing(code: int, text: str):
    def write(state: str) -> None:
        raise OSError(code, text)

    return write


class StoreSpace(TestCase):
    def setUp(self) -> None:
        self.state = self.mktemp()
        os.makedirs(self.state, mode=0o700)

    @inlineCallbacks
    def test_room_and_writes_is_ok_and_leaves_nothing_behind(self):
        check = yield check_store_space(self.state, statvfs=lambda _: _FS(LOW_FREE_BYTES * 4))
        self.assertEqual((check.id, check.status), ("store-space", "ok"))
        self.assertEqual(check.detail, f"{self.state}: 256 MiB free, takes writes")
        self.assertEqual(os.listdir(self.state), [])

    @inlineCallbacks
    def test_little_room_left_is_a_warning_with_its_fix(self):
        check = yield check_store_space(self.state, statvfs=lambda _: _FS(512 * 1024))
        self.assertEqual(check.status, "warn")
        self.assertEqual(
            check.detail,
            f"{self.state}: only 512 KiB free; new calls are refused once the store fills it",
        )
        self.assertEqual(
            render([check]),
            f"warn store-space: {check.detail} -- fix: free space on the file system"
            f" holding {self.state} (or move the state directory)",
        )

    @inlineCallbacks
    def test_a_full_file_system_fails(self):
        check = yield check_store_space(
            self.state,
            statvfs=lambda _: _FS(LOW_FREE_BYTES * 4),
            write=failing(errno.ENOSPC, "No space left on device"),
        )
        self.assertEqual(check.status, "fail")
        self.assertEqual(
            check.detail,
            f"{self.state} is full (No space left on device): the daemon refuses new calls"
            " with STORE_ERROR",
        )
        self.assertIn("free space on the file system", check.fix)
        self.assertFalse(report([check])["ok"])

    @inlineCallbacks
    def test_a_read_only_file_system_fails(self):
        check = yield check_store_space(
            self.state, write=failing(errno.EROFS, "Read-only file system")
        )
        self.assertEqual(check.status, "fail")
        self.assertEqual(check.detail, f"cannot write in {self.state}: Read-only file system")
        self.assertIn("mounted read-only", check.fix)
