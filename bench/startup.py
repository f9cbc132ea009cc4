"""
Start-up time of the real daemon with a full call store (issue 15): from starting
C{twistd -n voicecalld} to its C{READY=1} on a C{NOTIFY_SOCKET}, with a store of 10,000
calls (ended ones with transcripts, and some left live by a crash, which it restores),
against the same start with an empty store.

C{python -m bench.startup [--calls 10000] [--live 300] [--runs 3] [--quick] [--json]}.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import _daemon
from bench._common import report
from voicecalld import paths
from voicecalld.store.guard import marker_path
from voicecalld.store.sqlite import SQLiteCallStore, SynchronousRunner
from voicecalld.values.record import CallRecord, TranscriptEntry
from voicecalld.values.states import CallState

TARGET_SECONDS = 2.0
ENTRIES_PER_CALL = 8
LINES = (
    "Hello, this is the assistant calling about your appointment.",
    "Hi, yes, I was expecting your call.",
    "Would Thursday at three in the afternoon still work for you?",
    "Thursday is fine, but could we make it half past three?",
    "Half past three on Thursday it is. Anything else I can help with?",
    "No, that's everything, thank you.",
    "You're welcome. Goodbye!",
    "Bye.",
)


def _record(n: int, now: float, live: bool) -> tuple[CallRecord, tuple[TranscriptEntry, ...]]:
    # Live ones began within the last minute (under maxDurationSeconds) and have been greeted.
    started = now - 5 - n % 60 if live else now - 86_400 + n
    entries = tuple(
        TranscriptEntry(started + 2 + 3 * i, "bot" if i % 2 == 0 else "user", LINES[i])
        for i in range(2 if live else ENTRIES_PER_CALL)
    )
    record = CallRecord(
        call_id=f"00000000-0000-4000-8000-{n:012d}",
        provider="mock",
        direction="outbound",
        mode="conversation",
        from_number="+15550001111",
        to_number=f"+1555{n:07d}",
        state=CallState.LISTENING if live else CallState.COMPLETED,
        started_at=started,
        provider_call_id=f"mock-{n}",
        answered_at=started + 1,
        ended_at=None if live else started + 2 + 3 * ENTRIES_PER_CALL,
        end_reason=None if live else CallState.COMPLETED.value,
        initial_message=None if live else LINES[0],
        transcript=entries,
    )
    return record, entries


def build_store(directory: Path, calls: int, live: int) -> Path:
    """
    A state directory whose store holds C{calls} calls, the last C{live} of them live
    (listening), through the store's own API (built where C{directory} is: use tmpfs).
    """
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / paths.STORE_NAME
    store = SQLiteCallStore(str(path), SynchronousRunner())
    store.open()
    now = time.time()
    for n in range(calls):
        record, entries = _record(n, now, n >= calls - live)
        failures: list[Any] = []
        store.commit(record, entries).addErrback(failures.append)
        if failures:
            failures[0].raiseException()
    store.checkpoint()
    store.close()
    return path


def _copy_state(template: Path, state: Path) -> None:
    state.mkdir(parents=True)
    for name in (paths.STORE_NAME, os.path.basename(marker_path(paths.STORE_NAME))):
        if (template / name).exists():
            shutil.copy2(template / name, state / name)
    os.sync()


def time_start(template: Path | None, core: int | None, settings: dict[str, Any]) -> float:
    """Seconds from starting the daemon to READY=1 on a copy of C{template}'s store."""
    root = Path(tempfile.mkdtemp(prefix="vcb-"))
    try:
        if template is not None:
            _copy_state(template, root / "state")
        daemon = _daemon.DaemonProcess(root, settings, _daemon.free_port(), core)
        began = time.perf_counter()
        daemon.start(wait=False)
        daemon.wait_ready(timeout=300)
        took = time.perf_counter() - began
        daemon.kill9()
        return took
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run(calls: int = 10_000, live: int = 300, runs: int = 3, *, quick: bool = False) -> dict:
    """Build the store once, then time C{runs} starts with it and with an empty store."""
    if quick:
        calls, live, runs = min(calls, 300), min(live, 10), 1
    daemon_core, _ = _daemon.two_cores()
    settings = _daemon.voice_call({"provider": "mock", "maxConcurrentCalls": live + 1})
    scratch = Path(tempfile.mkdtemp(prefix="vcb-store-", dir=_tmpfs()))
    try:
        began = time.perf_counter()
        store = build_store(scratch / "state", calls, live)
        built = time.perf_counter() - began
        size = store.stat().st_size
        empty = [time_start(None, daemon_core, settings) for _ in range(runs)]
        full = [time_start(scratch / "state", daemon_core, settings) for _ in range(runs)]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {
        "calls": calls,
        "liveCalls": live,
        "entriesPerEndedCall": ENTRIES_PER_CALL,
        "storeBytes": size,
        "buildSeconds": round(built, 2),
        "runs": runs,
        "emptySeconds": round(statistics.median(empty), 3),
        "fullSeconds": round(statistics.median(full), 3),
        "fullAll": [round(s, 3) for s in full],
        "emptyAll": [round(s, 3) for s in empty],
        "core": daemon_core,
        "quick": quick,
    }


def _tmpfs() -> str | None:
    return "/dev/shm" if os.path.isdir("/dev/shm") else None


def rows(figures: dict[str, Any]) -> list[tuple[str, ...]]:
    """Table rows (benchmark, metric, value, target, pass/fail)."""
    full = figures["fullSeconds"]
    return [
        ("startup", "READY=1, empty store s", f"{figures['emptySeconds']:.2f}", "", ""),
        (
            "startup",
            f"READY=1, {figures['calls']:,} calls stored s",
            f"{full:.2f}",
            f"< {TARGET_SECONDS:g}",
            "pass" if full < TARGET_SECONDS else "fail",
        ),
    ]


def notes(figures: dict[str, Any]) -> list[str]:
    """Lines to print under the table."""
    return [
        f"startup: median of {figures['runs']} starts; the store holds {figures['calls']:,} calls"
        f" ({figures['liveCalls']} live at the crash, restored; the rest ended with"
        f" {figures['entriesPerEndedCall']} transcript entries), {figures['storeBytes'] / 1e6:.1f}"
        " MB on disk"
    ]


def main(argv: list[str] | None = None) -> int:
    """Run alone: print the figures (or JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--live", type=int, default=300)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    figures = run(args.calls, args.live, args.runs, quick=args.quick)
    return report(figures, rows, notes, args.json)


if __name__ == "__main__":
    sys.exit(main())
