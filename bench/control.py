"""
Control RPC latency of the real daemon (issue 15): AMP round trips of C{Ping}, C{Status} and
C{Speak} over the UNIX control socket of a C{twistd -n voicecalld} on the mock provider, from
a client in another process on the other core, with live calls on the daemon.

C{python -m bench.control [--calls 20] [--status 2000] [--speaks 200] [--quick] [--json]}.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import _daemon
from bench._common import emit, percentile, pin, report

#: What C{Speak} says: short, so the mock plays it for its minimum time.
WORDS = "Hello."
TARGET_P50_MS = 1.0


def _mock_playback(text: str) -> float:
    from voicecalld.providers import mock

    return max(mock.MIN_PLAYBACK, len(text) / mock.CHARS_PER_SECOND)


def config(calls: int) -> dict[str, Any]:
    """The daemon's settings: the mock provider with room for C{calls} live calls."""
    return _daemon.voice_call(
        {"provider": "mock", "toNumber": "+15550002222", "maxConcurrentCalls": calls + 1}
    )


def summary(samples: list[float]) -> dict[str, Any]:
    """p50/p99/max of round trips (seconds in, milliseconds out)."""
    ms = [s * 1000 for s in samples]
    return {
        "samples": len(ms),
        "p50Ms": round(percentile(ms, 50), 3),
        "p99Ms": round(percentile(ms, 99), 3),
        "maxMs": round(max(ms), 3) if ms else None,
    }


def run(
    calls: int = 20,
    status: int = 2000,
    speaks: int = 200,
    *,
    quick: bool = False,
    profile: str | None = None,
    tmpfs: bool = False,
) -> dict[str, Any]:
    """Start the daemon, run the client against it, return the figures."""
    if quick:
        calls, status, speaks = min(calls, 3), min(status, 200), min(speaks, 6)
    daemon_core, client_core = _daemon.two_cores()
    root = Path(tempfile.mkdtemp(prefix="vcb-", dir="/dev/shm" if tmpfs else None))
    with _daemon.running(config(calls), core=daemon_core, profile=profile, root=root) as daemon:
        window = _daemon.Window(daemon.process.pid, daemon_core)
        figures = _daemon.client(
            "bench.control",
            client_core,
            "--socket",
            str(daemon.socket),
            "--calls",
            str(calls),
            "--status",
            str(status),
            "--speaks",
            str(speaks),
            "--pid",
            str(daemon.process.pid),
        )
        figures["window"] = window.close()
    shutil.rmtree(root, ignore_errors=True)
    figures["cores"] = {"daemon": daemon_core, "client": client_core}
    figures["store"] = "tmpfs" if tmpfs else "disk"
    figures["quick"] = quick
    return figures


def rows(figures: dict[str, Any]) -> list[tuple[str, ...]]:
    """Table rows (benchmark, metric, value, target, pass/fail)."""

    def verdict(ms: float) -> str:
        return "pass" if ms < TARGET_P50_MS else "fail"

    out: list[tuple[str, ...]] = []
    ping, one, every = figures["ping"], figures["statusOne"], figures["statusAll"]
    speak = figures["speakOverhead"]
    out.append(("control", "Ping p50/p99 ms", f"{ping['p50Ms']}/{ping['p99Ms']}", "", ""))
    out.append(
        (
            "control",
            "Status(callId) p50/p99 ms",
            f"{one['p50Ms']}/{one['p99Ms']}",
            f"p50 < {TARGET_P50_MS:g}",
            verdict(one["p50Ms"]),
        )
    )
    out.append(
        (
            "control",
            f"Status(all {figures['calls']} live) p50/p99 ms",
            f"{every['p50Ms']}/{every['p99Ms']}",
            f"p50 < {TARGET_P50_MS:g}",
            verdict(every["p50Ms"]),
        )
    )
    out.append(
        (
            "control",
            "Speak beyond playback p50/p99 ms",
            f"{speak['p50Ms']}/{speak['p99Ms']}",
            f"p50 < {TARGET_P50_MS:g}",
            verdict(speak["p50Ms"]),
        )
    )
    return out


def notes(figures: dict[str, Any]) -> list[str]:
    """Lines to print under the table."""
    speak, cpu = figures["speak"], figures["daemonCpuMicros"]
    return [
        f"control: {figures['calls']} live mock calls; Speak round trip p50 {speak['p50Ms']} ms"
        f" includes the mock's {figures['playbackMs']:g} ms of playback, which 'beyond playback'"
        " takes off; the daemon's core was"
        f" {figures['window']['othersShareOfCore'] or 0:.0%} busy with other processes;"
        f" daemon CPU per request: Ping {cpu['ping']:g} µs, Status(callId) {cpu['statusOne']:g} µs,"
        f" Status(all) {cpu['statusAll']:g} µs, Speak {cpu['speak']:g} µs"
    ]


