"""
Frames benchmark: microseconds of server CPU per Twilio media frame, voicecalld against a bare
autobahn relay, at 100 and 400 concurrent streams over real loopback WebSockets.

For each contender and stream count this starts two processes: the server under test
(L{bench.frames_server}, pinned to one core) and a load generator playing Twilio
(L{bench.loadgen}, pinned to another).  The server measures its own CPU time over a fixed window
after warm-up and divides it by the inbound frames it handled; the load generator's CPU is not
counted.  C{python -m bench.frames} prints a table; L{run} returns the figures for bench.run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from bench._common import cores_for

TARGET_RATIO = 1.5
DEFAULT_STREAMS = (100, 400)
KINDS = ("relay", "voicecalld")


class BenchError(RuntimeError):
    """A benchmark run did not produce figures."""


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def run_one(
    kind: str, streams: int, *, warmup: float, duration: float, logs: Path
) -> dict[str, Any]:
    """One contender at one stream count: the server's and the load generator's figures."""
    server_core, load_core = cores_for(2)
    python = sys.executable
    server_log = logs / f"{kind}-{streams}-server.log"
    load_log = logs / f"{kind}-{streams}-load.log"
    server_cmd = [python, "-m", "bench.frames_server", kind, "--streams", str(streams)]
    server_cmd += ["--warmup", str(warmup), "--duration", str(duration)]
    if server_core is not None:
        server_cmd += ["--cpu", str(server_core)]
    budget = warmup + duration + 60.0
    with open(server_log, "wb") as server_err, open(load_log, "wb") as load_err:
        server = subprocess.Popen(
            server_cmd, stdout=subprocess.PIPE, stderr=server_err, text=True, cwd=_root()
        )
        load: subprocess.Popen | None = None
        timer = threading.Timer(budget, _kill, (server, lambda: load))
        timer.start()
        try:
            ready = _read(server, "ready", server_log)
            credentials = ready["streams"] or [{} for _ in range(streams)]
            load_cmd = [python, "-m", "bench.loadgen", "--port", str(ready["port"])]
            load_cmd += ["--path", ready["path"], "--max-seconds", str(budget)]
            if load_core is not None:
                load_cmd += ["--cpu", str(load_core)]
            load = subprocess.Popen(
                load_cmd,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=load_err,
                text=True,
                cwd=_root(),
            )
            load.stdin.write(json.dumps({"streams": credentials}) + "\n")
            load.stdin.close()
            result = _read(server, "result", server_log)
            load_figures = _read(load, "load", load_log)
            load.wait(timeout=30)
            server.wait(timeout=30)
        finally:
            timer.cancel()
            _kill(server, lambda: load)
    return {
        "kind": kind,
        "streams": streams,
        "serverCore": server_core,
        "loadCore": load_core,
        "server": result,
        "load": load_figures,
        "serverWarnings": _tail(server_log, 5) or None,
    }


def _root() -> str:
    return str(Path(__file__).resolve().parent.parent)


def _read(process: subprocess.Popen, key: str, log: Path) -> Any:
    """The next JSON line from a child that carries C{key}."""
    for line in process.stdout:
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if key in message:
            return message[key] if key != "ready" else message
    raise BenchError(f"{' '.join(process.args[1:4])} ended without a {key!r} line:\n{_tail(log)}")


def _kill(server: subprocess.Popen, load: Any) -> None:
    for process in (server, load()):
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()


def contention(server: dict[str, Any]) -> float:
    """Share of the server's core used by other processes during the window."""
    shares = server.get("coreTimeShares") or {}
    busy = shares.get("user", 0.0) + shares.get("nice", 0.0) + shares.get("system", 0.0)
    return round(max(0.0, busy - server["cpuUtilization"]), 4)


def saturated(server: dict[str, Any]) -> bool:
    """Whether the server's core had no idle time left (the server was at its limit)."""
    shares = server.get("coreTimeShares") or {}
    return shares.get("idle", 0.0) + shares.get("iowait", 0.0) < 0.02


