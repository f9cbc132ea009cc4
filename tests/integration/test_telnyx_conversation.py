"""
A whole streamed Telnyx conversation through the real daemon process: the
fake Telnyx (REST, signed webhooks, RTP media stream), fake OpenAI speech,
realtime transcription and chat servers run in this test on 127.0.0.1; the
daemon is `twistd -n voicecalld` driven with the real `voicecall` CLI.
"""

from __future__ import annotations

import json
import os
import shutil
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
from tests.fakes.telnyx import FakeTelnyx
from tests.fakes.tts_servers import FakeTtsServer, openai_script, sine_pcm, split
from tests.integration.daemon import TWISTD, VOICECALL
from tests.unit.rigs import NO_TIMERS
from tests.waiting import wait_for

pytestmark = pytest.mark.integration

SECRETS = {
    "telnyx": "KEYTELNYXDONOTLOG0000000000000000_abcdef",
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


class TelnyxConversation(TestCase):
    """The README's promise for real calls on Telnyx, with every vendor faked on 127.0.0.1."""

    timeout = 60

    def webhook_port(self) -> int:
        """The port the daemon's webhook listens on (a subclass may bind it itself)."""
        return free_port()

    @inlineCallbacks
    def setUp(self):
        self.root = Path(tempfile.mkdtemp(prefix="vc-"))
        self.addCleanup(shutil.rmtree, self.root, True)
        self.telnyx = FakeTelnyx(SECRETS["telnyx"], insecure_ws=True, ws_options=NO_TIMERS)
        yield self.telnyx.listen()
        self.addCleanup(self.telnyx.stop)
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
            "provider": "telnyx",
            "fromNumber": "+15550001111",
            "telnyx": {
                "apiKey": SECRETS["telnyx"],
                "connectionId": self.telnyx.connection_id,
                "publicKey": self.telnyx.public_key_pem,
                "apiBaseUrl": self.telnyx.api_url,
            },
            "publicUrl": self.webhook,
            "serve": {"port": port},
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
                    "openai": {"apiKey": SECRETS["tts"], "baseUrl": self.tts.openai_base_url}
                },
            },
            "responseBaseUrl": f"http://127.0.0.1:{chat_port.getHost().port}/v1",
        }
        self.config = self.root / "openclaw.json"
        self.config.write_text(
            json.dumps({"plugins": {"entries": {"voice-call": {"config": config}}}})
        )
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
        """Start the daemon and wait until it is ready."""
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
            ],
            env=self.env,
        )
        self.addCleanup(self.stop_daemon)
        yield wait_for(
            lambda: (
                self.daemon.ended.called
                or (self.log.exists() and b"voicecalld ready" in self.log.read_bytes())
            ),
            what="daemon ready",
        )
        self.assertFalse(self.daemon.ended.called, self.log.read_text())

    def stop_daemon(self) -> Deferred | None:
        if self.daemon.ended.called:
            return None
        self.process.signalProcess("TERM")
        return self.daemon.ended

    @inlineCallbacks
    def cli(self, *args: str):
        out, err, code = yield getProcessOutputAndValue(VOICECALL, args, env=self.env)
        self.assertEqual(code, 0, err.decode())
        return out.decode()

    @inlineCallbacks
    def status(self, call_id: str):
        return json.loads((yield self.cli("--json", "status", "--call-id", call_id)))

    def status_with(self, call_id, predicate):
        """A check for L{wait_for}: asks C{status} (one CLI at a time) until C{predicate}."""
        state = {"record": None, "asking": None}

        def check():
            record = state["record"]
            if record is not None and predicate(record):
                return record
            if state["asking"] is None:

                def got(result):
                    state["asking"] = None
                    out, _err, code = result
                    if code == 0:
                        state["record"] = json.loads(out)

                state["asking"] = getProcessOutputAndValue(
                    VOICECALL, ("--json", "status", "--call-id", call_id), env=self.env
                ).addCallback(got)
                # A CLI still running when the test ends would leave the reactor dirty.
                self.addCleanup(lambda d=state["asking"]: d)
            return None

        return check

    @inlineCallbacks
    def test_outbound_streamed_conversation(self):
        out = yield self.cli(
            "call", "--to", TO, "--mode", "conversation", "--message", "Hello, this is Ada."
        )
        call_id = out.strip()
        call = yield self.telnyx.when_call(0)
        self.assertEqual(call.client_state_text, call_id)
        yield call.ring()
        yield call.answer()
        stream = yield call.when_stream()
        self.assertEqual(stream.mode, "rtp")
        yield stream.when_mark_echoed("u1:end")
        self.assertGreater(len(stream.outbound_audio.replace(b"\xff", b"")), 3000)
        record = yield self.status(call_id)
        self.assertEqual(record["transcript"][0]["text"], "Hello, this is Ada.")

        # The caller speaks, out of order on the wire; the STT hears it and a reply follows.
        yield stream.send_audio(b"\x55" * 3200, out_of_order=True)
        yield self.stt.audio_at_least(3200 - 3 * 160)
        self.stt.speech_started("item_1")
        self.stt.completed("item_1", "I'd like a table for two at eight.")
        yield stream.when_mark_echoed("u2:end")
        record = yield self.status(call_id)
        texts = [(e["speaker"], e["text"]) for e in record["transcript"]]
        self.assertIn(("user", "I'd like a table for two at eight."), texts)
        self.assertEqual(texts[-1], ("bot", "A table for two at eight works. Anything else?"))
        latency = record["metadata"]["lastTurnLatency"]
        for stage in ("reply", "ttsFirstByte", "oursToFirstFrame", "total", "ours"):
            self.assertIn(stage, latency)

        # Barge-in: the caller talks over a long reply; Telnyx is told to clear.
        self.chat.replies.append(
            "Let me read you our whole menu, starting with the antipasti, then the pasta."
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
        yield wait_for(
            self.status_with(call_id, lambda r: any(e.get("interrupted") for e in r["transcript"])),
            what="an interrupted reply",
        )

        # A key press arrives once (webhook and stream both carry it).
        yield call.press("5")
        record = yield wait_for(
            self.status_with(call_id, lambda r: any(e["kind"] == "dtmf" for e in r["transcript"])),
            what="caller DTMF",
        )
        self.assertEqual([e["text"] for e in record["transcript"] if e["kind"] == "dtmf"], ["5"])

        yield self.cli("end", "--call-id", call_id)
        yield call.when_ended()
        record = yield wait_for(
            self.status_with(call_id, lambda r: r["state"] == "hangup-bot"), what="hung up"
        )
        self.assertEqual(self.telnyx.errors, [])
        log = self.log.read_text()
        for name, secret in SECRETS.items():
            self.assertNotIn(secret, log, f"the {name} secret is in the daemon's log")
        self.assertNotIn(SECRETS["telnyx"], json.dumps(record))
