"""
Telling a new call store from a lost one.

A state directory that never held a store starts empty; one that did must
still have it, intact.  The durable sign that it did is a marker file next
to the store (C{calls.sqlite3.created}), written, fsynced and its directory
fsynced right after the store was first created, and written again for a
store found without one (a store made before markers existed).

SQLite's own C{-wal} and C{-shm} files cannot be that sign: a clean close
checkpoints the log and deletes both, so after a normal stop only the main
file is left.  A leftover C{-wal} is still taken as a sign when there is
no marker, since it can only come from a store that was in use.

A new store is built under a temporary name and hard-linked into place, so
a crash while creating it never leaves a zero-length C{calls.sqlite3}: a
zero-length store is therefore always a lost one, and refused.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable

SQLITE_MAGIC = b"SQLite format 3\x00"
HEADER_SIZE = 100
MARKER_SUFFIX = ".created"

MARKER_TEXT = """\
voicecalld created its call store {name} in this directory.

While this file is here, voicecalld refuses to start if {name} is missing
or empty, so that lost calls are never mistaken for a new, empty store.
To recover, restore {name} from a backup.  To start with no calls on
purpose, delete both {name} and this file.
"""


class StoreRefused(Exception):
    """The call store cannot be used as it is: one line saying why and how to recover."""


def marker_path(path: str) -> str:
    """Where the marker of the store at C{path} lives."""
    return path + MARKER_SUFFIX


def newer_schema(path: str, version: int, known: int) -> StoreRefused:
    """The refusal of a store written by a newer voicecalld."""
    return StoreRefused(
        f"the call store {path} has schema version {version}, newer than this voicecalld"
        f" knows ({known}): upgrade voicecalld, or restore a backup this version wrote"
    )


def damaged(path: str, detail: str) -> StoreRefused:
    """The refusal of a store SQLite cannot read."""
    return StoreRefused(
        f"the call store {path} is damaged ({detail}): restore it from a backup,"
        f" or {_start_empty(path)} to start with no calls"
    )


def inspect(path: str, known_version: int) -> bool:
    """
    Whether the store at C{path} is to be created: C{True} if there is none
    and none was ever here, C{False} if there is one that looks usable.

    @raise StoreRefused: if it is missing or empty although the directory
        held one, is not a SQLite database, or has a newer schema version.
    """
    marker = marker_path(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        if os.path.lexists(marker):
            raise StoreRefused(
                f"the call store {path} is missing, but {marker} shows this state directory"
                f" held one: restore it from a backup, or delete {marker} to start with no calls"
            ) from None
        if _size(path + "-wal"):
            raise StoreRefused(
                f"the call store {path} is missing, but its write-ahead log {path}-wal is"
                " still there: restore it from a backup, or move both aside to start with"
                " no calls"
            ) from None
        return True
    start_empty = _start_empty(path)
    if not stat.S_ISREG(info.st_mode):
        raise StoreRefused(f"the call store {path} is not a regular file")
    if info.st_size == 0:
        raise StoreRefused(
            f"the call store {path} is empty (0 bytes), so its calls were lost: restore it"
            f" from a backup, or {start_empty} to start with no calls"
        )
    with open(path, "rb") as f:
        header = f.read(HEADER_SIZE)
    if not header.startswith(SQLITE_MAGIC) or len(header) < HEADER_SIZE:
        raise StoreRefused(
            f"the call store {path} is not a SQLite database: restore it from a backup,"
            f" or {start_empty} to start with no calls"
        )
    version = int.from_bytes(header[60:64], "big")
    if version > known_version:
        raise newer_schema(path, version, known_version)
    return False


def create(path: str, build: Callable[[str], None]) -> None:
    """
    Create the store at C{path} with C{build} (given a temporary path to
    fill and close), put it in place, and write its marker.  If another
    process put a store there first, that one is kept.
    """
    directory = os.path.dirname(path) or "."
    fd, temporary = tempfile.mkstemp(
        prefix=os.path.basename(path) + ".", suffix=".new", dir=directory
    )
    os.close(fd)
    try:
        build(temporary)
        _fsync_file(temporary)
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass
        except OSError:
            # A file system without hard links: renaming is the next best.
            os.rename(temporary, path)
        _fsync_dir(directory)
    finally:
        for leftover in (temporary, temporary + "-journal"):
            if os.path.lexists(leftover):
                os.unlink(leftover)
    mark(path)


def mark(path: str) -> None:
    """Durably record that the directory of C{path} holds a store (if not yet recorded)."""
    marker = marker_path(path)
    if os.path.lexists(marker):
        return
    directory = os.path.dirname(path) or "."
    temporary = marker + ".new"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(fd, "w", encoding="utf-8") as f:
        f.write(MARKER_TEXT.format(name=os.path.basename(path)))
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, marker)
    _fsync_dir(directory)


def _start_empty(path: str) -> str:
    marker = marker_path(path)
    return f"delete it and {marker}" if os.path.lexists(marker) else "delete it"


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


def _fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
