"""The last moments of inbound audio, so a turn's speech reaches STT from its true start.

Voice activity is only confirmed a little after speech begins; the audio before that moment
is kept here and handed over when the turn starts.
"""

from __future__ import annotations

from collections import deque

import numpy as np


class PrerollBuffer:
    def __init__(self, keep_samples: int) -> None:
        self._keep = keep_samples
        self._chunks: deque[np.ndarray] = deque()
        self._held = 0
        self.end_sample = 0  # clock position just after the newest sample held

    def push(self, samples: np.ndarray) -> None:
        self._chunks.append(samples)
        self._held += samples.size
        self.end_sample += samples.size
        while self._chunks and self._held - self._chunks[0].size >= self._keep:
            self._held -= self._chunks.popleft().size

    def since(self, start_sample: int) -> np.ndarray:
        """The held audio from clock position `start_sample` on (or as far back as is held)."""
        if not self._chunks:
            return np.zeros(0, np.int16)
        held = np.concatenate(self._chunks)
        first_held = self.end_sample - held.size
        return held[max(0, start_sample - first_held) :]
