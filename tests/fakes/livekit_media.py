"""The fake avatar's media clock: one video and one audio source per room, fanned out to subscribers.

A room makes each frame once, on its own schedule, and hands the same av frame to every subscriber
track; aiortc encodes it per peer connection. The clock runs only while somebody is subscribed, so
an idle fake costs nothing. Audio pushed with `push` is resampled to 48 kHz once, queued, and played
20 ms a frame; silence fills the gaps.
"""

from __future__ import annotations

import asyncio
import fractions
import time
from collections import OrderedDict
from collections.abc import AsyncIterator

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from tests.fakes.livekit_pattern import pattern_frame

AUDIO_RATE = 48_000
AUDIO_FRAME = 960  # 20 ms
SENT_AT_KEPT = 2000
QUEUE_FRAMES = 4  # a subscriber this far behind drops its oldest frame: stay live, never buffer up


class SubscriberTrack(MediaStreamTrack):
    """What one peer connection sends: frames the room's clock hands it, nothing of its own."""

    def __init__(self, kind: str, track_id: str, media: AvatarMedia) -> None:
        super().__init__()
        self.kind = kind
        self._id = track_id  # aiortc writes the track id into the SDP msid; LiveKit wants the track sid
        self._media = media
        self._queue: asyncio.Queue[av.AudioFrame | av.VideoFrame | None] = asyncio.Queue()

    def offer(self, frame: av.AudioFrame | av.VideoFrame) -> None:
        if self._queue.qsize() >= QUEUE_FRAMES:
            self._queue.get_nowait()
        self._queue.put_nowait(frame)

    async def recv(self) -> av.AudioFrame | av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        frame = await self._queue.get()
        if frame is None:
            raise MediaStreamError
        if isinstance(frame, av.VideoFrame):
            self._media.note_video_sent(frame)
        return frame

    def stop(self) -> None:
        if self.readyState == "live":
            self._queue.put_nowait(None)
            self._media.unsubscribe(self)
        super().stop()


class AvatarMedia:
    """The avatar's video pattern and audio queue for one room."""

    def __init__(self, width: int, height: int, fps: int) -> None:
        pattern_frame(0, width, height)  # refuses a size the pattern cannot carry, here and not mid-call
        self.width, self.height, self.fps = width, height, fps
        self.frames_published = 0
        self.frame_sent_at: OrderedDict[int, float] = OrderedDict()
        self.audio_samples_played = 0
        self._audio = np.zeros(0, np.int16)  # queued, at 48 kHz
        self._next_video_index = 0
        self._resampler: tuple[int, av.AudioResampler] | None = None
        self._subscribers: set[SubscriberTrack] = set()
        self._tasks: list[asyncio.Task[None]] = []

    # Audio in -------------------------------------------------------------------------------

    def push(self, pcm: bytes, sample_rate: int) -> None:
        if sample_rate <= 0 or len(pcm) % 2:
            raise ValueError("push_audio takes mono s16le bytes at a positive sample rate")
        samples = np.frombuffer(pcm, np.int16)
        if sample_rate != AUDIO_RATE and len(samples):
            samples = self._resample(samples, sample_rate)
        self._audio = np.concatenate([self._audio, samples])

    def clear(self) -> int:
        dropped = len(self._audio)
        self._audio = np.zeros(0, np.int16)
        self._resampler = None  # what it holds back belongs to the audio just dropped
        return dropped

    def _resample(self, samples: np.ndarray, rate: int) -> np.ndarray:
        """To 48 kHz with one resampler for the whole stream, so chunk edges do not click.

        It holds back well under a millisecond until the next push; nobody hears that.
        """
        if self._resampler is None or self._resampler[0] != rate:
            self._resampler = (rate, av.AudioResampler(format="s16", layout="mono", rate=AUDIO_RATE))
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = rate
        out = [f.to_ndarray().reshape(-1) for f in self._resampler[1].resample(frame)]
        return np.concatenate(out) if out else np.zeros(0, np.int16)

    @property
    def queued_ms(self) -> float:
        return len(self._audio) * 1000 / AUDIO_RATE

    # Subscribers ----------------------------------------------------------------------------

    def subscribe(self, kind: str, track_id: str) -> SubscriberTrack:
        track = SubscriberTrack(kind, track_id, self)
        self._subscribers.add(track)
        if not self._tasks:
            self._tasks = [asyncio.create_task(self._video_clock()), asyncio.create_task(self._audio_clock())]
        return track

    def unsubscribe(self, track: SubscriberTrack) -> None:
        self._subscribers.discard(track)
        if not self._subscribers:
            self._stop_clock()

    def note_video_sent(self, frame: av.VideoFrame) -> None:
        index = int(frame.pts)  # the video clock's time base is one frame
        if index in self.frame_sent_at:
            return  # another subscriber had it first
        self.frame_sent_at[index] = time.monotonic()
        self.frames_published += 1
        while len(self.frame_sent_at) > SENT_AT_KEPT:
            self.frame_sent_at.popitem(last=False)

    async def aclose(self) -> None:
        for track in list(self._subscribers):
            track.stop()
        self._stop_clock()

    def _stop_clock(self) -> None:
        for task in self._tasks:
            task.cancel()
        self._tasks = []

    def _fan_out(self, kind: str, frame: av.AudioFrame | av.VideoFrame) -> None:
        for track in list(self._subscribers):
            if track.kind == kind:
                track.offer(frame)

    # Clocks ---------------------------------------------------------------------------------

    async def _video_clock(self) -> None:
        first = self._next_video_index  # indices go on across clock restarts: each frame is told apart
        async for tick in _ticks(1 / self.fps):
            index = first + tick
            self._next_video_index = index + 1
            frame = av.VideoFrame.from_ndarray(pattern_frame(index, self.width, self.height), format="yuv420p")
            frame.pts = index
            frame.time_base = fractions.Fraction(1, self.fps)
            self._fan_out("video", frame)

    async def _audio_clock(self) -> None:
        async for index in _ticks(AUDIO_FRAME / AUDIO_RATE):
            chunk = np.zeros(AUDIO_FRAME, np.int16)
            take = self._audio[:AUDIO_FRAME]
            chunk[: len(take)] = take
            self._audio = self._audio[len(take) :]
            self.audio_samples_played += len(take)
            frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
            frame.sample_rate = AUDIO_RATE
            frame.pts = index * AUDIO_FRAME
            frame.time_base = fractions.Fraction(1, AUDIO_RATE)
            self._fan_out("audio", frame)


async def _ticks(period: float) -> AsyncIterator[int]:
    """Yield 0, 1, 2... on an absolute schedule; after a stall, skip ahead rather than burst."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    index = 0
    while True:
        yield index
        index += 1
        wait = start + index * period - loop.time()
        if wait < -0.1:
            index = int((loop.time() - start) / period) + 1
            wait = start + index * period - loop.time()
        await asyncio.sleep(max(0.0, wait))
