"""
The system benchmark: the real daemon process carrying N streamed calls on one core.

C{python -m bench.system [--carrier twilio|telnyx|plivo|all] [--calls 50,100,...]
[--search] [--duration S] [--warmup S] [--quick] [--json]}

Each point starts a fresh C{twistd -n voicecalld} pinned to core 0, the vendor fakes and the
load generator on core 1 (L{bench.system.point}).  Without C{--search} it measures each of
C{--calls}; with it, it steps up through C{--calls} until a point has a late frame, then
bisects between the last good and the first bad point (to L{RESOLUTION} calls), and reports
the largest N with no late frame.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bench.system.point import measure

CARRIERS = ("twilio", "telnyx", "plivo")
DEFAULT_CALLS = (100, 200, 300, 400, 500)
QUICK_CALLS = (20,)
RESOLUTION = 25


def search(carrier: str, steps: tuple[int, ...], log: Any, **kw: Any) -> dict[str, Any]:
    """Step up through C{steps}, then bisect: the largest N with no late frame."""
    points: list[dict[str, Any]] = []

    def at(n: int) -> bool:
        point = measure(carrier, n, **kw)
        points.append(point)
        log(point)
        return point["noLateFrame"]

    good, bad = 0, None
    for n in steps:
        if at(n):
            good = n
        else:
            bad = n
            break
    if bad is not None:
        while bad - good > RESOLUTION:
            middle = (good + bad) // 2
            if at(middle):
                good = middle
            else:
                bad = middle
    return {"largestNoLateFrame": good or None, "firstLate": bad, "points": points}


def run(
    carriers: tuple[str, ...],
    calls: tuple[int, ...],
    *,
    do_search: bool,
    warmup: float,
    duration: float,
    vendors_root: Path | None = None,
    rerun: bool = True,
    log: Any = None,
) -> dict[str, Any]:
    """Every carrier's points (or search); the figures as bench.run stores them."""
    log = log or (lambda point: None)
    kw = {"warmup": warmup, "duration": duration, "vendors_root": vendors_root, "rerun": rerun}
    out: dict[str, Any] = {"warmupSeconds": warmup, "durationSeconds": duration, "carriers": {}}
    for carrier in carriers:
        try:
            if do_search:
                out["carriers"][carrier] = search(carrier, calls, log, **kw)
            else:
                points = []
                for n in calls:
                    points.append(measure(carrier, n, **kw))
                    log(points[-1])
                out["carriers"][carrier] = {"points": points}
        except Exception as e:
            out["carriers"][carrier] = {"error": f"{type(e).__name__}: {e}"}
    return out


def _fmt(value: Any) -> str:
    return "-" if value is None else str(value)


def rows(figures: dict[str, Any]) -> list[tuple[str, ...]]:
    """Table rows (benchmark, metric, value, target, pass/fail) for bench.run."""
    out: list[tuple[str, ...]] = []
    for carrier, result in figures.get("carriers", {}).items():
        name = f"system/{carrier}"
        if "error" in result:
            out.append((name, "error", result["error"][:60], "", "error"))
            continue
        if "largestNoLateFrame" in result:
            out.append(
                (name, "calls per core, no late frame", _fmt(result["largestNoLateFrame"]), "", "")
            )
        for p in result["points"]:
            n = p["calls"]
            gap = p["outboundGapMs"].get("p99")
            verdict = "pass" if p["noLateFrame"] else "late"
            out.append(
                (name, f"{n} calls: daemon CPU", f"{p['cpuUtilization']:.0%}", "< 95 %", verdict)
            )
            out.append(
                (name, f"{n} calls: µs CPU / inbound frame", _fmt(p["usPerInboundFrame"]), "", "")
            )
            out.append(
                (name, f"{n} calls: out/in audio (whole window)", _fmt(p["outInRatio"]), "", "")
            )
            out.append(
                (
                    name,
                    f"{n} calls: audio rate within utterances",
                    _fmt(p["speakingRate"]),
                    ">= 0.98",
                    "",
                )
            )
            out.append((name, f"{n} calls: p99 outbound gap ms", _fmt(gap), "< 60", ""))
            pacing = p["pacingLatenessMs"]
            out.append(
                (
                    name,
                    f"{n} calls: pacing lateness ms p50/p99",
                    f"{_fmt(pacing['p50'])}/{_fmt(pacing['p99'])}",
                    "",
                    "",
                )
            )
            for key, label in (
                ("oursBeforeReplyMs", "STT final -> reply request"),
                ("oursToFirstFrameMs", "TTS first byte -> first frame"),
            ):
                s = p[key]
                target = "p99 < 5"
                ok = "" if s["p99"] is None else ("pass" if s["p99"] < 5 else "fail")
                out.append(
                    (
                        name,
                        f"{n} calls: {label} ms p50/p99",
                        f"{_fmt(s['p50'])}/{_fmt(s['p99'])} (n={s['n']})",
                        target,
                        ok,
                    )
                )
            b = p["bargeInToClearMs"]
            out.append(
                (
                    name,
                    f"{n} calls: barge-in -> clear ms p99",
                    f"{_fmt(b['p99'])} (n={b['n']})",
                    "",
                    "",
                )
            )
            out.append(
                (name, f"{n} calls: KiB per live call", _fmt(p["kibPerLiveCall"]), "< 100", "")
            )
            out.append(
                (
                    name,
                    f"{n} calls: other CPU (cores) / daemon core taken",
                    f"{p['otherCpuCores']}/{p['daemonCoreTakenByOthers']:.0%}",
                    "",
                    "",
                )
            )
    return out


