"""A FIFO of mono int16 samples feeding the paced outbound track."""

from __future__ import annotations

from collections import deque

import numpy as np


class SampleQueue:
    """Chunks of int16 samples in, fixed-size frames out; `clear` drops whatever is unsent."""

    def __init__(self) -> None:
        self._chunks: deque[np.ndarray] = deque()
        self._head_offset = 0
        self._queued = 0

    def __len__(self) -> int:
        return self._queued

    def push(self, samples: np.ndarray) -> None:
        if samples.dtype != np.int16 or samples.ndim != 1:
            raise ValueError("SampleQueue takes 1-D int16 arrays")
        if samples.size:
            self._chunks.append(samples)
            self._queued += samples.size

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
        return out, filled

    def clear(self) -> int:
        """Drop everything unsent; returns how many samples were dropped."""
        dropped = self._queued
        self._chunks.clear()
        self._head_offset = 0
        self._queued = 0
        return dropped
