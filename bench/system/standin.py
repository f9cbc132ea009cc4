"""
A stand-in for the vendor fakes (C{bench.system.vendors}) while they are not there.

C{python -m bench.system.standin [--cpu 1]} serves OpenAI's speech (one long utterance per
request, streamed in 100 ms chunks at five times real time), a realtime transcription socket
that swallows the audio and never hears a turn, and chat completions, from C{tests.fakes}.
It prints one JSON line like C{bench.system.vendors} does, with the separate URLs of each,
and serves until its stdin closes.
So every call speaks its greeting for L{SPEECH_SECONDS} and hears nothing: enough for the CPU,
audio and memory figures, not for the per-turn ones.
"""

from __future__ import annotations

import argparse
from typing import Any

from bench._common import emit, pin

SPEECH_SECONDS = 120.0


def main(argv: list[str] | None = None) -> None:
    """Serve until killed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu", type=int, default=None)
    args = parser.parse_args(argv)
    pin(args.cpu)

    from twisted.internet import reactor
    from twisted.web.server import Site

    from tests.fakes.openai_chat import FakeChat
    from tests.fakes.openai_realtime import FakeRealtimeServer
    from tests.fakes.tts_servers import FakeTtsServer, openai_script, sine_pcm

    class QuietRealtime(FakeRealtimeServer):
        """Keeps nothing of the audio (hundreds of calls append for minutes)."""

        def message(self, proto: Any, payload: bytes, is_binary: bool) -> None:
            if b"input_audio_buffer.append" in payload[:64]:
                return
            super().message(proto, payload, is_binary)

    pcm = sine_pcm(1.0) * int(SPEECH_SECONDS)
    step = 4800
    tts = FakeTtsServer()
    tts.openai = openai_script(
        chunks=[pcm[i : i + step] for i in range(0, len(pcm), step)], delay=0.02
    )
    tts.start()
    stt = QuietRealtime(reactor)
    chat = FakeChat("Sure.")
    chat_port = reactor.listenTCP(0, Site(chat), interface="127.0.0.1")

    def started(stt_url: str) -> None:
        emit(
            {
                "openai_base": tts.openai_base_url,
                "stats": None,
                "tts_base": tts.openai_base_url,
                "stt_url": stt_url,
                "chat_base": f"http://127.0.0.1:{chat_port.getHost().port}/v1",
                "standin": True,
            }
        )

    from twisted.internet import stdio
    from twisted.internet.protocol import Protocol

    class Stdin(Protocol):
        """The runner closes our stdin to stop us."""

        def connectionLost(self, reason: Any = None) -> None:
            if reactor.running:
                reactor.stop()

    reactor.callWhenRunning(lambda: stt.start().addCallback(started))
    reactor.callWhenRunning(stdio.StandardIO, Stdin())
    reactor.run()


if __name__ == "__main__":
    main()
