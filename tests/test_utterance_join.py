"""A pause inside a question that ends the turn does not get the first half answered on its own."""

from __future__ import annotations

import asyncio

import numpy as np

from tests.test_voice_pipeline_units import RATE, GatedTextToSpeech, RecordingSession, frames_of, make_pipeline, until


def question_with_a_pause(pause_s: float) -> np.ndarray:
    rng = np.random.default_rng(5)
    silence = lambda seconds: rng.normal(0, 10, int(RATE * seconds))  # noqa: E731
    speech = lambda seconds: rng.normal(0, 3000, int(RATE * seconds))  # noqa: E731
    audio = np.concatenate([silence(0.4), speech(0.6), silence(pause_s), speech(0.8), silence(1.2)])
    return np.clip(np.rint(audio), -32768, 32767).astype(np.int16)


async def play(pipeline, audio: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    for frame in frames_of(audio):  # in real time: the pipeline's tasks run between frames, as on a call
        pipeline.on_audio_frame(frame)
        await asyncio.sleep(0.02)


def finals(seen: list[dict[str, object]]) -> list[object]:
    return [e["text"] for e in seen if e["type"] == "transcript" and e.get("final")]


async def test_speaking_on_before_the_answer_begins_joins_the_question(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    original = RecordingSession.finish_turn

    async def slow_pass(self: RecordingSession):  # type: ignore[no-untyped-def]
        result = await original(self)
        await asyncio.sleep(0.5)  # the transcript is not ready when the user goes on
        return result

    monkeypatch.setattr(RecordingSession, "finish_turn", slow_pass)
    pipeline, _, seen = make_pipeline(GatedTextToSpeech(gated=False))
    try:
        await play(pipeline, question_with_a_pause(0.7))  # ends the turn (500 ms), then speech again
        await until(lambda: any(e["type"] == "agent_text" and e.get("final") for e in seen), 10)
        await asyncio.sleep(0.3)
    finally:
        await pipeline.stop()
    # One question, answered once, with both parts; the first part alone never reached the agent.
    assert finals(seen) == ["part 1 part 2"], finals(seen)
    assert len([e for e in seen if e["type"] == "agent_text" and e.get("final")]) == 1


async def test_barging_in_right_after_the_answer_began_carries_the_question_on() -> None:
    pipeline, _, seen = make_pipeline(GatedTextToSpeech(gated=False))
    try:
        await play(pipeline, question_with_a_pause(1.0))  # the answer to part 1 starts, then part 2 comes
        await until(lambda: len(finals(seen)) >= 2, 10)
    finally:
        await pipeline.stop()
    assert [e["reason"] for e in seen if e["type"] == "interrupted"] == ["barge_in"]
    # The reply to the first half was cut off at once, and the question is answered whole.
    assert finals(seen) == ["part 1", "part 1 part 2"], finals(seen)


async def test_a_new_question_long_after_the_answer_is_not_joined() -> None:
    pipeline, _, seen = make_pipeline(GatedTextToSpeech(gated=False))
    try:
        await play(pipeline, question_with_a_pause(2.5))
        await until(lambda: len(finals(seen)) >= 2, 10)
    finally:
        await pipeline.stop()
    assert finals(seen) == ["part 1", "part 2"], finals(seen)