def run(
    streams: tuple[int, ...] = DEFAULT_STREAMS,
    *,
    warmup: float = 3.0,
    duration: float = 10.0,
    retries: int = 2,
    log=print,
) -> dict[str, Any]:
    """
    Both contenders at each stream count; per count, their µs/frame and the ratio.

    A run during which other processes took more than 5% of the server's core is repeated
    (C{retries} times at most) and the least disturbed attempt is kept.
    """
    runs = []
    summary = []
    with tempfile.TemporaryDirectory(prefix="voicecalld-bench-") as tmp:
        for count in streams:
            figures: dict[str, Any] = {}
            for kind in KINDS:
                attempts = []
                for attempt in range(retries + 1):
                    log(
                        f"frames: {kind} with {count} streams"
                        f" ({warmup:g} s warm-up, {duration:g} s measured)"
                        + (" again: other processes used its core" if attempt else "")
                    )
                    one = run_one(kind, count, warmup=warmup, duration=duration, logs=Path(tmp))
                    one["contention"] = contention(one["server"])
                    one["saturated"] = saturated(one["server"])
                    attempts.append(one)
                    if one["contention"] <= 0.05:
                        break
                best = min(attempts, key=lambda a: a["contention"])
                best["attempts"] = len(attempts)
                runs.append(best)
                figures[kind] = best["server"]["usPerInboundFrame"]
            relay, ours = figures["relay"], figures["voicecalld"]
            ratio = round(ours / relay, 3) if relay and ours else None
            summary.append(
                {
                    "streams": count,
                    "relayUsPerFrame": relay,
                    "voicecalldUsPerFrame": ours,
                    "ratio": ratio,
                    "target": TARGET_RATIO,
                    "pass": ratio is not None and ratio <= TARGET_RATIO,
                }
            )
    return {"summary": summary, "runs": runs}


def rows(results: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """Table rows: (benchmark, metric, value, target, verdict)."""
    out = []
    by_key = {(r["kind"], r["streams"]): r for r in results["runs"]}
    for item in results["summary"]:
        n = item["streams"]
        for kind in KINDS:
            server = by_key[(kind, n)]["server"]
            value = f"{server['usPerInboundFrame']}"
            out.append(("frames", f"{kind} µs/frame @{n}", value, "", ""))
        ratio = item["ratio"]
        out.append(
            (
                "frames",
                f"voicecalld/relay @{n}",
                f"{ratio:.2f}x" if ratio is not None else "n/a",
                f"<= {TARGET_RATIO}x",
                "pass" if item["pass"] else "FAIL",
            )
        )
        server = by_key[("voicecalld", n)]["server"]
        out.append(
            (
                "frames",
                f"voicecalld frames out @{n}",
                f"{server['outboundFrames']} ({server['outboundShortfall']:.1%} short)",
                "",
                "",
            )
        )
    return out


def notes(results: dict[str, Any]) -> list[str]:
    """One line per run: CPU use, saturation, drops, the load generator's health."""
    out = []
    for r in results["runs"]:
        s, load = r["server"], r["load"]
        flags = []
        if r["saturated"]:
            flags.append("core saturated")
        if r["contention"] > 0.05:
            flags.append(f"other processes took {r['contention']:.0%} of the core")
        out.append(
            f"{r['kind']} @{r['streams']}: server cpu {s['cpuUtilization']:.0%}"
            f" (user {s['usUserPerInboundFrame']} + sys {s['usSystemPerInboundFrame']} µs/frame),"
            f" in {s['inboundFrames']} / out {s['outboundFrames']} of"
            f" {s['expectedFramesEachWay']} expected, reactor lag max {s['reactorLagMsMax']} ms,"
            f" load generator cpu {load['cpuUtilization']:.0%}"
            f" (tick lateness p99 {load['tickLatenessMsP99']} ms)"
            + (
                f", resident memory {s['rssKiBPerStream']} KiB per stream"
                if s.get("rssKiBPerStream") is not None
                else ""
            )
            + (f"; {', '.join(flags)}" if flags else "")
        )
    return out


def main(argv: list[str] | None = None) -> None:
    """Run the frames benchmark alone and print its table (and JSON with --json)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", default=",".join(map(str, DEFAULT_STREAMS)))
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--json", action="store_true", help="print only the figures, as JSON")
    args = parser.parse_args(argv)
    streams = tuple(int(s) for s in args.streams.split(","))
    log = (lambda m: print(m, file=sys.stderr)) if args.json else print
    results = run(streams, warmup=args.warmup, duration=args.duration, log=log)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    from bench.run import table

    print(table(rows(results)))
    for line in notes(results):
        print("  " + line)


if __name__ == "__main__":
    main()
