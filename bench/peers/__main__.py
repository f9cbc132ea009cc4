"""
C{python -m bench.peers [--peer pipecat|relay|all] [--calls 50,100] [--search] [--duration S]
[--quick] [--json]}: each peer at each N, and with C{--search} its largest N per core with no
late frame (CPU < 95 %, outbound/inbound >= 0.98, p99 outbound gap < 60 ms).
"""

from __future__ import annotations

import argparse
import json
import sys

from bench.peers import driver


def main(argv: list[str] | None = None) -> None:
    """Run the peers, print a table (or JSON with --json)."""
    parser = argparse.ArgumentParser(prog="python -m bench.peers", description=__doc__)
    parser.add_argument("--peer", choices=(*driver.PEERS, "all"), default="all")
    parser.add_argument("--calls", default=None, help="comma-separated call counts (50,100)")
    parser.add_argument("--search", action="store_true", help="find the largest N with no late")
    parser.add_argument("--duration", type=float, default=None, help="measured seconds (10)")
    parser.add_argument("--warmup", type=float, default=None, help="seconds before it (3)")
    parser.add_argument("--retries", type=int, default=1, help="reruns of a disturbed point")
    parser.add_argument("--quick", action="store_true", help="short points, coarse search")
    parser.add_argument("--json", action="store_true", help="print only the figures, as JSON")
    args = parser.parse_args(argv)
    peers = driver.PEERS if args.peer == "all" else (args.peer,)
    default_calls = "50" if args.quick else "50,100"
    calls = tuple(int(n) for n in (args.calls or default_calls).split(","))
    duration = args.duration if args.duration is not None else (2.0 if args.quick else 10.0)
    warmup = args.warmup if args.warmup is not None else (1.0 if args.quick else 3.0)
    log = (lambda m: print(m, file=sys.stderr)) if args.json else print
    results = driver.run(
        peers,
        calls,
        find_max=args.search,
        warmup=warmup,
        duration=duration,
        retries=0 if args.quick else args.retries,
        quick=args.quick,
        log=log,
    )
    if args.json:
        print(json.dumps(results, indent=2))
        return
    from bench.run import table

    print(table(driver.rows(results)))
    for line in driver.notes(results):
        print("  " + line)


if __name__ == "__main__":
    main()
