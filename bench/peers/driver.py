"""
Drives a peer with the Twilio load generator and measures what one core of it carries.

One point is one peer at N calls: the peer starts pinned to one core and announces its port;
L{bench.loadgen}, pinned to another core, connects N media streams, paces 50 frames/s on each,
and measures a window of its own (media sent and received, gaps between received frames).  The
peer's CPU over that window is read from C{/proc/<pid>/stat} for the peer and all its
descendants (every thread is in a process's own counters); the generator's is read the same
way and never charged to the peer.  "Other" CPU is what the peer's core, and the whole machine,
spent on anything else meanwhile; a point whose core others disturbed is run again.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench._common import core_times, cores_for
from bench.peers import venv

PEERS = ("pipecat", "relay")
PATH = "/voice/stream"
# A point has no late frame when all of these hold.
MAX_CPU = 0.95
MIN_OUT_IN = 0.98
MAX_GAP_P99_MS = 60
# A point during which other processes took more of the peer's core than this is rerun.
DISTURBED = 0.05
TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class PeerError(RuntimeError):
    """A peer or the load generator did not produce figures."""


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def process_tree(pid: int) -> list[int]:
    """C{pid} and all its descendants that are alive now."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{current}/task/{task}/children", encoding="ascii") as f:
                    queue.extend(int(child) for child in f.read().split())
            except OSError:
                pass
    return found


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of C{pid} and its live descendants (all threads)."""
    total = 0
    for member in process_tree(pid):
        try:
            with open(f"/proc/{member}/stat", encoding="ascii") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name is in parentheses and may hold spaces: split after it.
        fields = stat[stat.rindex(")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / TICKS


def _busy(times: dict[str, int]) -> int:
    # Process time only: interrupts (loopback traffic among them) are charged to no process.
    return sum(times.get(k, 0) for k in ("user", "nice", "system"))


def _snapshot(peer_pid: int, load_pid: int, core: int | None) -> dict[str, Any]:
    return {
        "wall": time.perf_counter(),
        "peer": tree_cpu_seconds(peer_pid),
        "load": tree_cpu_seconds(load_pid),
        "core": core_times(core),
        "machine": core_times(None),
    }


def peer_command(peer: str, core: int | None, log=print) -> list[str]:
    """The command that starts C{peer} listening on a free port (pipecat: its own python)."""
    pin = ["--cpu", str(core)] if core is not None else []
    if peer == "relay":
        return [sys.executable, "-m", "bench.peers.relay", "--port", "0", *pin]
    if peer == "pipecat":
        python = venv.ensure(log=log)
        script = Path(__file__).resolve().parent / "pipecat_echo.py"
        return [str(python), str(script), "--port", "0", "--path", PATH, *pin]
    raise ValueError(f"unknown peer {peer!r}; expected one of {', '.join(PEERS)}")


def _read(process: subprocess.Popen, key: str, log: Path) -> dict[str, Any]:
    """The next JSON line from a child that carries C{key}."""
    for line in process.stdout:
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if isinstance(message, dict) and key in message:
            return message
    who = " ".join(map(str, process.args[1:3]))
    raise PeerError(f"{who} ended without a {key!r} line:\n{_tail(log)}")


def _stop(*processes: subprocess.Popen | None) -> None:
    for process in processes:
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()


def run_point(
    peer: str, calls: int, *, warmup: float, duration: float, logs: Path, log=print
) -> dict[str, Any]:
    """One peer at C{calls} calls: the window's figures (see L{judge} for the verdict)."""
    peer_core, load_core = cores_for(2)
    command = peer_command(peer, peer_core, log)
    budget = warmup + duration + 60.0 + calls / 20
    peer_log = logs / f"{peer}-{calls}-peer.log"
    load_log = logs / f"{peer}-{calls}-load.log"
    with open(peer_log, "wb") as peer_err, open(load_log, "wb") as load_err:
        server = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=peer_err, text=True, cwd=venv.ROOT
        )
        if peer_core is not None:
            try:
                os.sched_setaffinity(server.pid, {peer_core})
            except OSError:
                pass
        load: subprocess.Popen | None = None
        timer = threading.Timer(budget, lambda: _stop(server, load))
        timer.start()
        try:
            ready = _read(server, "ready", peer_log)
            load_cmd = [sys.executable, "-m", "bench.loadgen", "--port", str(ready["port"])]
            load_cmd += ["--path", ready.get("path", PATH), "--max-seconds", str(budget)]
            load_cmd += ["--warmup", str(warmup), "--duration", str(duration)]
            if load_core is not None:
                load_cmd += ["--cpu", str(load_core)]
            load = subprocess.Popen(
                load_cmd,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=load_err,
                text=True,
                cwd=venv.ROOT,
            )
            load.stdin.write(json.dumps({"streams": [{} for _ in range(calls)]}) + "\n")
            load.stdin.close()
            opened = _read(load, "window", load_log)
            begin = _snapshot(server.pid, load.pid, peer_core)
            figures = _read(load, "load", load_log)["load"]
            end = _snapshot(server.pid, load.pid, peer_core)
            load.wait(timeout=30)
        finally:
            timer.cancel()
            _stop(load, server)
    window = figures.get("window") or {}
    return _figures(peer, calls, opened, window, begin, end, peer_core, load_core)


