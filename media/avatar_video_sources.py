"""Where the avatar track's frames come from: the rendered face, or the relayed LiveAvatar video.

Both hand out av.VideoFrame in yuv420p, the layout VP8 encodes from, so no frame is ever
converted through RGB on its way out.
"""

from __future__ import annotations

import asyncio

import av
import numpy as np
from agent_bridge.mouth_follower import MouthFollower
from agent_bridge.rendered_avatar import RenderedAvatar

from media.meters import VideoMeter
from media.pacing import FramePacer

RENDERED_FPS = 15


class RenderedVideoSource:
    """The offline face, 15 frames a second, its mouth following the speech the call sends."""

    frame_duration_us = 1_000_000 // RENDERED_FPS

    def __init__(self, avatar: RenderedAvatar) -> None:
        self._avatar = avatar
        self.mouth = MouthFollower()
        self._pacer = FramePacer(1 / RENDERED_FPS)
        self._frames = 0

    async def next_frame(self, state: str) -> tuple[av.VideoFrame, int] | None:
        # Back after a relay (a fallback): the pacer re-anchors on its own, being far behind.
        await self._pacer.wait_for(self._frames)
        t = self._frames / RENDERED_FPS
        pixels = self._avatar.frame_yuv420p(self.mouth.openness(), state, t)
        media_us = self._frames * self.frame_duration_us
        self._frames += 1
        return av.VideoFrame.from_ndarray(pixels, format="yuv420p"), media_us

    def detach(self) -> None:
        # A paced wait is at most one frame: the track re-reads its source right after.
        self.mouth.reset()


class RelayVideoSource:
    """The newest relayed frame, handed to the encoder as soon as it is free.

    Frames arrive from the avatar's room in I420 (the SDK's own decode format). If the encoder
    falls behind, older frames are dropped rather than queued: latency stays one frame.
    """

    def __init__(self, fps_hint: int = 25) -> None:
        self.frame_duration_us = 1_000_000 // fps_hint
        self.meter = VideoMeter(time_base_den=1_000_000, frame_duration_pts=self.frame_duration_us)
        self.first_frame = asyncio.Event()  # set once the room's first frame is in
        self._latest: tuple[bytes | bytearray | memoryview, int, int, int] | None = None
        self._ready = asyncio.Event()
        self._detached = False

    def offer(self, i420: bytes | bytearray | memoryview, width: int, height: int, timestamp_us: int) -> None:
        """A decoded frame from the room (tightly packed I420) and its capture timestamp."""
        self._latest = (i420, width, height, timestamp_us)  # an older one not yet encoded is dropped
        self.meter.on_frame(timestamp_us)
        self.first_frame.set()
        self._ready.set()

    async def next_frame(self, state: str) -> tuple[av.VideoFrame, int] | None:
        while self._latest is None:
            if self._detached:
                return None
            self._ready.clear()
            await self._ready.wait()
        data, width, height, timestamp_us = self._latest
        self._latest = None
        return i420_frame(data, width, height), timestamp_us

    def detach(self) -> None:
        self._detached = True
        self._ready.set()


def i420_frame(data: bytes | bytearray | memoryview, width: int, height: int) -> av.VideoFrame:
    """A yuv420p av.VideoFrame from tightly packed I420 (chroma planes (w+1)//2 x (h+1)//2).

    Odd sizes lose their last row/column: VP8 takes even sizes only.
    """
    buffer = np.frombuffer(data, dtype=np.uint8)
    if width % 2 == 0 and height % 2 == 0:
        return av.VideoFrame.from_ndarray(buffer.reshape(height * 3 // 2, width), format="yuv420p")
    cw, ch = (width + 1) // 2, (height + 1) // 2
    even_w, even_h = width & ~1, height & ~1
    luma = buffer[: width * height].reshape(height, width)[:even_h, :even_w]
    u = buffer[width * height : width * height + cw * ch].reshape(ch, cw)[: even_h // 2, : even_w // 2]
    v = buffer[width * height + cw * ch : width * height + 2 * cw * ch].reshape(ch, cw)[: even_h // 2, : even_w // 2]
    packed = np.concatenate([luma.reshape(-1), u.reshape(-1), v.reshape(-1)]).reshape(even_h * 3 // 2, even_w)
    return av.VideoFrame.from_ndarray(packed, format="yuv420p")
