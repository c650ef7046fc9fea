"""Pacing frames on the event loop's monotonic clock: one schedule rule for every paced stream."""

from __future__ import annotations

import asyncio

# Past this lateness we re-anchor the schedule instead of bursting frames to catch up.
_MAX_LATE_S = 0.06


class FrameSchedule:
    """When frame n is due: anchor + n * interval, without drift; a frame asked for more than 60 ms
    after it was due re-anchors the schedule there instead of bursting frames to catch up."""

    def __init__(self, interval_s: float) -> None:
        self._interval_s = interval_s
        self._anchor: float | None = None
        self._anchor_frame = 0
        self.reanchored = 0  # times the loop fell more than 60 ms behind

    def start(self, frame_index: int, at: float) -> None:
        """Frame `frame_index` is due `at`; the later ones follow from it."""
        self._anchor, self._anchor_frame = at, frame_index

    def due(self, frame_index: int, now: float) -> float:
        """When frame `frame_index` is due, asked `now`; the first frame asked for is due at once."""
        if self._anchor is None:
            self.start(frame_index, now)
            return now
        due = self._anchor + (frame_index - self._anchor_frame) * self._interval_s
        if now - due > _MAX_LATE_S:
            self.reanchored += 1
            self.start(frame_index, now)
            return now
        return due


class FramePacer:
    """Waits until frame n is due (FrameSchedule), for a stream that paces itself."""

    def __init__(self, interval_s: float) -> None:
        self._schedule = FrameSchedule(interval_s)

    async def wait_for(self, frame_index: int) -> None:
        now = asyncio.get_running_loop().time()
        delay = self._schedule.due(frame_index, now) - now
        if delay > 0:
            await asyncio.sleep(delay)
