"""
Exposure through fake C{tailscale} and C{ngrok} executables.

Each test writes small Python scripts named C{tailscale} / C{ngrok} into a
temporary folder put first on the child's C{PATH}.  A script records its
argv, its process id and whether it saw C{NGROK_AUTHTOKEN}, and answers
from a canned plan: the first rule whose C{match} is a prefix of its
arguments.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import attrs
from twisted.internet import reactor
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial import unittest

from voicecalld.config.loader import parse_config
from voicecalld.expose import (
    ExposeError,
    ToolMissing,
    expose,
    expose_ngrok,
    expose_tailscale,
    local_exposure,
    start_exposure,
    stream_paths,
    tailscale_mounts,
)
from voicecalld.expose.ngrok import NgrokTunnel, ngrok_argv
from voicecalld.expose.process import find_executable, redact, run
from voicecalld.expose.tailscale import TailscaleArgv, check_mode

FAKE = """#!{python}
import json, os, signal, sys
path = os.path.abspath(__file__)
args = sys.argv[1:]
with open(path + ".log", "a") as log:
    record = {{"argv": args, "token": os.environ.get("NGROK_AUTHTOKEN"), "pid": os.getpid()}}
    log.write(json.dumps(record) + "\\n")
with open(path + ".plan.json") as f:
    plan = json.load(f)
for rule in plan:
    if args[: len(rule["match"])] == rule["match"]:
        break
else:
    sys.stderr.write("fake: no rule for %r\\n" % (args,))
    sys.exit(99)
