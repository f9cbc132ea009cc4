"""
The daemon's log writers: one line per event in text and JSON, failures
folded into their line, never a secret, the flood summary on a Clock, and the
chain offered to twistd.
"""

from __future__ import annotations

import io
import json

from twisted.application.service import Application, IService
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, Logger, LogLevel
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from voicecalld.config import parse_config
from voicecalld.config.secret import Secret
from voicecalld.logs.flood import FloodFilter
from voicecalld.logs.lines import json_line, text_line
from voicecalld.logs.observer import Chain, LoggingRoot

KEY = "sk-very-secret-key-0001"
TOKEN = "tok-very-secret-0002"


def logged(chain: Chain, emit) -> list[str]:
    """Lines written by C{chain} for what C{emit(log)} logs."""
    emit(Logger(namespace="voicecalld.test", observer=chain.observer))
    chain.flush()
    return chain.out.getvalue().splitlines()  # type: ignore[attr-defined]


def chain(log_format: str = "text", **options) -> Chain:
    out = io.StringIO()
    made = Chain(log_format, out, options.pop("clock", Clock()), **options)
    made.out = out  # type: ignore[attr-defined]
    return made


def boom() -> Failure:
    try:
        raise RuntimeError("disk on fire\nsecond line")
    except RuntimeError:
        return Failure()


class TextFormat(TestCase):
    def test_one_line_with_level_namespace_and_code(self):
        lines = logged(
            chain(),
            lambda log: log.warn("refused {peer}", peer="192.0.2.1", log_code="webhook.replay"),
        )
        self.assertEqual(len(lines), 1)
        self.assertRegex(
            lines[0],
            r"^\d{4}-\d\d-\d\dT[\d:.]+Z warn  \[voicecalld\.test\] webhook\.replay:"
            r" refused 192\.0\.2\.1$",
        )

    def test_newlines_and_failures_stay_on_one_line(self):
        def emit(log):
            log.info("first\nsecond")
            log.failure("storing failed", boom(), log_code="store.failed")
            log.warn("retrying", log_failure=boom())

        lines = logged(chain(), emit)
        self.assertEqual(len(lines), 3, lines)
        self.assertTrue(lines[0].endswith("first | second"))
        self.assertIn("store.failed: storing failed | Traceback", lines[1])
        self.assertIn("RuntimeError: disk on fire | second line", lines[1])
        self.assertTrue(lines[2].endswith("retrying: disk on fire | second line"), lines[2])
        self.assertNotIn("Traceback", lines[2])

    def test_debug_is_not_written(self):
        self.assertEqual(logged(chain(), lambda log: log.debug("chatter")), [])

    def test_journald_gets_priorities_and_no_time(self):
        line = text_line(
            {"log_level": LogLevel.warn, "log_namespace": "n", "log_format": "x"}, journald=True
        )
        self.assertEqual(line, "<4>[n] x\n")


class JsonFormat(TestCase):
    def test_one_object_per_line_with_the_fields(self):
        def emit(log):
            log.info("placed {call_id}", call_id="c1", log_code="call.placed", count=3)
            log.failure("oops", boom(), log_code="call.work_failed")

        records = [json.loads(line) for line in logged(chain("json"), emit)]
        self.assertEqual(
            [(r["level"], r["code"], r["namespace"]) for r in records],
            [
                ("info", "call.placed", "voicecalld.test"),
                ("critical", "call.work_failed", "voicecalld.test"),
            ],
        )
        self.assertEqual((records[0]["message"], records[0]["call_id"]), ("placed c1", "c1"))
        self.assertEqual(records[0]["count"], 3)
        self.assertRegex(records[0]["time"], r"^\d{4}-\d\d-\d\dT[\d:.]+Z$")
        self.assertIn("Traceback", records[1]["message"])
        self.assertNotIn("log_logger", records[0])

    def test_odd_values_are_written_as_text(self):
        record = json.loads(
            json_line({"log_format": "x", "when": float("nan"), "what": object, "b": b"\x00"})
        )
        self.assertEqual(record["when"], "nan")
        self.assertIn("object", record["what"])


