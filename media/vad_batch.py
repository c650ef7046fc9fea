"""Silero for every call at once: one model run for the windows all streams completed in the last 10 ms.

The run goes through the graph media.vad_graph rebuilds from the shipped model: every layer one matrix
product over all the waiting windows, and the LSTM with the streams as its batch, each stream with its
own state (h, c of shape [1, streams, 128]). A window costs ~18 us in a run of 16 (the shipped graph:
~91 us alone; bench/vad_cost.py). Every stream's probabilities agree with its own run of the shipped graph to ~1e-6, and
do not depend on which streams share a run (tests/test_vad_graph.py, tests/test_vad_batch.py).

A stream's completed windows wait for the next run: at most BATCH_WAIT_S, once a window is waiting.
The quiet gate of media.vad (skip_quiet) is applied in the run, window by window and in each stream's
order, so a stream skips exactly the windows SileroVad would; a window the settled gate skips with
nothing of its stream still waiting is skipped as it completes, and its probability (0) told at once.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import weakref
from collections import deque
from collections.abc import Callable

import numpy as np
import onnxruntime

from media.vad import (
    CONTEXT_SAMPLES,
    INT16_SCALE,
    QUIET_PROBABILITY,
    QUIET_SETTLED,
    WINDOW_SAMPLES,
    is_quiet,
    session_options,
)
from media.vad_graph import stream_model_bytes

log = logging.getLogger(__name__)

BATCH_WAIT_S = 0.01  # a window waits at most half a frame: 15+ windows a run once 50 calls talk
_ROW = CONTEXT_SAMPLES + WINDOW_SAMPLES
_HIDDEN = 128

# (window index, probability, the tag the window was pushed with)
OnWindow = Callable[[int, float, bool], None]

_session: onnxruntime.InferenceSession | None = None
_session_lock = threading.Lock()


def stream_session() -> onnxruntime.InferenceSession:
    """The process-wide session of the stream-batched graph (load it at startup: ~0.4 s)."""
    global _session
    if _session is None:
        with _session_lock:
            if _session is None:
                _session = onnxruntime.InferenceSession(
                    stream_model_bytes(), sess_options=session_options(), providers=["CPUExecutionProvider"]
                )
    return _session


class BatchedVad:
    """One stream's windows for a VadBatch: feed 16 kHz mono int16 chunks; probabilities come back per window."""

    def __init__(self, on_window: OnWindow, *, skip_quiet: bool = False, batch: VadBatch | None = None) -> None:
        self._on_window = on_window
        self._skip_quiet = skip_quiet
        self._batch = batch
        self._window = np.zeros(_ROW, dtype=np.float32)  # context, then the samples since
        self._filled = 0
        self.windows = 0  # windows completed so far; window i covers samples [512*i, 512*(i+1))
        self.windows_skipped = 0  # quiet windows not run through the model (skip_quiet)
        self.h = np.zeros((1, 1, _HIDDEN), dtype=np.float32)
        self.c = np.zeros((1, 1, _HIDDEN), dtype=np.float32)
        self.quiet_run = 0
        self.waiting: deque[tuple[int, np.ndarray, bool]] = deque()  # (index, row, tag) not yet run
        self.closed = False

    @property
    def pending_samples(self) -> int:
        """Samples received but not yet part of a completed window."""
        return self._filled

    def push(self, samples: np.ndarray, tag: bool = False) -> None:
        """Every window these samples complete goes to the next run, carrying `tag` back."""
        if self.closed:
            return
        flat = samples.reshape(-1)
        window = self._window
        while flat.size:
            take = min(WINDOW_SAMPLES - self._filled, flat.size)
            start = CONTEXT_SAMPLES + self._filled
            np.multiply(flat[:take], INT16_SCALE, out=window[start : start + take], casting="unsafe")
            self._filled += take
            flat = flat[take:]
            if self._filled == WINDOW_SAMPLES:
                index = self.windows
                self.windows += 1
                if self._settled_and_quiet(window):
                    # What the batch would do with it, now: no copy, no wait (a muted line's every window).
                    self.windows_skipped += 1
                    self.deliver(index, 0.0, tag, None)
                else:
                    self.waiting.append((index, window.copy(), tag))
                window[:CONTEXT_SAMPLES] = window[WINDOW_SAMPLES:]
                self._filled = 0
        if self.waiting:
            if self._batch is None:
                self._batch = vad_batch()
            self._batch.wait(self)

    def close(self) -> None:
        """Windows still waiting are dropped; nothing is called back any more."""
        self.closed = True
        self.waiting.clear()

    def _settled_and_quiet(self, window: np.ndarray) -> bool:
        """The gate would skip this window: settled in quiet, nothing earlier still to run, and quiet itself."""
        return self._skip_quiet and self.quiet_run >= QUIET_SETTLED and not self.waiting and bool(self.quiet_of(window))

    def quiet_of(self, row: np.ndarray) -> bool | None:
        """Whether a window's new samples are all below QUIET_PEAK; None when the gate is off."""
        if not self._skip_quiet:
            return None
        return is_quiet(row[CONTEXT_SAMPLES:])

    def deliver(self, index: int, probability: float, tag: bool, quiet: bool | None) -> None:
        if quiet is not None:
            self.quiet_run = self.quiet_run + 1 if quiet and probability < QUIET_PROBABILITY else 0
        try:
            self._on_window(index, probability, tag)
        except Exception:  # one call's failure must not cost the other calls their windows
            log.exception("a VAD window's consumer failed")


