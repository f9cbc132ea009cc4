"""
C{voicecall export}: ended calls for archiving, one JSON object per line.

Each line is what C{status --json} shows of the call: its record with its
transcript.  Read from the daemon's store read-only (no daemon needed), in
one read transaction so that the lines agree with each other, ordered by
end time; C{--since} keeps the calls that ended at or after a date or
datetime (UTC unless it names an offset).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TextIO

from voicecalld.cli.storefile import reading


def parse_since(text: str) -> float:
    """
    C{2026-12-01}, C{2026-12-01T09:30}, C{2026-12-01 09:30:00Z} or with an
    offset, as seconds since the epoch.

    @raise ValueError: with a message saying what is accepted.
    """
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"not an ISO date or datetime: {text!r} (e.g. 2026-12-01 or 2026-12-01T09:30:00Z)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def export(path: str, since: float | None, out: TextIO) -> int:
    """Write the ended calls of the store at C{path} to C{out}; returns how many."""
    count = 0
    with reading(path) as db:
        db.execute("BEGIN")
        rows = db.execute(
            "SELECT call_id, record FROM calls WHERE live = 0"
            " AND COALESCE(ended_at, started_at) >= ?"
            " ORDER BY COALESCE(ended_at, started_at), call_id",
            (since if since is not None else float("-inf"),),
        )
        for call_id, text in rows:
            record = json.loads(text)
            record["transcript"] = [
                json.loads(entry)
                for (entry,) in db.execute(
                    # The order the daemon loads a transcript in.
                    "SELECT entry FROM transcript WHERE call_id = ?"
                    " ORDER BY json_extract(entry, '$.timestamp'), seq",
                    (call_id,),
                )
            ]
            out.write(json.dumps(record) + "\n")
            count += 1
        db.execute("COMMIT")
    out.flush()
    return count
