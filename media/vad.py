"""Silero VAD v6 on onnxruntime: speech probability per 32 ms window of 16 kHz audio.

The ONNX session is loaded once per process and shared; each stream keeps only its own LSTM
state and audio context in a `SileroVad`.

One window costs ~80-90 us of model (its convolutions; session options change nothing measurable),
the most a listening call does. The usual one-window run goes through an IO binding to buffers
each stream owns (~10% less than `session.run`, which makes new arrays for every input and output). With `skip_quiet`, a stream that
has gone quiet skips it: a window whose every sample is below QUIET_PEAK (-58 dBFS: digital
silence, a muted or noise-suppressed microphone; Silero hears no speech there, which takes speech
at about -50 dBFS or more) is not run once QUIET_SETTLED windows in a row were quiet and the model
gave them all less than QUIET_PROBABILITY. The model's hangover inside speech (it stays high
through short gaps of silence) is untouched: the quiet windows right after speech are still run.
A skipped window has probability 0; the context still follows the audio, and the LSTM state stays
where those quiet windows left it, which is where more of them would keep it.
"""

from __future__ import annotations

import os
import threading

import faster_whisper
import numpy as np
import onnxruntime

SAMPLE_RATE = 16_000
WINDOW_SAMPLES = 512
CONTEXT_SAMPLES = 64
WINDOW_MS = WINDOW_SAMPLES * 1000 / SAMPLE_RATE  # 32.0
MODEL_PATH = os.path.join(os.path.dirname(faster_whisper.__file__), "assets", "silero_vad_v6.onnx")

# The quiet gate (skip_quiet): peak below -58 dBFS, after 5 windows (160 ms) of quiet the model found no speech in.
QUIET_PEAK = 40 / 32768
QUIET_SETTLED = 5
QUIET_PROBABILITY = 0.1

_STATE_SHAPE = (1, 1, 128)
INT16_SCALE = np.float32(1 / 32768)
_NO_PROBS = np.zeros(0, dtype=np.float32)
_NO_PROBS.flags.writeable = False
_SKIPPED = np.zeros(1, dtype=np.float32)
_SKIPPED.flags.writeable = False
# The ufuncs' reductions themselves: ndarray.max()/min() go through numpy's Python wrappers first.
_peak_high, _peak_low = np.maximum.reduce, np.minimum.reduce

_session: onnxruntime.InferenceSession | None = None
_session_lock = threading.Lock()


def session_options() -> onnxruntime.SessionOptions:
    """Options of every Silero session (this one and media.vad_batch's)."""
    opts = onnxruntime.SessionOptions()
    # One window is ~50 us of work: extra threads only add wake-up latency and
    # contend with the event loop and other calls. 1 and 1 means ONNX Runtime makes
    # no pool thread at all: every call's windows run on the event loop's thread, in
    # this one process-wide session (never one per call).
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return opts


def load_session() -> onnxruntime.InferenceSession:
    """The process-wide Silero session; call at startup so the first call doesn't pay ~50 ms."""
    global _session
    if _session is None:
        with _session_lock:
            if _session is None:
                _session = onnxruntime.InferenceSession(
                    MODEL_PATH, sess_options=session_options(), providers=["CPUExecutionProvider"]
                )
    return _session


def is_quiet(new: np.ndarray) -> bool:
    """Whether every sample of a window's new (float) samples is below QUIET_PEAK: the quiet gate's test."""
    return max(float(_peak_high(new)), -float(_peak_low(new))) < QUIET_PEAK


