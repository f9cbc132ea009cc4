"""
Signed webhooks per second of the real daemon (issue 15): a C{twistd -n voicecalld} on the
Twilio provider, on one core, answers status callbacks (C{X-Twilio-Signature}, a fresh
C{SequenceNumber} and idempotency token each) for live inbound calls, sent over keep-alive
HTTP connections by a client process on the other core.  The daemon's CPU comes from
C{/proc/<pid>/stat}.

The web guard allows each peer 100 requests/s (bursts of 300) and no setting raises it, so
the client spreads its connections over many source addresses (127.0.0.10, .11, ...), each
well under that rate; refusals (429) are counted and reported.

C{python -m bench.webhooks [--calls 20] [--connections 64] [--requests 20000] [--quick] [--json]}.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import re
import sys
import time
import uuid
from typing import Any
from urllib.parse import urlencode

from bench import _daemon
from bench._common import emit, pin, report

SID = "AC" + "5" * 32
TOKEN = "bench-twilio-auth-token"
OUR_NUMBER = "+15550001111"
PATH = "/voice/webhook"
CALL_ID = re.compile(rb"callId=([0-9a-f-]{36})")


def config(calls: int, port: int) -> dict[str, Any]:
    """The daemon's settings: Twilio (its REST API nowhere: none is needed), inbound calls open."""
    return _daemon.voice_call(
        {
            "provider": "twilio",
            "fromNumber": OUR_NUMBER,
            "twilio": {
                "accountSid": SID,
                "authToken": TOKEN,
                "apiBaseUrl": "http://127.0.0.1:9",
            },
            "publicUrl": f"http://127.0.0.1:{port}{PATH}",
            "serve": {"port": port},
            "inboundPolicy": "open",
            "maxConcurrentCalls": calls + 1,
        }
    )