if rule.get("ignore_term"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
sys.stdout.write(rule.get("stdout", ""))
sys.stdout.flush()
sys.stderr.write(rule.get("stderr", ""))
sys.stderr.flush()
with open(path + ".printed", "a") as printed:
    printed.write(json.dumps(args) + "\\n")
while rule.get("hang"):
    signal.pause()
sys.exit(rule.get("exit", 0))
"""

STATUS = {
    "match": ["status", "--json"],
    "stdout": json.dumps({"BackendState": "Running", "Self": {"DNSName": "box.tail1234.ts.net."}}),
}
ANYTHING_OK = {"match": [], "stdout": "Available on the internet\n"}
TOKEN = "tok-SECRET-2f9a"


async def eventually(predicate: Any, what: str) -> None:
    """Let the reactor run until C{predicate()} holds (bounded; no sleeping)."""
    for _ in range(5000):
        if predicate():
            return
        await deferLater(reactor, 0.002, lambda: None)
    raise AssertionError(f"timed out waiting for {what}")


def settings(config: dict[str, Any] | None = None) -> Any:
    return parse_config(config or {}, None, {}).settings


class FakeToolsTestCase(unittest.TestCase):
    """A temporary bin folder first on the child's PATH, and a Clock for deadlines."""

    def setUp(self) -> None:
        folder = tempfile.TemporaryDirectory(prefix="voicecalld-fake-bin-")
        self.addCleanup(folder.cleanup)
        self.bin = folder.name
        self.environ = dict(os.environ)
        self.environ["PATH"] = self.bin + os.pathsep + os.environ.get("PATH", "")
        self.environ.pop("NGROK_AUTHTOKEN", None)
        self.clock = Clock()

    def fake(self, name: str, plan: list[dict[str, Any]]) -> None:
        path = os.path.join(self.bin, name)
        with open(path, "w") as f:
            f.write(FAKE.format(python=sys.executable))
        os.chmod(path, 0o755)
        with open(path + ".plan.json", "w") as f:
            json.dump(plan, f)

    def calls(self, name: str) -> list[dict[str, Any]]:
        try:
            with open(os.path.join(self.bin, name + ".log")) as f:
                return [json.loads(line) for line in f]
        except FileNotFoundError:
            return []

    def gone(self, pid: int) -> bool:
        """Whether no process C{pid} is left in the OS (it ended and was reaped)."""
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    def argvs(self, name: str) -> list[list[str]]:
        return [call["argv"] for call in self.calls(name)]

    def kwargs(self) -> dict[str, Any]:
        return {"reactor": reactor, "clock": self.clock, "environ": self.environ}


class TailscaleTests(FakeToolsTestCase):
    """C{tailscale serve|funnel} mounts, URLs, clean-up and failures."""

    async def test_serve_mounts_the_webhook(self) -> None:
        self.fake("tailscale", [STATUS, ANYTHING_OK])
        exposure = await expose(settings(), "serve", **self.kwargs())
        self.assertEqual(exposure.public_url, "https://box.tail1234.ts.net/voice/webhook")
        self.assertEqual(exposure.how, "tailscale-serve")
        self.assertIsNone(exposure.stream_url)
        self.assertEqual(
            self.argvs("tailscale"),
            [
                ["status", "--json"],
                [
                    "serve",
                    "--bg",
                    "--yes",
                    "--set-path",
                    "/voice/webhook",
                    "http://127.0.0.1:3334/voice/webhook",
                ],
            ],
        )

    async def test_funnel_mounts_webhook_and_stream_paths_on_a_port(self) -> None:
        self.fake("tailscale", [STATUS, ANYTHING_OK])
        config = settings(
            {
                "serve": {"port": 4000},
                "tailscale": {"port": 8443, "path": "/public/hook"},
                "streaming": {"enabled": True, "streamPath": "/voice/stream"},
            }
        )
        exposure = await expose(config, "funnel", **self.kwargs())
        self.assertEqual(exposure.public_url, "https://box.tail1234.ts.net:8443/public/hook")
        self.assertEqual(exposure.stream_url, "wss://box.tail1234.ts.net:8443/voice/stream")
        self.assertEqual(
            self.argvs("tailscale")[1:],
            [
                [
                    "funnel",
                    "--bg",
                    "--yes",
                    "--https=8443",
                    "--set-path",
                    "/public/hook",
                    "http://127.0.0.1:4000/voice/webhook",
                ],
                [
                    "funnel",
                    "--bg",
                    "--yes",
                    "--https=8443",
                    "--set-path",
                    "/voice/stream",
                    "http://127.0.0.1:4000/voice/stream",
                ],
            ],
        )
        await exposure.stop()
        self.assertEqual(
            self.argvs("tailscale")[3:],
            [
                ["funnel", "--yes", "--https=8443", "--set-path", "/public/hook", "off"],
                ["funnel", "--yes", "--https=8443", "--set-path", "/voice/stream", "off"],
            ],
        )

    async def test_funnel_refuses_other_ports_before_running_anything(self) -> None:
        self.fake("tailscale", [STATUS, ANYTHING_OK])
        config = settings({"tailscale": {"port": 9000}})
        with self.assertRaises(ExposeError) as caught:
            await expose(config, "funnel", **self.kwargs())
        self.assertIn("funnel only accepts ports 443, 8443, 10000", str(caught.exception))
        self.assertEqual(self.calls("tailscale"), [])

    async def test_serve_accepts_any_port(self) -> None:
        self.fake("tailscale", [STATUS, ANYTHING_OK])
        config = settings({"tailscale": {"port": 9000}})
        exposure = await expose(config, "serve", **self.kwargs())
        self.assertEqual(exposure.public_url, "https://box.tail1234.ts.net:9000/voice/webhook")

    async def test_off_clears_every_path_and_tolerates_missing_ones(self) -> None:
        self.fake(
            "tailscale",
            [
                {
                    "match": ["serve", "--yes", "--https=443", "--set-path", "/voice/stream"],
                    "stderr": "error: failed to remove web serve: handler does not exist\n",
                    "exit": 1,
                },
                ANYTHING_OK,
            ],
        )
        exposure = await expose(settings(), "off", **self.kwargs())
        self.assertEqual((exposure.how, exposure.public_url), ("off", None))
        self.assertEqual(
            self.argvs("tailscale"),
            [
                ["serve", "--yes", "--https=443", "--set-path", "/voice/webhook", "off"],
                ["serve", "--yes", "--https=443", "--set-path", "/voice/stream", "off"],
                ["serve", "--yes", "--https=443", "--set-path", "/voice/stream/realtime", "off"],
            ],
        )

    async def test_off_uses_the_configured_funnel_mode(self) -> None:
        self.fake("tailscale", [ANYTHING_OK])
        await expose(settings({"tunnel": {"provider": "tailscale-funnel"}}), "off", **self.kwargs())
        self.assertEqual({argv[0] for argv in self.argvs("tailscale")}, {"funnel"})

    async def test_off_reports_real_failures(self) -> None:
        self.fake("tailscale", [{"match": [], "stderr": "error: boom\n", "exit": 1}])
        with self.assertRaises(ExposeError) as caught:
            await expose(settings(), "off", **self.kwargs())
        self.assertIn(
            "tailscale serve /voice/webhook off failed: error: boom", str(caught.exception)
        )

    async def test_funnel_not_enabled_gives_the_enable_url(self) -> None:
        self.fake(
            "tailscale",
            [
                STATUS,
                {
                    "match": ["funnel"],
                    "stderr": "Funnel is not enabled on your tailnet.\nTo enable, visit:\n\n"
                    "         https://login.tailscale.com/f/funnel?node=nAbC123\n",
                    "exit": 1,
                },
            ],
        )
        with self.assertRaises(ExposeError) as caught:
            await expose(settings(), "funnel", **self.kwargs())
        message = str(caught.exception)
        self.assertIn("Funnel is not enabled for this machine", message)
        self.assertIn("https://login.tailscale.com/f/funnel?node=nAbC123", message)
        self.assertNotIn("\n", message)

    async def test_failed_stream_mount_rolls_back_the_webhook_mount(self) -> None:
        self.fake(
            "tailscale",
            [
                STATUS,
                {
                    "match": ["serve", "--bg", "--yes", "--set-path", "/voice/stream"],
                    "stderr": "error: port is already serving TCP\n",
                    "exit": 1,
                },
                ANYTHING_OK,
            ],
        )
        config = settings({"streaming": {"enabled": True}})
        with self.assertRaises(ExposeError) as caught:
            await expose(config, "serve", **self.kwargs())
        self.assertIn("port is already serving TCP", str(caught.exception))
        self.assertEqual(
            self.argvs("tailscale")[-1],
            ["serve", "--yes", "--https=443", "--set-path", "/voice/webhook", "off"],
        )

    async def test_a_hanging_tailscale_is_killed_at_the_deadline(self) -> None:
        self.fake(
            "tailscale",
            [
                STATUS,
                {
                    "match": ["funnel"],
                    "stdout": "To enable, visit: https://login.tailscale.com/f/funnel?node=x\n",
                    "hang": True,
                },
            ],
        )
        exposing = expose(settings(), "funnel", **self.kwargs())
        printed = os.path.join(self.bin, "tailscale.printed")
        await eventually(
            lambda: os.path.exists(printed) and len(Path(printed).read_text().splitlines()) == 2,
            "the funnel command's output",
        )
        self.clock.advance(29)
        self.assertNoResult(exposing)
        self.clock.advance(1)
        with self.assertRaises(ExposeError) as caught:
            await exposing
        self.assertIn("did not finish within 30 s", str(caught.exception))
        self.assertIn("https://login.tailscale.com/f/funnel?node=x", str(caught.exception))

    async def test_missing_tailscale_is_explained(self) -> None:
        self.environ["PATH"] = self.bin
        with self.assertRaises(ToolMissing) as caught:
            await expose(settings(), "serve", **self.kwargs())
        self.assertEqual(
            str(caught.exception),
            "tailscale is not installed or not on PATH; install it from"
            " https://tailscale.com/download",
        )

    async def test_status_problems(self) -> None:
        table = [
            (
                {"BackendState": "NeedsLogin", "Self": {}},
                "tailscale is not running (state NeedsLogin)",
            ),
            ({"BackendState": "Running", "Self": {"DNSName": ""}}, "no DNS name"),
            ("not json", "not JSON"),
        ]
        for output, expected in table:
            text = output if isinstance(output, str) else json.dumps(output)
            self.fake("tailscale", [{"match": ["status"], "stdout": text}])
            with self.assertRaises(ExposeError) as caught:
                await expose(settings(), "serve", **self.kwargs())
            self.assertIn(expected, str(caught.exception))

    async def test_status_failure(self) -> None:
        self.fake(
            "tailscale",
            [{"match": ["status"], "stderr": "failed to connect to local tailscaled\n", "exit": 1}],
        )
        with self.assertRaises(ExposeError) as caught:
            await expose_tailscale(settings(), "serve", **self.kwargs())
        self.assertEqual(
            str(caught.exception), "tailscale status failed: failed to connect to local tailscaled"
        )

    async def test_unknown_mode(self) -> None:
        with self.assertRaises(ExposeError):
            await expose(settings(), "public", **self.kwargs())


class NgrokTests(FakeToolsTestCase):
    """The ngrok agent: URL from its JSON log, failures, and shutdown."""

    def log_lines(self, *entries: dict[str, Any]) -> str:
        return "".join(json.dumps(e) + "\n" for e in entries)

    def started(self, **extra: Any) -> dict[str, Any]:
        return {
            "match": ["http"],
            "stdout": self.log_lines(
                {"lvl": "info", "msg": "starting web service", "addr": "127.0.0.1:4040"},
                {"lvl": "info", "msg": "client session established", "err": "<nil>"},
                {
                    "lvl": "info",
                    "msg": "started tunnel",
                    "name": "command_line",
                    "addr": "http://localhost:3334",
                    "url": "https://ab12.ngrok-free.app",
                },
                {"lvl": "info", "msg": "update", "url": "https://other.example"},
            ),
            "hang": True,
            **extra,
        }

    async def test_start_gives_the_url_and_keeps_the_token_off_the_command_line(self) -> None:
        self.fake("ngrok", [self.started()])
        config = settings(
            {
                "tunnel": {
                    "provider": "ngrok",
                    "ngrokAuthToken": TOKEN,
                    "ngrokDomain": "voice.ngrok.app",
                },
                "streaming": {"enabled": True},
            }
        )
        exposure = await start_exposure(config, **self.kwargs())
        self.assertEqual(exposure.how, "ngrok")
        self.assertEqual(exposure.public_url, "https://ab12.ngrok-free.app/voice/webhook")
        self.assertEqual(exposure.stream_url, "wss://ab12.ngrok-free.app/voice/stream")
        (call,) = self.calls("ngrok")
        self.assertEqual(
            call["argv"],
            [
                "http",
                "3334",
                "--log",
                "stdout",
                "--log-format",
                "json",
                "--domain",
                "voice.ngrok.app",
            ],
        )
        self.assertEqual(call["token"], TOKEN)
        self.assertNotIn(TOKEN, " ".join(call["argv"]))
        await exposure.stop()

    async def test_stop_terminates_the_agent(self) -> None:
        self.fake("ngrok", [self.started()])
        tunnel = NgrokTunnel(**self.kwargs())
        url = await tunnel.start(3334)
        self.assertEqual(url, "https://ab12.ngrok-free.app")
        self.assertTrue(tunnel.running)
        (call,) = self.calls("ngrok")
        self.assertFalse(self.gone(call["pid"]))
        await tunnel.stop()
        self.assertFalse(tunnel.running)
        self.assertTrue(self.gone(call["pid"]))
        await tunnel.stop()

    async def test_a_stubborn_agent_is_killed_after_the_grace(self) -> None:
        self.fake("ngrok", [self.started(ignore_term=True)])
        tunnel = NgrokTunnel(**self.kwargs())
        await tunnel.start(3334)
        stopping = tunnel.stop()
        self.assertNoResult(stopping)
        self.clock.advance(5)
        await stopping
        self.assertFalse(tunnel.running)
        (call,) = self.calls("ngrok")
        self.assertTrue(self.gone(call["pid"]))

    async def test_err_ngrok_on_stderr_fails_and_hides_the_token(self) -> None:
        self.fake(
            "ngrok",
            [
                {
                    "match": ["http"],
                    "stderr": "ERROR:  authentication failed: The authtoken you specified does"
                    f" not look like a proper ngrok tunnel authtoken.\nERROR:  Your authtoken:"
                    f" {TOKEN}\nERROR:\nERROR:  ERR_NGROK_105\n",
                    "hang": True,
                }
            ],
        )
        tunnel = NgrokTunnel(**self.kwargs())
        with self.assertRaises(ExposeError) as caught:
            await tunnel.start(3334, authtoken=TOKEN)
        self.assertIn("ERR_NGROK_105", str(caught.exception))
        self.assertNotIn(TOKEN, str(caught.exception))
        await eventually(lambda: not tunnel.running, "the agent terminated")

    async def test_err_ngrok_in_the_json_log_fails(self) -> None:
        self.fake(
            "ngrok",
            [
                {
                    "match": ["http"],
                    "stdout": self.log_lines(
                        {
                            "lvl": "eror",
                            "msg": "session closing",
                            "err": f"authentication failed: bad token {TOKEN}\r\n\r\nERR_NGROK_107",
                        }
                    ),
                    "hang": True,
                }
            ],
        )
        tunnel = NgrokTunnel(**self.kwargs())
        with self.assertRaises(ExposeError) as caught:
            await tunnel.start(3334, authtoken=TOKEN)
        self.assertIn("ERR_NGROK_107", str(caught.exception))
        self.assertNotIn(TOKEN, str(caught.exception))
        await eventually(lambda: not tunnel.running, "the agent terminated")

    async def test_no_url_within_30_seconds(self) -> None:
        self.fake(
            "ngrok",
            [{"match": ["http"], "stdout": self.log_lines({"msg": "starting"}), "hang": True}],
        )
        tunnel = NgrokTunnel(**self.kwargs())
        starting = tunnel.start(3334)
        await eventually(lambda: self.calls("ngrok"), "the agent started")
        self.clock.advance(29.9)
        self.assertNoResult(starting)
        self.clock.advance(0.1)
        with self.assertRaises(ExposeError) as caught:
            await starting
        self.assertEqual(str(caught.exception), "ngrok failed: no public URL within 30 s")
        await eventually(lambda: not tunnel.running, "the agent terminated")

    async def test_agent_exiting_early(self) -> None:
        self.fake("ngrok", [{"match": ["http"], "stderr": "something went wrong\n", "exit": 3}])
        tunnel = NgrokTunnel(**self.kwargs())
        with self.assertRaises(ExposeError) as caught:
            await tunnel.start(3334)
        self.assertEqual(
            str(caught.exception),
            "ngrok exited (status 3): something went wrong before reporting a public URL",
        )

    async def test_agent_dying_later_is_logged(self) -> None:
        logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.fake("ngrok", [self.started()])
        tunnel = NgrokTunnel(**self.kwargs())
        await tunnel.start(3334)
        (call,) = self.calls("ngrok")
        os.kill(call["pid"], 15)
        await eventually(lambda: not tunnel.running, "the agent gone")
        self.assertTrue(self.gone(call["pid"]))
        events = [e for e in logged if e.get("log_namespace") == "voicecalld.expose.ngrok"]
        self.assertEqual(len(events), 1)
        self.assertIn("ngrok exited", events[0]["why"])

    async def test_missing_ngrok_is_explained(self) -> None:
        self.environ["PATH"] = self.bin
        with self.assertRaises(ToolMissing) as caught:
            await expose_ngrok(settings({"tunnel": {"provider": "ngrok"}}), **self.kwargs())
        self.assertEqual(
            str(caught.exception),
            "ngrok is not installed or not on PATH; install it from https://ngrok.com/download",
        )


class StartExposureTests(FakeToolsTestCase):
    """Which exposure the daemon picks at start-up."""

    async def test_public_url_wins_and_runs_nothing(self) -> None:
        self.fake("tailscale", [STATUS, ANYTHING_OK])
        self.fake("ngrok", [self.fake_never()])
        config = settings(
            {
                "publicUrl": "https://voice.example.com/voice/webhook",
                "tunnel": {"provider": "ngrok"},
                "tailscale": {"mode": "funnel"},
                "streaming": {"enabled": True},
            }
        )
        exposure = await start_exposure(config, **self.kwargs())
        self.assertEqual(
            (exposure.how, exposure.public_url, exposure.stream_url),
            (
                "publicUrl",
                "https://voice.example.com/voice/webhook",
                "wss://voice.example.com/voice/stream",
            ),
        )
        self.assertEqual((self.calls("tailscale"), self.calls("ngrok")), ([], []))
        await exposure.stop()

    def fake_never(self) -> dict[str, Any]:
        return {"match": [], "exit": 1}

    async def test_tunnel_tailscale_beats_legacy_mode(self) -> None:
        self.fake("tailscale", [STATUS, ANYTHING_OK])
        config = settings(
            {"tunnel": {"provider": "tailscale-serve"}, "tailscale": {"mode": "funnel"}}
        )
        exposure = await start_exposure(config, **self.kwargs())
        self.assertEqual(exposure.how, "tailscale-serve")

    async def test_legacy_tailscale_mode(self) -> None:
        self.fake("tailscale", [STATUS, ANYTHING_OK])
        exposure = await start_exposure(
            settings({"tailscale": {"mode": "funnel"}}), **self.kwargs()
        )
        self.assertEqual(exposure.how, "tailscale-funnel")
        self.assertEqual(self.argvs("tailscale")[1][0], "funnel")

    async def test_nothing_configured_is_local(self) -> None:
        exposure = await start_exposure(settings(), **self.kwargs())
        self.assertEqual(
            (exposure.how, exposure.public_url), ("local", "http://127.0.0.1:3334/voice/webhook")
        )


class PureTests(unittest.TestCase):
    """Helpers that run nothing."""

    def test_argv_in_one_place(self) -> None:
        self.assertEqual(TailscaleArgv.status(), ["status", "--json"])
        self.assertEqual(
            TailscaleArgv.mount("serve", 443, "/p", "http://127.0.0.1:1/p"),
            ["serve", "--bg", "--yes", "--set-path", "/p", "http://127.0.0.1:1/p"],
        )
        self.assertEqual(
            TailscaleArgv.unmount("funnel", 10000, "/p"),
            ["funnel", "--yes", "--https=10000", "--set-path", "/p", "off"],
        )
        self.assertEqual(
            ngrok_argv(80), ["ngrok", "http", "80", "--log", "stdout", "--log-format", "json"]
        )

    def test_check_mode(self) -> None:
        for port in (443, 8443, 10000):
            check_mode("funnel", port)
        check_mode("serve", 3000)
        for mode, port in (("funnel", 80), ("funnel", 3334), ("tunnel", 443), ("serve", 70000)):
            self.assertRaises(ExposeError, check_mode, mode, port)

    def test_mounts_and_stream_paths(self) -> None:
        config = settings(
            {
                "serve": {"bind": "::1", "port": 5000, "path": "/hooks/webhook"},
                "streaming": {"enabled": True, "streamPath": "/media"},
            }
        )
        self.assertEqual(stream_paths(config), ["/media"])
        # Both at once is refused by the config check; the helper still lists both.
        config = attrs.evolve(config, realtime=attrs.evolve(config.realtime, enabled=True))
        self.assertEqual(stream_paths(config), ["/media", "/hooks/stream/realtime"])
        self.assertEqual(
            tailscale_mounts(config),
            [
                ("/voice/webhook", "http://[::1]:5000/hooks/webhook"),
                ("/media", "http://[::1]:5000/media"),
                ("/hooks/stream/realtime", "http://[::1]:5000/hooks/stream/realtime"),
            ],
        )

    def test_local_exposure(self) -> None:
        self.assertEqual(
            local_exposure(settings({"serve": {"bind": "::1"}})).public_url,
            "http://[::1]:3334/voice/webhook",
        )

    def test_redact_and_find(self) -> None:
        self.assertEqual(redact("a tok b tok", ["tok", None, ""]), "a <redacted> b <redacted>")
        self.assertIsNone(find_executable("surely-not-a-tool-xyz", {"PATH": "/nonexistent"}))

    async def test_run_reports_missing_tools(self) -> None:
        with self.assertRaises(ToolMissing):
            await run("surely-not-a-tool-xyz", [], reactor=reactor, environ={"PATH": ""})
