"""Pacing a track's frames on the event loop's monotonic clock."""

from __future__ import annotations

import asyncio

# Past this lateness we re-anchor the schedule instead of bursting frames to catch up.
_MAX_LATE_S = 0.06


class FramePacer:
    """Waits until frame n is due: anchor + n * interval, without drift and without bursts."""

    def __init__(self, interval_s: float) -> None:
        self._interval_s = interval_s
        self._anchor: float | None = None
        self._anchor_frame = 0
        self._last_frame_at: float | None = None
        self.max_gap_ms = 0.0  # the longest wait between two frames handed out

    async def wait_for(self, frame_index: int) -> None:
        loop = asyncio.get_running_loop()
        if self._anchor is None:
            self._anchor = loop.time()
            self._anchor_frame = frame_index
        else:
            due = self._anchor + (frame_index - self._anchor_frame) * self._interval_s
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -_MAX_LATE_S:
                self._anchor = loop.time()
                self._anchor_frame = frame_index
        now = loop.time()
        if self._last_frame_at is not None:
            self.max_gap_ms = max(self.max_gap_ms, (now - self._last_frame_at) * 1000)
        self._last_frame_at = now