class VadBatch:
    """Runs the waiting windows of all its streams together, BATCH_WAIT_S after the first one waits."""

    def __init__(self, loop: asyncio.AbstractEventLoop, session: onnxruntime.InferenceSession | None = None) -> None:
        self._loop = loop
        self._session = session
        self._waiting: dict[int, BatchedVad] = {}  # by id: a stream waits once however many windows
        self._timer: asyncio.TimerHandle | None = None
        self.runs = 0
        self.windows_run = 0

    def wait(self, stream: BatchedVad) -> None:
        self._waiting[id(stream)] = stream
        if self._timer is None:
            self._timer = self._loop.call_later(BATCH_WAIT_S, self.run)

    def run(self) -> None:
        """Every waiting window, in each stream's order: one model run per round of first windows."""
        self._timer = None
        streams = [stream for stream in self._waiting.values() if not stream.closed]
        self._waiting.clear()
        while streams:
            self._round(streams)
            streams = [stream for stream in streams if stream.waiting and not stream.closed]

    def _round(self, streams: list[BatchedVad]) -> None:
        runs: list[tuple[BatchedVad, int, np.ndarray, bool, bool | None]] = []
        for stream in streams:
            index, row, tag = stream.waiting.popleft()
            quiet = stream.quiet_of(row)
            if quiet and stream.quiet_run >= QUIET_SETTLED:
                stream.windows_skipped += 1
                stream.deliver(index, 0.0, tag, None)  # the gate stays settled
                continue
            runs.append((stream, index, row, tag, quiet))
        if not runs:
            return
        session = self._session if self._session is not None else stream_session()
        count = len(runs)
        rows = np.stack([row for _, _, row, _, _ in runs])
        h = np.concatenate([stream.h for stream, *_ in runs], axis=1)
        c = np.concatenate([stream.c for stream, *_ in runs], axis=1)
        try:
            probabilities, hn, cn = session.run(None, {"input": rows, "h": h, "c": c})
        except Exception:  # a failed run must not end any call: its windows count as no speech
            log.exception("Silero batch of %d windows failed", count)
            probabilities = np.zeros(count, dtype=np.float32)
            hn, cn = h, c
        self.runs += 1
        self.windows_run += count
        for slot, (stream, index, _, tag, quiet) in enumerate(runs):
            if stream.closed:
                continue
            stream.h[0, 0] = hn[0, slot]
            stream.c[0, 0] = cn[0, slot]
            stream.deliver(index, float(probabilities[slot]), tag, quiet)


_batches: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, VadBatch] = weakref.WeakKeyDictionary()


def vad_batch() -> VadBatch:
    """The running loop's batch (made on first use)."""
    loop = asyncio.get_running_loop()
    batch = _batches.get(loop)
    if batch is None:
        batch = _batches[loop] = VadBatch(loop)
    return batch
