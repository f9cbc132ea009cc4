"""C{--metrics}: Prometheus text at C{/metrics} and a readiness probe at C{/healthz}."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from twisted.web import resource

from voicecalld.calls.hub import NoticeHub
from voicecalld.values import notices


class Metrics:
    """Counts what the notices say happened, plus gauges read when scraped."""

    def __init__(self, hub: NoticeHub) -> None:
        self.created: Counter[tuple[str, str]] = Counter()
        self.ended: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()
        self.gauges: dict[str, tuple[str, Callable[[], float]]] = {}
        self.ready = False
        hub.listen(self._count)

    def _count(self, notice: notices.Notice) -> None:
        if isinstance(notice, notices.CallCreated):
            self.created[(notice.direction, notice.mode)] += 1
        elif isinstance(notice, notices.CallEnded):
            self.ended[notice.reason] += 1
        elif isinstance(notice, notices.CallRefused):
            self.refused[notice.direction] += 1

    def gauge(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        """Report C{read()} as gauge C{name} at every scrape."""
        self.gauges[name] = (help_text, read)

    def render(self) -> str:
        """The Prometheus text exposition."""
        lines = [
            "# HELP voicecalld_calls_created_total Calls created.",
            "# TYPE voicecalld_calls_created_total counter",
        ]
        lines += [
            f'voicecalld_calls_created_total{{direction="{d}",mode="{m}"}} {n}'
            for (d, m), n in sorted(self.created.items())
        ]
        lines += [
            "# HELP voicecalld_calls_ended_total Calls ended, by end reason.",
            "# TYPE voicecalld_calls_ended_total counter",
        ]
        lines += [
            f'voicecalld_calls_ended_total{{reason="{r}"}} {n}'
            for r, n in sorted(self.ended.items())
        ]
        lines += [
            "# HELP voicecalld_calls_refused_total Calls refused by policy or limits.",
            "# TYPE voicecalld_calls_refused_total counter",
        ]
        lines += [
            f'voicecalld_calls_refused_total{{direction="{d}"}} {n}'
            for d, n in sorted(self.refused.items())
        ]
        for name, (help_text, read) in sorted(self.gauges.items()):
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name} {read()}"]
        return "\n".join(lines) + "\n"


class MetricsResource(resource.Resource):
    """C{/metrics} and C{/healthz}."""

    def __init__(self, metrics: Metrics) -> None:
        super().__init__()
        self.putChild(b"metrics", _Page(lambda: metrics.render(), "text/plain; version=0.0.4"))
        self.putChild(b"healthz", _Health(metrics))


class _Page(resource.Resource):
    isLeaf = True

    def __init__(self, body: Callable[[], str], content_type: str) -> None:
        super().__init__()
        self._body = body
        self._type = content_type

    def render_GET(self, request):
        request.setHeader(b"content-type", self._type.encode())
        return self._body().encode()


class _Health(resource.Resource):
    isLeaf = True

    def __init__(self, metrics: Metrics) -> None:
        super().__init__()
        self._metrics = metrics

    def render_GET(self, request):
        if not self._metrics.ready:
            request.setResponseCode(503)
            return b"starting\n"
        return b"ok\n"
