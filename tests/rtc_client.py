"""A real WebRTC client (aiortc) for tests: negotiates with the server over HTTP and trickles ICE."""

from __future__ import annotations

import asyncio
import fractions
import math
import time
from dataclasses import dataclass, field

import aiohttp
import av
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

RATE = 48_000
FRAME = 960


class PcmSourceTrack(MediaStreamTrack):
    """Plays int16 mono 48 kHz samples in real time, then silence (or ends, if asked)."""

    kind = "audio"

    def __init__(self, samples: np.ndarray | None = None, *, end_when_done: bool = False) -> None:
        super().__init__()
        self._samples = samples if samples is not None else np.zeros(0, np.int16)
        self._pos = 0
        self._frames = 0
        self._start: float | None = None
        self._end_when_done = end_when_done
        self.frames_sent = 0

    def play(self, samples: np.ndarray) -> None:
        """Replace what is playing (from the next frame on)."""
        self._samples = samples
        self._pos = 0

    @property
    def done(self) -> bool:
        return self._pos >= len(self._samples)

    async def recv(self) -> av.AudioFrame:
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        wait = self._start + self._frames * FRAME / RATE - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        if self._end_when_done and self.done:
            self.stop()
            raise MediaStreamError
        chunk = np.zeros(FRAME, np.int16)
        take = self._samples[self._pos : self._pos + FRAME]
        chunk[: len(take)] = take
        self._pos += len(take)
        frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.pts = self._frames * FRAME
        frame.time_base = fractions.Fraction(1, RATE)
        self._frames += 1
        self.frames_sent += 1
        return frame


def sine(freq: float, seconds: float, amplitude: int = 8000) -> np.ndarray:
    t = np.arange(int(RATE * seconds)) / RATE
    return (amplitude * np.sin(2 * math.pi * freq * t)).astype(np.int16)


@dataclass
class Recorder:
    """Collects the remote audio as mono int16 at 48 kHz."""

    chunks: list[np.ndarray] = field(default_factory=list)
    frames: int = 0
    task: asyncio.Task[None] | None = None

    def start(self, track: MediaStreamTrack) -> None:
        self.task = asyncio.ensure_future(self._run(track))

    async def _run(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            data = frame.to_ndarray().reshape(-1)
            channels = len(frame.layout.channels)
            if channels > 1:
                data = data.reshape(-1, channels)[:, 0]
            self.chunks.append(data.astype(np.int16))
            self.frames += 1

    def audio(self) -> np.ndarray:
        return np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.int16)

    def reset(self) -> None:
        self.chunks.clear()


def strip_candidates(sdp: str) -> tuple[str, list[tuple[str, int]]]:
    """Remove candidate lines from an SDP, returning them for trickling: (line, m-line index)."""
    lines, candidates, mline = [], [], -1
    for line in sdp.splitlines():
        if line.startswith("m="):
            mline += 1
        if line.startswith("a=candidate:"):
            candidates.append((line[2:], mline))
            continue
        if line.startswith("a=end-of-candidates"):
            continue
        lines.append(line)
    return "\r\n".join(lines) + "\r\n", candidates


@dataclass
class RtcClient:
    base_url: str
    token: str
    source: PcmSourceTrack = field(default_factory=PcmSourceTrack)
    recorder: Recorder = field(default_factory=Recorder)
    pc: RTCPeerConnection | None = None
    session_id: str | None = None
    want_video: bool = False  # ask for the avatar
    video_frames: list[np.ndarray] = field(default_factory=list)  # received avatar frames (Y plane)
    video_task: asyncio.Task[None] | None = None
    video_arrivals: list[float] = field(default_factory=list)  # time.monotonic() of each frame's arrival
    raw_luma: bool = False  # keep the decoded Y plane itself (no range conversion), to compare pixels exactly
    keep_video_frames: int | None = None  # keep only the newest N frames (long runs at big sizes)
    session_body: dict[str, object] = field(default_factory=dict)  # the POST /api/v1/sessions body
    session: dict[str, object] = field(default_factory=dict)  # its answer

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def create_session(self, http: aiohttp.ClientSession) -> str:
        async with http.post(f"{self.base_url}/api/v1/sessions", json=self.session_body, headers=self.headers) as resp:
            assert resp.status == 201, await resp.text()
            self.session = await resp.json()
            self.session_id = str(self.session["session_id"])
        return self.session_id

    async def connect(self, http: aiohttp.ClientSession, *, trickle: bool = True) -> None:
        if self.session_id is None:
            await self.create_session(http)
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pc.addTrack(self.source)
        if self.want_video:
            self.pc.addTransceiver("video", direction="recvonly")

        @self.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "audio":
                self.recorder.start(track)
            elif track.kind == "video":
                self.video_task = asyncio.ensure_future(self._collect_video(track))

        await self.pc.setLocalDescription(await self.pc.createOffer())
        sdp = self.pc.localDescription.sdp
        candidates: list[tuple[str, int]] = []
        if trickle:
            sdp, candidates = strip_candidates(sdp)
        base = f"{self.base_url}/api/v1/sessions/{self.session_id}"
        async with http.post(f"{base}/offer", json={"sdp": sdp, "type": "offer"}, headers=self.headers) as resp:
            assert resp.status == 200, await resp.text()
            answer = await resp.json()
        for line, index in candidates:
            body = {"candidate": line, "sdpMid": str(index), "sdpMLineIndex": index}
            async with http.post(f"{base}/ice", json=body, headers=self.headers) as resp:
                assert resp.status == 204, await resp.text()
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))

    async def _collect_video(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            self.video_arrivals.append(time.monotonic())
            if self.raw_luma and frame.format.name == "yuv420p":
                self.video_frames.append(frame.to_ndarray()[: frame.height].copy())  # the Y plane as sent
            else:
                self.video_frames.append(frame.to_ndarray(format="gray"))
            if self.keep_video_frames is not None and len(self.video_frames) > self.keep_video_frames:
                del self.video_frames[0]

    async def wait_connected(self, timeout: float = 10.0) -> None:
        assert self.pc is not None
        async def until() -> None:
            while self.pc.connectionState != "connected":
                await asyncio.sleep(0.05)
        await asyncio.wait_for(until(), timeout)

    async def hangup(self, http: aiohttp.ClientSession) -> None:
        async with http.delete(f"{self.base_url}/api/v1/sessions/{self.session_id}", headers=self.headers) as resp:
            assert resp.status == 200, await resp.text()
        await self.close()

    async def close(self) -> None:
        if self.pc is not None:
            await self.pc.close()
        for task in (self.recorder.task, self.video_task):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
