"""How open the avatar's mouth is, from the speech being sent: no WebRTC, only samples."""

from __future__ import annotations

import math
from collections import deque

import numpy as np


class MouthFollower:
    """Mouth openness from outgoing speech: RMS of the last ~40 ms, fast attack, slower release.

    Fed with the int16 mono PCM exactly as it is sent, so the mouth moves with what the far end hears.
    """

    def __init__(
        self,
        sample_rate: int = 48000,
        window_ms: float = 40.0,
        attack_ms: float = 15.0,
        release_ms: float = 50.0,
        floor_rms: float = 300.0,
        full_rms: float = 5000.0,
    ) -> None:
        self.sample_rate = sample_rate
        self._window = max(1, int(sample_rate * window_ms / 1000.0))
        self._attack_s = attack_ms / 1000.0
        self._release_s = release_ms / 1000.0
        # Loudness is perceived in dB, so openness is linear in dB between floor and full.
        self._floor_db = 20.0 * math.log10(floor_rms)
        self._span_db = 20.0 * math.log10(full_rms) - self._floor_db
        self._chunks: deque[tuple[float, int]] = deque()  # (sum of squares, samples) per push
        self._count = 0
        self._value = 0.0

    def reset(self) -> None:
        """Close the mouth at once, e.g. when speech is cut off by barge-in."""
        self._chunks.clear()
        self._count = 0
        self._value = 0.0

    def push(self, samples: np.ndarray) -> None:
        n = samples.size
        if n == 0:
            return
        x = samples.reshape(-1).astype(np.float32)
        energy = float(np.dot(x, x))
        self._chunks.append((energy, n))
        self._count += n
        # Drop whole chunks while the rest still covers the window.
        while self._count - self._chunks[0][1] >= self._window:
            self._count -= self._chunks.popleft()[1]
        # Re-summing the two or three chunks left beats a running total that drifts.
        rms = math.sqrt(sum(chunk[0] for chunk in self._chunks) / self._count)
        target = 0.0 if rms <= 1.0 else (20.0 * math.log10(rms) - self._floor_db) / self._span_db
        target = min(max(target, 0.0), 1.0)
        tau = self._attack_s if target > self._value else self._release_s
        self._value += (target - self._value) * (1.0 - math.exp(-(n / self.sample_rate) / tau))
        if self._value < 0.02:  # snap shut rather than hover a hair open
            self._value = 0.0

    def openness(self) -> float:
        return self._value
