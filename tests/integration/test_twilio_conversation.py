"""
A whole Twilio conversation through the real daemon process: the fake
Twilio, fake OpenAI speech, realtime transcription and chat servers run in
this test on 127.0.0.1; the daemon is `twistd -n voicecalld` driven with the
real `voicecall` CLI over its control socket.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import tempfile
from pathlib import Path

import pytest
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase
from twisted.web.server import Site

from tests.fakes.openai_chat import FakeChat
from tests.fakes.openai_realtime import FakeRealtimeServer
from tests.fakes.tts_servers import FakeTtsServer, openai_script, sine_pcm, split
from tests.fakes.twilio import FakeTwilio
from tests.integration.daemon import TWISTD, VOICECALL
from tests.waiting import wait_for

pytestmark = pytest.mark.integration

SID = "AC" + "7" * 32
SECRETS = {
    "twilio": "twilio-auth-token-do-not-log",
    "tts": "sk-tts-key-do-not-log",
    "stt": "sk-stt-key-do-not-log",
    "chat": "sk-chat-key-do-not-log",
}
TO = "+15551234567"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Daemon(ProcessProtocol):
    def __init__(self, log: Path) -> None:
        self.log = log
        self.ended: Deferred = Deferred()

    def outReceived(self, data: bytes) -> None:
        with self.log.open("ab") as f:
            f.write(data)

    errReceived = outReceived

    def processEnded(self, reason) -> None:
        self.ended.callback(reason.value.exitCode)


class TwilioConversation(TestCase):
    """The README's promise for real calls, with every vendor faked on 127.0.0.1."""

    timeout = 60
    #: More arguments for the daemon (a subclass's).
    daemon_args: tuple[str, ...] = ()

    def webhook_port(self) -> int:
        """The port the daemon's webhook listens on (a subclass may bind it itself)."""
        return free_port()

    @inlineCallbacks
    def setUp(self):
        # Short: a UNIX socket path must fit in 108 bytes.
        self.root = Path(tempfile.mkdtemp(prefix="vc-"))
        self.addCleanup(shutil.rmtree, self.root, True)
        # Media sockets without autobahn's handshake timers, so none outlives the test.
        self.twilio = FakeTwilio(
            SID,
            SECRETS["twilio"],
            insecure_ws=True,
            ws_options={"openHandshakeTimeout": 0, "closeHandshakeTimeout": 0},
        )
        api = yield self.twilio.listen()
        self.addCleanup(self.twilio.stop)
        self.tts = FakeTtsServer()
        self.tts.openai = openai_script(chunks=split(sine_pcm(0.6), 6), delay=0.02)
        self.tts.start()
        self.addCleanup(self.tts.stop)
        self.stt = FakeRealtimeServer(reactor)
        stt_url = yield self.stt.start()
        self.addCleanup(self.stt.stop)
        self.chat = FakeChat("A table for two at eight works. Anything else?")
        chat_port = reactor.listenTCP(0, Site(self.chat), interface="127.0.0.1")
        self.addCleanup(chat_port.stopListening)
        port = self.webhook_port()
        self.webhook = f"http://127.0.0.1:{port}/voice/webhook"
        config = {
            "plugins": {
                "entries": {
                    "voice-call": {
                        "config": {
                            "provider": "twilio",
                            "fromNumber": "+15550001111",
                            "twilio": {
                                "accountSid": SID,
                                "authToken": SECRETS["twilio"],
                                "apiBaseUrl": api,
                            },
                            "publicUrl": self.webhook,
                            "serve": {"port": port},
                            "maxConcurrentCalls": 3,
                            "inboundPolicy": "open",
                            "streaming": {
                                "enabled": True,
                                "sttUrl": stt_url,
                                "bargeInMinSpeechMs": 0,
                                "providers": {"openai": {"apiKey": SECRETS["stt"]}},
                            },
                            "tts": {
                                "provider": "openai",
                                "providers": {
                                    "openai": {
                                        "apiKey": SECRETS["tts"],
                                        "baseUrl": self.tts.openai_base_url,
                                    }
                                },
                            },
                            "responseBaseUrl": f"http://127.0.0.1:{chat_port.getHost().port}/v1",
                        }
                    }
                }
            }
        }
        self.config = self.root / "openclaw.json"
        self.config.write_text(json.dumps(config))
        self.socket = self.root / "state" / "control.sock"
        self.env = {
            "PATH": os.environ["PATH"],
            "HOME": str(self.root),
            "VOICECALLD_SOCKET": str(self.socket),
            "OPENAI_API_KEY": SECRETS["chat"],
        }
        self.log = self.root / "daemon.log"
        yield self.start_daemon()

    @inlineCallbacks
    def start_daemon(self):
        seen = self.log.stat().st_size if self.log.exists() else 0
        self.daemon = _Daemon(self.log)
        self.process = reactor.spawnProcess(
            self.daemon,
            TWISTD,
            [
                TWISTD,
                "-n",
                "--pidfile=",
                "voicecalld",
                "--state-dir",
                str(self.root / "state"),
                "--config",
                str(self.config),
                *self.daemon_args,
            ],
            env=self.env,
        )
        self.addCleanup(self.stop_daemon, self.daemon, self.process)
        yield wait_for(
            lambda: (
                self.daemon.ended.called
                or (self.log.exists() and b"voicecalld ready" in self.log.read_bytes()[seen:])
            ),
            what="daemon ready",
        )
        self.assertFalse(self.daemon.ended.called, self.log.read_text())

    def stop_daemon(self, daemon, process) -> Deferred | None:
        """SIGTERM the daemon (if it still runs) and wait for it to exit."""
        if daemon.ended.called:
            return None
        process.signalProcess("TERM")
        return daemon.ended

    @inlineCallbacks
    def cli(self, *args: str, ok: bool = True):
        out, err, code = yield getProcessOutputAndValue(VOICECALL, args, env=self.env)
        if ok:
            ended = self.daemon.ended.called and self.daemon.ended.result
            self.assertEqual(code, 0, f"{err.decode()} (daemon ended: {ended})")
        return out.decode(), err.decode(), code

    @inlineCallbacks
    def status(self, call_id: str):
        out, _, _ = yield self.cli("--json", "status", "--call-id", call_id)
        return json.loads(out)

    @inlineCallbacks
    def test_outbound_conversation(self):
        out, _, _ = yield self.cli(
            "call",
            "--to",
            TO,
            "--mode",
            "conversation",
            "--message",
            "Hello, this is Ada from Luigi's.",
        )
        call_id = out.strip()
        call = yield self.twilio.when_call(0)
        self.assertIn(
            f"callId={call_id}",
            call.webhooks[0].url if call.webhooks else self.twilio.requests[0].get("Url"),
        )
        yield call.ring()
        yield call.answer()
        stream = yield call.when_stream()
        greeting = yield stream.when_mark_echoed("u1:end")
        self.assertTrue(greeting)
        self.assertGreater(len(stream.outbound_audio.replace(b"\xff", b"")), 3000)
        record = yield self.status(call_id)
        self.assertEqual(record["transcript"][0]["text"], "Hello, this is Ada from Luigi's.")

        # The caller speaks: audio reaches the STT; its transcript gets a reply.
        yield stream.send_audio(b"\x55" * 3200)
        yield self.stt.audio_at_least(3200)
        self.stt.speech_started("item_1")
        self.stt.delta("item_1", "I'd like a table")
        self.stt.completed("item_1", "I'd like a table for two at eight.")
        yield stream.when_mark_echoed("u2:end")
        record = yield self.status(call_id)
        texts = [(e["speaker"], e["text"]) for e in record["transcript"]]
        self.assertIn(("user", "I'd like a table for two at eight."), texts)
        self.assertEqual(texts[-1], ("bot", "A table for two at eight works. Anything else?"))
        messages = self.chat.requests[-1]["body"]["messages"]
        self.assertEqual(messages[-1]["content"], "I'd like a table for two at eight.")
        latency = record["metadata"]["lastTurnLatency"]
        for stage in ("reply", "ttsFirstByte", "oursToFirstFrame", "total", "ours"):
            self.assertIn(stage, latency)
        shown, _, _ = yield self.cli("status", "--call-id", call_id)
        self.assertIn("last turn:", shown)

        # Barge-in: the caller talks over a long reply; Twilio is told to clear.
        self.chat.replies.append(
            "Let me read you our whole menu, starting with the "
            "antipasti, then the pasta, then the mains and desserts."
        )
        self.tts.openai = openai_script(chunks=split(sine_pcm(4.0), 40), delay=0.05)
        self.stt.completed("item_2", "What's on the menu?")
        yield wait_for(
            lambda: any(
                name.startswith("u3:") and name != "u3:end" for _, name in stream.marks_echoed
            ),
            what="part of the long reply played",
        )
        self.stt.speech_started("item_3")
        yield stream.when_clear()
        self.stt.completed("item_3", "Never mind, thanks.")
        record = yield wait_for(
            self._status_with(
                call_id, lambda r: any(e.get("interrupted") for e in r["transcript"])
            ),
            what="an interrupted reply",
        )

        # DTMF from the caller lands in the transcript; ours goes out in-band.
        yield stream.send_dtmf("5")
        yield wait_for(
            self._status_with(
                call_id,
                lambda r: any(
                    e["kind"] == "dtmf" and e["speaker"] == "user" for e in r["transcript"]
                ),
            ),
            what="caller DTMF",
        )
        yield self.cli("dtmf", "--call-id", call_id, "--digits", "1w2")
        self.assertIsNone(stream.closed_by)

        yield self.cli("end", "--call-id", call_id)
        yield call.when_ended()
        record = yield self.status(call_id)
        self.assertEqual(record["state"], "hangup-bot")

        log = self.log.read_text()
        for name, secret in SECRETS.items():
            self.assertNotIn(secret, log, f"the {name} secret is in the daemon's log")
        self.assertNotIn(SECRETS["twilio"], json.dumps(record))

    def _status_with(self, call_id, predicate):
        state = {"record": None, "asking": False}

        def check():
            if not state["asking"]:
                state["asking"] = True

                def got(result):
                    state["asking"] = False
                    out, _err, code = result
                    if code == 0:
                        state["record"] = json.loads(out)

                getProcessOutputAndValue(
                    VOICECALL, ("--json", "status", "--call-id", call_id), env=self.env
                ).addCallback(got)
            record = state["record"]
            return record if record is not None and predicate(record) else None

        return check

    @inlineCallbacks
    def test_kill_9_mid_call_and_restart(self):
        out, _, _ = yield self.cli(
            "call", "--to", TO, "--message", "Quick question for you.", "--mode", "conversation"
        )
        call_id = out.strip()
        call = yield self.twilio.when_call(0)
        yield call.answer()
        stream = yield call.when_stream()
        yield stream.when_mark_echoed("u1:end")
        yield wait_for(
            self._status_with(call_id, lambda r: r["transcript"]),
            what="the greeting in the transcript",
        )
        self.process.signalProcess(signal.SIGKILL)
        code = yield self.daemon.ended
        self.assertNotEqual(code, 0)
        # With the daemon gone, Twilio's stream and its Connect action fail and
        # Twilio ends the call; the restarted daemon learns that from Twilio.
        yield stream.when_closed()
        yield call.when_ended()
        yield self.start_daemon()
        record = yield self.status(call_id)
        self.assertEqual(record["state"], "completed")
        self.assertEqual(record["endDetail"], "ended while voicecalld was down")
        self.assertEqual([e["text"] for e in record["transcript"]], ["Quick question for you."])
        self.assertIn("restored 0 live call(s) of 1 found", self.log.read_text())

    @inlineCallbacks
    def test_provider_error_and_guard(self):
        self.twilio.fail_next("create", 400, 21211, "Invalid 'To' Phone Number")
        _, err, code = yield self.cli("call", "--to", TO, "--message", "hi", ok=False)
        self.assertEqual(code, 1)
        self.assertTrue(
            err.startswith("voicecall: PROVIDER_ERROR: Twilio 21211: Invalid 'To'"), err
        )
        requests = len(self.twilio.requests)
        _, err, code = yield self.cli("call", "--to", "+19005550100", "--message", "hi", ok=False)
        self.assertEqual(code, 1)
        self.assertIn("NOT_ALLOWED", err)
        self.assertEqual(len(self.twilio.requests), requests)