def _figures(
    peer: str,
    calls: int,
    opened: dict[str, Any],
    window: dict[str, Any],
    begin: dict[str, Any],
    end: dict[str, Any],
    peer_core: int | None,
    load_core: int | None,
) -> dict[str, Any]:
    wall = end["wall"] - begin["wall"]
    peer_cpu = end["peer"] - begin["peer"]
    load_cpu = end["load"] - begin["load"]
    sent = window.get("mediaSent") or 0
    core_busy = (_busy(end["core"]) - _busy(begin["core"])) / TICKS
    machine_busy = (_busy(end["machine"]) - _busy(begin["machine"])) / TICKS
    point = {
        "peer": peer,
        "calls": calls,
        "opened": opened.get("opened"),
        "failed": opened.get("failed"),
        "peerCore": peer_core,
        "loadCore": load_core,
        "seconds": round(wall, 3),
        "cpuSeconds": round(peer_cpu, 3),
        "cpuUtilization": round(peer_cpu / wall, 4) if wall > 0 else None,
        "inboundFrames": sent,
        "outboundFrames": window.get("mediaReceived"),
        "usPerInboundFrame": round(peer_cpu / sent * 1e6, 1) if sent else None,
        # Per frame echoed: the fairer figure where the peer fell behind and left input unread.
        "usPerOutboundFrame": (
            round(peer_cpu / window["mediaReceived"] * 1e6, 1)
            if window.get("mediaReceived")
            else None
        ),
        "outInRatio": window.get("outInRatio"),
        "gapMsP50": window.get("gapMsP50"),
        "gapMsP99": window.get("gapMsP99"),
        "gapMsMax": window.get("gapMsMax"),
        "loadCpuUtilization": round(load_cpu / wall, 4) if wall > 0 else None,
        # On the peer's core: its busy time less the peer's own (shares of that core).
        "otherOnPeerCore": round(max(0.0, core_busy - peer_cpu) / wall, 4) if wall > 0 else None,
        # On the whole machine, in cores: busy time less the peer's and the generator's.
        "otherOnMachineCores": (
            round(max(0.0, machine_busy - peer_cpu - load_cpu) / wall, 3) if wall > 0 else None
        ),
    }
    point["noLateFrame"], point["why"] = judge(point)
    return point


def judge(point: dict[str, Any]) -> tuple[bool, str]:
    """Whether a point carried every call with no late frame, and if not, why not."""
    reasons = []
    if point.get("failed"):
        reasons.append(f"{point['failed']} streams failed to open")
    cpu = point.get("cpuUtilization")
    if cpu is None or cpu >= MAX_CPU:
        reasons.append(f"cpu {cpu}")
    ratio = point.get("outInRatio")
    if ratio is None or ratio < MIN_OUT_IN:
        reasons.append(f"out/in {ratio}")
    gap = point.get("gapMsP99")
    if gap is None or gap >= MAX_GAP_P99_MS:
        reasons.append(f"p99 gap {gap} ms")
    return not reasons, "; ".join(reasons)


def summary(point: dict[str, Any]) -> str:
    """One line of a point's figures."""
    return (
        f"{point['usPerInboundFrame']} µs/frame, cpu {point['cpuUtilization']:.0%},"
        f" out/in {point['outInRatio']}, p99 gap {point['gapMsP99']} ms,"
        f" others {point['otherOnPeerCore']:.0%} of its core"
        f" ({point['otherOnMachineCores']:.2f} cores of the machine)"
        + ("" if point["noLateFrame"] else f"; late: {point['why']}")
    )


def measure(
    peer: str,
    calls: int,
    *,
    warmup: float,
    duration: float,
    logs: Path,
    retries: int = 1,
    log=print,
) -> dict[str, Any]:
    """L{run_point}, run again (up to C{retries} times) while others disturbed the peer's core."""
    attempts = []
    for attempt in range(retries + 1):
        log(
            f"peers: {peer} with {calls} calls ({warmup:g} s warm-up, {duration:g} s measured)"
            + (": again, other processes used its core" if attempt else "")
        )
        point = run_point(peer, calls, warmup=warmup, duration=duration, logs=logs, log=log)
        attempts.append(point)
        log(f"peers:   {summary(point)}")
        if (point["otherOnPeerCore"] or 0.0) <= DISTURBED:
            break
    best = min(attempts, key=lambda p: p["otherOnPeerCore"] or 0.0)
    best["attempts"] = len(attempts)
    return best


