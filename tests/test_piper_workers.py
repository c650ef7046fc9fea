"""Piper syntheses of calls that answer at once run side by side, not one after the other."""

from __future__ import annotations

import asyncio
import time

import pytest

from agent_bridge.piper_tts import PiperTextToSpeech

pytestmark = pytest.mark.asyncio

LONG = "Today is Thursday, the twenty sixth of November, and the time is a quarter to seven in the morning."


async def worker_spans(workers: int) -> list[tuple[float, float]]:
    """When each of two syntheses started together ran on its worker thread: (start, end), sorted."""
    tts = PiperTextToSpeech(workers=workers)
    await tts.warm_up()
    produce = tts._produce
    spans: list[tuple[float, float]] = []

    def timed(*args):  # type: ignore[no-untyped-def]
        start = time.monotonic()
        try:
            produce(*args)
        finally:
            spans.append((start, time.monotonic()))

    tts._produce = timed  # type: ignore[method-assign]

    async def one() -> int:
        return sum([len(chunk) async for chunk in tts.synthesize(LONG)])

    try:
        sizes = await asyncio.gather(one(), one())
        # A worker hands over its last chunk before its span is written: wait for both spans.
        async with asyncio.timeout(10):
            while len(spans) < 2:
                await asyncio.sleep(0.01)
    finally:
        await tts.aclose()
    assert min(sizes) > 0  # both spoken (Piper varies its timing a little from one run to the next)
    return sorted(spans)


async def test_two_replies_are_synthesised_side_by_side() -> None:
    (_, end_a), (start_b, _) = await worker_spans(workers=2)
    assert start_b < end_a, "the second reply waited for the first to finish"


async def test_one_worker_makes_them_queue() -> None:
    (_, end_a), (start_b, _) = await worker_spans(workers=1)
    assert start_b >= end_a
