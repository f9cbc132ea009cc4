"""
Drives a peer with the system benchmark's generator and measures what one core of it carries.

One point is one peer at N calls: the peer starts pinned to one core and announces its port;
C{python -m bench.system.generator --direct ws://127.0.0.1:PORT/PATH}, pinned to another core,
opens N Twilio media streams, paces 50 frames/s on each and measures a window of its own
(frames sent and received, gaps between received frames) -- the generator that plays the
carrier to the real daemon.  The peer's CPU over that window is read from C{/proc} for the
peer and all its descendants; the generator's is read the same way and never charged to the
peer.  "Other" CPU is what the peer's core, and the whole machine, spent on anything else
meanwhile; a point whose core others disturbed is run again.  A point has no late frame by the
system benchmark's own L{bench._common.verdict}.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench._common import MAX_CPU, MAX_GAP_P99_MS, MIN_SPEAKING_RATE, core_times, cores_for, verdict
from bench._daemon import CLOCK_TICKS, PROCESS_TIME, busy, set_core, tree_cpu_seconds
from bench.peers import venv
from bench.system.children import Child

PEERS = ("pipecat", "relay")
PATH = "/voice/stream"
# A point during which other processes took more of the peer's core than this is rerun.
DISTURBED = 0.05


class PeerError(RuntimeError):
    """A peer or the load generator did not produce figures."""


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


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
    """One peer at C{calls} calls: the window's figures and L{verdict}."""
    peer_core, load_core = cores_for(2)
    command = peer_command(peer, peer_core, log)
    ramp = 30.0 + calls / 20
    peer_log = logs / f"{peer}-{calls}-peer.log"
    load_log = logs / f"{peer}-{calls}-load.log"
    generator: Child | None = None
    with open(peer_log, "wb") as peer_err:
        server = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=peer_err, text=True, cwd=venv.ROOT
        )
        set_core(server.pid, peer_core)
        # A peer that never says it is ready is killed, which ends the read.
        starting = threading.Timer(180.0, _stop, (server,))
        starting.start()
        try:
            try:
                ready = _read(server, "ready", peer_log)
            finally:
                starting.cancel()
            url = f"ws://127.0.0.1:{ready['port']}{ready.get('path', PATH)}"
            pin = ["--cpu", str(load_core)] if load_core is not None else []
            generator = Child(
                "bench.system.generator", "--direct", url, *pin, stderr=load_log, cwd=venv.ROOT
            )
            generator.expect("ready", timeout=60)
            generator.send({"cmd": "calls", "count": calls, "timeout": ramp})
            up = generator.expect("up", timeout=ramp + 30)
            time.sleep(warmup)
            generator.send({"cmd": "begin"})
            generator.expect("begun", timeout=30)
            begin = _snapshot(server.pid, generator.process.pid, peer_core)
            time.sleep(duration)
            generator.send({"cmd": "end"})
            window = generator.expect("window", timeout=30)
            end = _snapshot(server.pid, generator.process.pid, peer_core)
        except (TimeoutError, RuntimeError) as e:
            raise PeerError(f"{peer} at {calls} calls: {e}\n{_tail(load_log)}") from e
        finally:
            if generator is not None:
                generator.stop()
            _stop(server)
    return _figures(peer, calls, up, window, begin, end, peer_core, load_core)


def _figures(
    peer: str,
    calls: int,
    up: dict[str, Any],
    window: dict[str, Any],
    begin: dict[str, Any],
    end: dict[str, Any],
    peer_core: int | None,
    load_core: int | None,
) -> dict[str, Any]:
    wall = end["wall"] - begin["wall"]
    peer_cpu = end["peer"] - begin["peer"]
    load_cpu = end["load"] - begin["load"]
    sent, received = window.get("sent") or 0, window.get("received") or 0
    core_busy = busy(begin["core"], end["core"], PROCESS_TIME)[0] / CLOCK_TICKS
    machine_busy = busy(begin["machine"], end["machine"], PROCESS_TIME)[0] / CLOCK_TICKS
    gaps = window.get("gapMs") or {}
    point = {
        "peer": peer,
        "calls": calls,
        "opened": up.get("streams"),
        "failed": up.get("failed"),
        "live": window.get("live"),
        "peerCore": peer_core,
        "loadCore": load_core,
        "seconds": round(wall, 3),
        "cpuSeconds": round(peer_cpu, 3),
        "cpuUtilization": round(peer_cpu / wall, 4) if wall > 0 else None,
        "inboundFrames": sent,
        "outboundFrames": received,
        "usPerInboundFrame": round(peer_cpu / sent * 1e6, 1) if sent else None,
        # Per frame echoed: the fairer figure where the peer fell behind and left input unread.
        "usPerOutboundFrame": round(peer_cpu / received * 1e6, 1) if received else None,
        "outInRatio": round(received / sent, 4) if sent else None,
        "speakingRate": window.get("speakingRate"),
        "outboundGapMs": gaps,
        "gapMsP50": gaps.get("p50"),
        "gapMsP99": gaps.get("p99"),
        "gapMsMax": window.get("gapMsMax"),
        "loadCpuUtilization": round(load_cpu / wall, 4) if wall > 0 else None,
        # On the peer's core: its busy time less the peer's own (shares of that core).
        "otherOnPeerCore": round(max(0.0, core_busy - peer_cpu) / wall, 4) if wall > 0 else None,
        # On the whole machine, in cores: busy time less the peer's and the generator's.
        "otherOnMachineCores": (
            round(max(0.0, machine_busy - peer_cpu - load_cpu) / wall, 3) if wall > 0 else None
        ),
    }
    point["noLateFrame"], point["why"] = verdict(point)
    return point


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
            "speakingRateAtLeast": MIN_SPEAKING_RATE,
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
