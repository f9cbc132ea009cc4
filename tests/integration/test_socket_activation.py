"""Socket activation: sockets handed over as systemd does, kept across a restart."""

from __future__ import annotations

import json
import socket

import pytest

pytestmark = pytest.mark.integration
ACTIVATED = (
    "--control",
    "systemd:domain=UNIX:name=control",
    "--webhook",
    "systemd:domain=INET:name=webhook",
)


def _held_sockets(daemon) -> list[tuple[str, socket.socket]]:
    """Bind the control socket and the webhook port here, as voicecalld.socket does."""
    daemon.state.mkdir(mode=0o700, parents=True, exist_ok=True)
    control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    control.bind(str(daemon.socket))
    control.listen(64)
    webhook = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    webhook.bind(("127.0.0.1", 0))
    webhook.listen(64)
    return [("control", control), ("webhook", webhook)]


def _http_get(port: int) -> socket.socket:
    client = socket.create_connection(("127.0.0.1", port), timeout=30)
    client.sendall(b"GET /voice/webhook HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
    return client


def _status_line(client: socket.socket) -> bytes:
    data = b""
    while b"\r\n" not in data:
        chunk = client.recv(4096)
        if not chunk:
            break
        data += chunk
    client.close()
    return data.split(b"\r\n", 1)[0]


def test_a_restart_keeps_the_sockets_and_answers_who_waited(make_daemon):
    daemon = make_daemon()
    sockets = _held_sockets(daemon)
    port = sockets[1][1].getsockname()[1]
    daemon.start(*ACTIVATED, sockets=sockets)
    assert json.loads(daemon.cli("--json", "status").stdout)["calls"] == []
    assert _status_line(_http_get(port)).startswith(b"HTTP/1.")

    assert daemon.stop() == 0
    assert daemon.socket.exists(), daemon.log()
    # Nobody listens now, yet nobody is refused: both wait in the backlogs.
    waiting_cli = daemon.spawn_cli("--json", "--timeout", "60", "status")
    waiting_webhook = _http_get(port)

    daemon.start(*ACTIVATED, sockets=sockets)
    out, err = waiting_cli.communicate(timeout=60)
    assert waiting_cli.returncode == 0, err
    assert json.loads(out)["calls"] == []
    assert _status_line(waiting_webhook).startswith(b"HTTP/1.")
    assert daemon.stop() == 0
    assert daemon.socket.exists()
    assert "No such file or directory" not in daemon.log()


def test_index_endpoints_of_the_contract_work_too(make_daemon):
    daemon = make_daemon()
    daemon.start(
        "--control",
        "systemd:domain=UNIX:index=0",
        "--webhook",
        "systemd:domain=INET:index=1",
        sockets=_held_sockets(daemon),
    )
    assert daemon.cli("--json", "status").returncode == 0
    assert daemon.stop() == 0


@pytest.mark.parametrize(
    ("control", "expected"),
    [
        ("systemd:domain=UNIX:name=ctl", "no passed socket is named 'ctl'"),
        ("systemd:domain=UNIX:index=1", "is named 'webhook', not 'control'"),
        ("systemd:domain=UNIX:index=5", "index 5 is out of range"),
    ],
)
def test_sockets_that_do_not_match_stop_it_in_one_line(make_daemon, control, expected):
    daemon = make_daemon()
    daemon.start(
        "--control",
        control,
        "--webhook",
        "systemd:domain=INET:name=webhook",
        sockets=_held_sockets(daemon),
        wait=False,
    )
    assert daemon.wait_exit() == 2
    lines = [line for line in daemon.log().splitlines() if line.startswith("voicecalld:")]
    assert len(lines) == 1 and expected in lines[0], daemon.log()


def test_no_sockets_passed(make_daemon):
    daemon = make_daemon()
    daemon.start(*ACTIVATED, wait=False)
    assert daemon.wait_exit() == 2
    assert "no sockets were passed to this process" in daemon.log()
