"""SileroVad fills its next window in place (media.vad): the probabilities are bit-for-bit what the
straightforward windowing gives, whatever the chunk sizes."""

from __future__ import annotations

import numpy as np

from media.vad import CONTEXT_SAMPLES, WINDOW_SAMPLES, SileroVad, load_session
from tests.speech import utterance

_SCALE = np.float32(1 / 32768)


class ReferenceVad:
    """The windowing as it was: new arrays for every chunk, every window's batch built afresh."""

    def __init__(self) -> None:
        self._session = load_session()
        self._h = np.zeros((1, 1, 128), np.float32)
        self._c = np.zeros((1, 1, 128), np.float32)
        self._context = np.zeros(CONTEXT_SAMPLES, np.float32)
        self._pending = np.zeros(0, np.float32)

    def process(self, samples: np.ndarray) -> np.ndarray:
        audio = samples.reshape(-1).astype(np.float32) * _SCALE
        if self._pending.size:
            audio = np.concatenate((self._pending, audio))
        count = audio.size // WINDOW_SAMPLES
        if count == 0:
            self._pending = audio
            return np.zeros(0, np.float32)
        windows = audio[: count * WINDOW_SAMPLES].reshape(count, WINDOW_SAMPLES)
        batch = np.empty((count, CONTEXT_SAMPLES + WINDOW_SAMPLES), dtype=np.float32)
        batch[0, :CONTEXT_SAMPLES] = self._context
        batch[1:, :CONTEXT_SAMPLES] = windows[:-1, -CONTEXT_SAMPLES:]
        batch[:, CONTEXT_SAMPLES:] = windows
        probs, self._h, self._c = self._session.run(None, {"input": batch, "h": self._h, "c": self._c})
        self._context = windows[-1, -CONTEXT_SAMPLES:].copy()
        self._pending = audio[count * WINDOW_SAMPLES :].copy()
        return probs.reshape(-1)


def speech_16k() -> np.ndarray:
    at_48k = np.concatenate([utterance("Is anyone there?"), np.zeros(8000, np.int16), utterance("Hello again.")])
    return at_48k[::3].copy()  # any 16 kHz audio will do: both get the same samples


def test_in_place_windows_give_the_same_probabilities_for_any_chunking() -> None:
    audio = speech_16k()
    rng = np.random.default_rng(7)
    for sizes in ([320], [512], [160, 480], [1, 511, 2000, 7, 1500, 320]):
        ours, reference = SileroVad(), ReferenceVad()
        got, expected, pos, i = [], [], 0, 0
        while pos < audio.size:
            size = sizes[i % len(sizes)] if i < 40 else int(rng.integers(1, 1700))
            chunk = audio[pos : pos + size]
            got.append(ours.process(chunk))
            expected.append(reference.process(chunk))
            assert got[-1].size == expected[-1].size
            pos, i = pos + size, i + 1
        assert np.array_equal(np.concatenate(got), np.concatenate(expected)), sizes
        assert ours.windows == audio.size // WINDOW_SAMPLES
        assert ours.pending_samples == audio.size % WINDOW_SAMPLES
        ours.reset()
        assert ours.pending_samples == 0 and ours.windows == 0
