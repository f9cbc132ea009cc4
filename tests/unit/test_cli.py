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


class TransferTests(TestCase):
    """C{voicecall transfer}: nothing (or C{{"ok": true}}) once the carrier took it."""

    cli = WireTests.cli

    def test_transfer(self):
        f = Fixture(self)
        call_id = f.h.answered_call()
        argv = ("transfer", "--call-id", call_id, "--to", "+15558675309", "-m", "One moment.")
        code, out, err = self.cli(f.factory.buildProtocol(None), *argv, "--json")
        self.assertEqual((code, json.loads(out), err), (0, {"ok": True}, ""))
        self.assertEqual(
            [r for r in f.h.provider.requests if r[0] in ("speak", "transfer")][-2:],
            [("speak", call_id, "One moment."), ("transfer", call_id, "+15558675309")],
        )
        self.assertEqual(f.h.stored(call_id).metadata["transferredTo"], "+15558675309")

    def test_refusals(self):
        f = Fixture(self, {"outbound": {"allowedPrefixes": ["+1555"]}})
        call_id = f.h.answered_call()
        cases = [
            ("+447700900123", "NOT_ALLOWED: +447700900123 matches no outbound.allowedPrefixes"),
            ("5558675309", "INVALID_ARGUMENT: to must be an E.164 number"),
        ]
        for to, start in cases:
            code, out, err = self.cli(
                f.factory.buildProtocol(None), "transfer", "--call-id", call_id, "--to", to
            )
            self.assertEqual((code, out), (1, ""))
            self.assertTrue(err.startswith("voicecall: " + start), err)
            self.assertEqual(err.count("\n"), 1)
        f.h.ok(f.h.manager.end(call_id))
        code, _out, err = self.cli(
            f.factory.buildProtocol(None), "transfer", "--call-id", call_id, "--to", "+15558675309"
        )
        self.assertEqual((code, err), (1, "voicecall: CALL_ENDED: Call has ended (hangup-bot)\n"))


