"""
The restart scenarios every carrier's conversation test runs (mixed into
its conversation test case): a streamed call, SIGTERM mid-listen or
mid-utterance, a new daemon on the same state directory, and the call goes
on with its transcript whole.

Every daemon runs under systemd-style socket activation: the test case binds
the control socket and the webhook port once, as C{voicecalld.socket} does,
and hands them to each daemon at fds 3 and 4 with C{LISTEN_FDS},
C{LISTEN_FDNAMES} and the daemon's own pid in C{LISTEN_PID}.  What reaches
them between two daemons (the carrier's request once its media socket went
away: Twilio's C{<Connect action>}, Telnyx's C{streaming.stopped}, Plivo's
C{<Redirect>} after C{<Stream>}; a CLI's C{status}) is sent once and waits
in the listen backlog for the next process.
"""

from __future__ import annotations

import datetime
import json
import signal
import socket
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SkipTest

from tests.fakes.tts_servers import openai_script, sine_pcm, split
from tests.integration.daemon import TWISTD, VOICECALL
from tests.integration.test_twilio_conversation import _Daemon
from tests.waiting import wait_for

TO = "+15551234567"
GREETING = "Hello from Luigi's."
REPLY = "A table for two at eight works. Anything else?"
#: Runs the daemon with its own pid in LISTEN_PID, as systemd does (the shell's, kept by exec).
AS_SYSTEMD = 'export LISTEN_PID=$$; exec "$0" "$@"'
#: The endpoints of the sockets systemd hands over, by the names voicecalld.socket gives them.
ACTIVATED = (
    "--control",
    "systemd:domain=UNIX:name=control",
    "--webhook",
    "systemd:domain=INET:name=webhook",
)
LONG_REPLY = (
    "Let me read you our whole menu, starting with the antipasti, then the pasta,"
    " then the mains and desserts."
)


def elsewhere(self: Any) -> None:
    """A conversation test inherited by a restart case: it runs in its own module."""
    raise SkipTest("runs in the conversation test module")


