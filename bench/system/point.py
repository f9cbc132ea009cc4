"""
One point of the system benchmark: N calls on one carrier against a fresh real daemon.

The vendor fakes and the generator run on one core, the daemon alone on another.  Once every
stream is up and the warm-up has passed, the window is measured from outside: the daemon's
CPU and RSS from /proc, the generator's counts and gaps, the daemon's own C{/metrics}
(pacing lateness, late frames) and C{voicecall --json tail} (per-turn stages), the vendor
fakes' C{/stats} (barge-in times), and how every core spent the window (/proc/stat).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench._common import core_times, percentile, verdict
from bench._daemon import BIN, CLOCK_TICKS, DaemonProcess, busy, config, free_port
from bench.system.children import ROOT, Child
from bench.system.generator import CALL_RATE

VOICECALL = str(BIN / "voicecall")
#: The vendor fakes' script: a caller turn every 10 s (the bot speaking the
#: rest of the time), every fifth one a barge-in.
VENDOR_ARGS = ("--turn-every", "10", "--barge-in-every", "5")
#: ... and for short (quick) windows, which need turns to time.
QUICK_VENDOR_ARGS = ("--turn-every", "3", "--barge-in-every", "2")
#: A point whose daemon core lost more than this share to other processes is rerun once.
DISTURBED = 0.10


def vendors_module(vendors_root: Path | None) -> tuple[str, Path | None]:
    """The vendor fakes to run: C{bench.system.vendors} if there, else the stand-in."""
    if vendors_root is not None:
        return "bench.system.vendors", vendors_root
    if importlib.util.find_spec("bench.system.vendors") is not None:
        return "bench.system.vendors", None
    return "bench.system.standin", None


def _metrics(url: str) -> dict[str, Any]:
    """The counters and the pacing histogram from the daemon's /metrics, parsed."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
    except OSError as e:
        return {"error": str(e)}
    out: dict[str, Any] = {"pacing": {}}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "voicecalld_pacing_lateness_seconds_bucket":
                out["pacing"][float(sample.labels["le"])] = sample.value
            elif sample.name in (
                "voicecalld_media_frames_in_total",
                "voicecalld_media_frames_out_total",
                "voicecalld_media_late_frames_total",
            ):
                out[sample.name] = sample.value
    return out


def _bucket_percentile(before: dict, after: dict, q: float) -> float | None:
    """The upper bound (ms) of the bucket holding the C{q}th percentile of the window."""
    edges = sorted(after)
    counts = [after[e] - before.get(e, 0) for e in edges]
    if not counts or not counts[-1]:
        return None
    rank = q / 100 * counts[-1]
    for edge, cumulative in zip(edges, counts, strict=True):
        if cumulative >= rank:
            return round(edge * 1000, 1) if edge != float("inf") else None
    return None


def _stats(url: str | None) -> dict[str, Any] | None:
    if not url:
        return None
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.loads(response.read())
    except (OSError, ValueError):
        return None


def _barge_in_to_clear(stats: dict | None, clears: list[float], began: float) -> list[float]:
    """
    Milliseconds from each barge-in's C{speech_started} to the next C{clear} the generator
    saw.  The vendors know sessions and the generator streams, not which is which, so each
    barge-in takes the first clear after it not yet taken (within 2 s): a close pairing while
    clears are a few per second, rough when many calls barge in at once.
    """
    if not stats:
        return []
    times = sorted(e[0] for e in stats.get("events", {}).get("barge_in", []) if e[0] > began)
    pending = sorted(clears)
    out, j = [], 0
    for b in times:
        while j < len(pending) and pending[j] < b:
            j += 1
        if j < len(pending) and pending[j] - b < 2.0:
            out.append((pending[j] - b) * 1000)
            j += 1
    return out


