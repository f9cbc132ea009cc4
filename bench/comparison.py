"""
The side-by-side table of issue 15: the real daemon (per carrier), pipecat and the bare relay,
each measured from outside by the same generator and judged by the same verdict.

L{compare} reads the C{system} and C{peers} figures of C{bench/results.json} and returns, per
system: the largest N per core with no late frame (searched, or else the largest measured
point that passed), and µs of CPU per inbound frame at an equal N; then the ratios the issue's
targets name, each with pass/miss.
"""

from __future__ import annotations

from typing import Any

#: Daemon calls per core at least this many times pipecat's.
CALLS_VS_PIPECAT = 4.0
#: Daemon µs per inbound frame at most this many times the relay's, at equal N.
US_VS_RELAY = 1.2
#: Resident memory per speaking call below this.
KIB_PER_CALL = 100.0


def _largest(entry: dict[str, Any], searched_key: str) -> tuple[int | None, str]:
    """The largest N with no late frame, and whether it was searched or only measured."""
    if entry.get(searched_key) is not None:
        return entry[searched_key], "searched"
    passing = [p["calls"] for p in entry.get("points", []) if p.get("noLateFrame")]
    return (max(passing) if passing else None), "largest measured point, not searched"


def _at(entry: dict[str, Any], n: int | None) -> dict[str, Any] | None:
    return next((p for p in entry.get("points", []) if p["calls"] == n), None)


def _equal_n(daemon: dict[str, Any], relay: dict[str, Any]) -> int | None:
    """The largest N both measured and both passed; else the largest N both measured."""
    ours = {p["calls"]: p for p in daemon.get("points", [])}
    theirs = {p["calls"]: p for p in relay.get("points", [])}
    common = sorted(set(ours) & set(theirs))
    passed = [n for n in common if ours[n]["noLateFrame"] and theirs[n]["noLateFrame"]]
    if passed:
        return passed[-1]
    return common[-1] if common else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a is not None and b else None


def _verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("pass" if ok else "miss")


def compare(system: dict[str, Any], peers: dict[str, Any]) -> dict[str, Any]:
    """The comparison per carrier (see the module's docstring); missing figures are None."""
    pipecat = (peers.get("peers") or {}).get("pipecat") or {}
    relay = (peers.get("peers") or {}).get("relay") or {}
    pipecat_max, pipecat_basis = _largest(pipecat, "maxCalls")
    relay_max, relay_basis = _largest(relay, "maxCalls")
    out: dict[str, Any] = {
        "targets": {
            "callsPerCoreVsPipecatAtLeast": CALLS_VS_PIPECAT,
            "usPerFrameVsRelayAtMost": US_VS_RELAY,
            "kibPerSpeakingCallBelow": KIB_PER_CALL,
        },
        "pipecat": {"maxCallsPerCore": pipecat_max, "basis": pipecat_basis},
        "relay": {"maxCallsPerCore": relay_max, "basis": relay_basis},
        "carriers": {},
    }
    for carrier, entry in (system.get("carriers") or {}).items():
        if "error" in entry:
            out["carriers"][carrier] = {"error": entry["error"]}
            continue
        largest, basis = _largest(entry, "largestNoLateFrame")
        n = _equal_n(entry, relay)
        ours, theirs, pipe = _at(entry, n), _at(relay, n), _at(pipecat, n)
        us = ours and ours.get("usPerInboundFrame")
        relay_us = theirs and theirs.get("usPerInboundFrame")
        on_time = [p for p in entry.get("points", []) if p.get("noLateFrame")]
        memory = max(on_time or entry.get("points", []), key=lambda p: p["calls"], default=None)
        kib = memory and memory.get("kibPerLiveCall")
        vs_pipecat = _ratio(largest, pipecat_max)
        vs_relay = _ratio(us, relay_us)
        out["carriers"][carrier] = {
            "maxCallsPerCore": largest,
            "basis": basis,
            "equalN": n,
            "usPerInboundFrame": us,
            "relayUsPerInboundFrame": relay_us,
            "pipecatUsPerInboundFrame": pipe and pipe.get("usPerInboundFrame"),
            "callsVsPipecat": vs_pipecat,
            "callsVsPipecatVerdict": _verdict(
                None if vs_pipecat is None else vs_pipecat >= CALLS_VS_PIPECAT
            ),
            "usVsRelay": vs_relay,
            "usVsRelayVerdict": _verdict(None if vs_relay is None else vs_relay <= US_VS_RELAY),
            "kibPerSpeakingCall": kib,
            "kibAtCalls": memory and memory["calls"],
            "kibVerdict": _verdict(None if kib is None else kib < KIB_PER_CALL),
        }
    return out


def _fmt(value: Any) -> str:
    return "-" if value is None else str(value)


def rows(comparison: dict[str, Any]) -> list[tuple[str, ...]]:
    """Table rows (benchmark, metric, value, target, pass/fail) for bench.run."""
    out: list[tuple[str, ...]] = []
    for peer in ("pipecat", "relay"):
        p = comparison[peer]
        out.append(
            (
                "comparison",
                f"{peer}: calls/core, no late frame",
                f"{_fmt(p['maxCallsPerCore'])} ({p['basis']})",
                "",
                "",
            )
        )
    for carrier, c in comparison["carriers"].items():
        name = f"comparison/{carrier}"
        if "error" in c:
            out.append((name, "error", c["error"][:60], "", "error"))
            continue
        n = c["equalN"]
        out += [
            (
                name,
                "daemon calls/core, no late frame",
                f"{_fmt(c['maxCallsPerCore'])} ({c['basis']})",
                "",
                "",
            ),
            (
                name,
                f"µs/inbound frame @{_fmt(n)}: daemon / relay / pipecat",
                f"{_fmt(c['usPerInboundFrame'])} / {_fmt(c['relayUsPerInboundFrame'])}"
                f" / {_fmt(c['pipecatUsPerInboundFrame'])}",
                "",
                "",
            ),
            (
                name,
                "daemon calls/core ÷ pipecat's",
                _fmt(c["callsVsPipecat"]),
                f">= {CALLS_VS_PIPECAT:g}",
                c["callsVsPipecatVerdict"],
            ),
            (
                name,
                f"daemon µs/frame ÷ relay's @{_fmt(n)}",
                _fmt(c["usVsRelay"]),
                f"<= {US_VS_RELAY:g}",
                c["usVsRelayVerdict"],
            ),
            (
                name,
                f"KiB per speaking call @{_fmt(c['kibAtCalls'])}",
                _fmt(c["kibPerSpeakingCall"]),
                f"< {KIB_PER_CALL:g}",
                c["kibVerdict"],
            ),
        ]
    return out
