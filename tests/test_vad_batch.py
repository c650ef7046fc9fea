"""media.vad_batch: many streams' windows in one run of the rebuilt Silero graph give every stream what
its own SileroVad (the shipped graph) gives, to float rounding, and skip the very same windows,
whatever the chunking and whenever the runs happen."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from media.vad import SileroVad
from media.vad_batch import BatchedVad, VadBatch
from tests.test_vad_windows import speech_16k

Heard = list[tuple[int, float, bool]]


def streams_audio() -> list[np.ndarray]:
    """Speech, speech after digital silence (the quiet gate settles), noise, and speech shifted in time."""
    speech = speech_16k()
    rng = np.random.default_rng(3)
    noise = (rng.standard_normal(speech.size) * 300).astype(np.int16)
    silence = np.zeros(16_000, np.int16)
    return [
        speech,
        np.concatenate([silence, speech, silence]),
        noise,
        np.concatenate([speech[5000:], speech[:5000]]),
        np.concatenate([silence[:3000], (speech * 0.3).astype(np.int16)]),
    ]


def alone(audio: np.ndarray, skip_quiet: bool, chunk: int = 320) -> tuple[list[float], int]:
    vad = SileroVad(skip_quiet=skip_quiet)
    probabilities = [float(p) for start in range(0, audio.size, chunk) for p in vad.process(audio[start : start + chunk])]
    return probabilities, vad.windows_skipped


@pytest.mark.parametrize("skip_quiet", [False, True])
async def test_every_stream_gets_what_its_own_silero_gives(skip_quiet: bool) -> None:
    audios = streams_audio()
    batch = VadBatch(asyncio.get_running_loop())
    heard: list[Heard] = [[] for _ in audios]
    streams = [
        BatchedVad(lambda i, p, tag, out=out: out.append((i, p, tag)), skip_quiet=skip_quiet, batch=batch) for out in heard
    ]
    rng = np.random.default_rng(11)
    positions = [0] * len(audios)
    pushes = 0
    while any(pos < audio.size for pos, audio in zip(positions, audios, strict=True)):
        k = int(rng.integers(len(audios)))
        size = int(rng.choice([320, 320, 320, 160, 1, 700, 2000]))  # bursts leave several windows waiting
        chunk = audios[k][positions[k] : positions[k] + size]
        if chunk.size:
            streams[k].push(chunk, tag=bool(pushes % 2))
            pushes += 1
        positions[k] += size
        if rng.random() < 0.1:
            batch.run()  # runs at any moment, with any mix of streams waiting
    batch.run()

    assert batch.runs > 10 and batch.windows_run > batch.runs  # windows really ran together
    for audio, stream, got in zip(audios, streams, heard, strict=True):
        expected, skipped = alone(audio, skip_quiet)
        assert [i for i, _, _ in got] == list(range(len(expected)))  # every window once, in order
        # The same model, its sums in another order (media.vad_graph): equal to rounding.
        np.testing.assert_allclose([p for _, p, _ in got], expected, rtol=0, atol=1e-5)
        assert stream.windows_skipped == skipped
    if skip_quiet:
        assert streams[1].windows_skipped > 0  # the silent stretches were skipped, the same ones


async def test_a_waiting_window_is_run_by_the_batch_timer() -> None:
    batch = VadBatch(asyncio.get_running_loop())
    heard: Heard = []
    stream = BatchedVad(lambda i, p, tag: heard.append((i, p, tag)), batch=batch)
    audio = speech_16k()[:1024]
    stream.push(audio[:600], tag=True)
    assert heard == [] and stream.pending_samples == 88
    async with asyncio.timeout(2):
        while not heard:
            await asyncio.sleep(0.005)
    assert heard[0][0] == 0 and heard[0][2] is True
    assert heard[0][1] == pytest.approx(alone(audio[:512], skip_quiet=False)[0][0], abs=1e-5)


async def test_a_closed_stream_drops_its_windows_and_a_failing_consumer_costs_only_itself() -> None:
    batch = VadBatch(asyncio.get_running_loop())
    heard: Heard = []

    def failing(index: int, probability: float, tag: bool) -> None:
        raise RuntimeError("consumer broke")

    closed = BatchedVad(lambda *window: heard.append(window), batch=batch)
    broken = BatchedVad(failing, batch=batch)
    fine = BatchedVad(lambda *window: heard.append(window), batch=batch)
    audio = speech_16k()[:2048]
    for stream in (closed, broken, fine):
        stream.push(audio)
    closed.close()
    closed.push(audio)  # ignored once closed
    batch.run()
    assert [i for i, _, _ in heard] == [0, 1, 2, 3]  # only `fine`'s four windows
    assert batch.windows_run == 8  # `broken`'s ran too; its consumer's failure was its own
