"""Replies drafted during the user's pause, and turns that sound unfinished held a little longer.

The pipeline runs with a loudness VAD and a scripted STT (tests/test_voice_pipeline_units.py's stand-ins),
the real demo agent and a TTS that records what it was asked, so what is checked is the pipeline's own
handling: a drafted reply is heard only if the turn ends as drafted, is counted once, and leaves no trace
when the user speaks on; an unfinished "So," waits for the rest of the question.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np
import pytest

from agent_bridge.interfaces import InterimCallback, SpeechToText, SpeechToTextSession, TextToSpeech, Transcript
from agent_bridge.local_agent import LocalAgent
from agent_bridge.registry import Engines
from media.events import EventBus
from media.gated_speech import GatedSpeech
from media.outbound_audio import PacedAudioTrack
from media.pipeline import PipelineContext
from media.speech_output import TrackSpeech
from media.reply_speaker import cut_leading_silence
from media.turn_completion import looks_unfinished
from media.turn_detector import TurnConfig
from media.voice_pipeline import VoicePipeline
from tests.test_voice_pipeline_units import FRAME, RATE, LoudnessVad, frames_of, until

pytestmark = pytest.mark.asyncio

LOUD = np.full(RATE // 2, 3000, np.int16)  # 0.5 s the loudness VAD calls speech


class ScriptedSession(SpeechToTextSession):
    """Says `pause_texts[k]` of the turn at its k-th pause and `turn_texts[j]` at the end of turn j."""

    def __init__(self, pause_texts: list[str], turn_texts: list[str]) -> None:
        self.pause_texts = pause_texts
        self.turn_texts = turn_texts
        self.pauses = 0
        self.turns = 0
        self._paused: asyncio.Future[str | None] | None = None

    def push(self, pcm: bytes) -> None:
        pass

    def speech_paused(self) -> None:
        text = self.pause_texts[min(self.pauses, len(self.pause_texts) - 1)]
        self.pauses += 1
        self._paused = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_later(0.02, _settle, self._paused, text)  # a pass takes a while

    def speech_resumed(self) -> None:
        if self._paused is not None and not self._paused.done():
            self._paused.set_result(None)
        self._paused = None

    async def paused_transcript(self) -> str | None:
        return await self._paused if self._paused is not None else None

    async def finish_turn(self) -> Transcript | None:
        text = self.turn_texts[self.turns]
        self.turns += 1
        self._paused = None
        await asyncio.sleep(0.005)
        return Transcript(text, True, 0, 0)

    def reset(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


def _settle(future: asyncio.Future[str | None], text: str) -> None:
    if not future.done():
        future.set_result(text)


class ScriptedSpeechToText(SpeechToText):
    name = "scripted"

    def __init__(self, pause_texts: list[str], turn_texts: list[str]) -> None:
        self.session = ScriptedSession(pause_texts, turn_texts)

    def open_session(self, on_interim: InterimCallback) -> ScriptedSession:
        return self.session


class RecordingTextToSpeech(TextToSpeech):
    name = "recording"
    sample_rate = RATE
    discard_is_free = True

    def __init__(self) -> None:
        self.requested: list[str] = []

    async def synthesize(self, text: str) -> AsyncIterator[bytes]:
        self.requested.append(text)
        await asyncio.sleep(0.005)
        yield np.full(FRAME * 5, 100, np.int16).tobytes()


class Rig:
    def __init__(self, pause_texts: list[str], turn_texts: list[str], hold_ms: float = 700.0) -> None:
        self.events = EventBus()
        self.seen: list[dict[str, object]] = []
        self.events.subscribe(self.seen.append)
        self.stt = ScriptedSpeechToText(pause_texts, turn_texts)
        self.tts = RecordingTextToSpeech()
        self.agent = LocalAgent()
        self.track = PacedAudioTrack()
        config = TurnConfig(end_of_turn_silence_ms=500, unfinished_hold_ms=hold_ms)
        self.pipeline = VoicePipeline(
            PipelineContext("s-1", "u-1", self.events, self.track), Engines(stt=self.stt, agent=self.agent, tts=self.tts), config
        )
        self.pipeline._vad = LoudnessVad(self.pipeline._on_window)  # type: ignore[assignment]

    async def feed(self, mono: np.ndarray) -> None:
        """Frames at ten times real time, the loop running between them (drafts, passes)."""
        for frame in frames_of(mono):
            self.pipeline.on_audio_frame(frame)
            await asyncio.sleep(0.002)

    def of_type(self, kind: str) -> list[dict[str, object]]:
        return [event for event in self.seen if event["type"] == kind]

    @property
    def history(self) -> list[str]:
        conversation = self.pipeline._use.conversation
        return [turn.user for turn in conversation.history]  # type: ignore[attr-defined]


def silence(ms: int) -> np.ndarray:
    return np.zeros(RATE * ms // 1000, np.int16)


async def test_a_reply_drafted_in_the_pause_is_heard_the_moment_the_turn_ends() -> None:
    rig = Rig(["What time is it?"], ["What time is it?"])
    await rig.feed(LOUD)
    await rig.feed(silence(300))  # the pause: drafted, synthesised, unheard
    assert rig.tts.requested, "nothing was drafted during the pause"
    assert rig.track.queued_samples == 0, "a draft was heard before the turn ended"
    assert not rig.of_type("agent_text"), "a draft's text reached the browser before the turn ended"
    assert rig.history == []  # nothing counted yet

    await rig.feed(silence(300))  # the turn ends
    await until(lambda: rig.track.queued_samples > 0)
    assert len(rig.tts.requested) == 1  # the draft's speech is what is heard: nothing synthesised twice
    assert rig.history == ["What time is it?"]  # committed once
    finals = [e for e in rig.of_type("agent_text") if e.get("final")]
    texts = [e for e in rig.of_type("transcript") if e.get("final")]
    assert len(finals) == 1 and len(texts) == 1
    assert rig.seen.index(texts[0]) < rig.seen.index(finals[0])  # the question shows before its answer
    await rig.track.recv()
    metrics = rig.of_type("turn_metrics")
    assert metrics and metrics[0]["drafted"] is True
    await rig.pipeline.stop()


async def test_a_draft_is_dropped_unheard_when_the_user_speaks_on() -> None:
    rig = Rig(["Tell me the date."], ["Tell me the date and the time."])
    await rig.feed(LOUD)
    await rig.feed(silence(300))
    assert len(rig.tts.requested) == 1
    await rig.feed(LOUD)  # spoke on: the draft for the first half is dropped
    assert rig.track.queued_samples == 0
    await rig.feed(silence(600))
    await until(lambda: rig.track.queued_samples > 0)
    await asyncio.sleep(0.05)
    assert rig.history == ["Tell me the date and the time."]
    finals = [e["text"] for e in rig.of_type("agent_text") if e.get("final")]
    assert len(finals) == 1 and "today is" in str(finals[0]).lower() and ":" in str(finals[0])  # date and time
    assert rig.pipeline._use.conversation.tokens == len("Tell me the date and the time.".split()) + len(str(finals[0]).split())
    await rig.pipeline.stop()


async def test_a_final_transcript_unlike_the_draft_gets_its_own_reply() -> None:
    rig = Rig(["What is the time?"], ["What is the date today?"])
    await rig.feed(LOUD)
    await rig.feed(silence(700))
    await until(lambda: bool([e for e in rig.of_type("agent_text") if e.get("final")]))
    await asyncio.sleep(0.05)
    assert rig.history == ["What is the date today?"]
    assert len([e for e in rig.of_type("agent_text") if e.get("final")]) == 1
    await rig.pipeline.stop()


async def test_an_unfinished_turn_waits_for_the_rest_of_the_question() -> None:
    rig = Rig(["So,", "what time is it?"], ["So,", "what time is it?"], hold_ms=700)
    await rig.feed(LOUD)
    await rig.feed(silence(700))  # the turn ends on "So,": held, not answered
    await asyncio.sleep(0.1)
    assert not rig.of_type("agent_text") and rig.track.queued_samples == 0
    await rig.feed(LOUD)  # the rest of the question, within the hold
    await rig.feed(silence(700))
    await until(lambda: bool([e for e in rig.of_type("agent_text") if e.get("final")]))
    await asyncio.sleep(0.05)
    assert rig.history == ["So, what time is it?"]  # one question, answered once
    assert len([e for e in rig.of_type("agent_text") if e.get("final")]) == 1
    await rig.track.recv()
    # The whole question was drafted at the second pause, the held first part included.
    assert [e["drafted"] for e in rig.of_type("turn_metrics")] == [True]
    await rig.pipeline.stop()


async def test_an_unfinished_turn_is_answered_after_the_hold_if_nothing_follows() -> None:
    rig = Rig(["Hello,"], ["Hello,"], hold_ms=200)
    await rig.feed(LOUD)
    await rig.feed(silence(700))
    await until(lambda: bool([e for e in rig.of_type("agent_text") if e.get("final")]))
    assert rig.history == ["Hello,"]
    await rig.pipeline.stop()


async def test_which_turns_sound_unfinished() -> None:
    for text in ["So,", "So...", "Hello,", "Okay.", "Let me think.", "Could you tell me", "Could you tell me?",
                 "I want to know the", "What is the time and", "Well, um", "Excuse me,",
                 "I was thinking about", "Tell me what the weather is like in"]:  # fmt: skip
        assert looks_unfinished(text), text
    for text in ["What time is it?", "Thank you very much for your help.", "Which day is it today?", "Yes.",
                 "No, thanks.", "Good evening, what's the time?", "", "Hello, what time is it?",
                 "Could you tell me what time it is?", "What is it about?", "Yes, I can.", "I like that."]:  # fmt: skip
        assert not looks_unfinished(text), text


async def test_a_gate_holds_speech_then_lets_it_through_in_order_with_its_callbacks() -> None:
    track = PacedAudioTrack()
    gate = GatedSpeech(TrackSpeech(track))
    sent: list[str] = []
    first = gate.push(np.full(FRAME, 1, np.int16))
    gate.when_sent(first, lambda: sent.append("first"))
    gate.push(np.full(FRAME, 2, np.int16))
    gate.end_of_reply()
    assert first < 0 and track.queued_samples == 0 and gate.queued_samples == 0
    gate.open()
    assert track.queued_samples == 2 * FRAME
    later = gate.push(np.full(FRAME, 3, np.int16))
    gate.when_sent(later, lambda: sent.append("later"))
    frames = [await track.recv() for _ in range(3)]
    assert sent == ["first", "later"]
    assert len(frames) == 3
    with pytest.raises(RuntimeError):
        gate.open()
    dropped = GatedSpeech(TrackSpeech(track))
    dropped.when_sent(dropped.push(np.full(FRAME, 4, np.int16)), lambda: sent.append("never"))
    dropped.discard()
    dropped.push(np.full(FRAME, 5, np.int16))
    assert dropped.flush() == 0 and track.queued_samples == 0
    await track.recv()
    assert sent == ["first", "later"]
    track.stop()



async def test_a_reply_loses_its_leading_silence_but_not_its_first_sound() -> None:
    onset = np.concatenate([np.zeros(2400, np.int16), np.full(480, 3000, np.int16)])
    cut, found = cut_leading_silence(onset, 0)
    assert found and cut.size == 480 + 240  # 5 ms kept before the first audible sample
    assert np.array_equal(cut[-480:], onset[-480:])
    quiet, found = cut_leading_silence(np.zeros(4800, np.int16), 0)
    assert not found and quiet.size == 0  # all silence so far: wait for the onset
    # Never more than 300 ms cut in all: a reply that begins with a long pause keeps the rest of it.
    rest, found = cut_leading_silence(np.zeros(9600, np.int16), 48_000 * 250 // 1000)
    assert found and rest.size == 9600 - 2400
