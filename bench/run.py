"""
Runs every benchmark (C{python -m bench.run}, C{make bench}): prints one table and writes
C{bench/results.json}.  It reports and does not gate: a missed target still exits 0 (only a
benchmark that could not run at all makes it exit 1).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import comparison, control, startup, turns, webhooks
from bench._common import machine
from bench.peers import driver as peers
from bench.system import runner as system

RESULTS = Path(__file__).resolve().parent / "results.json"
HEADER = ("benchmark", "metric", "value", "target", "pass/fail")
TMPFS = "/dev/shm"


def table(rows: list[tuple[str, ...]]) -> str:
    """The rows under L{HEADER}, in aligned columns."""
    lines = [HEADER, *rows]
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(HEADER))]
    out = []
    for n, line in enumerate(lines):
        out.append("  ".join(str(cell).ljust(w) for cell, w in zip(line, widths, strict=True)))
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in out)


def run_turns(turns_per_call: int, store_dir: str | None) -> dict[str, Any]:
    """The turns benchmark in a child process (each run needs a fresh reactor)."""
    command = [sys.executable, "-m", "bench.turns", "--json"]
    command += ["--turns-per-call", str(turns_per_call)]
    if store_dir:
        command += ["--store-dir", store_dir]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=Path(__file__).resolve().parent.parent,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"bench.turns failed: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks; print the table and notes; write the results file."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--warmup", type=float, default=3.0, help="peers' warm-up seconds")
    parser.add_argument("--duration", type=float, default=10.0, help="peers' window seconds")
    parser.add_argument("--turns-per-call", type=int, default=100)
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--quick", action="store_true", help="a reduced run, in seconds")
    parser.add_argument("--system-calls", default=None, help="the system benchmark's call counts")
    parser.add_argument("--system-search", action="store_true")
    parser.add_argument("--peer-calls", default=None, help="the peers' call counts")
    parser.add_argument("--peer-search", action="store_true", help="the peers' largest N")
    args = parser.parse_args(argv)
    if args.quick:
        args.warmup, args.duration, args.turns_per_call = 1.0, 2.0, 10
    began = time.time()
    results: dict[str, Any] = {
        "machine": machine(),
        "startedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(began)),
    }
    rows: list[tuple[str, ...]] = []
    notes: list[str] = []
    failed = False

    results["turns"] = {}
    for label, where in (("disk", None), ("tmpfs", TMPFS if os.path.isdir(TMPFS) else None)):
        if label == "tmpfs" and where is None:
            continue
        print(f"turns: store on {label} ({where or 'the temp dir'})", file=sys.stderr)
        try:
            figures = run_turns(args.turns_per_call, where)
        except Exception as e:
            failed = True
            results["turns"][label] = {"error": str(e)}
            rows.append(("turns", f"error ({label})", type(e).__name__, "", "error"))
            notes.append(f"turns ({label}): {e}")
            continue
        results["turns"][label] = figures
        rows += turns.rows(figures, "" if label == "disk" else f"store on {label}")
        if label == "disk":
            notes.append(
                f"turns: {figures['turns']} turns on {figures['calls']} calls, store in"
                f" {figures['storeDir']}; 'ours' runs from the final transcript event to the"
                " reply's first frame with instant vendors; other processes used"
                f" {figures['machineShareUsedByOthers']:.0%} of the machine meanwhile"
            )

    # The real daemon's process (issue 15): each returns its figures, rows and notes.
    for name, module in (("control", control), ("webhooks", webhooks), ("startup", startup)):
        print(f"{name}: the real daemon", file=sys.stderr)
        try:
            figures = module.run(quick=args.quick)
        except Exception as e:
            failed = True
            results[name] = {"error": str(e)}
            rows.append((name, "error", type(e).__name__, "", "error"))
            notes.append(f"{name}: {e}")
            continue
        results[name] = figures
        rows += module.rows(figures)
        notes += module.notes(figures)

    print("system: the real daemon under N streamed calls", file=sys.stderr)
    try:
        calls = system.QUICK_CALLS if args.quick else system.DEFAULT_CALLS
        if args.system_calls:
            calls = tuple(int(n) for n in args.system_calls.split(","))
        figures = system.run(
            system.CARRIERS,
            calls,
            do_search=args.system_search,
            warmup=1.5 if args.quick else 5.0,
            duration=3.0 if args.quick else 15.0,
            rerun=not args.quick,
        )
        results["system"] = figures
        rows += system.rows(figures)
        notes += system.notes(figures)
        failed = failed or any("error" in r for r in figures["carriers"].values())
    except Exception as e:
        failed = True
        results["system"] = {"error": str(e)}
        rows.append(("system", "error", type(e).__name__, "", "error"))
        notes.append(f"system: {e}")

    print("peers: pipecat and the bare relay on the same generator", file=sys.stderr)
    try:
        quick_calls = ",".join(map(str, system.QUICK_CALLS))
        peer_calls = args.peer_calls or (quick_calls if args.quick else "100,200")
        figures = peers.run(
            peers.PEERS,
            tuple(int(n) for n in peer_calls.split(",")),
            find_max=args.peer_search,
            warmup=args.warmup,
            duration=args.duration,
            retries=0 if args.quick else 1,
            quick=args.quick,
            log=lambda line: print(line, file=sys.stderr),
        )
        results["peers"] = figures
        rows += peers.rows(figures)
        notes += peers.notes(figures)
        failed = failed or any(
            e.get("error") and not e["points"] for e in figures["peers"].values()
        )
    except Exception as e:
        failed = True
        results["peers"] = {"error": str(e)}
        rows.append(("peers", "error", type(e).__name__, "", "error"))
        notes.append(f"peers: {e}")

    if "carriers" in results.get("system", {}) and "peers" in results.get("peers", {}):
        results["comparison"] = comparison.compare(results["system"], results["peers"])
        rows += comparison.rows(results["comparison"])

    results["durationSeconds"] = round(time.time() - began, 1)
    results["table"] = [dict(zip(HEADER, row, strict=True)) for row in rows]
    print()
    print(table(rows))
    if notes:
        print()
        for line in notes:
            print(f"- {line}")
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {args.output} ({results['durationSeconds']} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