class LatencyTests(TestCase):
    """C{voicecall latency}: figures over the store's records, read without a daemon."""

    def store(self, records: list[dict]) -> str:
        """A state dir whose store holds C{records} (as the daemon writes them)."""
        import sqlite3

        from voicecalld.store.schema import migrate

        state = self.mktemp()
        os.makedirs(state)
        db = sqlite3.connect(os.path.join(state, "calls.sqlite3"), isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")  # as the daemon keeps it
        migrate(db)
        for n, metadata in enumerate(records):
            record = {
                "callId": f"call-{n}",
                "provider": "mock",
                "direction": "outbound",
                "mode": "conversation",
                "from": "+15550000000",
                "to": "+15551234567",
                "state": "completed",
                "startedAt": 1_800_000_000_000 + n * 1000,
                "metadata": metadata,
            }
            db.execute(
                "INSERT INTO calls VALUES (?, 'mock', NULL, 'outbound', 'completed', 0, ?, ?, ?)",
                (record["callId"], 1_800_000_000 + n, 1_800_000_010 + n, json.dumps(record)),
            )
        db.close()
        return state

    def latency(self, *argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main.main(["latency", *argv])
            except SystemExit as e:
                return e.code, out.getvalue(), err.getvalue()
        raise AssertionError("latency did not exit")

    def test_upstream_shape_and_our_stages(self):
        turns = range(100, 2100, 100)
        records = [{"lastTurnLatencyMs": ms, "lastTurnListenWaitMs": ms // 2} for ms in turns]
        records += [
            {"lastTurnLatency": {"stt": 120.5, "reply": 800.0, "total": 1400.25}},
            {"lastTurnLatency": {"stt": 80.0, "reply": 600.0, "total": 1000.0}},
            {"turnCount": 3},  # a call with no measured turn still counts as scanned
        ]
        state = self.store(records)
        code, out, err = self.latency("--state-dir", state, "--json")
        self.assertEqual((code, err), (0, ""))
        result = json.loads(out)
        self.assertEqual(result["recordsScanned"], 23)
        self.assertEqual(
            result["turnLatency"],
            {"count": 20, "minMs": 100, "maxMs": 2000, "avgMs": 1050, "p50Ms": 1000}
            | {"p95Ms": 1900},
        )
        self.assertEqual(result["listenWait"]["p95Ms"], 950)
        self.assertEqual(
            result["stages"]["total"],
            {
                "count": 2,
                "minMs": 1000.0,
                "maxMs": 1400.25,
                "avgMs": 1200,
                "p50Ms": 1000.0,
                "p95Ms": 1400.25,
            },
        )
        self.assertEqual(sorted(result["stages"]), ["reply", "stt", "total"])
        code, out, _ = self.latency("--state-dir", state, "--last", "3", "--json")
        last = json.loads(out)
        self.assertEqual((last["recordsScanned"], last["turnLatency"]["count"]), (3, 0))
        self.assertEqual(last["stages"]["stt"]["count"], 2)
        code, text, _ = self.latency("--state-dir", state)
        self.assertEqual(code, 0)
        self.assertIn("23 calls scanned", text)
        self.assertIn("turn latency       n=20   min 100  p50 1000  p95 1900  max 2000", text)

    def test_no_records(self):
        state = self.store([])
        code, out, err = self.latency("--state-dir", state, "--json")
        self.assertEqual((code, err), (0, ""))
        empty = {"count": 0}
        self.assertEqual(
            json.loads(out),
            {"recordsScanned": 0, "turnLatency": empty, "listenWait": empty, "stages": {}},
        )
        code, text, _ = self.latency("--state-dir", state)
        self.assertEqual(
            text, "0 calls scanned\n  turn latency       no turns\n  listen wait        no turns\n"
        )

    def test_no_store_and_a_bad_last(self):
        code, out, err = self.latency("--state-dir", self.mktemp())
        self.assertEqual((code, out), (1, ""))
        self.assertTrue(err.startswith("voicecall: STORE_ERROR: no call store at "), err)
        self.assertEqual(usage_error(["latency", "--last", "0"])[0], 2)

    def test_the_store_is_only_read(self):
        state = self.store([{"lastTurnLatencyMs": 5}])
        path = os.path.join(state, "calls.sqlite3")
        with open(path, "rb") as f:
            before = os.stat(path).st_mtime_ns, f.read()
        self.assertEqual(self.latency("--state-dir", state)[0], 0)
        with open(path, "rb") as f:
            self.assertEqual((os.stat(path).st_mtime_ns, f.read()), before)

    def test_while_the_daemons_store_is_open(self):
        from voicecalld.store.sqlite import SQLiteCallStore, SynchronousRunner
        from voicecalld.values.record import CallRecord
        from voicecalld.values.states import CallState

        state = self.mktemp()
        os.makedirs(state)
        store = SQLiteCallStore(os.path.join(state, "calls.sqlite3"), SynchronousRunner())
        self.successResultOf(store.open())
        self.addCleanup(store.close)
        for n, ms in enumerate((300, 100, 200)):
            record = CallRecord(
                call_id=f"c{n}",
                provider="mock",
                direction="inbound",
                mode="conversation",
                from_number="+15557654321",
                to_number="+15550000000",
                state=CallState.ACTIVE,
                started_at=1_800_000_000.0 + n,
                metadata={"lastTurnLatency": {"total": ms, "ours": ms / 10}},
            )
            self.successResultOf(store.commit(record))
        code, out, _err = self.latency("--state-dir", state, "--json")
        result = json.loads(out)
        self.assertEqual((code, result["recordsScanned"]), (0, 3))
        self.assertEqual(result["turnLatency"], {"count": 0})
        self.assertEqual(
            result["stages"]["total"],
            {"count": 3, "minMs": 100, "maxMs": 300, "avgMs": 200, "p50Ms": 200, "p95Ms": 300},
        )
