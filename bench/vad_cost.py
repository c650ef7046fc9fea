"""What one Silero window costs: the shipped graph one window at a time, and media.vad_graph's rebuilt
graph in runs of 1 to 64 windows (as media.vad_batch runs them, one window per call).

Windows are speech (the VAD tests' sentences) cut as the pipeline cuts them: 64 samples of context
and 512 new ones at 16 kHz; a window's cost does not depend on what it holds. Each figure is the best of 5 repeats of 200 runs, in us a window.

Usage: python bench/vad_cost.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from media.vad import CONTEXT_SAMPLES, INT16_SCALE, WINDOW_SAMPLES, load_session  # noqa: E402
from media.vad_batch import stream_session  # noqa: E402
from tests.test_vad_windows import speech_16k  # noqa: E402

RUNS = 200
REPEATS = 5


def windows(count: int) -> np.ndarray:
    """`count` consecutive windows of speech with their context, as float rows."""
    speech = speech_16k().astype(np.float32) * INT16_SCALE
    rows = []
    for k in range(count):
        start = (k * WINDOW_SAMPLES) % (speech.size - WINDOW_SAMPLES - CONTEXT_SAMPLES)
        rows.append(speech[start : start + CONTEXT_SAMPLES + WINDOW_SAMPLES])
    return np.stack(rows)


def best_us(run, per: int) -> float:  # type: ignore[no-untyped-def]
    for _ in range(20):
        run()
    best = float("inf")
    for _ in range(REPEATS):
        start = time.perf_counter()
        for _ in range(RUNS):
            run()
        best = min(best, (time.perf_counter() - start) / RUNS)
    return best * 1e6 / per


def main() -> None:
    shipped, rebuilt = load_session(), stream_session()
    one = windows(1)
    state = np.zeros((1, 1, 128), np.float32)
    alone = best_us(lambda: shipped.run(None, {"input": one, "h": state, "c": state}), 1)
    print(f"shipped graph, one window a run (SileroVad): {alone:6.1f} us a window")
    for size in (1, 4, 16, 32, 64):
        rows = windows(size)
        h = np.zeros((1, size, 128), np.float32)
        cost = best_us(lambda rows=rows, h=h: rebuilt.run(None, {"input": rows, "h": h, "c": h}), size)
        print(f"rebuilt graph, {size:2d} windows a run:            {cost:6.1f} us a window")
    print("a window is 32 ms of one call's audio: per 20 ms frame a call costs 0.625 of these")


if __name__ == "__main__":
    main()
