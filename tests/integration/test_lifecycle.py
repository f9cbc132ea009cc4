"""Start-up, crashes, restarts, bad configs, bind failures and the control socket's gate."""

from __future__ import annotations

import json
import os
import pwd
import socket
import stat
import subprocess
import sys

import pytest

from tests.integration.daemon import TWISTD, Daemon, state_of

pytestmark = pytest.mark.integration
TO = "+15551234567"


def test_kill_9_mid_call_and_restart(make_daemon):
    daemon = make_daemon({"maxConcurrentCalls": 3}).start()
    earlier = daemon.cli("call", "--to", TO, "--message", "earlier call").stdout.strip()
    assert daemon.cli("end", "--call-id", earlier).returncode == 0
    tail = daemon.tail()
    try:
        live = daemon.cli(
            "call", "--to", TO, "--message", "Hello", "--mode", "conversation"
        ).stdout.strip()
        tail.until(lambda e: e.get("callId") == live and e.get("state") == "listening")
        assert (
            daemon.cli(
                "simulate", "say", "--call-id", live, "--text", "before the crash"
            ).returncode
            == 0
        )
        just_placed = daemon.cli("call", "--to", TO, "--message", "right before").stdout.strip()
        daemon.kill9()
    finally:
        tail.close()
    daemon.start()
    restored = state_of(daemon, live)
    assert restored["state"] in ("active", "listening")
    assert [e["text"] for e in restored["transcript"]] == ["Hello", "before the crash"]
    assert state_of(daemon, earlier)["state"] == "hangup-bot"
    assert state_of(daemon, just_placed)["callId"] == just_placed
    assert "restored 2 live call(s) of 2 found" in daemon.log()
    listed = json.loads(daemon.cli("--json", "status").stdout)["calls"]
    assert sorted(r["callId"] for r in listed) == sorted([live, just_placed])
    assert daemon.cli("simulate", "say", "--call-id", live, "--text", "after").returncode == 0
    assert daemon.cli("end", "--call-id", live).returncode == 0
    assert state_of(daemon, live)["transcript"][-1]["text"] == "after"
    assert daemon.stop() == 0


def _start_fails(daemon: Daemon, *extra: str) -> tuple[int, str]:
    daemon.start(*extra, wait=False)
    code = daemon.wait_exit()
    return code, daemon.log()


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (
            {"provider": "twilio"},
            "fromNumber: required for provider 'twilio' (or set TWILIO_FROM_NUMBER)",
        ),
        ({"serve": {"port": "http"}}, "serve.port: expected a whole number, got a string"),
        ({"maxConcurrentCalls": 0}, "maxConcurrentCalls: must be a positive whole number"),
        ({"outbound": {"mode": "notify"}}, "outbound.mode: unknown key"),
        ({"enabled": False}, "enabled: voice calls are disabled in this config"),
        (
            {"provider": "plivo", "fromNumber": "+15550001234", "plivo": {"authId": "MA1"}},
            "plivo.authToken: required for provider 'plivo' (or set PLIVO_AUTH_TOKEN)",
        ),
    ],
)
def test_bad_config_stops_before_any_socket(make_daemon, config, expected):
    daemon = make_daemon(config)
    code, output = _start_fails(daemon)
    assert code == 2
    lines = output.strip().splitlines()
    assert len(lines) == 1, output
    assert lines[0].startswith(f"voicecalld: bad config: {daemon.config_path}: ")
    assert expected in lines[0]
    assert not daemon.socket.exists()


def test_bad_json5_file(make_daemon):
    daemon = make_daemon()
    daemon.config_path.write_text("{ provider: 'mock', ")
    code, output = _start_fails(daemon)
    assert code == 2
    assert output.startswith(
        f"voicecalld: bad config: {daemon.config_path}: (top level): not valid JSON5"
    )