# -- the client (its own process) ---------------------------------------------


async def _client(reactor: Any, args: argparse.Namespace) -> dict[str, Any]:
    from twisted.internet.defer import Deferred, gatherResults

    from voicecalld.control import commands as c
    from voicecalld.control.client import ControlClient, connect
    from voicecalld.values.states import CONNECTED

    connected_states = {state.value for state in CONNECTED}
    states: dict[str, str] = {}
    waiting: dict[str, Deferred] = {}

    def on_event(event: dict[str, Any]) -> None:
        call_id, state = event.get("callId"), event.get("state")
        if event.get("type") != "call.state" or call_id is None:
            return
        states[call_id] = state
        if state in connected_states and call_id in waiting:
            waiting.pop(call_id).callback(None)

    follower = await connect(reactor, args.socket, ControlClient(on_event=on_event))
    await follower.callRemote(c.Subscribe)
    proto = await connect(reactor, args.socket)

    async def place() -> str:
        answer = await proto.callRemote(c.Initiate, mode="conversation")
        call_id = answer["callId"]
        if states.get(call_id) not in connected_states:
            waiting[call_id] = Deferred()
            await waiting[call_id]
        return call_id

    call_ids = await gatherResults([Deferred.fromCoroutine(place()) for _ in range(args.calls)])

    async def timed(command: Any, count: int, **kw: Any) -> list[float]:
        out = []
        for _ in range(count):
            began = time.perf_counter()
            await proto.callRemote(command, **kw)
            out.append(time.perf_counter() - began)
        return out

    cpu: dict[str, float] = {}

    async def costed(name: str, command: Any, count: int, **kw: Any) -> list[float]:
        before = _daemon.process_cpu(args.pid)
        samples = await timed(command, count, **kw)
        cpu[name] = round((_daemon.process_cpu(args.pid) - before) / count * 1e6, 1)
        return samples

    warm = max(5, args.status // 20)
    await timed(c.Ping, warm)
    ping = await costed("ping", c.Ping, args.status)
    await timed(c.Status, warm, callId=call_ids[0])
    one = await costed("statusOne", c.Status, args.status, callId=call_ids[0])
    every = await costed("statusAll", c.Status, args.status)

    # One Speak at a time per call, every call at once: each lasts the mock's playback.
    per_call = -(-args.speaks // len(call_ids))

    async def speak_on(call_id: str) -> list[float]:
        out = []
        for _ in range(per_call):
            began = time.perf_counter()
            await proto.callRemote(c.Speak, callId=call_id, message=WORDS)
            out.append(time.perf_counter() - began)
        return out

    before = _daemon.process_cpu(args.pid)
    lists = await gatherResults([Deferred.fromCoroutine(speak_on(i)) for i in call_ids])
    spoken = sum(len(samples) for samples in lists)
    cpu["speak"] = round((_daemon.process_cpu(args.pid) - before) / spoken * 1e6, 1)
    speak = [s for samples in lists for s in samples]
    playback = _mock_playback(WORDS)
    for call_id in call_ids:
        await proto.callRemote(c.End, callId=call_id)
    proto.transport.loseConnection()
    follower.transport.loseConnection()
    return {
        "calls": len(call_ids),
        "playbackMs": round(playback * 1000, 1),
        "ping": summary(ping),
        "statusOne": summary(one),
        "statusAll": summary(every),
        "speak": summary(speak),
        "speakOverhead": summary([s - playback for s in speak]),
        "daemonCpuMicros": cpu,
    }


def client_main(argv: list[str]) -> int:
    """The client process: measure, print one JSON line."""
    parser = argparse.ArgumentParser(prog="bench.control client")
    parser.add_argument("--socket", required=True)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--status", type=int, default=2000)
    parser.add_argument("--speaks", type=int, default=200)
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--core", type=int)
    args = parser.parse_args(argv)
    pin(args.core)
    from twisted.internet import defer, task

    async def main(reactor: Any) -> None:
        emit(await _client(reactor, args))

    task.react(lambda reactor: defer.Deferred.fromCoroutine(main(reactor)))
    return 0  # not reached: react exits


def main(argv: list[str] | None = None) -> int:
    """Run alone: print the figures (or JSON)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["client"]:
        return client_main(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--status", type=int, default=2000)
    parser.add_argument("--speaks", type=int, default=200)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--profile", help="save a cProfile of the daemon here")
    parser.add_argument("--tmpfs", action="store_true", help="the state directory on /dev/shm")
    args = parser.parse_args(argv)
    figures = run(
        args.calls,
        args.status,
        args.speaks,
        quick=args.quick,
        profile=args.profile,
        tmpfs=args.tmpfs,
    )
    return report(figures, rows, notes, args.json)


if __name__ == "__main__":
    sys.exit(main())
