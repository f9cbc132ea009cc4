"""
C{voicecall latency}: turn latency over the most recent calls in the store.

Read straight from the daemon's SQLite store, read-only (no daemon needed),
as upstream's command reads its store.  The figures come from what the turn
engine keeps in each record's metadata: C{lastTurnLatencyMs} and
C{lastTurnListenWaitMs} (a client's C{continue}), and C{lastTurnLatency}
(the stages of the last answered turn, ours).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any

from voicecalld.cli.storefile import StoreUnreadable, reading, store_path

__all__ = ["StoreUnreadable", "latency", "read_records", "render", "store_path", "summary"]

DEFAULT_LAST = 200


def read_records(path: str, last: int) -> list[dict[str, Any]]:
    """The C{last} most recently started records (their JSON), newest first."""
    with reading(path) as db:
        rows = db.execute(
            "SELECT record FROM calls ORDER BY started_at DESC LIMIT ?", (last,)
        ).fetchall()
    records = []
    for (text,) in rows:
        try:
            data = json.loads(text)
        except ValueError:
            continue
        if isinstance(data, dict):
            records.append(data)
    return records


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value if math.isfinite(value) else None


def _percentile(ordered: list[float], p: int) -> float:
    # upstream's nearest rank: sorted[ceil(p/100 * n) - 1]
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def summary(values: Iterable[float]) -> dict[str, Any]:
    """
    C{count}, C{minMs}, C{maxMs}, C{avgMs} (whole milliseconds, half up),
    C{p50Ms}, C{p95Ms}; only C{count} without values (as the shim's).
    """
    ordered = sorted(values)
    if not ordered:
        return {"count": 0}
    return {
        "count": len(ordered),
        "minMs": ordered[0],
        "maxMs": ordered[-1],
        "avgMs": math.floor(sum(ordered) / len(ordered) + 0.5),
        "p50Ms": _percentile(ordered, 50),
        "p95Ms": _percentile(ordered, 95),
    }


def latency(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Upstream's shape (C{recordsScanned}, C{turnLatency}, C{listenWait}) plus C{stages}."""
    turn: list[float] = []
    wait: list[float] = []
    stages: dict[str, list[float]] = {}
    for record in records:
        metadata = record.get("metadata")
        if not isinstance(metadata, dict):
            continue
        for key, into in (("lastTurnLatencyMs", turn), ("lastTurnListenWaitMs", wait)):
            value = _number(metadata.get(key))
            if value is not None:
                into.append(value)
        measured = metadata.get("lastTurnLatency")
        if isinstance(measured, dict):
            for name, raw in measured.items():
                value = _number(raw)
                if value is not None:
                    stages.setdefault(str(name), []).append(value)
    return {
        "recordsScanned": len(records),
        "turnLatency": summary(turn),
        "listenWait": summary(wait),
        "stages": {name: summary(values) for name, values in sorted(stages.items())},
    }


def _line(label: str, s: dict[str, Any]) -> str:
    if not s["count"]:
        return f"  {label:<18} no turns"
    return (
        f"  {label:<18} n={s['count']:<4} min {s['minMs']:g}  p50 {s['p50Ms']:g}"
        f"  p95 {s['p95Ms']:g}  max {s['maxMs']:g}  avg {s['avgMs']:g} ms"
    )


def render(result: dict[str, Any]) -> str:
    """The result as text: one line per figure."""
    lines = [
        f"{result['recordsScanned']} calls scanned",
        _line("turn latency", result["turnLatency"]),
        _line("listen wait", result["listenWait"]),
    ]
    if result["stages"]:
        lines.append("stages of the last answered turn per call:")
        lines.extend(_line(name, s) for name, s in result["stages"].items())
    return "\n".join(lines)
