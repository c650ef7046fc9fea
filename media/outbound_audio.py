"""The outbound audio track: one 20 ms, 48 kHz mono frame on time, every time."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from media.audio_buffer import SampleQueue
from media.opus_encoder import InlineOpusEncoder

SAMPLE_RATE = 48_000
FRAME_MS = 20
FRAME_SAMPLES = SAMPLE_RATE * FRAME_MS // 1000
# Past this lateness we re-anchor the schedule instead of bursting frames to catch up.
_MAX_LATE_S = 0.06


class PacedAudioTrack(MediaStreamTrack):
    """Plays whatever was queued, silence otherwise, paced by the event loop's monotonic clock.

    Timestamps advance by exactly one frame per frame, so the receiver's clock never drifts.
    It yields encoded Opus packets (see media.opus_encoder), which aiortc sends as they are.
    """

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self.queue = SampleQueue()
        self._encoder = InlineOpusEncoder()
        self.frames_sent = 0
        self.audio_samples_sent = 0  # samples of real (queued) audio among those sent
        self._anchor: float | None = None
        self._anchor_frame = 0
        self._last_frame_at: float | None = None
        self.max_frame_gap_ms = 0.0  # the longest wait between two frames handed to the sender

    def push(self, samples: np.ndarray) -> int:
        """Queue 48 kHz mono int16 samples; returns the position of the first (see `when_sent`)."""
        return self.queue.push(samples)

    def when_sent(self, position: int, callback: Callable[[], None]) -> None:
        self.queue.when_sent(position, callback)

    def when_drained(self, callback: Callable[[], None]) -> None:
        """Call back once everything queued so far has been sent (never, if it is flushed)."""
        self.queue.when_sent(self.queue.pushed_total - 1, callback)

    def flush(self) -> int:
        """Drop all unsent audio (barge-in); returns the samples dropped."""
        return self.queue.clear()

    def reset_gap_stats(self) -> None:
        self.max_frame_gap_ms = 0.0

    @property
    def queued_samples(self) -> int:
        return len(self.queue)

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        if self._anchor is None:
            self._anchor = loop.time()
            self._anchor_frame = self.frames_sent
        else:
            due = self._anchor + (self.frames_sent - self._anchor_frame) * FRAME_MS / 1000
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -_MAX_LATE_S:
                self._anchor = loop.time()
                self._anchor_frame = self.frames_sent
        if self.readyState != "live":
            raise MediaStreamError
        samples, real = self.queue.pop(FRAME_SAMPLES)
        packet = self._encoder.encode(samples, self.frames_sent * FRAME_SAMPLES)
        self.frames_sent += 1
        self.audio_samples_sent += real
        now = loop.time()
        if self._last_frame_at is not None:
            self.max_frame_gap_ms = max(self.max_frame_gap_ms, (now - self._last_frame_at) * 1000)
        self._last_frame_at = now
        return packet
