"""The avatar's outbound video: a face whose mouth follows the speech actually sent, 15 frames a second."""

from __future__ import annotations

import fractions

import av
import numpy as np
from agent_bridge.rendered_avatar import MouthFollower, RenderedAvatar
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from media.meters import VideoMeter
from media.pacing import FramePacer

FPS = 15
VIDEO_CLOCK = 90_000  # RTP's video clock: presentation timestamps count in 1/90000 s
_PTS_STEP = VIDEO_CLOCK // FPS
_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK)


class AvatarVideoTrack(MediaStreamTrack):
    """The call's VP8 video. aiortc encodes it in the loop's default executor with a libvpx encoder
    per call whose thread count it picks from the frame size (aiortc.codecs.vpx.number_of_threads):
    1, i.e. no libvpx threads, up to 640x480. A bigger avatar would give every call's encoder
    2-3 threads of its own.
    """

    kind = "video"

    def __init__(self, avatar: RenderedAvatar) -> None:
        super().__init__()
        self._avatar = avatar
        self.mouth = MouthFollower()
        self.state = "idle"  # speaking, listening or idle: set by media.avatar_presence
        self.frames_sent = 0
        self.meter = VideoMeter(time_base_den=VIDEO_CLOCK, frame_duration_pts=_PTS_STEP)
        self._pacer = FramePacer(1 / FPS)

    def follow_speech(self, samples: np.ndarray) -> None:
        """Listener of the outbound audio track: the mouth moves with what was sent."""
        self.mouth.push(samples)

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        await self._pacer.wait_for(self.frames_sent)
        if self.readyState != "live":
            raise MediaStreamError
        pixels = self._avatar.frame_yuv420p(self.mouth.openness(), self.state, self.frames_sent / FPS)
        frame = av.VideoFrame.from_ndarray(pixels, format="yuv420p")
        frame.pts = self.frames_sent * _PTS_STEP
        frame.time_base = _TIME_BASE
        self.meter.on_frame(frame.pts)
        self.frames_sent += 1
        return frame