def _ms(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p99": None, "n": 0}
    return {
        "p50": round(percentile(values, 50), 2),
        "p99": round(percentile(values, 99), 2),
        "n": len(values),
    }


class Point:
    """Runs one point; L{run} returns its figures (and cleans up after itself)."""

    def __init__(
        self,
        carrier: str,
        calls: int,
        *,
        warmup: float,
        duration: float,
        cores: tuple[int | None, int | None] = (0, 1),
        vendors_root: Path | None = None,
        keep: bool = False,
        quick_script: bool = False,
    ) -> None:
        self.carrier = carrier
        self.calls = calls
        self.warmup = warmup
        self.duration = duration
        self.daemon_core, self.load_core = cores
        self.vendors_root = vendors_root
        self.keep = keep
        self.script = QUICK_VENDOR_ARGS if quick_script else VENDOR_ARGS

    def run(self) -> dict[str, Any]:
        """Start everything, measure the window, stop everything."""
        root = Path(tempfile.mkdtemp(prefix="vcsys-"))
        self.began = time.monotonic()
        self.phases: dict[str, float] = {}
        load = [] if self.load_core is None else ["--cpu", str(self.load_core)]
        module, cwd = vendors_module(self.vendors_root)
        children: list[Child] = []
        daemon: DaemonProcess | None = None
        try:
            script = self.script if module.endswith(".vendors") else ()
            vendors = Child(module, *load, *script, stderr=root / "vendors.log", cwd=cwd)
            children.append(vendors)
            generator = Child(
                "bench.system.generator",
                "--carrier",
                self.carrier,
                *load,
                stderr=root / "generator.log",
            )
            children.append(generator)
            urls = vendors.expect(None, timeout=60)
            facts = generator.expect("ready", timeout=60)
            port = free_port()
            daemon = DaemonProcess(
                root, config(self.carrier, facts, urls, port), port, self.daemon_core
            )
            self.phases["children"] = time.monotonic() - self.began
            startup = daemon.start()
            rss_idle = daemon.rss_kib()
            ramp = self.calls / CALL_RATE[self.carrier]
            generator.send(
                {
                    "cmd": "calls",
                    "count": self.calls,
                    "webhook": daemon.webhook,
                    "timeout": 30 + 3 * ramp,
                }
            )
            up = generator.expect("up", timeout=60 + 3 * ramp)
            self.phases["up"] = time.monotonic() - self.began
            time.sleep(self.warmup)
            figures = self._window(
                root, daemon, generator, vendors, urls, up, startup, rss_idle, module
            )
            figures["phaseSeconds"] = self.phases
            return figures
        finally:
            ended = time.monotonic()
            if daemon is not None:
                # Its drain is not measured: a few seconds, then SIGKILL.
                daemon.stop(timeout=1)
            for child in children:
                child.close()
            for child in children:
                child.stop()
            self.phases["teardown"] = time.monotonic() - ended
            if not self.keep:
                shutil.rmtree(root, ignore_errors=True)

    def _window(
        self,
        root: Path,
        daemon: DaemonProcess,
        generator: Child,
        vendors: Child,
        urls: dict,
        up: dict,
        startup: float,
        rss_idle: int,
        module: str,
    ) -> dict[str, Any]:
        tail_out = open(root / "tail.jsonl", "wb")
        tail = subprocess.Popen(
            [VOICECALL, "--json", "tail"],
            stdout=tail_out,
            stderr=subprocess.DEVNULL,
            env=daemon.env(),
            cwd=ROOT,
        )
        metrics0 = _metrics(daemon.metrics_url)
        generator.send({"cmd": "begin"})
        began = generator.expect("begun", timeout=30)["at"]
        cpu0, load0, vend0 = daemon.cpu_seconds(), generator.cpu_seconds(), vendors.cpu_seconds()
        all0, core0 = core_times(None), core_times(self.daemon_core)
        t0 = time.monotonic()
        time.sleep(self.duration)
        generator.send({"cmd": "end"})
        window = generator.expect("window", timeout=30)
        wall = time.monotonic() - t0
        cpu = daemon.cpu_seconds() - cpu0
        load_cpu = generator.cpu_seconds() - load0 + vendors.cpu_seconds() - vend0
        all_busy, _ = busy(all0, core_times(None))
        core_busy, core_total = busy(core0, core_times(self.daemon_core))
        rss = daemon.rss_kib()
        metrics1 = _metrics(daemon.metrics_url)
        stats = _stats(urls.get("stats") and f"{urls['stats']}?since={began}")
        tail.send_signal(signal.SIGINT)
        try:
            tail.wait(timeout=10)
        except subprocess.TimeoutExpired:
            tail.kill()
        tail_out.close()
        stages: dict[str, list[float]] = {"oursBeforeReply": [], "oursToFirstFrame": []}
        for line in (root / "tail.jsonl").read_text(errors="replace").splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("type") == "turn.latency":
                for name, values in stages.items():
                    value = (event.get("stages") or {}).get(name)
                    if isinstance(value, (int, float)):
                        values.append(float(value))
        cores_used = all_busy / CLOCK_TICKS / max(wall, 1e-9)
        daemon_core_share = core_busy / core_total if core_total else 0.0
        live = window["live"]
        sent, received = window["sent"], window["received"]
        late = None
        if "voicecalld_media_late_frames_total" in metrics1:
            late = metrics1["voicecalld_media_late_frames_total"] - metrics0.get(
                "voicecalld_media_late_frames_total", 0
            )
        pacing0, pacing1 = metrics0.get("pacing", {}), metrics1.get("pacing", {})
        return {
            "carrier": self.carrier,
            "calls": self.calls,
            "streamsUp": up.get("streams"),
            "callsFailed": up.get("failed"),
            "live": live,
            "vendors": module.rsplit(".", 1)[1],
            "windowSeconds": round(wall, 2),
            "startupSeconds": round(startup, 2),
            "cpuUtilization": round(cpu / wall, 4),
            "usPerInboundFrame": round(cpu / sent * 1e6, 1) if sent else None,
            "inboundFrames": sent,
            "outboundFrames": received,
            "outInRatio": round(received / sent, 4) if sent else None,
            "speakingRate": window.get("speakingRate"),
            "outboundGapMs": window["gapMs"],
            "outboundGapMsMax": window["gapMsMax"],
            "lateFrames": late,
            "pacingLatenessMs": {
                "p50": _bucket_percentile(pacing0, pacing1, 50),
                "p99": _bucket_percentile(pacing0, pacing1, 99),
                "source": "daemon /metrics voicecalld_pacing_lateness_seconds (bucket bounds)",
            },
            "oursBeforeReplyMs": _ms(stages["oursBeforeReply"]),
            "oursToFirstFrameMs": _ms(stages["oursToFirstFrame"]),
            "bargeInToClearMs": _ms(_barge_in_to_clear(stats, window["clears"], began)),
            "clears": len(window["clears"]),
            "bargeIns": len((stats or {}).get("events", {}).get("barge_in", [])) if stats else None,
            "rssIdleKiB": rss_idle,
            "rssKiB": rss,
            "kibPerLiveCall": round((rss - rss_idle) / live, 1) if live else None,
            "otherCpuCores": round(max(0.0, cores_used - cpu / wall), 3),
            "foreignCpuCores": round(max(0.0, cores_used - (cpu + load_cpu) / wall), 3),
            "daemonCoreTakenByOthers": round(max(0.0, daemon_core_share - cpu / wall), 4),
            "loadCpuUtilization": round(load_cpu / wall, 4),
            "generatorTickLateMsP99": window.get("generatorTickLateMsP99"),
        }


def measure(carrier: str, calls: int, *, rerun: bool = True, **kw: Any) -> dict[str, Any]:
    """
    One point; rerun once if other processes took the daemon's core.  Without C{rerun} (a
    quick run) no rerun, and the vendors' quick script.
    """
    if not rerun:
        kw["quick_script"] = True
    point = Point(carrier, calls, **kw).run()
    if rerun and point["daemonCoreTakenByOthers"] > DISTURBED:
        again = Point(carrier, calls, **kw).run()
        again["rerunBecause"] = f"others took {point['daemonCoreTakenByOthers']:.0%} of its core"
        if again["daemonCoreTakenByOthers"] <= point["daemonCoreTakenByOthers"]:
            point = again
        else:
            point["disturbedTwice"] = True
    elif point["daemonCoreTakenByOthers"] > DISTURBED:
        point["disturbed"] = True
    point["noLateFrame"], point["why"] = verdict(point)
    return point