def search(
    measure_at,
    known: dict[int, dict[str, Any]],
    *,
    floor: int = 5,
    ceiling: int = 2000,
    max_points: int = 8,
    resolution: float = 0.1,
) -> int | None:
    """
    The largest N with no late frame, by doubling up and bisecting down.

    C{measure_at(n)} returns a point; C{known} holds points already measured (and receives the
    new ones).  The search stops once the bracket is within C{resolution} of its lower end
    (at least 5 calls), or after C{max_points} new points.
    """
    passing = [n for n, p in known.items() if p["noLateFrame"]]
    failing = [n for n, p in known.items() if not p["noLateFrame"]]
    low = max(passing, default=None)
    high = min((n for n in failing if low is None or n > low), default=None)
    for _ in range(max_points):
        if low is not None and high is not None:
            if high - low <= max(5, math.ceil(low * resolution)):
                break
            n = (low + high) // 2
        elif low is not None:
            if low >= ceiling:
                break
            n = min(ceiling, low * 2)
        elif high is not None:
            if high <= floor:
                break
            n = max(floor, high // 2)
        else:
            n = 50
        point = known[n] = measure_at(n)
        if point["noLateFrame"]:
            low = n
        else:
            high = n
    return low


def estimate(points: list[dict[str, Any]]) -> int | None:
    """
    Calls per core the peer's CPU alone would allow (95 % of a core), from its largest point
    with no late frame.  Where other processes crowd the peer's core the search stops early;
    this says what the peer itself costs.
    """
    on_time = [p for p in points if p["noLateFrame"] and p["cpuUtilization"]]
    if not on_time:
        return None
    best = max(on_time, key=lambda p: p["calls"])
    return int(MAX_CPU * best["calls"] / best["cpuUtilization"])


def run(
    peers: tuple[str, ...] = PEERS,
    calls: tuple[int, ...] = (50, 100),
    *,
    find_max: bool = False,
    warmup: float = 3.0,
    duration: float = 10.0,
    retries: int = 1,
    quick: bool = False,
    log=print,
) -> dict[str, Any]:
    """
    Each peer at each N of C{calls} (and, with C{find_max}, its largest N with no late frame).

    Returns C{{"pipecatVersion", "criteria", "peers": {peer: {"points": [...], "maxCalls",
    "error"}}}}; a peer that could not run carries an C{error} and no points.
    """
    results: dict[str, Any] = {
        "pipecatVersion": venv.pinned_version(),
        "criteria": {
            "cpuBelow": MAX_CPU,
            "outInAtLeast": MIN_OUT_IN,
            "gapMsP99Below": MAX_GAP_P99_MS,
        },
        "warmupSeconds": warmup,
        "durationSeconds": duration,
        "peers": {},
    }
    with tempfile.TemporaryDirectory(prefix="voicecalld-peers-") as tmp:
        for peer in peers:
            entry: dict[str, Any] = {"points": [], "maxCalls": None}
            results["peers"][peer] = entry
            known: dict[int, dict[str, Any]] = {}

            def at(n: int, peer: str = peer) -> dict[str, Any]:
                return measure(
                    peer,
                    n,
                    warmup=warmup,
                    duration=duration,
                    logs=Path(tmp),
                    retries=retries,
                    log=log,
                )

            try:
                for n in calls:
                    known[n] = at(n)
                if find_max:
                    entry["searched"] = True
                    entry["maxCalls"] = search(
                        at,
                        known,
                        max_points=2 if quick else 8,
                        resolution=0.25 if quick else 0.1,
                    )
            except (PeerError, venv.VenvError, OSError, subprocess.SubprocessError) as e:
                entry["error"] = str(e)
                log(f"peers: {peer}: {e}")
            entry["points"] = [known[n] for n in sorted(known)]
            entry["estimatedMaxCalls"] = estimate(entry["points"])
    return results


def rows(results: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """Table rows (benchmark, metric, value, target, verdict) for bench.run's table."""
    out = []
    for peer, entry in results["peers"].items():
        name = f"{peer} {results['pipecatVersion']}" if peer == "pipecat" else peer
        if entry.get("error") and not entry["points"]:
            out.append(("peers", f"{name}: error", entry["error"][:60], "", "error"))
            continue
        for p in entry["points"]:
            out.append(
                (
                    "peers",
                    f"{name} @{p['calls']}",
                    f"{p['usPerInboundFrame']} µs/frame, cpu {p['cpuUtilization']:.0%},"
                    f" out/in {p['outInRatio']}, p99 gap {p['gapMsP99']} ms",
                    "",
                    "ok" if p["noLateFrame"] else "late",
                )
            )
        if entry["maxCalls"] is not None or entry.get("searched"):
            out.append(("peers", f"{name} max calls/core", str(entry["maxCalls"]), "", ""))
        if entry.get("estimatedMaxCalls") is not None:
            out.append(
                ("peers", f"{name} calls/core by its CPU", str(entry["estimatedMaxCalls"]), "", "")
            )
    return out


def notes(results: dict[str, Any]) -> list[str]:
    """One line per point that was late or disturbed."""
    out = []
    for peer, entry in results["peers"].items():
        for p in entry["points"]:
            flags = []
            if not p["noLateFrame"]:
                flags.append(f"late: {p['why']}")
            if (p["otherOnPeerCore"] or 0) > DISTURBED:
                flags.append(f"other processes took {p['otherOnPeerCore']:.0%} of its core")
            if flags:
                out.append(f"{peer} @{p['calls']}: " + ", ".join(flags))
    return out
