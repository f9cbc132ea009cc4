"""
The bare relay: the ceiling a Twilio media server can reach in Python on Twisted and autobahn.

Per inbound C{media} message it does the least a JSON/base64 relay can: C{json.loads}, base64
decode, then one outbound C{media} message (C{json.dumps}, base64 encode, C{sendMessage}).
C{start} records the stream SID; every other event is ignored.  C{python -m bench.peers.relay
--port 0} serves it (L{relay_factory}) as a process of its own, printing
C{{"ready": true, "port": N, ...}} once it listens and running until killed.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
from collections.abc import Callable
from typing import Any

from bench._common import emit, pin

STREAM_PATH = "/voice/stream"


def relay_factory(
    counts: dict[str, int],
    on_start: Callable[[], None] = lambda: None,
    max_message_bytes: int = 64 * 1024,
) -> Any:
    """
    An autobahn server factory for the relay.

    C{counts["inbound"]} and C{counts["outbound"]} grow with each media frame relayed;
    C{on_start} is called once per stream, on its C{start} message.
    """
    from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol

    counts.setdefault("inbound", 0)
    counts.setdefault("outbound", 0)

    class Relay(WebSocketServerProtocol):
        stream_sid = ""

        def onMessage(self, payload: bytes, isBinary: bool) -> None:
            message = json.loads(payload)
            event = message["event"]
            if event == "media":
                audio = base64.b64decode(message["media"]["payload"])
                counts["inbound"] += 1
                reply = {
                    "event": "media",
                    "streamSid": self.stream_sid,
                    "media": {"payload": base64.b64encode(audio).decode("ascii")},
                }
                self.sendMessage(json.dumps(reply).encode(), isBinary=False)
                counts["outbound"] += 1
            elif event == "start":
                self.stream_sid = message["streamSid"]
                on_start()

    factory = WebSocketServerFactory()
    factory.protocol = Relay
    factory.setProtocolOptions(
        maxMessagePayloadSize=max_message_bytes,
        maxFramePayloadSize=max_message_bytes,
        autoPingInterval=0,
    )
    return factory


def main(argv: list[str] | None = None) -> None:
    """Serve the relay on 127.0.0.1 until killed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--cpu", type=int, default=None)
    args = parser.parse_args(argv)
    core = pin(args.cpu)

    from twisted.internet import reactor

    factory = relay_factory({})
    port = reactor.listenTCP(args.port, factory, interface="127.0.0.1", backlog=1024)
    emit(
        {
            "ready": True,
            "port": port.getHost().port,
            "path": STREAM_PATH,
            "pid": os.getpid(),
            "core": core,
        }
    )
    sys.stdout.flush()
    reactor.run()


if __name__ == "__main__":
    main()
