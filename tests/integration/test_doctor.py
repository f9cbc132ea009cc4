"""
C{voicecall doctor} against a real daemon and the fakes on 127.0.0.1: healthy
once (every check ok), then with each thing broken in turn.

The daemon's C{publicUrl} is a public-looking name; the doctor reaches it
through L{Tunnel}, which sends it to 127.0.0.1 as a tunnel would.  The real
C{voicecall doctor} binary is run where the URL may stay loopback.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import treq
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from tests.fakes.openai_realtime import FakeRealtimeServer
from tests.fakes.tts_servers import FakeTtsServer
from tests.fakes.twilio import FakeTwilio
from tests.integration.daemon import TWISTD, VOICECALL
from tests.integration.test_twilio_conversation import _Daemon, free_port
from tests.waiting import wait_for
from voicecalld.cli import doctor

pytestmark = pytest.mark.integration

SID = "AC" + "5" * 32
TOKEN = "twilio-token-doctor"
TTS_KEY = "sk-tts-doctor"
PUBLIC_HOST = "voice.example.net"


class Tunnel:
    """treq, with C{PUBLIC_HOST} sent to 127.0.0.1 (what a tunnel does)."""

    def request(self, method: str, url: str, **options: Any) -> Any:
        parts = urlsplit(url)
        if parts.hostname == PUBLIC_HOST:
            url = urlunsplit(parts._replace(netloc=f"127.0.0.1:{parts.port}"))
        return treq.request(method, url, persistent=False, **options)


def tunnel(url: str) -> tuple[str, int]:
    """Where a tunnel to C{url} ends: this machine, the same port."""
    return "127.0.0.1", urlsplit(url).port or 80


def by_id(checks: list[doctor.Check]) -> dict[str, doctor.Check]:
    return {c.id: c for c in checks}


class Doctor(TestCase):
    timeout = 60

    @inlineCallbacks
    def setUp(self):
        self.root = Path(tempfile.mkdtemp(prefix="vd-"))
        self.addCleanup(shutil.rmtree, self.root, True)
        self.twilio = FakeTwilio(SID, TOKEN, insecure_ws=True)
        self.api = yield self.twilio.listen()
        self.addCleanup(self.twilio.stop)
        self.tts = FakeTtsServer()
        self.tts.openai_key = TTS_KEY
        self.tts.start()
        self.addCleanup(self.tts.stop)
        self.stt = FakeRealtimeServer(reactor)
        self.stt_url = yield self.stt.start()
        self.addCleanup(self.stt.stop)
        self.port = free_port()
        self.state = self.root / "state"
        self.socket = self.state / "control.sock"
        self.config = self.write_config("openclaw.json")
        self.env = {
            "PATH": os.environ["PATH"],
            "HOME": str(self.root),
            "VOICECALLD_SOCKET": str(self.socket),
            "VOICECALLD_STATE_DIR": str(self.state),
        }
        self.log = self.root / "daemon.log"
        self.daemon = _Daemon(self.log)
        process = reactor.spawnProcess(
            self.daemon,
            TWISTD,
            [TWISTD, "-n", "--pidfile=", "voicecalld", "--config", str(self.config)],
            env=self.env,
        )

        def stop():
            if not self.daemon.ended.called:
                process.signalProcess("TERM")
                return self.daemon.ended

        self.addCleanup(stop)
        yield wait_for(
            lambda: (
                self.daemon.ended.called
                or (self.log.exists() and b"voicecalld ready" in self.log.read_bytes())
            ),
            what="daemon ready",
        )
        self.assertFalse(self.daemon.ended.called, self.log.read_text())

    def write_config(self, name: str, host: str = PUBLIC_HOST, **changes: Any) -> Path:
        settings: dict[str, Any] = {
            "provider": "twilio",
            "fromNumber": "+15550001111",
            "toNumber": "+15557654321",
            "twilio": {"accountSid": SID, "authToken": TOKEN, "apiBaseUrl": self.api},
            "publicUrl": f"http://{host}:{self.port}/voice/webhook",
            "serve": {"port": self.port},
            "streaming": {
                "enabled": True,
                "sttUrl": self.stt_url,
                "providers": {"openai": {"apiKey": "sk-stt-doctor"}},
            },
            "tts": {
                "provider": "openai",
                "providers": {"openai": {"apiKey": TTS_KEY, "baseUrl": self.tts.openai_base_url}},
            },
        }
        for key, value in changes.items():
            settings[key] = value
        path = self.root / name
        path.write_text(json.dumps({"plugins": {"entries": {"voice-call": {"config": settings}}}}))
        return path

    def run_doctor(self, config: Path | None = None, **options: Any):
        return doctor.doctor(
            reactor,
            str(config or self.config),
            {"HOME": str(self.root)},
            socket=str(self.socket),
            state_dir=str(self.state),
            http=Tunnel(),
            route=tunnel,
            **options,
        )

    @inlineCallbacks
    def test_healthy(self):
        checks = yield self.run_doctor()
        self.assertEqual(
            [(c.id, c.status) for c in checks],
            [
                ("config", "ok"),
                ("carrier-credentials", "ok"),
                ("webhook-exposure", "ok"),
                ("webhook-selftest", "ok"),
                ("media-stream", "ok"),
                ("tts", "ok"),
                ("stt", "ok"),
                ("control-socket", "ok"),
                ("state-dir", "ok"),
                ("store-space", "ok"),
            ],
            [c.detail for c in checks],
        )
        self.assertIn("signature verified", by_id(checks)["webhook-selftest"].detail)
        self.assertTrue(doctor.report(checks)["ok"])
        account = [r for r in self.twilio.requests if r.path.endswith(f"{SID}.json")]
        self.assertEqual([r.method for r in account], ["GET"])

    @inlineCallbacks
    def test_bad_credentials(self):
        config = self.write_config(
            "bad.json", twilio={"accountSid": SID, "authToken": "wrong", "apiBaseUrl": self.api}
        )
        found = by_id((yield self.run_doctor(config)))
        self.assertEqual(found["carrier-credentials"].status, "fail")
        self.assertIn("401", found["carrier-credentials"].detail)
        self.assertIn("credentials", found["carrier-credentials"].fix)
        # The daemon verifies with its own token, so our signature is refused too.
        self.assertEqual(found["webhook-selftest"].status, "fail")
        self.assertNotIn("wrong", json.dumps(doctor.report(list(found.values()))))

    @inlineCallbacks
    def test_unreachable_public_url(self):
        config = self.write_config("gone.json", publicUrl=f"http://{PUBLIC_HOST}:{free_port()}/v")
        found = by_id((yield self.run_doctor(config)))
        self.assertEqual(found["webhook-selftest"].status, "fail")
        self.assertIn("no answer", found["webhook-selftest"].detail)
        self.assertIn("publicUrl", found["webhook-selftest"].fix)

    @inlineCallbacks
    def test_bad_tts_key(self):
        self.tts.openai_key = "another"
        found = by_id((yield self.run_doctor()))
        self.assertEqual(found["tts"].status, "fail")
        self.assertIn("apiKey", found["tts"].fix)

    @inlineCallbacks
    def test_stt_refused(self):
        yield self.stt.stop()
        found = by_id((yield self.run_doctor()))
        self.assertEqual(found["stt"].status, "fail")
        self.assertIn("cannot connect", found["stt"].detail)
        self.assertIn("streaming.sttUrl", found["stt"].fix)

    @inlineCallbacks
    def test_elevenlabs_voice_lookup(self):
        self.tts.elevenlabs_key = "xi-right"

        def config(name: str, key: str) -> Path:
            tts = {
                "provider": "elevenlabs",
                "providers": {"elevenlabs": {"apiKey": key, "baseUrl": self.tts.base_url}},
            }
            return self.write_config(name, tts=tts)

        good = by_id((yield self.run_doctor(config("el.json", "xi-right"))))
        self.assertEqual(good["tts"].status, "ok", good["tts"].detail)
        bad = by_id((yield self.run_doctor(config("el-bad.json", "xi-wrong"))))
        self.assertEqual(bad["tts"].status, "fail")
        self.assertIn("401", bad["tts"].detail)
        self.assertIn("tts.providers.elevenlabs.apiKey", bad["tts"].fix)

    @inlineCallbacks
    def test_realtime_vendor(self):
        def config(name: str, url: str) -> Path:
            realtime = {
                "enabled": True,
                "providers": {"openai": {"apiKey": "sk-rt", "baseUrl": url}},
            }
            return self.write_config(
                name, realtime=realtime, streaming={"enabled": False}, inboundPolicy="open"
            )

        good = by_id((yield self.run_doctor(config("rt.json", self.stt_url))))
        self.assertEqual(good["config"].status, "ok", good["config"].detail)
        self.assertEqual(good["realtime"].status, "ok", good["realtime"].detail)
        gone = f"ws://127.0.0.1:{free_port()}/v1/realtime"
        bad = by_id((yield self.run_doctor(config("rt-gone.json", gone))))
        self.assertEqual(bad["realtime"].status, "fail")
        self.assertIn("realtime.providers.openai", bad["realtime"].fix)

    @inlineCallbacks
    def test_socket_too_open(self):
        os.chmod(self.socket, 0o666)
        found = by_id((yield self.run_doctor()))
        self.assertEqual(found["control-socket"].status, "fail")
        self.assertIn("chmod o-rwx", found["control-socket"].fix)

    @inlineCallbacks
    def test_state_dir_missing(self):
        checks = yield doctor.doctor(
            reactor,
            str(self.config),
            {"HOME": str(self.root)},
            socket=str(self.socket),
            state_dir=str(self.root / "nowhere"),
            http=Tunnel(),
            route=tunnel,
        )
        found = by_id(checks)
        self.assertEqual(found["state-dir"].status, "fail")
        self.assertIn("mkdir -m 700", found["state-dir"].fix)

    @inlineCallbacks
    def test_bad_config_names_key_and_file(self):
        bad = self.root / "broken.json"
        bad.write_text(json.dumps({"provider": "twilio", "serve": {"port": "many"}}))
        found = by_id((yield self.run_doctor(bad)))
        self.assertEqual(found["config"].status, "fail")
        self.assertIn("serve.port", found["config"].detail)
        self.assertIn(str(bad), found["config"].detail)

    @inlineCallbacks
    def test_test_call(self):
        dry = by_id((yield self.run_doctor(call="+15557654321")))
        self.assertIn("dry run", dry["test-call"].detail)
        self.assertEqual(self.twilio.calls, [])
        real = by_id((yield self.run_doctor(call="+15557654321", yes=True)))
        self.assertEqual(real["test-call"].status, "ok", real["test-call"].detail)
        self.assertEqual(len(self.twilio.calls), 1)

    @inlineCallbacks
    def test_the_binary_with_a_loopback_url_json(self):
        config = self.write_config("loop.json", host="127.0.0.1")
        out, err, code = yield getProcessOutputAndValue(
            VOICECALL,
            ["doctor", "--json", "--config", str(config), "--state-dir", str(self.state)],
            env=self.env,
        )
        self.assertEqual(code, 1, err)
        answer = json.loads(out)
        self.assertFalse(answer["ok"])
        found = {c["id"]: c for c in answer["checks"]}
        self.assertEqual(set(found["config"]), {"id", "status", "detail", "fix"})
        self.assertEqual(found["webhook-exposure"]["status"], "fail")
        self.assertIn("loopback", found["webhook-exposure"]["detail"])
        self.assertIn("publicUrl", found["webhook-exposure"]["fix"])
        # The self-test still ran against the loopback URL and reached the daemon,
        # which signs for its own publicUrl, not this one.
        self.assertIn("voicecalld refused our signed request", found["webhook-selftest"]["detail"])
        self.assertIn("127.0.0.1", found["webhook-selftest"]["detail"])