def signature(url: str, params: list[tuple[str, str]]) -> str:
    """Twilio's signature: HMAC-SHA1 over the URL and the POST fields sorted by name."""
    data = url + "".join(k + v for k, v in sorted(params))
    digest = hmac.new(TOKEN.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def request(host: str, url: str, path: str, params: list[tuple[str, str]]) -> bytes:
    """One signed POST as Twilio sends it (keep-alive)."""
    body = urlencode(params).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: TwilioProxy/1.1\r\n"
        "Accept: */*\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        f"I-Twilio-Idempotency-Token: {uuid.uuid4()}\r\n"
        f"X-Twilio-Signature: {signature(url, params)}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """Read one HTTP/1.1 response: (status, body)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    if status in (204, 304) or 100 <= status < 200:
        return status, b""
    if "content-length" in headers:
        return status, await reader.readexactly(int(headers["content-length"]))
    body = b""
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        chunk = await reader.readexactly(size + 2)
        if size == 0:
            return status, body
        body += chunk[:-2]


def run(
    calls: int = 20,
    connections: int = 64,
    requests: int = 20_000,
    warmup: int = 2000,
    *,
    quick: bool = False,
    profile: str | None = None,
) -> dict[str, Any]:
    """Start the daemon, run the client against it, return the figures."""
    if quick:
        calls, connections = min(calls, 4), min(connections, 8)
        requests, warmup = min(requests, 400), min(warmup, 50)
    daemon_core, client_core = _daemon.two_cores()
    port = _daemon.free_port()
    with _daemon.running(
        config(calls, port), port=port, core=daemon_core, profile=profile
    ) as daemon:
        figures = _daemon.client(
            "bench.webhooks",
            client_core,
            "--port",
            str(port),
            "--pid",
            str(daemon.process.pid),
            "--calls",
            str(calls),
            "--connections",
            str(connections),
            "--requests",
            str(requests),
            "--warmup",
            str(warmup),
            *(["--daemon-core", str(daemon_core)] if daemon_core is not None else []),
        )
    figures["cores"] = {"daemon": daemon_core, "client": client_core}
    figures["quick"] = quick
    return figures


def rows(figures: dict[str, Any]) -> list[tuple[str, ...]]:
    """Table rows (benchmark, metric, value, target, pass/fail)."""
    return [
        ("webhooks", "signed webhooks/s (one core)", f"{figures['perSecondOneCore']:.0f}", "", ""),
        ("webhooks", "daemon CPU µs/webhook", f"{figures['cpuMicrosPerRequest']:.0f}", "", ""),
    ]


def notes(figures: dict[str, Any]) -> list[str]:
    """Lines to print under the table."""
    w = figures["window"]
    return [
        f"webhooks: Twilio status callbacks for {figures['calls']} live calls over"
        f" {figures['connections']} keep-alive connections from {figures['sources']} source"
        f" addresses (the guard's 100/s per peer has no setting); {figures['answered']} answered"
        f" at {figures['perSecond']:.0f}/s with the daemon at {w['daemonCpuShare']:.0%} of its"
        f" core (scaled to one core: {figures['perSecondOneCore']:.0f}/s); refused:"
        f" {figures['refused'] or 'none'}; other processes took {w['othersShareOfCore'] or 0:.0%}"
        " of the daemon's core"
    ]


# -- the client (its own process) ---------------------------------------------


async def _client(args: argparse.Namespace) -> dict[str, Any]:
    host = f"127.0.0.1:{args.port}"
    base = f"http://{host}{PATH}"
    call_ids: list[tuple[str, str]] = []
    reader, writer = await asyncio.open_connection("127.0.0.1", args.port)
    for n in range(args.calls):
        sid = "CA" + uuid.uuid4().hex
        params = [
            ("AccountSid", SID),
            ("CallSid", sid),
            ("CallStatus", "ringing"),
            ("Direction", "inbound"),
            ("From", f"+1555{n:07d}"),
            ("To", OUR_NUMBER),
        ]
        writer.write(request(host, base, PATH, params))
        status, body = await response(reader)
        found = CALL_ID.search(body)
        if status != 200 or found is None:
            raise RuntimeError(f"inbound call not accepted: {status} {body[:300]!r}")
        call_ids.append((found.group(1).decode(), sid))
    writer.close()

    sequence = iter(range(1, 1 << 62))

    def status_callback(n: int) -> bytes:
        call_id, sid = call_ids[n % len(call_ids)]
        path = f"{PATH}?callId={call_id}&type=status"
        params = [
            ("AccountSid", SID),
            ("CallSid", sid),
            ("CallStatus", "ringing"),
            ("Direction", "inbound"),
            ("SequenceNumber", str(next(sequence))),
            ("Timestamp", time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime())),
        ]
        return request(host, f"http://{host}{path}", path, params)

    answered = 0
    seen = 0
    refused: dict[int, int] = {}
    window: _daemon.Window | None = None
    figures: dict[str, Any] = {}
    finished = asyncio.Event()

    async def connection(index: int) -> None:
        nonlocal answered, seen, window
        source = f"127.0.0.{10 + index % args.sources}"
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", args.port, local_addr=(source, 0)
        )
        n = index
        while not finished.is_set():
            writer.write(status_callback(n))
            n += args.connections
            status, _ = await response(reader)
            seen += 1
            if window is None:
                if seen >= args.warmup:
                    window = _daemon.Window(args.pid, args.daemon_core)
                continue
            if 200 <= status < 300:
                answered += 1
            else:
                refused[status] = refused.get(status, 0) + 1
            if answered + sum(refused.values()) >= args.requests and not finished.is_set():
                figures.update(window.close())
                finished.set()
        writer.close()

    await asyncio.gather(*(connection(i) for i in range(args.connections)))
    rate = answered / figures["seconds"]
    share = figures["daemonCpuShare"]
    return {
        "calls": len(call_ids),
        "connections": args.connections,
        "sources": min(args.sources, args.connections),
        "answered": answered,
        "refused": {str(k): v for k, v in sorted(refused.items())},
        "perSecond": round(rate, 1),
        "perSecondOneCore": round(rate / share, 1) if share else None,
        "cpuMicrosPerRequest": round(figures["daemonCpuSeconds"] / answered * 1e6, 1)
        if answered
        else None,
        "window": figures,
    }


def client_main(argv: list[str]) -> int:
    """The client process: measure, print one JSON line."""
    parser = argparse.ArgumentParser(prog="bench.webhooks client")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--sources", type=int, default=64)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--warmup", type=int, default=2000)
    parser.add_argument("--core", type=int)
    parser.add_argument("--daemon-core", type=int)
    args = parser.parse_args(argv)
    pin(args.core)
    emit(asyncio.run(_client(args)))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run alone: print the figures (or JSON)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["client"]:
        return client_main(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--warmup", type=int, default=2000)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--profile", help="save a cProfile of the daemon here")
    args = parser.parse_args(argv)
    figures = run(
        args.calls,
        args.connections,
        args.requests,
        args.warmup,
        quick=args.quick,
        profile=args.profile,
    )
    return report(figures, rows, notes, args.json)


if __name__ == "__main__":
    sys.exit(main())