class NoSecrets(TestCase):
    """A config holding keys, logged every way a careless line could."""

    def test_no_key_in_either_format(self):
        settings = parse_config(
            {
                "provider": "twilio",
                "fromNumber": "+15550001111",
                "twilio": {"accountSid": "AC" + "1" * 32, "authToken": TOKEN},
                "telnyx": {"apiKey": KEY, "connectionId": "c"},
            },
            None,
            {},
        ).settings

        def emit(log):
            log.info("config {settings}", settings=settings)
            log.info("token {token}", token=settings.twilio.auth_token)
            log.warn(
                "request",
                api_key=KEY,
                auth_token=TOKEN,
                headers={"Authorization": TOKEN, "x": 1},
                secret=Secret(KEY),
            )

        for form in ("text", "json"):
            written = "\n".join(logged(chain(form), emit))
            self.assertNotIn(KEY, written, form)
            self.assertNotIn(TOKEN, written, form)
            self.assertIn("<redacted>", written, form)


class FloodSummary(TestCase):
    def setUp(self):
        self.clock = Clock()
        self.seen: list[dict] = []
        self.flood = FloodFilter(self.seen.append, self.clock, window=10, burst=5, max_keys=2)

    def refuse(self, n: int, peer: str = "192.0.2.1", code: str = "webhook.bad_signature"):
        for _ in range(n):
            self.flood({"log_level": LogLevel.warn, "log_code": code, "peer": peer})

    def test_burst_then_one_summary_when_the_window_closes(self):
        self.refuse(9000)
        self.assertEqual(len(self.seen), 5)
        self.clock.advance(9.9)
        self.assertEqual(len(self.seen), 5)
        self.clock.advance(0.1)
        summary = self.seen[-1]
        self.assertEqual(
            (summary["log_code"], summary["count"], summary["peer"], summary["suppressed_code"]),
            ("log.suppressed", 8995, "192.0.2.1", "webhook.bad_signature"),
        )
        self.refuse(1)
        self.assertEqual(len(self.seen), 7, "a new window writes again")

    def test_events_without_a_peer_or_code_pass(self):
        for _ in range(50):
            self.flood({"log_level": LogLevel.warn, "log_code": "call.ended"})
            self.flood({"log_level": LogLevel.warn, "peer": "x"})
        self.assertEqual(len(self.seen), 100)

    def test_peers_beyond_the_table_share_a_bucket(self):
        for i in range(100):
            self.refuse(1, peer=f"198.51.100.{i}")
        self.assertEqual(len(self.seen), 2 + 5)
        self.flood.flush()
        self.assertEqual(self.seen[-1]["peer"], "other peers")
        self.assertEqual(self.seen[-1]["count"], 93)


class Installed(TestCase):
    def test_twistd_takes_the_chain_from_the_application(self):
        made = chain()
        root = LoggingRoot(made)
        application = Application("voicecalld")
        root.setServiceParent(application)
        self.assertIs(application.getComponent(ILogObserver), made.observer)
        self.assertIn(root, list(IService(application)))

    def test_bad_format_is_refused(self):
        self.assertRaises(ValueError, Chain, "xml", io.StringIO(), Clock())


class OffTheReactorThread(TestCase):
    def test_events_from_a_worker_thread_pass(self):
        import threading

        from twisted.python import threadable

        self.patch(threadable, "ioThread", threadable.getThreadID())
        seen: list[dict] = []
        flood = FloodFilter(seen.append, Clock(), burst=1)
        event = {"log_level": LogLevel.warn, "log_code": "webhook.replay", "peer": "p"}
        flood(event)
        worker = threading.Thread(target=lambda: [flood(event) for _ in range(3)])
        worker.start()
        worker.join(10)
        self.assertEqual(len(seen), 4)
