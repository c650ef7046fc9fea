"""Whisper's passes are scheduled so a turn being decided never waits behind an interim pass."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from agent_bridge.whisper_stt import WhisperSpeechToText
from media.audio_resample import VAD_RATE
from tests.speech import utterance

pytestmark = pytest.mark.asyncio(loop_scope="session")


def at_16k(samples_48k: np.ndarray) -> bytes:
    return samples_48k[::3].astype(np.int16).tobytes()  # speech band only: plain decimation is enough here


async def test_a_final_pass_overtakes_a_running_interim_pass() -> None:
    stt = WhisperSpeechToText(cpu_threads=1, final_workers=1)
    await stt.warm_up()
    try:
        sentence = utterance("The quick brown fox jumps over the lazy dog near the river bank.")
        long_turn = at_16k(np.tile(sentence, 6))  # a long turn's interim: many seconds to decode
        assert len(long_turn) // 2 / VAD_RATE > 15
        interim = stt.submit_pcm(long_turn, interim=True)
        await asyncio.sleep(0.05)  # it is running now
        assert not stt.interim_allowed  # and no second interim may start meanwhile
        final = await stt.transcribe(at_16k(utterance("What time is it?")))
        assert "time" in final.lower(), final
        # The deciding pass finished while the interim was still decoding: it did not queue behind it.
        assert not interim.done()
        assert "fox" in (await stt.result(interim)).lower()
        assert stt.idle and stt.interim_allowed
    finally:
        await stt.aclose()


async def test_deciding_passes_of_turns_that_end_together_run_side_by_side() -> None:
    stt = WhisperSpeechToText(cpu_threads=1, final_workers=2)
    await stt.warm_up()
    try:
        long_turn = at_16k(np.tile(utterance("Tell me about the weather in the mountains this weekend."), 5))
        short_turn = at_16k(utterance("Good morning."))
        first = stt.submit_pcm(long_turn)
        second = stt.submit_pcm(short_turn)
        done, _ = await asyncio.wait([asyncio.wrap_future(first), asyncio.wrap_future(second)], return_when=asyncio.FIRST_COMPLETED)
        # The short turn, submitted second, is answered first: the long one does not hold the worker.
        assert second.done() and not first.done()
        await asyncio.wrap_future(first)
    finally:
        await stt.aclose()
