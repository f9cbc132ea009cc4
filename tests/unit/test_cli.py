"""The voicecall CLI: its options, where it finds the socket, and the lines it prints."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys

from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock
from twisted.protocols import amp
from twisted.test import iosim
from twisted.trial.unittest import TestCase

from tests.unit.test_control import Fixture, ProbeProtocol
from voicecalld.cli import main, where
from voicecalld.config import ConfigError, load_config
from voicecalld.control import commands as c


def parse(*argv: str) -> dict:
    return vars(main.parser().parse_args(argv))


def usage_error(argv: list[str]) -> tuple[int, str]:
    """The exit status and stderr of a command line the parser refuses."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            main.main(argv)
        except SystemExit as e:
            return e.code, err.getvalue()
    raise AssertionError("no usage error")


class GlobalOptionTests(TestCase):
    """--socket, --json and --timeout go before or after the command, alike."""

    def test_after_the_command_as_before(self):
        before = parse("--json", "--socket", "/p", "--timeout", "5", "status", "--call-id", "X")
        after = parse("status", "--call-id", "X", "--json", "--socket", "/p", "--timeout", "5")
        self.assertEqual(before, after)
        self.assertEqual(
            after,
            {
                "socket": "/p",
                "json": True,
                "timeout": 5.0,
                "command": "status",
                "call_id": "X",
                "recent": None,
            },
        )

    def test_both_positions_combine(self):
        args = parse("--timeout", "3", "tail", "--socket", "/p")
        self.assertEqual((args["timeout"], args["socket"], args["json"]), (3.0, "/p", False))
        args = parse("--json", "status", "--timeout", "2")
        self.assertEqual((args["json"], args["timeout"], args["socket"]), (True, 2.0, None))

    def test_defaults_and_nested_commands(self):
        self.assertEqual(
            {k: v for k, v in parse("status").items() if k in ("socket", "json", "timeout")},
            {"socket": None, "json": False, "timeout": None},
        )
        args = parse("simulate", "say", "--call-id", "x", "--text", "hi", "--json")
        self.assertTrue(args["json"])
        args = parse("simulate", "--socket", "/s", "hangup", "--call-id", "x")
        self.assertEqual(args["socket"], "/s")

    def test_a_usage_error_is_one_line_and_exit_2(self):
        for argv in (
            ["status", "--recent", "x"],
            ["status", "--jsn"],
            ["call", "--to", "+15551234567"],
            ["tail", "--timeout"],
            [],
        ):
            code, err = usage_error(argv)
            self.assertEqual(code, 2, argv)
            self.assertEqual(err.count("\n"), 1, err)
            self.assertTrue(err.startswith("voicecall: "), err)
        code, err = usage_error(["status", "--timeout", "soon"])
        self.assertEqual(
            err,
            "voicecall: argument --timeout: invalid float value: 'soon'"
            " (see `voicecall status --help`)\n",
        )


