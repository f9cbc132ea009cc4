"""/metrics and /healthz as a scraper and a health checker see them, on an injected clock."""

from __future__ import annotations

import errno
import os
import re
from collections import Counter

import treq
from prometheus_client.parser import text_string_to_metric_families
from treq.testing import StubTreq
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase
from twisted.web.client import HTTPConnectionPool
from twisted.web.server import Site

from tests.fakes.store import HeldStore
from tests.unit.test_store import record
from voicecalld.calls.hub import NoticeHub
from voicecalld.metrics import HEARTBEAT_BOUND, Metrics, MetricsResource
from voicecalld.store.sqlite import SQLiteCallStore, StoreFull, SynchronousRunner
from voicecalld.store.timed import TimedStore
from voicecalld.values import notices


class MetricsPages(TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_800_000_000)
        self.hub = NoticeHub()
        self.metrics = Metrics(self.clock, provider="twilio", vendors={"tts": "elevenlabs"})
        self.metrics.follow(self.hub)
        self.http = StubTreq(MetricsResource(self.metrics))
        self.store = HeldStore(self.mktemp())
        self.successResultOf(self.store.open())
        self.timed = TimedStore(self.store, self.clock, self.metrics.store_commit)
        self.addCleanup(self.metrics.health.stop)

    def get(self, path: str) -> tuple[int, str]:
        response = self.successResultOf(self.http.get(f"http://metrics.invalid{path}"))
        body = self.successResultOf(response.text())
        return response.code, body

    @inlineCallbacks
    def scrape(self):
        """C{/metrics} over HTTP on 127.0.0.1, parsed: each sample by name and sorted labels."""
        port = reactor.listenTCP(0, Site(MetricsResource(self.metrics)), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        url = f"http://127.0.0.1:{port.getHost().port}/metrics"
        pool = HTTPConnectionPool(reactor, persistent=False)
        response = yield treq.get(url, timeout=10, pool=pool)
        self.assertEqual(response.code, 200)
        text = yield response.text()
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def start(self) -> None:
        self.metrics.health.start()
        self.metrics.ready = True

    def test_healthy_only_between_start_and_stop(self) -> None:
        self.assertEqual(self.get("/healthz"), (503, "starting\n"))
        self.start()
        self.assertEqual(self.get("/healthz"), (200, "ok\n"))
        self.metrics.ready, self.metrics.stopping = False, True
        self.assertEqual(self.get("/healthz"), (503, "stopping\n"))

    @inlineCallbacks
    def test_a_failed_store_write_is_unhealthy_until_a_write_succeeds(self):
        self.start()
        self.store.fail_next()
        self.failureResultOf(self.timed.commit(record("c1")), OSError)
        code, body = self.get("/healthz")
        self.assertEqual(code, 503)
        self.assertEqual(body, "store not writable: [Errno 28] No space left on device\n")
        self.successResultOf(self.timed.commit(record("c1")))
        self.assertEqual(self.get("/healthz"), (200, "ok\n"))
        samples = yield self.scrape()
        self.assertEqual(samples[("voicecalld_store_write_seconds_count", ())], 2)

    @inlineCallbacks
    def test_a_full_store_fails_healthz_and_sets_its_gauge_until_room_returns(self):
        store = SQLiteCallStore(self.mktemp(), SynchronousRunner())
        self.successResultOf(store.open())
        self.metrics.store(store)
        self.start()
        samples = yield self.scrape()
        self.assertEqual(samples[("voicecalld_store_full", ())], 0)
        self.assertGreater(samples[("voicecalld_store_bytes", ())], 0)
        free = os.statvfs(os.path.dirname(store.path))
        self.assertAlmostEqual(
            samples[("voicecalld_state_free_bytes", ())],
            free.f_bavail * free.f_frsize,
            delta=64 * 1024 * 1024,
        )

        def no_space() -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        # An idle daemon's store learns it is full from any write (here, a probe's).
        self.failureResultOf(store._write(no_space), StoreFull)
        code, body = self.get("/healthz")
        self.assertEqual(code, 503)
        self.assertEqual(
            body,
            f"store full: the file system holding the call store {store.path} is full"
            " ([Errno 28] No space left on device): free space there; new calls are"
            " refused until then\n",
        )
        samples = yield self.scrape()
        self.assertEqual(samples[("voicecalld_store_full", ())], 1)
        self.successResultOf(store.probe())
        self.assertEqual(self.get("/healthz"), (200, "ok\n"))
        samples = yield self.scrape()
        self.assertEqual(samples[("voicecalld_store_full", ())], 0)

    def test_a_commit_that_found_the_disk_full_clears_once_the_store_has_room(self):
        store = SQLiteCallStore(self.mktemp(), SynchronousRunner())
        self.successResultOf(store.open())
        timed = TimedStore(store, self.clock, self.metrics.store_commit)
        self.metrics.store(timed)
        self.start()
        db = store._connection()
        (pages,) = db.execute("PRAGMA page_count").fetchone()
        db.execute(f"PRAGMA max_page_count={pages}")
        failure = self.failureResultOf(
            timed.commit(record("c1", metadata={"pad": "x" * 20_000})), StoreFull
        )
        code, body = self.get("/healthz")
        self.assertEqual(code, 503)
        self.assertTrue(body.startswith("store full: the file system holding"), body)
        # Retention's sweep deletes, then probes: room again, and no commit needed.
        db.execute("PRAGMA max_page_count=1073741823")
        self.successResultOf(store.probe())
        self.assertEqual(self.get("/healthz"), (200, "ok\n"), failure)

    @inlineCallbacks
    def test_every_metric_is_documented(self):
        store = SQLiteCallStore(self.mktemp(), SynchronousRunner())
        self.successResultOf(store.open())
        self.metrics.store(store)
        self.metrics.gauge("control_clients", "Connected control clients.", lambda: 0)
        self.metrics.gauge("responders", "Connected reply responders.", lambda: 0)
        port = reactor.listenTCP(0, Site(MetricsResource(self.metrics)), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        pool = HTTPConnectionPool(reactor, persistent=False)
        url = f"http://127.0.0.1:{port.getHost().port}/metrics"
        text = yield (yield treq.get(url, timeout=10, pool=pool)).text()
        docs_path = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "metrics.md")
        with open(docs_path, encoding="utf-8") as f:
            docs = f.read()
        # prometheus_client's parser reads a histogram's _created sample as a family.
        families = text_string_to_metric_families(text)
        names = sorted({family.name for family in families})
        self.assertIn("voicecalld_store_full", names)

        def documented(name: str) -> bool:
            return any(
                re.search(rf"`{n}(_total)?`", docs) for n in (name, name.removesuffix("_created"))
            )

        missing = [n for n in names if not documented(n)]
        self.assertEqual(missing, [])

    def test_a_stale_heartbeat_is_unhealthy(self) -> None:
        self.start()
        self.clock.advance(HEARTBEAT_BOUND * 3)
        self.assertEqual(self.get("/healthz"), (200, "ok\n"))
        # The reactor stops answering: its heartbeat does not run.
        self.metrics.health.stop()
        self.clock.advance(HEARTBEAT_BOUND + 1)
        code, body = self.get("/healthz")
        self.assertEqual(code, 503)
        self.assertTrue(body.startswith("reactor heartbeat 6.0 s old"), body)

    @inlineCallbacks
    def test_store_write_latency_is_on_the_clock(self):
        self.store.holding = True
        d = self.timed.commit(record("c1"))
        self.clock.advance(0.03)
        self.store.release()
        self.successResultOf(d)
        samples = yield self.scrape()
        self.assertEqual(samples[("voicecalld_store_write_seconds_bucket", (("le", "0.025"),))], 0)
        self.assertEqual(samples[("voicecalld_store_write_seconds_bucket", (("le", "0.05"),))], 1)

    @inlineCallbacks
    def test_notices_and_tallies(self):
        at = self.clock.seconds()
        self.hub.publish(
            notices.TurnMeasured(at=at, call_id="c1", turn=1, stages={"total": 800.0, "tts": 90.0})
        )
        self.hub.publish(
            notices.Problem(at=at, call_id="c1", what="provider", message="speech synthesis failed")
        )
        self.hub.publish(notices.Problem(at=at, call_id="c1", what="reply", message="timed out"))
        refusals = Counter({"webhook.rate_limited": 3, "webhook.bad_request": 1})
        outcomes = Counter({"accepted": 5, "bad_signature": 2, "replay": 1})
        self.metrics.webhooks(lambda: [refusals, outcomes])
        samples = yield self.scrape()
        total = (("stage", "total"),)
        self.assertEqual(samples[("voicecalld_turn_latency_seconds_count", total)], 1)
        under = (("le", "0.75"), ("stage", "total"))
        self.assertEqual(samples[("voicecalld_turn_latency_seconds_bucket", under)], 0)
        tts = (("kind", "tts"), ("vendor", "elevenlabs"))
        self.assertEqual(samples[("voicecalld_vendor_errors_total", tts)], 1)
        reply = (("kind", "reply"), ("vendor", "reply"))
        self.assertEqual(samples[("voicecalld_vendor_errors_total", reply)], 1)
        hooks = {
            dict(labels)["outcome"]: n
            for (name, labels), n in samples.items()
            if name == "voicecalld_webhook_requests_total"
        }
        self.assertEqual(
            hooks, {"accepted": 5, "bad_signature": 2, "replay": 1, "limited": 3, "malformed": 1}
        )

    def test_each_daemon_has_its_own_registry(self) -> None:
        other = Metrics(self.clock)
        other.follow(self.hub)
        self.assertIsNot(other.registry, self.metrics.registry)


class WebhookOutcomes(TestCase):
    """What the webhook resource counts, as the metrics read it, on a carrier's fake."""

    timeout = 30

    @inlineCallbacks
    def test_accepted_and_replayed_webhooks_are_counted(self):
        from tests.unit.test_plivo import Rig

        rig = yield Rig(self, {"inboundPolicy": "open"}).start()
        (hook,) = [r for r in rig.resources.values() if hasattr(r, "outcomes")]
        yield rig.initiate("Hi!", "conversation")
        call = yield rig.fake.when_call(0)
        yield call.ring()
        accepted = hook.outcomes["accepted"]
        self.assertGreater(accepted, 0)
        self.assertEqual(accepted, len([h for h in rig.fake.callbacks if h.code == 200]))
        replayed = yield rig.fake.resend_last_callback(call)
        self.assertEqual(replayed.code, 200)
        self.assertEqual(hook.outcomes, Counter({"accepted": accepted, "replay": 1}))


class GuardRefusals(TestCase):
    def test_each_refusal_code_is_limited_or_malformed(self) -> None:
        from voicecalld.metrics import webhook_outcome
        from voicecalld.web import limits

        limited = {limits.RATE_LIMITED, limits.TOO_MANY_IN_FLIGHT, limits.TOO_MANY_CONNECTIONS}
        malformed = {
            limits.BAD_REQUEST,
            limits.BODY_TIMEOUT,
            limits.BODY_TOO_LARGE,
            limits.HEADER_TIMEOUT,
            limits.HEADER_TOO_LARGE,
        }
        self.assertEqual({webhook_outcome(code) for code in limited}, {"limited"})
        self.assertEqual({webhook_outcome(code) for code in malformed}, {"malformed"})
        self.assertEqual(webhook_outcome("replay"), "replay")
