"""A FIFO of mono int16 samples feeding the paced outbound track."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import numpy as np


class SampleQueue:
    """Chunks of int16 samples in, fixed-size frames out; `clear` drops whatever is unsent.

    Positions count samples ever pushed, so a caller can ask to hear when one of them goes out.
    """

    def __init__(self) -> None:
        self._chunks: deque[np.ndarray] = deque()
        self._head_offset = 0
        self._queued = 0
        self.pushed_total = 0
        self.sent_total = 0  # real samples popped
        self._marks: deque[tuple[int, Callable[[], None]]] = deque()

    def __len__(self) -> int:
        return self._queued

    def push(self, samples: np.ndarray) -> int:
        """Queue samples; returns the position of the first one."""
        if samples.dtype != np.int16 or samples.ndim != 1:
            raise ValueError("SampleQueue takes 1-D int16 arrays")
        first = self.pushed_total
        if samples.size:
            self._chunks.append(samples)
            self._queued += samples.size
            self.pushed_total += samples.size
        return first

    def when_sent(self, position: int, callback: Callable[[], None]) -> None:
        """Call `callback` once the sample at `position` has been popped; never, if it is cleared first."""
        if position < self._consumed:
            callback()
            return
        self._marks.append((position, callback))

    @property
    def _consumed(self) -> int:
        return self.pushed_total - self._queued

    def pop(self, count: int) -> tuple[np.ndarray, int]:
        """Exactly `count` samples, zero-padded; also how many of them were real (queued) audio."""
        out = np.zeros(count, dtype=np.int16)
        filled = 0
        while filled < count and self._chunks:
            head = self._chunks[0]
            take = min(count - filled, head.size - self._head_offset)
            out[filled : filled + take] = head[self._head_offset : self._head_offset + take]
            filled += take
            self._head_offset += take
            if self._head_offset == head.size:
                self._chunks.popleft()
                self._head_offset = 0
        self._queued -= filled
        self.sent_total += filled
        consumed = self._consumed
        while self._marks and self._marks[0][0] < consumed:
            self._marks.popleft()[1]()
        return out, filled

    def clear(self) -> int:
        """Drop everything unsent, and the marks waiting on it; returns how many samples were dropped."""
        dropped = self._queued
        self._chunks.clear()
        self._head_offset = 0
        self._queued = 0
        self._marks.clear()
        return dropped
