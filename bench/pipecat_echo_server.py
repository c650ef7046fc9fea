"""Pipecat's SmallWebRTC transport as an echo, behind the same three routes the load uses.

Runs in its own venv (pipecat-ai[webrtc]), never this project's: bench/load.py starts it with
that venv's python. Each call is one pipeline: transport input -> echo -> transport output, at
48 kHz in and out (the rate WebRTC's Opus decodes to, so Pipecat resamples nothing), logging at
WARNING (bench/load.py also sets LOGURU_LEVEL, for what Pipecat logs on import). Usage: <pipecat venv>/bin/python bench/pipecat_echo_server.py --port P
"""

from __future__ import annotations

import asyncio
import sys

from aiohttp import web
from echo_routes import port_argument, serve_echo  # a sibling: this runs as a script
from loguru import logger
from pipecat.frames.frames import Frame, InputAudioRawFrame, OutputAudioRawFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.transports.base_transport import TransportParams
from pipecat.transports.smallwebrtc.connection import SmallWebRTCConnection
from pipecat.transports.smallwebrtc.transport import SmallWebRTCTransport
from pipecat.workers.runner import WorkerRunner

RATE = 48_000
calls: dict[str, tuple[SmallWebRTCConnection, PipelineWorker, asyncio.Task[None]]] = {}


class Echo(FrameProcessor):
    """The caller's audio, played back: input frames become output frames."""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame):
            frame = OutputAudioRawFrame(audio=frame.audio, sample_rate=frame.sample_rate, num_channels=frame.num_channels)
        await self.push_frame(frame, direction)


async def offer(request: web.Request) -> web.Response:
    body = await request.json()
    connection = SmallWebRTCConnection()
    await connection.initialize(sdp=body["sdp"], type=body["type"])
    params = TransportParams(audio_in_enabled=True, audio_out_enabled=True, audio_in_sample_rate=RATE, audio_out_sample_rate=RATE)
    transport = SmallWebRTCTransport(webrtc_connection=connection, params=params)
    worker = PipelineWorker(
        Pipeline([transport.input(), Echo(), transport.output()]),
        params=PipelineParams(audio_in_sample_rate=RATE, audio_out_sample_rate=RATE),
        idle_timeout_secs=None,
        enable_rtvi=False,
    )
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    task = asyncio.create_task(runner.run())
    calls[request.match_info["id"]] = (connection, worker, task)
    answer = connection.get_answer()
    assert answer is not None
    return web.json_response({"sdp": answer["sdp"], "type": answer["type"]})


async def hangup(request: web.Request) -> web.Response:
    call = calls.pop(request.match_info["id"], None)
    if call is not None:
        connection, worker, task = call
        await worker.cancel()
        await connection.disconnect()
        await asyncio.gather(task, return_exceptions=True)
    return web.json_response({"status": "ended"})


def main() -> None:
    port = port_argument(__doc__)
    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    serve_echo(port, offer, hangup)


if __name__ == "__main__":
    main()
