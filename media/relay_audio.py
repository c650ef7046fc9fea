"""The avatar's relayed audio on its way to the browser: a small jitter buffer between the room and our track.

The room delivers 10 ms frames as its receiver decodes them; our track takes 20 ms every 20 ms on
its own clock. The buffer waits for a little audio before it starts (and again after running dry),
and never holds more than MAX_MS: a burst after a stall is trimmed from the oldest end, so the
avatar's audio never lags its video by more than that.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from media.audio_buffer import SampleQueue

SAMPLE_RATE = 48_000
PREBUFFER_MS = 40
MAX_MS = 200
# A frame whose loudest sample is under this is silence (the room sends silence between utterances).
SOUND_PEAK = 64


class RelayAudioBuffer:
    def __init__(self) -> None:
        self._queue = SampleQueue()
        self._prebuffer = SAMPLE_RATE * PREBUFFER_MS // 1000
        self._max = SAMPLE_RATE * MAX_MS // 1000
        self._playing = False
        self.samples_in = 0  # everything relayed from the room: its metered seconds
        # Told of every frame that goes out: its real (relayed) samples and whether it carries sound.
        self.listener: Callable[[int, bool], None] | None = None

    def push(self, samples: np.ndarray) -> None:
        """48 kHz mono int16 from the room."""
        if not samples.size:
            return
        self._queue.push(samples)
        self.samples_in += samples.size
        excess = len(self._queue) - self._max
        if excess > 0:
            self._queue.pop(excess)

    def pop(self, count: int) -> np.ndarray:
        """`count` samples for the next outbound frame; silence while (re)filling."""
        if not self._playing:
            if len(self._queue) < max(count, self._prebuffer):
                if self.listener is not None:
                    self.listener(0, False)
                return np.zeros(count, dtype=np.int16)
            self._playing = True
        samples, real = self._queue.pop(count)
        if real < count:  # ran dry: wait for a little audio again
            self._playing = False
        if self.listener is not None:
            self.listener(real, bool(real) and int(np.abs(samples).max()) >= SOUND_PEAK)
        return samples

    def clear(self) -> int:
        """Drop what is buffered (barge-in); returns the samples dropped."""
        self._playing = False
        return self._queue.clear()