class SileroVad:
    """Per-stream VAD: feed 16 kHz mono int16 chunks of any length, get one probability per window.

    Windows are 512 new samples preceded by the previous window's last 64 samples, with the LSTM
    state (h, c) carried across windows, which is exactly what the model saw in training and what
    faster_whisper's batch VAD computes.
    """

    def __init__(self, session: onnxruntime.InferenceSession | None = None, *, skip_quiet: bool = False) -> None:
        self._session = session if session is not None else load_session()
        self._skip_quiet = skip_quiet
        self.windows_skipped = 0  # quiet windows not run through the model (skip_quiet)
        # The state carried across windows, and the next window as it fills: the last window's last
        # 64 samples, then the samples since. Filled in place, so the usual 20 ms chunk costs one
        # conversion and no new arrays; the binding reads them where they are.
        self._h = np.zeros(_STATE_SHAPE, dtype=np.float32)
        self._c = np.zeros(_STATE_SHAPE, dtype=np.float32)
        self._window = np.zeros(CONTEXT_SAMPLES + WINDOW_SAMPLES, dtype=np.float32)
        self._prob = np.zeros(1, dtype=np.float32)
        self._h_out = np.zeros(_STATE_SHAPE, dtype=np.float32)
        self._c_out = np.zeros(_STATE_SHAPE, dtype=np.float32)
        binding = self._session.io_binding()
        binding.bind_cpu_input("input", self._window[None])
        binding.bind_cpu_input("h", self._h)
        binding.bind_cpu_input("c", self._c)
        for name, out in (("speech_probs", self._prob), ("hn", self._h_out), ("cn", self._c_out)):
            binding.bind_ortvalue_output(name, onnxruntime.OrtValue.ortvalue_from_numpy(out))
        self._binding = binding
        self.reset()

    def reset(self) -> None:
        """Forget the stream: zero state and context, drop any partial window."""
        self._h.fill(0)
        self._c.fill(0)
        self._window.fill(0)
        self._filled = 0
        self.windows = 0  # windows evaluated so far; window i covers samples [512*i, 512*(i+1))
        self._quiet_run = 0  # quiet windows in a row the model found no speech in (skip_quiet)

    @property
    def pending_samples(self) -> int:
        """Samples received but not yet part of an evaluated window."""
        return self._filled

    def process(self, samples: np.ndarray) -> np.ndarray:
        """Probabilities (float32) for every window completed by `samples`, usually 0 or 1 of them."""
        if samples.dtype != np.int16:
            raise ValueError(f"SileroVad takes int16 samples, got {samples.dtype}")
        flat = samples.reshape(-1)
        window, filled = self._window, self._filled
        start = CONTEXT_SAMPLES + filled
        if filled + flat.size < WINDOW_SAMPLES:  # no window completes
            np.multiply(flat, INT16_SCALE, out=window[start : start + flat.size], casting="unsafe")
            self._filled += flat.size
            return _NO_PROBS
        if filled + flat.size >= 2 * WINDOW_SAMPLES:
            if self._skip_quiet:  # window by window, so each can be skipped
                step = WINDOW_SAMPLES - filled
                parts = [self.process(flat[:step])]
                parts += [self.process(flat[i : i + WINDOW_SAMPLES]) for i in range(step, flat.size, WINDOW_SAMPLES)]
                return np.concatenate(parts)
            return self._process_many(flat)
        # Exactly one window completes: run it, then its tail is the next window's context.
        take = WINDOW_SAMPLES - filled
        np.multiply(flat[:take], INT16_SCALE, out=window[start:], casting="unsafe")
        probs = self._gated(window) if self._skip_quiet else self._run_window()
        window[:CONTEXT_SAMPLES] = window[WINDOW_SAMPLES:]
        rest = flat.size - take
        np.multiply(flat[take:], INT16_SCALE, out=window[CONTEXT_SAMPLES : CONTEXT_SAMPLES + rest], casting="unsafe")
        self._filled = rest
        self.windows += 1
        return probs

    def _run_window(self) -> np.ndarray:
        """The model over the bound window, the state carried; its probability (a new array)."""
        self._session.run_with_iobinding(self._binding)
        np.copyto(self._h, self._h_out)
        np.copyto(self._c, self._c_out)
        return self._prob.copy()

    def _gated(self, window: np.ndarray) -> np.ndarray:
        """The window's probability, from the model unless the stream has settled into quiet."""
        quiet = is_quiet(window[CONTEXT_SAMPLES:])
        if quiet and self._quiet_run >= QUIET_SETTLED:
            self.windows_skipped += 1
            return _SKIPPED
        probs = self._run_window()
        self._quiet_run = self._quiet_run + 1 if quiet and probs.item(0) < QUIET_PROBABILITY else 0
        return probs

    def _process_many(self, flat: np.ndarray) -> np.ndarray:
        """Several windows at once: one run over all of them (the model's first axis is time)."""
        audio = np.concatenate((self._window[CONTEXT_SAMPLES : CONTEXT_SAMPLES + self._filled], flat.astype(np.float32) * INT16_SCALE))
        count = audio.size // WINDOW_SAMPLES
        windows = audio[: count * WINDOW_SAMPLES].reshape(count, WINDOW_SAMPLES)
        batch = np.empty((count, CONTEXT_SAMPLES + WINDOW_SAMPLES), dtype=np.float32)
        batch[0, :CONTEXT_SAMPLES] = self._window[:CONTEXT_SAMPLES]
        batch[1:, :CONTEXT_SAMPLES] = windows[:-1, -CONTEXT_SAMPLES:]
        batch[:, CONTEXT_SAMPLES:] = windows
        probs, h, c = self._session.run(None, {"input": batch, "h": self._h, "c": self._c})
        np.copyto(self._h, h)
        np.copyto(self._c, c)
        rest = audio.size - count * WINDOW_SAMPLES
        self._window[:CONTEXT_SAMPLES] = windows[-1, -CONTEXT_SAMPLES:]
        self._window[CONTEXT_SAMPLES : CONTEXT_SAMPLES + rest] = audio[count * WINDOW_SAMPLES :]
        self._filled = rest
        self.windows += count
        return probs.reshape(-1)