def notes(figures: dict[str, Any]) -> list[str]:
    """Lines under the table."""
    out = [
        "system: the real twistd -n voicecalld on core 0, generator and vendor fakes on core 1;"
        " 'other CPU' is everything the machine ran besides the daemon (generator and fakes"
        " included); a point whose core others took more than 10 % of is rerun once",
        "system: outbound gaps are timed by the generator within an utterance (reset at each"
        " utterance's end mark and at a clear); pacing lateness is the daemon's own histogram"
        " (bucket bounds); the turn stages come from its turn.latency notices (voicecall tail);"
        " barge-in -> clear pairs the vendors' barge-in times with the next clear seen",
    ]
    for carrier, result in figures.get("carriers", {}).items():
        for p in result.get("points", []):
            if p.get("vendors") == "standin":
                out.append(f"system/{carrier}: stand-in vendors (no turns): turn figures missing")
                break
            if p.get("disturbedTwice"):
                out.append(
                    f"system/{carrier} {p['calls']} calls: disturbed twice, treat with suspicion"
                )
    return out


def main(argv: list[str] | None = None) -> int:
    """Run and print the table (or the JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--carrier", choices=(*CARRIERS, "all"), default="all")
    parser.add_argument("--calls", default=None, help="comma-separated call counts")
    parser.add_argument("--search", action="store_true")
    parser.add_argument("--duration", type=float, default=None)
    parser.add_argument("--warmup", type=float, default=None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--vendors-root", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    carriers = CARRIERS if args.carrier == "all" else (args.carrier,)
    default_calls = QUICK_CALLS if args.quick else DEFAULT_CALLS
    calls = tuple(int(n) for n in args.calls.split(",")) if args.calls else default_calls
    duration = args.duration or (3.0 if args.quick else 15.0)
    warmup = args.warmup if args.warmup is not None else (1.5 if args.quick else 5.0)

    def log(point: dict[str, Any]) -> None:
        print(
            f"system/{point['carrier']} {point['calls']} calls: cpu {point['cpuUtilization']:.0%},"
            f" {point['usPerInboundFrame']} µs/frame, out/in {point['outInRatio']},"
            f" rate in utterances {point['speakingRate']},"
            f" p99 gap {point['outboundGapMs'].get('p99')} ms,"
            f" core taken by others {point['daemonCoreTakenByOthers']:.0%}"
            f" -> {'ok' if point['noLateFrame'] else 'late'}",
            file=sys.stderr,
        )

    figures = run(
        carriers,
        calls,
        do_search=args.search,
        warmup=warmup,
        duration=duration,
        vendors_root=args.vendors_root,
        rerun=not args.quick,
        log=log,
    )
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        from bench.run import table

        print(table(rows(figures)))
        for line in notes(figures):
            print(f"- {line}")
    return 1 if any("error" in r for r in figures["carriers"].values()) else 0
