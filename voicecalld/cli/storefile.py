"""
Reading the daemon's SQLite store from a CLI process: read-only, no daemon
needed (C{voicecall latency}, C{voicecall export}).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from urllib.parse import quote

from voicecalld import paths


class StoreUnreadable(Exception):
    """The store cannot be opened or read."""


def store_path(state_dir: str | None, environ: Mapping[str, str]) -> str:
    """Where the daemon keeps its store: C{<state-dir>/calls.sqlite3}."""
    return os.path.join(paths.state_dir(state_dir, environ), paths.STORE_NAME)


@contextmanager
def reading(path: str) -> Iterator[sqlite3.Connection]:
    """
    The store at C{path}, opened read-only, for the block; SQLite's errors
    in it become L{StoreUnreadable}.
    """
    if not os.path.exists(path):
        raise StoreUnreadable(f"no call store at {path} (has voicecalld run with this state dir?)")
    uri = f"file:{quote(os.path.abspath(path))}?mode=ro"
    try:
        db = sqlite3.connect(uri, uri=True, timeout=5.0)
    except sqlite3.Error as e:
        raise StoreUnreadable(f"cannot open the call store {path}: {e}") from None
    try:
        yield db
    except sqlite3.Error as e:
        raise StoreUnreadable(f"cannot read the call store {path}: {e}") from None
    finally:
        db.close()
