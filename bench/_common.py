"""Helpers shared by the benchmarks: CPU pinning, CPU time, machine facts, JSON lines."""

from __future__ import annotations

import json
import math
import os
import platform
import resource
import sys
from typing import Any


def pin(cpu: int | None) -> int | None:
    """Pin this process to one core (if there is such a core); returns the core or None."""
    if cpu is None or not hasattr(os, "sched_setaffinity"):
        return None
    try:
        allowed = os.sched_getaffinity(0)
        if cpu not in allowed:
            return None
        os.sched_setaffinity(0, {cpu})
    except OSError:
        return None
    return cpu


def cores_for(count: int) -> list[int | None]:
    """C{count} distinct cores this process may use, or None for each if there are too few."""
    try:
        allowed = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        allowed = []
    if len(allowed) < count:
        return [None] * count
    return allowed[:count]


def cpu_seconds() -> tuple[float, float]:
    """(user, system) CPU seconds this process has used, all threads included."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def rss_kib() -> int | None:
    """This process's resident memory now, in KiB (None where /proc is not there)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def machine() -> dict[str, Any]:
    """CPU model, core count and Python version."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    return {
        "cpuModel": model,
        "cores": os.cpu_count(),
        "usableCores": usable,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
    }


def emit(obj: dict[str, Any]) -> None:
    """Write one JSON line to stdout (how a child reports to the runner)."""
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def report(figures: dict[str, Any], rows: Any, notes: Any, as_json: bool) -> int:
    """Print a benchmark's figures: one JSON line, or its table rows and notes; exit status 0."""
    if as_json:
        print(json.dumps(figures))
    else:
        for row in rows(figures):
            print("  ".join(row))
        for line in notes(figures):
            print(f"- {line}")
    return 0


def percentile(values: list[float], q: float) -> float:
    """The C{q}-th percentile (0-100) of C{values}, nearest-rank."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


def core_times(cpu: int | None) -> dict[str, int]:
    """The kernel's jiffy counters for one core (or all cores): user, system, idle, steal..."""
    name = "cpu" if cpu is None else f"cpu{cpu}"
    fields = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
    try:
        with open("/proc/stat", encoding="ascii") as f:
            for line in f:
                parts = line.split()
                if parts and parts[0] == name:
                    return dict(zip(fields, map(int, parts[1:9]), strict=False))
    except OSError:
        pass
    return {}


def core_shares(before: dict[str, int], after: dict[str, int]) -> dict[str, float]:
    """How a core spent the time between two L{core_times} readings (fractions)."""
    delta = {k: after[k] - before.get(k, 0) for k in after}
    total = sum(delta.values())
    if not total:
        return {}
    return {k: round(v / total, 4) for k, v in delta.items() if v}


#: No late frame (issue 15): CPU below this share of a core ...
MAX_CPU = 0.95
#: ... the outbound audio rate within utterances at least this share of real time ...
MIN_SPEAKING_RATE = 0.98
#: ... and the p99 gap between outbound frames below this.
MAX_GAP_P99_MS = 60


def verdict(point: dict[str, Any]) -> tuple[bool, str]:
    """
    Whether a point (the daemon's or a peer's) carried every call with no late frame, and if
    not, why not: every call live, CPU < 95 %, the audio rate within utterances >= 0.98 of real
    time and the p99 outbound gap < 60 ms.  (Out/in over the whole window is reported but not
    held to 0.98: the daemon is silent between a reply and the next turn's; an echo peer's
    speaking rate is its out/in.)
    """
    reasons = []
    live, calls = point.get("live") or 0, point.get("calls") or 0
    if live < calls:
        reasons.append(f"{calls - live} of {calls} calls not live")
    cpu = point.get("cpuUtilization")
    if cpu is None or cpu >= MAX_CPU:
        reasons.append(f"cpu {cpu}")
    rate = point.get("speakingRate")
    if rate is None or rate < MIN_SPEAKING_RATE:
        reasons.append(f"speaking rate {rate}")
    gap = (point.get("outboundGapMs") or {}).get("p99")
    if gap is None or gap >= MAX_GAP_P99_MS:
        reasons.append(f"p99 gap {gap} ms")
    return not reasons, "; ".join(reasons)
