"""How the CLI shows records and events: readable text, or JSON with C{--json}."""

from __future__ import annotations

import json
import time
from typing import Any, TextIO


def _clock(ms: int | None) -> str:
    if ms is None:
        return "-"
    return time.strftime("%H:%M:%S", time.localtime(ms / 1000))


def _date(ms: int | None) -> str:
    if ms is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000))


def _answered_by(record: dict[str, Any]) -> str:
    """Who answered, when answering-machine detection said so: C{" by machine (raw)"}."""
    metadata = record.get("metadata") or {}
    answered_by = metadata.get("answeredBy")
    if not answered_by:
        return (
            " (detecting who answered)"
            if metadata.get("machineDetection")
            and record.get("answeredAt")
            and not record.get("endedAt")
            else ""
        )
    raw = metadata.get("answeredByRaw")
    return f" by {answered_by}" + (f" ({raw})" if raw and raw != answered_by else "")


def call(record: dict[str, Any]) -> str:
    """A readable summary of one call record."""
    state = record["state"]
    if record.get("endReason") and record.get("endDetail"):
        state += f" ({record['endDetail']})"
    lines = [
        f"call {record['callId']}",
        f"  state:     {state}",
        f"  direction: {record['direction']} {record['mode']}",
        f"  from/to:   {record['from']} -> {record['to']}",
        f"  provider:  {record['provider']} {record.get('providerCallId') or '-'}",
        f"  started:   {_date(record.get('startedAt'))}",
        f"  answered:  {_date(record.get('answeredAt'))}{_answered_by(record)}",
    ]
    if record.get("endedAt") is not None:
        lines.append(f"  ended:     {_date(record['endedAt'])}")
    handed = (record.get("metadata") or {}).get("transferredTo")
    if handed:
        lines.append(f"  transfer:  to {handed}")
    latency = (record.get("metadata") or {}).get("lastTurnLatency")
    if latency:
        parts = ", ".join(f"{k} {v} ms" for k, v in latency.items())
        lines.append(f"  last turn: {parts}")
    transcript = record.get("transcript") or []
    if transcript:
        lines.append("  transcript:")
        for entry in transcript:
            text = entry["text"]
            if entry.get("kind") == "dtmf":
                text = f"[keys {text}]"
            if entry.get("interrupted"):
                text += " [interrupted]"
            lines.append(f"    {_clock(entry.get('timestamp'))} {entry['speaker']:>4}: {text}")
    return "\n".join(lines)


def calls(records: list[dict[str, Any]]) -> str:
    """One line per call, or a sentence when there are none."""
    if not records:
        return "no live calls"
    return "\n".join(
        f"{r['callId']}  {r['state']:<11} {r['direction']:<8} {r['mode']:<12}"
        f" {r['from']} -> {r['to']}  since {_clock(r.get('startedAt'))}"
        for r in records
    )


def event(data: dict[str, Any]) -> str:
    """One event as one line."""
    kind = data.get("type", "?")
    if kind == "subscribed":
        return (
            f"{_clock(data.get('timestamp'))} following events ({data.get('liveCalls')} live calls)"
        )
    head = f"{_clock(data.get('timestamp'))} {data.get('callId', '-')[:8]} {kind}"
    if kind == "call.transcript":
        body = f"{data['speaker']}: {data['text']}"
        if data.get("entryKind") == "dtmf":
            body = f"{data['speaker']} keys: {data['text']}"
        if data.get("interrupted"):
            body += " [interrupted]"
        return f"{head} {body}"
    rest = {k: v for k, v in data.items() if k not in ("type", "timestamp", "callId")}
    return f"{head} " + " ".join(f"{k}={v}" for k, v in rest.items())


class Printer:
    """Prints results as text or as JSON (C{--json})."""

    def __init__(self, as_json: bool, out: TextIO) -> None:
        self.as_json = as_json
        self._out = out

    def value(self, data: Any, text: str) -> None:
        """Print a result."""
        print(json.dumps(data) if self.as_json else text, file=self._out, flush=True)

    def ok(self) -> None:
        """Print a bare success: nothing as text, C{{"ok": true}} as JSON."""
        if self.as_json:
            print(json.dumps({"ok": True}), file=self._out, flush=True)

    def event(self, data: dict[str, Any]) -> None:
        """Print one tail event."""
        self.value(data, event(data))
