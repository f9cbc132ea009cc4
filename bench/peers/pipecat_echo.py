"""
The pipecat peer: Twilio media streams served by pipecat, echoing the caller's audio back.

Run by the pipecat virtual environment's python (see L{bench.peers.venv}), not the project's:
it imports only pipecat, FastAPI, uvicorn and the standard library.  One FastAPI WebSocket
route on C{--path}, served by uvicorn on 127.0.0.1 in this one process (no workers, no fork).
Each connection is set up the way pipecat's Twilio examples do it: the runner's
C{parse_telephony_websocket} reads the C{connected} and C{start} messages, a
C{TwilioFrameSerializer} (auto hang-up off, so no REST credentials) sits on a
C{FastAPIWebsocketTransport}, and a pipeline C{input -> echo -> output} runs at 8 kHz with
20 ms output chunks: every inbound media frame becomes one outbound media frame, paced by
pipecat's output transport.

Prints one JSON line, C{{"ready": true, "port": N, "path": P, "pid": PID}}, once uvicorn is
serving; runs until killed.
"""

# No "from __future__ import annotations": FastAPI reads the route's parameter annotations at
# run time, and WebSocket is imported inside build_app.
import argparse
import asyncio
import json
import os
import socket
import sys


def _pin(cpu: int | None) -> None:
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        try:
            os.sched_setaffinity(0, {cpu})
        except OSError:
            pass


def build_app(path: str):
    """The FastAPI application: one WebSocket route that runs an echo pipeline per call."""
    from fastapi import FastAPI, WebSocket
    from pipecat.frames.frames import Frame, InputAudioRawFrame, OutputAudioRawFrame
    from pipecat.pipeline.pipeline import Pipeline
    from pipecat.pipeline.worker import PipelineParams, PipelineWorker
    from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
    from pipecat.runner.utils import parse_telephony_websocket
    from pipecat.serializers.twilio import TwilioFrameSerializer
    from pipecat.transports.websocket.fastapi import (
        FastAPIWebsocketParams,
        FastAPIWebsocketTransport,
    )
    from pipecat.workers.runner import WorkerRunner

    class Echo(FrameProcessor):
        """Turns each frame of caller audio into a frame of bot audio; passes the rest on."""

        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            await super().process_frame(frame, direction)
            if isinstance(frame, InputAudioRawFrame):
                await self.push_frame(
                    OutputAudioRawFrame(
                        audio=frame.audio,
                        sample_rate=frame.sample_rate,
                        num_channels=frame.num_channels,
                    )
                )
            else:
                await self.push_frame(frame, direction)

    app = FastAPI()

    @app.websocket(path)
    async def media(websocket: WebSocket) -> None:
        await websocket.accept()
        _, call = await parse_telephony_websocket(websocket)
        serializer = TwilioFrameSerializer(
            stream_sid=call["stream_id"],
            call_sid=call["call_id"],
            params=TwilioFrameSerializer.InputParams(auto_hang_up=False),
        )
        transport = FastAPIWebsocketTransport(
            websocket,
            FastAPIWebsocketParams(
                audio_in_enabled=True,
                audio_out_enabled=True,
                audio_out_10ms_chunks=2,
                add_wav_header=False,
                serializer=serializer,
            ),
        )
        worker = PipelineWorker(
            Pipeline([transport.input(), Echo(), transport.output()]),
            params=PipelineParams(audio_in_sample_rate=8000, audio_out_sample_rate=8000),
        )
        runner = WorkerRunner(handle_sigint=False)

        @transport.event_handler("on_client_disconnected")
        async def gone(transport, client) -> None:
            await runner.cancel()

        await runner.add_workers(worker)
        await runner.run()

    return app


async def serve(path: str, port: int) -> None:
    """Serve the app on 127.0.0.1:C{port} (0: any free port) and announce the port."""
    import uvicorn

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(1024)
    config = uvicorn.Config(
        build_app(path), log_level="warning", access_log=False, lifespan="off", backlog=1024
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[listener]))
    while not server.started:
        if task.done():
            task.result()
            raise SystemExit("uvicorn stopped before it started")
        await asyncio.sleep(0.01)
    ready = {"ready": True, "port": listener.getsockname()[1], "path": path, "pid": os.getpid()}
    sys.stdout.write(json.dumps(ready) + "\n")
    sys.stdout.flush()
    await task


def main(argv: list[str] | None = None) -> None:
    """Parse the options, quieten pipecat's logging, serve until killed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--path", default="/voice/stream")
    parser.add_argument("--cpu", type=int, default=None)
    parser.add_argument("--log-level", default="WARNING", help="loguru level for pipecat")
    args = parser.parse_args(argv)
    _pin(args.cpu)
    from loguru import logger

    logger.remove()
    logger.add(sys.stderr, level=args.log_level)
    asyncio.run(serve(args.path, args.port))


if __name__ == "__main__":
    main()
