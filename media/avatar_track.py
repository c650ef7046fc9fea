"""The avatar's outbound video track: frames from one source at a time, on one continuous timeline.

The source is the rendered face (offline default and fallback) or the relayed LiveAvatar stream
(media.avatar_video_sources). The peer connection keeps this one track for the whole call, so
a source can be swapped mid-call (the relay's first frame, a fallback) without renegotiation;
presentation timestamps run on across a swap, so the meter counts exactly what was streamed.
"""

from __future__ import annotations

import asyncio
import fractions
from typing import Protocol

import av
import numpy as np
from agent_bridge.rendered_avatar import RenderedAvatar
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from media.avatar_video_sources import RenderedVideoSource
from media.meters import VideoMeter

VIDEO_CLOCK = 90_000  # RTP's video clock: presentation timestamps count in 1/90000 s
_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK)


class VideoSource(Protocol):
    frame_duration_us: int  # the nominal duration of one frame, for the first frame after a swap

    async def next_frame(self, state: str) -> tuple[av.VideoFrame, int] | None:
        """The next frame and its time on the source's own clock in µs; None once detached."""

    def detach(self) -> None:
        """Stop serving this track: a waiting `next_frame` returns None at once."""


class AvatarVideoTrack(MediaStreamTrack):
    """The call's VP8 video. aiortc encodes it in the loop's default executor with a libvpx encoder
    per call whose thread count it picks from the frame size (aiortc.codecs.vpx.number_of_threads):
    1, i.e. no libvpx threads, up to 640x480; a 1280x720 relayed avatar gets 2-3 threads.
    """

    kind = "video"

    def __init__(self, avatar: RenderedAvatar) -> None:
        super().__init__()
        self.rendered = RenderedVideoSource(avatar)
        self._source: VideoSource = self.rendered
        self.state = "idle"  # speaking, listening or idle: set by media.avatar_presence
        self.frames_sent = 0
        self.meter = VideoMeter(time_base_den=VIDEO_CLOCK, frame_duration_pts=_pts(self.rendered.frame_duration_us))
        self._timeline_source: VideoSource | None = None
        self._offset_pts = 0
        self._last_pts: int | None = None
        self._last_step = _pts(self.rendered.frame_duration_us)
        self._swapped = asyncio.Event()  # set when the source changes (or the track stops)

    @property
    def source(self) -> VideoSource:
        return self._source

    def use_source(self, source: VideoSource) -> None:
        """Swap the source; a frame being awaited from the old one is taken from the new one instead."""
        if source is self._source:
            return
        old, self._source = self._source, source
        old.detach()
        self._swapped.set()

    def follow_speech(self, samples: np.ndarray) -> None:
        """Listener of the outbound audio track: the rendered mouth moves with what was sent."""
        self.rendered.mouth.push(samples)

    def stop(self) -> None:
        super().stop()
        self._source.detach()
        self._swapped.set()

    async def recv(self) -> av.VideoFrame:
        while True:
            if self.readyState != "live":
                raise MediaStreamError
            source = self._source
            self._swapped.clear()
            got = await source.next_frame(self.state)
            if got is not None and source is self._source:
                break
            if source is self._source:  # detached and not replaced yet: wait for the next source
                await self._swapped.wait()
        if self.readyState != "live":
            raise MediaStreamError
        frame, media_us = got
        frame.pts = self._timeline_pts(source, media_us)
        frame.time_base = _TIME_BASE
        self.meter.on_frame(frame.pts)
        self.frames_sent += 1
        return frame

    def _timeline_pts(self, source: VideoSource, media_us: int) -> int:
        """The output timestamp of a frame at `media_us` on its source's clock: after a swap, the new
        source's first frame follows the last one sent by one frame; later ones keep their spacing."""
        if source is not self._timeline_source:
            self._timeline_source = source
            start = 0 if self._last_pts is None else self._last_pts + self._last_step
            self._offset_pts = start - _pts(media_us)
            self._last_step = _pts(source.frame_duration_us)
        pts = self._offset_pts + _pts(media_us)
        if self._last_pts is not None:
            if pts <= self._last_pts:  # a source clock that stepped back: keep the timeline rising
                self._offset_pts += self._last_pts + 1 - pts
                pts = self._last_pts + 1
            self._last_step = pts - self._last_pts
        self._last_pts = pts
        return pts


def _pts(us: int) -> int:
    return us * VIDEO_CLOCK // 1_000_000