class SocketLookupTests(TestCase):
    """--socket, else $VOICECALLD_SOCKET, else the config's controlSocket, else the state dir."""

    def write(self, text: str) -> str:
        path = self.mktemp()
        with open(path, "w") as handle:
            handle.write(text)
        return path

    def broken_config(self) -> str:
        """A whole OpenClaw config the daemon refuses, with the socket set in it."""
        return self.write(
            """// JSON5, as OpenClaw writes it
            {
              gateway: {port: 18789},
              plugins: {entries: {'voice-call': {config: {
                provider: 'twilio',
                twilio: {accountSid: 'AC1', authToken: {source: 'env', id: 'NOT_SET'}},
                noSuchKey: true,
                controlSocket: '/run/vc/control.sock',
              }}}},
            }"""
        )

    def test_an_explicit_socket_wins(self):
        env = {"VOICECALLD_SOCKET": "/env.sock", "VOICECALLD_CONFIG": self.broken_config()}
        self.assertEqual(where.socket_path("/x.sock", env), "/x.sock")
        self.assertEqual(where.socket_path("rel.sock", env), os.path.abspath("rel.sock"))

    def test_the_environment_comes_before_the_config(self):
        env = {"VOICECALLD_SOCKET": "/env.sock", "VOICECALLD_CONFIG": self.broken_config()}
        self.assertEqual(where.socket_path(None, env), "/env.sock")

    def test_a_config_the_daemon_refuses_still_names_the_socket(self):
        path = self.broken_config()
        self.assertRaises(ConfigError, load_config, path, {})
        env = {"VOICECALLD_CONFIG": path, "VOICECALLD_STATE_DIR": "/state"}
        self.assertEqual(where.socket_path(None, env), "/run/vc/control.sock")

    def test_a_bare_plugin_config(self):
        path = self.write('{provider: "mock", controlSocket: "~/vc.sock"}')
        env = {"OPENCLAW_CONFIG_PATH": path}
        self.assertEqual(
            where.socket_path(None, env), os.path.expanduser("~/vc.sock")
        )  # expanded as the daemon expands it

    def test_otherwise_the_state_dir(self):
        for text in (
            '{plugins: {entries: {"voice-call": {config: {provider: "mock"}}}}}',
            "{controlSocket: ",
            "[1, 2]",
            '{plugins: {entries: "x"}, controlSocket: "/top-level-is-not-the-plugin"}',
            "{controlSocket: 7}",
        ):
            env = {"VOICECALLD_CONFIG": self.write(text), "VOICECALLD_STATE_DIR": "/state"}
            self.assertEqual(where.socket_path(None, env), "/state/control.sock", text)
        env = {"VOICECALLD_CONFIG": "/no/such/file", "XDG_STATE_HOME": "/xdg"}
        self.assertEqual(where.socket_path(None, env), "/xdg/voicecalld/control.sock")
        home = self.mktemp()
        self.assertEqual(
            where.socket_path(None, {"HOME": home}),
            os.path.join(home, ".local", "state", "voicecalld", "control.sock"),
        )

    def test_daemon_commands_do_not_import_the_config_package(self):
        env = {"VOICECALLD_CONFIG": self.broken_config()}
        code = (
            "import sys\n"
            "from voicecalld.cli import main\n"
            f"print(main.where.socket_path(None, {env!r}))\n"
            "print(sorted(m for m in sys.modules if m.startswith('voicecalld.config')))\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout
        self.assertEqual(out, "/run/vc/control.sock\n[]\n")


class _OldDaemon(amp.AMP):
    """A daemon from before UNKNOWN_COMMAND: plain AMP that knows only Ping."""

    @c.Ping.responder
    def ping(self):
        return {"version": "0", "provider": "mock"}


class WireTests(TestCase):
    """The CLI against a server in memory: what it prints, and its exit status."""

    def cli(self, server: amp.AMP, *argv: str, advance: float | None = None):
        """Run C{voicecall argv} against C{server}; (exit status, stdout, stderr)."""
        reactor = MemoryReactorClock()
        args = main.parser().parse_args(["--socket", "/test.sock", *argv])
        out, err = io.StringIO(), io.StringIO()
        done = Deferred.fromCoroutine(main.execute(reactor, args, {}, out, err))
        path, factory = reactor.unixClients[0][:2]
        self.assertEqual(path, "/test.sock")
        client = factory.buildProtocol(None)
        pump = iosim.connect(
            server, iosim.makeFakeServer(server), client, iosim.makeFakeClient(client), greet=True
        )
        pump.flush()
        if advance is not None:
            reactor.advance(advance)
            pump.flush()
        return self.successResultOf(done), out.getvalue(), err.getvalue()

    def daemon(self):
        return Fixture(self).factory.buildProtocol(None)

    def test_json_after_the_command(self):
        code, out, err = self.cli(self.daemon(), "status", "--json")
        self.assertEqual((code, json.loads(out), err), (0, {"calls": []}, ""))

    def test_a_refusal_is_one_line_and_exit_1(self):
        code, out, err = self.cli(self.daemon(), "status", "--call-id", "nope")
        self.assertEqual((code, out), (1, ""))
        self.assertEqual(err, "voicecall: UNKNOWN_CALL: No call with id nope\n")
        code, _out, err = self.cli(self.daemon(), "status", "--recent", "-1")
        self.assertEqual(
            (code, err), (1, "voicecall: INVALID_ARGUMENT: recent must be a positive number\n")
        )

    def test_unknown_command(self):
        code, _out, err = self.cli(ProbeProtocol(), "expose", "--mode", "off")
        self.assertEqual(code, 1)
        self.assertEqual(
            err, "voicecall: UNKNOWN_COMMAND: no command 'Expose' here (known: Ping, Probe)\n"
        )

    def test_unknown_command_on_an_older_daemon(self):
        code, _out, err = self.cli(_OldDaemon(), "status")
        self.assertEqual(code, 1)
        self.assertTrue(err.startswith("voicecall: UNKNOWN_COMMAND: voicecalld does not know"))
        self.assertEqual(err.count("\n"), 1)

    def test_too_large(self):
        daemon = self.daemon()
        daemon.max_request = 200
        code, out, err = self.cli(daemon, "call", "--to", "+15551234567", "-m", "x" * 300)
        self.assertEqual((code, out), (1, ""))
        self.assertRegex(
            err,
            r"^voicecall: TOO_LARGE: request of \d+ bytes refused: at most 200 bytes per"
            r" request\n$",
        )

    def test_the_timeout_after_the_command(self):
        f = Fixture(self)
        call_id = f.h.answered_call()
        daemon = f.factory.buildProtocol(None)
        argv = ("continue", "--call-id", call_id, "-m", "Name?", "--timeout", "5")
        code, _out, err = self.cli(daemon, *argv, advance=5)
        self.assertEqual(code, 1)
        self.assertEqual(err, "voicecall: TIMEOUT: no answer from voicecalld within 5.0 s\n")
