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