class RestartScenarios:
    """Mixed into a carrier's conversation TestCase; see the module docstring."""

    timeout = 90
    #: The test's fake carrier attribute.
    carrier = ""
    #: The most a restart may add to the caller's pause beyond the next
    #: process's own start-up (interpreter, imports, twistd): the stop, the
    #: restore from the store and the carrier's new stream.  The start-up
    #: itself is the machine's (about 1 s on an idle core, several under load).
    max_pause_beyond_start = 1.5

    def webhook_port(self) -> int:
        """
        Bind the control socket and the webhook port here, once for every
        daemon of the test, as C{voicecalld.socket} does; the webhook's port.
        """
        state = self.root / "state"
        state.mkdir(mode=0o700, parents=True, exist_ok=True)
        control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        control.bind(str(state / "control.sock"))
        control.listen(64)
        webhook = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        webhook.bind(("127.0.0.1", 0))
        webhook.listen(64)
        self.sockets = [("control", control), ("webhook", webhook)]
        for _, held in self.sockets:
            self.addCleanup(held.close)
        return webhook.getsockname()[1]

    @inlineCallbacks
    def start_daemon(self):
        """Start a daemon on the held sockets (fds 3 and 4) and wait until it is ready."""
        seen = self.log.stat().st_size if self.log.exists() else 0
        self.daemon = daemon = _Daemon(self.log)
        argv = [TWISTD, "-n", "--pidfile=", "voicecalld", "--state-dir", str(self.root / "state")]
        self.process = process = reactor.spawnProcess(
            daemon,
            "/bin/sh",
            ["/bin/sh", "-c", AS_SYSTEMD, *argv, "--config", str(self.config), *ACTIVATED],
            env={
                **self.env,
                "LISTEN_FDS": str(len(self.sockets)),
                "LISTEN_FDNAMES": ":".join(name for name, _ in self.sockets),
            },
            childFDs={
                0: "w",
                1: "r",
                2: "r",
                **{3 + i: held.fileno() for i, (_, held) in enumerate(self.sockets)},
            },
        )
        self.addCleanup(lambda: None if daemon.ended.called else self._stop(process, daemon))
        yield wait_for(
            lambda: (
                daemon.ended.called
                or (self.log.exists() and b"voicecalld ready" in self.log.read_bytes()[seen:])
            ),
            what="the daemon ready",
        )
        self.assertFalse(daemon.ended.called, self.log.read_text())

    @staticmethod
    def _stop(process, daemon):
        process.signalProcess(signal.SIGTERM)
        return daemon.ended

    @inlineCallbacks
    def restart(self, call_id):
        """
        SIGTERM the daemon, wait for it to exit 0 with the socket file left
        in place, start the next one; a C{status} asked while no daemon runs
        waits in the backlog and is answered by the next.
        """
        self.marks = {"sigterm": reactor.seconds()}
        self.process.signalProcess(signal.SIGTERM)
        code = yield self.daemon.ended
        self.marks["exited"] = reactor.seconds()
        self.assertEqual(code, 0, self.log.read_text())
        self.assertTrue((self.root / "state" / "control.sock").exists())
        asked = getProcessOutputAndValue(
            VOICECALL, ("--json", "status", "--call-id", call_id), env=self.env
        )
        self.addCleanup(lambda: asked)
        yield self.start_daemon()
        self.marks["ready"] = reactor.seconds()
        out, err, code = yield asked
        self.assertEqual(code, 0, err.decode())
        self.assertEqual(json.loads(out)["callId"], call_id)

    def assert_pause(self, pause: float, what: str) -> None:
        """The restart added at most L{max_pause_beyond_start} to the next process's start-up."""
        start_up = self.marks["ready"] - self.marks["exited"]
        self.assertLessEqual(pause - start_up, self.max_pause_beyond_start, what)

    def timeline(self) -> str:
        """Where a restart's time went: the stop (by the daemon's log), its exit, the next start."""
        logged: dict[str, datetime.datetime] = {}
        for line in self.log.read_text(errors="replace").splitlines():
            for key, text in (("sigterm", "received SIGTERM"), ("stopped", "voicecalld stopped")):
                if text in line and key not in logged:
                    logged[key] = datetime.datetime.fromisoformat(line.split()[0].rstrip("Z"))
        stop = (
            f"{(logged['stopped'] - logged['sigterm']).total_seconds():.2f} s"
            if len(logged) == 2
            else "?"
        )
        marks = self.marks
        return (
            f"stop {stop}, exit {marks['exited'] - marks['sigterm']:.2f} s after SIGTERM,"
            f" next daemon ready {marks['ready'] - marks['exited']:.2f} s after that"
        )

    @inlineCallbacks
    def record_when(self, call_id, predicate, what, tries=200):
        """The call's record once C{predicate} holds for it (one status request at a time)."""
        for _ in range(tries):
            record = yield self.status(call_id)
            if predicate(record):
                return record
        self.fail(f"{what}: not seen in {tries} status requests; last {record}")

    @inlineCallbacks
    def call_greeted(self):
        """A conversation call, answered, greeted and listening; (call id, fake call, stream)."""
        out = yield self.cli("call", "--to", TO, "--mode", "conversation", "--message", GREETING)
        call_id = (out[0] if isinstance(out, tuple) else out).strip()
        call = yield getattr(self, self.carrier).when_call(0)
        yield call.answer()
        stream = yield call.when_stream()
        yield stream.when_mark_echoed("u1:end")
        yield self.record_when(call_id, lambda r: r["state"] == "listening", "the call listening")
        return call_id, call, stream

    @inlineCallbacks
    def caller_says(self, stream, item, text):
        """The caller speaks on C{stream}; the STT hears C{text}."""
        yield stream.send_audio(b"\x55" * 1600)
        self.stt.speech_started(item)
        self.stt.completed(item, text)

    @inlineCallbacks
    def test_restart_mid_listen(self):
        call_id, call, _ = yield self.call_greeted()
        stopping = reactor.seconds()
        yield self.restart(call_id)
        again = yield call.when_stream(1)
        deaf = again.started_at - stopping
        timeline = self.timeline()
        print(f"\n{self.carrier} mid-listen: {deaf:.2f} s, SIGTERM to next stream ({timeline})")
        record = yield self.status(call_id)
        self.assertIn(record["state"], ("active", "listening"))
        yield self.caller_says(again, "item_1", "A table for two, please.")
        record = yield self.record_when(
            call_id, lambda r: r["transcript"][-1]["text"] == REPLY, "the reply in the transcript"
        )
        texts = [(e["speaker"], e["text"]) for e in record["transcript"]]
        self.assertEqual(
            texts, [("bot", GREETING), ("user", "A table for two, please."), ("bot", REPLY)]
        )
        yield self.cli("end", "--call-id", call_id)
        yield call.when_ended()
        self.assert_pause(deaf, f"SIGTERM to the next stream ({timeline})")

    @inlineCallbacks
    def test_restart_mid_utterance(self):
        call_id, call, stream = yield self.call_greeted()
        self.chat.replies.append(LONG_REPLY)
        self.tts.openai = openai_script(chunks=split(sine_pcm(4.0), 40), delay=0.05)
        yield self.caller_says(stream, "item_1", "What's on the menu?")
        yield wait_for(
            lambda: any(
                name.startswith("u2:") and name != "u2:end" for _, name in stream.marks_echoed
            ),
            what="part of the long reply played",
        )
        stopping = reactor.seconds()
        yield self.restart(call_id)
        # The last frame the caller got before the old stream closed.
        last_frame = stream.frames[-1][0]
        self.tts.openai = openai_script(chunks=split(sine_pcm(0.6), 6), delay=0.02)
        again = yield call.when_stream(1)
        self.assertNotEqual(again.start_message, None)
        # The words the caller did not hear yet come first, on the new stream.
        yield wait_for(
            lambda: [n for _, n in again.marks_echoed if n.endswith(":end")],
            what="the rest of the cut reply played",
        )
        pause = again.frames[0][0] - last_frame
        deaf = again.started_at - stopping
        timeline = self.timeline()
        print(
            f"\n{self.carrier} mid-utterance: {pause:.2f} s of silence,"
            f" {deaf:.2f} s SIGTERM to next stream ({timeline})"
        )
        yield self.record_when(
            call_id, lambda r: len(r["transcript"]) == 4, "the rest of the reply in the transcript"
        )
        yield self.caller_says(again, "item_2", "Thanks, a table for two.")
        record = yield self.record_when(
            call_id, lambda r: r["transcript"][-1]["text"] == REPLY, "the reply in the transcript"
        )
        entries = record["transcript"]
        texts = [(e["speaker"], e["text"]) for e in entries]
        self.assertEqual(texts[:2], [("bot", GREETING), ("user", "What's on the menu?")])
        cut, rest = entries[2], entries[3]
        self.assertEqual((cut["speaker"], rest["speaker"]), ("bot", "bot"), entries)
        self.assertTrue(cut.get("interrupted"), entries)
        self.assertFalse(rest.get("interrupted"), entries)
        self.assertEqual(f"{cut['text']} {rest['text']}".strip(), LONG_REPLY, entries)
        self.assertEqual(texts[4:], [("user", "Thanks, a table for two."), ("bot", REPLY)])
        yield self.cli("end", "--call-id", call_id)
        yield call.when_ended()
        self.assert_pause(pause, f"the caller's pause ({timeline})")
