"""
C{--metrics}: Prometheus metrics at C{/metrics} and a health probe at C{/healthz}.

Each daemon has its own C{CollectorRegistry} (never the process-wide one), so
a test can build several.  What the notices say happened is counted as it
happens; what components already count (webhook outcomes, control requests,
media frames) is read from them at scrape time, so the hot paths pay one
integer add and nothing here.  docs/metrics.md lists every metric.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client import Counter as PromCounter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.twisted import MetricsResource as PrometheusResource
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.internet.threads import blockingCallFromThread
from twisted.python import threadable
from twisted.python.threadable import isInIOThread
from twisted.web import resource

from voicecalld.calls.hub import NoticeHub
from voicecalld.store.sqlite import StoreFull
from voicecalld.values import notices

PREFIX = "voicecalld_"
# The guard's refusal codes that mean "too much", not "bad input".
LIMITED_CODES = frozenset(
    {"webhook.rate_limited", "webhook.too_many_in_flight", "webhook.too_many_connections"}
)
HEARTBEAT_SECONDS = 1.0
HEARTBEAT_BOUND = 5.0
LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
STORE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
PACING_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.04, 0.06, 0.1, 0.2, 0.5)


class Metrics:
    """
    The daemon's metrics and its health.

    @param vendors: the configured vendor of each kind of vendor error
        (C{tts}, C{stt}, C{realtime}, C{provider}, ...), for the C{vendor} label.
    """

    def __init__(
        self,
        clock: IReactorTime,
        *,
        provider: str = "mock",
        vendors: dict[str, str] | None = None,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.provider = provider
        self.vendors = dict(vendors or {})
        self.ready = False
        self.stopping = False
        self.health = Health(clock)
        r = self.registry
        self.calls_created = PromCounter(
            PREFIX + "calls_created",
            "Calls created (outbound placed or inbound accepted).",
            ["direction", "mode", "provider"],
            registry=r,
        )
        self.calls_ended = PromCounter(
            PREFIX + "calls_ended", "Calls ended, by end reason.", ["reason"], registry=r
        )
        self.calls_refused = PromCounter(
            PREFIX + "calls_refused",
            "Calls refused before they were placed or answered.",
            ["direction", "reason"],
            registry=r,
        )
        self.vendor_errors = PromCounter(
            PREFIX + "vendor_errors",
            "Problems on calls that went on, by kind and vendor.",
            ["kind", "vendor"],
            registry=r,
        )
        self.turn_latency = Histogram(
            PREFIX + "turn_latency_seconds",
            "Per-turn latency, by stage.",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.store_write = Histogram(
            PREFIX + "store_write_seconds",
            "Time from a store commit's request to its completion (or failure).",
            buckets=STORE_BUCKETS,
            registry=r,
        )
        self.pacing_lateness = Histogram(
            PREFIX + "pacing_lateness_seconds",
            "How late each outbound pacing tick ran after its schedule.",
            buckets=PACING_BUCKETS,
            registry=r,
        )
        self._scraped = _Scraped(self)
        r.register(self._scraped)

    def follow(self, hub: NoticeHub) -> None:
        """Count what C{hub}'s notices say happened."""
        hub.listen(self._count)

    # -- what the notices say -------------------------------------------------------------

    def _count(self, notice: notices.Notice) -> None:
        kind = type(notice)
        if kind is notices.CallCreated:
            self.calls_created.labels(notice.direction, notice.mode, notice.provider).inc()
        elif kind is notices.CallEnded:
            self.calls_ended.labels(notice.reason).inc()
        elif kind is notices.CallRefused:
            self.calls_refused.labels(notice.direction, notice.reason).inc()
        elif kind is notices.TurnMeasured:
            for stage, ms in notice.stages.items():
                self.turn_latency.labels(stage).observe(ms / 1000.0)
        elif kind is notices.Problem:
            what = problem_kind(notice.what, notice.message)
            self.vendor_errors.labels(what, self.vendors.get(what, what)).inc()

    # -- what components count ------------------------------------------------------------

    def live_calls(self, read: Callable[[], Iterable[Any]]) -> None:
        """Report C{read()} (call records) as live calls by state and provider."""
        self._scraped.live = read

    def webhooks(self, read: Callable[[], Iterable[Counter[str]]]) -> None:
        """Report the webhook outcome tallies C{read()} gives (summed)."""
        self._scraped.webhooks = read

    def control(self, tally: Counter[tuple[str, str]]) -> None:
        """Report C{tally} (by command and error code) as control requests."""
        self._scraped.control = tally

    def media(self, read: Callable[[], Iterable[tuple[Any, Any]]]) -> None:
        """Report the (media stream factory, pacing clock) pairs C{read()} gives."""
        self._scraped.media = read

    def gauge(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        """Report C{read()} as gauge C{voicecalld_<name>} at every scrape."""
        self._scraped.gauges[name] = (help_text, read)

    def store(self, store: Any) -> None:
        """
        Report C{store}'s fullness, its size and the free space of the file
        system holding it; C{/healthz} fails while the store reports full.
        """
        self.health.store = store
        self.registry.register(_Disk(store))

    def store_commit(self, seconds: float, error: BaseException | None) -> None:
        """A store commit took C{seconds}; it failed with C{error}, if any."""
        self.store_write.observe(seconds)
        self.health.store_written(error)


def problem_kind(what: str, message: str) -> str:
    """A problem notice's kind of error: C{tts}, C{stt}, C{realtime}, C{reply}, ..."""
    if what != "provider":
        return what
    for prefix, kind in (
        ("speech synthesis", "tts"),
        ("speech recognition", "stt"),
        ("realtime", "realtime"),
    ):
        if message.startswith(prefix):
            return kind
    return "provider"


class _Scraped:
    """The collector of everything read at scrape time."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.live: Callable[[], Iterable[Any]] = tuple
        self.webhooks: Callable[[], Iterable[Counter[str]]] = tuple
        self.control: Counter[tuple[str, str]] = Counter()
        self.media: Callable[[], Iterable[tuple[Any, Any]]] = tuple
        self.gauges: dict[str, tuple[str, Callable[[], float]]] = {}

    def collect(self) -> Iterator[Any]:
        # prometheus_client's Twisted resource scrapes in a WSGI thread; what the
        # components keep belongs to the reactor thread, so it is read there.
        if isInIOThread() or threadable.ioThread is None:
            yield from self.families()
            return
        from twisted.internet import reactor

        yield from blockingCallFromThread(reactor, self.families)

    def families(self) -> list[Any]:
        """Every metric read at scrape time (on the reactor thread)."""
        return list(self._families())

    def _families(self) -> Iterator[Any]:
        live = GaugeMetricFamily(
            PREFIX + "live_calls",
            "Calls not ended, by state and provider.",
            labels=["state", "provider"],
        )
        by: Counter[tuple[str, str]] = Counter(
            (str(record.state), record.provider) for record in self.live()
        )
        for labels, n in sorted(by.items()):
            live.add_metric(labels, n)
        yield live

        hooks = CounterMetricFamily(
            PREFIX + "webhook_requests",
            "Webhook requests, by provider and outcome.",
            labels=["provider", "outcome"],
        )
        outcomes: Counter[str] = Counter()
        for tally in self.webhooks():
            for key, n in tally.items():
                outcomes[webhook_outcome(key)] += n
        for outcome in ("accepted", "bad_signature", "replay", "limited", "malformed", "stopping"):
            hooks.add_metric([self.metrics.provider, outcome], outcomes[outcome])
        yield hooks

        control = CounterMetricFamily(
            PREFIX + "control_requests",
            "Control requests, by command and answer code (ok, or the error code).",
            labels=["command", "code"],
        )
        for (command, code), n in sorted(self.control.items()):
            control.add_metric([command, code], n)
        yield control

        streams = frames_in = frames_out = late = 0
        for factory, ticker in self.media():
            streams += len(factory.open)
            frames_in += factory.frames_in_total()
            frames_out += factory.frames_out_total()
            late += ticker.late_frames
        yield GaugeMetricFamily(PREFIX + "media_streams_open", "Media streams open.", streams)
        yield CounterMetricFamily(
            PREFIX + "media_frames_in", "Media frames received from carriers.", frames_in
        )
        yield CounterMetricFamily(
            PREFIX + "media_frames_out", "Media frames sent to carriers.", frames_out
        )
        yield CounterMetricFamily(
            PREFIX + "media_late_frames", "Outbound audio frames sent after their due time.", late
        )
        for name, (help_text, read) in sorted(self.gauges.items()):
            yield GaugeMetricFamily(PREFIX + name, help_text, read())


class _Disk:
    """
    The store's fullness and the state file system's free space, read in the
    scrape's own thread: C{stat} and C{statvfs} touch the file system, which
    the reactor thread must not wait on.
    """

    def __init__(self, store: Any) -> None:
        self.store = store

    def collect(self) -> Iterator[Any]:
        yield GaugeMetricFamily(
            PREFIX + "store_full",
            "1 while the call store reports its file system full (new calls refused), else 0.",
            0.0 if self.store.health().ok else 1.0,
        )
        yield GaugeMetricFamily(
            PREFIX + "store_bytes",
            "Bytes the call store and its write-ahead log take.",
            self.store.disk_usage(),
        )
        try:
            fs = os.statvfs(os.path.dirname(os.path.abspath(self.store.path)))
        except OSError:
            return  # the directory went away: no sample rather than a wrong one
        yield GaugeMetricFamily(
            PREFIX + "state_free_bytes",
            "Bytes free to voicecalld on the file system of the state directory.",
            fs.f_bavail * fs.f_frsize,
        )


def webhook_outcome(key: str) -> str:
    """The outcome a tally key counts toward: a guard refusal code, or an outcome itself."""
    if key in LIMITED_CODES:
        return "limited"
    if key.startswith("webhook."):
        return "malformed"
    return key


class Health:
    """
    Whether the daemon is well: the store (when L{store} is set) does not
    report itself full, its last write succeeded, and the reactor ran the
    heartbeat within L{HEARTBEAT_BOUND} seconds.
    """

    def __init__(
        self, clock: IReactorTime, period: float = HEARTBEAT_SECONDS, bound: float = HEARTBEAT_BOUND
    ) -> None:
        self.clock = clock
        self.bound = bound
        self.beat = clock.seconds()
        self.store_error: BaseException | None = None
        #: The call store, whose own C{health()} says whether it is full.
        self.store: Any = None
        self.heartbeat = LoopingCall(self._beat)
        self.heartbeat.clock = clock
        self._period = period

    def start(self) -> None:
        """Start the heartbeat."""
        if not self.heartbeat.running:
            self.heartbeat.start(self._period, now=True)

    def stop(self) -> None:
        """Stop the heartbeat."""
        if self.heartbeat.running:
            self.heartbeat.stop()

    def _beat(self) -> None:
        self.beat = self.clock.seconds()

    def store_written(self, error: BaseException | None) -> None:
        """The outcome of the latest store write."""
        self.store_error = error

    def problem(self) -> str | None:
        """Why the daemon is not well, in one line, or None."""
        store = self.store.health() if self.store is not None else None
        if store is not None and not store.ok:
            return f"store {store.status}: {store.detail}"
        error = self.store_error
        if isinstance(error, StoreFull) and store is not None:
            error = None  # full then, but a write (the sweep's probe, say) has found room since
        if error is not None:
            return f"store not writable: {error}"
        behind = self.clock.seconds() - self.beat
        if behind > self.bound:
            return f"reactor heartbeat {behind:.1f} s old (bound {self.bound:g} s)"
        return None


class MetricsResource(resource.Resource):
    """C{/metrics} (prometheus_client's own resource) and C{/healthz}."""

    def __init__(self, metrics: Metrics) -> None:
        super().__init__()
        self.putChild(b"metrics", PrometheusResource(registry=metrics.registry))
        self.putChild(b"healthz", _Health(metrics))


class _Health(resource.Resource):
    isLeaf = True

    def __init__(self, metrics: Metrics) -> None:
        super().__init__()
        self._metrics = metrics

    def render_GET(self, request):
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        if not self._metrics.ready:
            request.setResponseCode(503)
            return b"stopping\n" if self._metrics.stopping else b"starting\n"
        problem = self._metrics.health.problem()
        if problem is not None:
            request.setResponseCode(503)
            return f"{problem}\n".encode()
        return b"ok\n"
