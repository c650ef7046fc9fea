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


# -- the quiet gate (skip_quiet) ------------------------------------------------------------------


def _turn_events(probabilities: np.ndarray) -> list[tuple[str, float, float]]:
    from media.turn_detector import TurnConfig, TurnDetector
    from media.vad import WINDOW_MS

    turns, events = TurnDetector(TurnConfig()), []
    for index, probability in enumerate(probabilities):
        for event in turns.push_probability(float(probability), WINDOW_MS, (index + 1) * WINDOW_MS):
            events.append((event.type.name, event.speech_start_ms, (index + 1) * WINDOW_MS))
    return events


def _questions(gap: np.ndarray) -> np.ndarray:
    """Five questions at 16 kHz, each after `gap`-long quiet (made from `gap(seconds)`)."""
    from media.audio_resample import OutboundResampler

    to_16k = OutboundResampler(48_000, 16_000)
    parts = [gap(1.0)]
    for text in ("Hello there, how are you today?", "I would like to check my order, please.", "Thank you.", "Yes.", "Could you tell me when it will arrive?"):
        spoken = utterance(text)
        parts += [np.concatenate([to_16k.resample(spoken), to_16k.flush()]), gap(1.5)]
    return np.concatenate(parts)


def _chunked(vad: SileroVad, audio: np.ndarray) -> np.ndarray:
    return np.concatenate([vad.process(chunk) for chunk in audio[: audio.size // 320 * 320].reshape(-1, 320)])


def test_quiet_windows_skip_the_model_and_speech_is_heard_at_the_same_windows() -> None:
    rng = np.random.default_rng(3)
    silence = lambda seconds: np.zeros(int(16_000 * seconds), np.int16)
    hiss = lambda seconds: (rng.standard_normal(int(16_000 * seconds)) * 5).astype(np.int16)  # -76 dBFS
    for audio in (_questions(silence), _questions(hiss), (_questions(silence) * 0.03).astype(np.int16)):  # the last at -40 dBFS
        every, gated = SileroVad(), SileroVad(skip_quiet=True)
        expected, got = _chunked(every, audio), _chunked(gated, audio)
        assert got.size == expected.size and gated.windows == every.windows
        # Most of the quiet never ran the model (it was ~half the audio), and what was skipped says "no speech".
        assert gated.windows_skipped > 0.4 * got.size
        skipped = got == 0
        assert skipped.sum() == gated.windows_skipped and expected[skipped].max() < 0.1
        # The same turns, each event at the same window or the one next to it (32 ms: the model's LSTM
        # state after a long quiet is a little different, as after a quiet of another length).
        ours, theirs = _turn_events(got), _turn_events(expected)
        assert [e[0] for e in ours] == [e[0] for e in theirs] and len(ours) >= 15
        for (_, start, at), (_, start_then, at_then) in zip(ours, theirs, strict=True):
            assert abs(start - start_then) <= 32 and abs(at - at_then) <= 32


def test_the_gate_skips_only_quiet_the_model_already_called_quiet() -> None:
    from media.vad import QUIET_PEAK, QUIET_SETTLED

    audio = np.concatenate([np.zeros(16_000, np.int16), speech_16k(), np.zeros(16_000, np.int16)])
    vad = SileroVad(skip_quiet=True)
    probabilities = _chunked(vad, audio)
    windows = audio[: probabilities.size * WINDOW_SAMPLES].reshape(-1, WINDOW_SAMPLES)
    quiet = np.abs(windows.astype(np.int32)).max(axis=1) < QUIET_PEAK * 32768
    skipped = np.flatnonzero(probabilities == 0)
    assert (probabilities >= 0.5).sum() > 10 and skipped.size > 40
    for index in skipped:
        # A quiet window, after QUIET_SETTLED quiet ones the model gave almost nothing (or skipped too).
        before = slice(index - QUIET_SETTLED, index)
        assert quiet[index] and quiet[before].all() and probabilities[before].max() < 0.1
    assert probabilities[-1] == 0  # the quiet after the speech is skipped once settled
    # Chunks of several windows at once are gated window by window, to the same probabilities.
    again = SileroVad(skip_quiet=True)
    assert np.array_equal(np.concatenate([again.process(audio[i : i + 5000]) for i in range(0, audio.size, 5000)]), probabilities[: audio.size // 512])