def test_webhook_port_in_use_aborts_start_up(make_daemon):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    try:
        daemon = make_daemon()
        code, output = _start_fails(daemon, "--webhook", f"tcp:{port}:interface=127.0.0.1")
    finally:
        busy.close()
    assert code == 1
    assert f"voicecalld: cannot listen for webhooks on tcp:{port}:interface=127.0.0.1" in output
    assert "Address already in use" in output
    assert "voicecalld ready" not in output


def test_second_daemon_on_the_same_state_dir_is_refused(make_daemon):
    first = make_daemon().start()
    second = Daemon(first.root, None)
    second.log_path = first.root / "second.log"
    code, output = _start_fails(second)
    assert code == 1
    assert "cannot listen for control clients" in output
    assert first.cli("status").returncode == 0


def test_control_socket_is_private(make_daemon):
    daemon = make_daemon().start()
    mode = stat.S_IMODE(os.stat(daemon.socket).st_mode)
    assert mode == 0o600
    assert stat.S_IMODE(os.stat(daemon.state).st_mode) == 0o700


STATUS_BOX = b"\x00\x08_command\x00\x06Status\x00\x04_ask\x00\x011\x00\x00"


def _ask_status_as(uid: int, gid: int, path: str) -> str:
    """Connect as another user and ask Status: 'denied', 'closed' or 'answered'."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        outcome = b"error"
        try:
            os.setgid(gid)
            os.setuid(uid)
            client = socket.socket(socket.AF_UNIX)
            client.settimeout(20)
            try:
                client.connect(path)
            except PermissionError:
                outcome = b"denied"
            else:
                try:
                    client.sendall(STATUS_BOX)
                    outcome = b"answered" if client.recv(65536) else b"closed"
                except (ConnectionResetError, BrokenPipeError):
                    # The daemon may close before our request is even written.
                    outcome = b"closed"
        except Exception as e:
            outcome = repr(e).encode()
        os.write(write_end, outcome)
        os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    with os.fdopen(read_end, "rb") as result:
        return result.read().decode()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to connect as another user")
def test_other_users_are_refused(make_daemon):
    daemon = make_daemon().start()
    nobody = pwd.getpwnam("nobody")
    path = daemon.state
    while str(path) not in ("/", "/tmp"):
        os.chmod(path, os.stat(path).st_mode | 0o011)
        path = path.parent
    assert _ask_status_as(nobody.pw_uid, nobody.pw_gid, str(daemon.socket)) == "denied"
    os.chmod(daemon.socket, 0o666)
    assert _ask_status_as(nobody.pw_uid, nobody.pw_gid, str(daemon.socket)) == "closed"
    assert f"uid {nobody.pw_uid}" in daemon.log()
    assert "refused: only the daemon's user or the socket's group may connect" in daemon.log()
    assert _ask_status_as(0, 0, str(daemon.socket)) == "answered"
    assert daemon.cli("status").returncode == 0


def test_a_hundred_clients_at_once(make_daemon):
    daemon = make_daemon({"maxConcurrentCalls": 5}).start()
    script = """
import json, sys
from twisted.internet.defer import DeferredList, ensureDeferred
from twisted.internet.task import react
from voicecalld.control import commands as c
from voicecalld.control.client import ControlClient, connect

async def one(reactor, path, n):
    events = []
    client = await connect(reactor, path, ControlClient(on_event=events.append))
    await client.callRemote(c.Subscribe)
    answer = await client.callRemote(c.Status)
    client.transport.loseConnection()
    return len(answer["calls"])

async def main(reactor, path):
    results = await DeferredList([ensureDeferred(one(reactor, path, n)) for n in range(100)],
                                 consumeErrors=True)
    print(json.dumps([ok for ok, _ in results]))

react(lambda reactor: ensureDeferred(main(reactor, sys.argv[1])))
"""
    result = subprocess.run(
        [sys.executable, "-c", script, str(daemon.socket)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [True] * 100
    assert daemon.cli("status").returncode == 0


def test_twistd_lists_the_plugin():
    result = subprocess.run([TWISTD, "--help"], capture_output=True, text=True, timeout=60)
    assert "voicecalld" in result.stdout
