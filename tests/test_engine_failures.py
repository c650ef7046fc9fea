"""A failing engine produces an `error` event; the call, its frames and the next turn go on."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np
import pytest

from agent_bridge.interfaces import Agent, Conversation, EngineError, TextToSpeech
from agent_bridge.local_agent import LocalAgent
from agent_bridge.piper_tts import PiperTextToSpeech
from agent_bridge.registry import Engines
from agent_bridge.whisper_stt import WhisperSpeechToText
from media.events import EventBus
from media.outbound_audio import PacedAudioTrack
from media.pipeline import PipelineContext
from media.turn_detector import TurnConfig
from media.voice_pipeline import VoicePipeline

pytestmark = pytest.mark.asyncio(loop_scope="session")


class BrokenTextToSpeech(TextToSpeech):
    """A TTS whose service fails mid-stream once, as a cloud engine does when its connection drops,
    and speaks (a tone) after that."""

    name = "broken"
    sample_rate = 24_000

    def __init__(self) -> None:
        self.calls = 0

    async def synthesize(self, text: str) -> AsyncIterator[bytes]:
        self.calls += 1
        if self.calls == 1:
            yield b"\x00\x00" * 240
            raise EngineError("broken", "the connection to the speech service was reset")
        tone = (8000 * np.sin(2 * np.pi * 440 * np.arange(self.sample_rate // 2) / self.sample_rate)).astype("<i2")
        yield tone.tobytes()


class BrokenConversation(Conversation):
    async def reply(self, text: str) -> AsyncIterator[str]:
        yield "Let me think"
        raise EngineError("broken-agent", "the agent service returned 503")


class BrokenAgent(Agent):
    name = "broken-agent"

    def open_conversation(self, session_id: str, user_id: str) -> Conversation:
        return BrokenConversation()


@pytest.fixture(scope="module")
def working() -> tuple[WhisperSpeechToText, PiperTextToSpeech]:
    return WhisperSpeechToText(), PiperTextToSpeech()


async def run_pipeline(engines: Engines) -> tuple[VoicePipeline, PacedAudioTrack, list[dict[str, object]], asyncio.Task[int]]:
    events = EventBus()
    seen: list[dict[str, object]] = []
    events.subscribe(seen.append)
    out = PacedAudioTrack()
    pipeline = VoicePipeline(PipelineContext("s-1", "u-1", events, out), engines, TurnConfig())

    async def pull() -> int:  # plays the part of the RTP sender
        frames = 0
        while True:
            await out.recv()
            frames += 1
            if frames >= 50:
                return frames

    return pipeline, out, seen, asyncio.ensure_future(pull())


async def test_tts_failure_is_an_event_and_the_next_turn_works(working) -> None:  # type: ignore[no-untyped-def]
    stt, piper = working
    engines = Engines(stt=stt, agent=LocalAgent(), tts=BrokenTextToSpeech())
    pipeline, out, seen, frames = await run_pipeline(engines)
    # The text of the answer still arrives whole, though it could not be spoken.
    assert "hello" in (await pipeline.handle_text("hello")).lower()
    errors = [e for e in seen if e["type"] == "error"]
    assert errors and errors[0]["code"] == "tts_failed" and "reset" in str(errors[0]["message"])
    # The pipeline still works once the engine does.
    reply = await pipeline.handle_text("what is the date today?")
    assert "today" in reply.lower()
    assert out.queued_samples > 0
    assert len([e for e in seen if e["type"] == "error"]) == 1
    assert await asyncio.wait_for(frames, 5) == 50  # frames never stopped
    await pipeline.stop()


async def test_agent_failure_is_an_event(working) -> None:  # type: ignore[no-untyped-def]
    stt, piper = working
    pipeline, _, seen, frames = await run_pipeline(Engines(stt=stt, agent=BrokenAgent(), tts=piper))
    # What the agent said before it failed is kept.
    assert await pipeline.handle_text("hello") == "Let me think"
    errors = [e for e in seen if e["type"] == "error"]
    assert [e["code"] for e in errors] == ["agent_failed"] and "503" in str(errors[0]["message"])
    assert await asyncio.wait_for(frames, 5) == 50
    await pipeline.stop()
