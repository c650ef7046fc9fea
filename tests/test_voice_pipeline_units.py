"""The voice pipeline with stand-in engines: usage counted while a reply streams, and long turns cut.

Silero is replaced by a loudness detector and STT by a recorder, so what is checked is exactly the
pipeline's own bookkeeping: which audio reaches which STT turn, and what the counters say when.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import av
import numpy as np
import pytest

from agent_bridge.interfaces import InterimCallback, SpeechToText, SpeechToTextSession, TextToSpeech, Transcript
from agent_bridge.local_agent import LocalAgent
from agent_bridge.registry import Engines
from media.audio_resample import VAD_RATE, InboundResampler
from media.events import EventBus
from media.outbound_audio import PacedAudioTrack
from media.pipeline import PipelineContext
from media.turn_detector import TurnConfig
from media.vad import WINDOW_SAMPLES
from media.voice_pipeline import VoicePipeline

RATE = 48_000
FRAME = 960


class RecordingSession(SpeechToTextSession):
    """Keeps each turn's audio; like Whisper, finish_turn takes the turn before it first waits."""

    def __init__(self) -> None:
        self.turns: list[np.ndarray] = []
        self._turn = bytearray()

    def push(self, pcm: bytes) -> None:
        self._turn += pcm

    async def finish_turn(self) -> Transcript | None:
        audio, self._turn = bytes(self._turn), bytearray()
        self.turns.append(np.frombuffer(audio, np.int16))
        number = len(self.turns)
        await asyncio.sleep(0.01)  # a pass takes a while
        return Transcript(f"part {number}", True, 0, 0) if audio else None

    def reset(self) -> None:
        self._turn = bytearray()

    async def aclose(self) -> None:
        pass


class RecordingSpeechToText(SpeechToText):
    name = "recording"

    def __init__(self) -> None:
        self.sessions: list[RecordingSession] = []

    def open_session(self, on_interim: InterimCallback) -> RecordingSession:
        self.sessions.append(RecordingSession())
        return self.sessions[-1]


class GatedTextToSpeech(TextToSpeech):
    """Speaks each piece of text only when the test lets it (or at once, ungated)."""

    name = "gated"
    sample_rate = RATE

    def __init__(self, gated: bool) -> None:
        self.requested: list[str] = []
        self.gate = asyncio.Semaphore(0) if gated else None

    async def synthesize(self, text: str) -> AsyncIterator[bytes]:
        self.requested.append(text)
        if self.gate is not None:
            await self.gate.acquire()
        yield np.full(FRAME, 100, np.int16).tobytes()


class LoudnessVad:
    """Stands in for Silero (media.vad_batch.BatchedVad): a window is speech when it is loud; told at once."""

    def __init__(self, on_window: Callable[[int, float, bool], None]) -> None:
        self.windows = 0
        self._on_window = on_window
        self._pending = np.zeros(0, np.int16)

    @property
    def pending_samples(self) -> int:
        return self._pending.size

    def push(self, pcm: np.ndarray, tag: bool = False) -> None:
        data = np.concatenate((self._pending, pcm))
        count = data.size // WINDOW_SAMPLES
        self._pending = data[count * WINDOW_SAMPLES :]
        windows = data[: count * WINDOW_SAMPLES].reshape(count, WINDOW_SAMPLES).astype(np.float64)
        for loud in np.sqrt((windows**2).mean(axis=1)) > 500:
            self.windows += 1
            self._on_window(self.windows - 1, float(np.float32(0.9 if loud else 0.05)), tag)

    def close(self) -> None:
        pass


Made = tuple[VoicePipeline, RecordingSpeechToText, list[dict[str, object]]]


def make_pipeline(tts: TextToSpeech, config: TurnConfig | None = None) -> Made:
    events = EventBus()
    seen: list[dict[str, object]] = []
    events.subscribe(seen.append)
    stt = RecordingSpeechToText()
    engines = Engines(stt=stt, agent=LocalAgent(), tts=tts)
    pipeline = VoicePipeline(PipelineContext("s-1", "u-1", events, PacedAudioTrack()), engines, config or TurnConfig())
    pipeline._vad = LoudnessVad(pipeline._on_window)  # type: ignore[assignment]
    return pipeline, stt, seen


def frames_of(mono: np.ndarray) -> list[av.AudioFrame]:
    """48 kHz s16 stereo frames, as aiortc's Opus decoder delivers them."""
    frames = []
    for start in range(0, mono.size - FRAME + 1, FRAME):
        stereo = np.repeat(mono[start : start + FRAME], 2).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(stereo, format="s16", layout="stereo")
        frame.sample_rate = RATE
        frame.pts = start
        frames.append(frame)
    return frames


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


# ---------------------------------------------------------------- usage counted as a reply streams


async def test_local_agent_counts_tokens_as_each_delta_goes_out() -> None:
    chat = LocalAgent().open_conversation("s-1", "u-1")
    prompt = "Please repeat after me: one two three four five"
    deltas = chat.reply(prompt)
    first = await anext(deltas)
    assert first == "One "
    assert chat.tokens == len(prompt.split()) + 1
    rest = [delta async for delta in deltas]
    assert chat.tokens == len(prompt.split()) + 1 + len(rest) == len(prompt.split()) + len(chat.history[-1].agent.split())
    # A reply abandoned half way costs only what was sent.
    before = chat.tokens
    cut_short = chat.reply(prompt)
    await anext(cut_short)
    await cut_short.aclose()
    assert chat.tokens == before + len(prompt.split()) + 1


async def test_counters_rise_while_a_reply_is_spoken() -> None:
    tts = GatedTextToSpeech(gated=True)
    pipeline, _, _ = make_pipeline(tts)
    text = "Repeat after me: the first sentence is here. The second one follows. And the third ends it."
    sentences = ["The first sentence is here.", "The second one follows.", "And the third ends it."]
    reply = asyncio.ensure_future(pipeline.handle_text(text))
    try:
        for spoken in range(1, 4):
            await until(lambda: len(tts.requested) == spoken)
            counters = pipeline.counters()
            # Each sentence counts as it goes to TTS, not when the reply is over.
            assert counters["tts_characters"] == sum(len(s) for s in sentences[:spoken])
            assert counters["agent_tokens"] == len(text.split()) + len(" ".join(sentences).split())
            assert not reply.done()
            assert tts.gate is not None
            tts.gate.release()
        assert await asyncio.wait_for(reply, 5) == " ".join(sentences)
        assert pipeline.counters()["tts_characters"] == sum(len(s) for s in sentences)
    finally:
        await pipeline.stop()


async def test_an_interrupted_reply_keeps_what_it_counted() -> None:
    tts = GatedTextToSpeech(gated=True)
    pipeline, _, _ = make_pipeline(tts)
    first = asyncio.ensure_future(pipeline.handle_text("Repeat after me: one sentence here. And another one."))
    await until(lambda: len(tts.requested) == 1)
    counted = pipeline.counters()["tts_characters"]
    # A new message cancels the first reply mid-way: what went to TTS stays counted, once.
    second = asyncio.ensure_future(pipeline.handle_text("Repeat after me: short."))
    await until(lambda: len(tts.requested) == 2)
    assert await first == ""
    assert pipeline.counters()["tts_characters"] == counted + len("Short.")
    assert tts.gate is not None
    tts.gate.release()
    await asyncio.wait_for(second, 5)
    assert pipeline.counters()["tts_characters"] == counted + len("Short.")
    await pipeline.stop()


# ---------------------------------------------------------------- long turns cut at max_turn_ms


@pytest.mark.parametrize("yield_between_frames", [True, False], ids=["frame-by-frame", "all-at-once"])
async def test_a_long_utterance_is_cut_into_turns_and_answered_once(yield_between_frames: bool) -> None:
    rng = np.random.default_rng(11)
    silence = lambda seconds: rng.normal(0, 10, int(RATE * seconds))  # noqa: E731
    audio = np.concatenate([silence(1.0), rng.normal(0, 3000, RATE * 7), silence(1.5)])
    audio = np.clip(np.rint(audio), -32768, 32767).astype(np.int16)
    frames = frames_of(audio)
    resampler = InboundResampler(VAD_RATE)
    inbound = np.concatenate([resampler.resample(frame) for frame in frames])  # what the pipeline hears

    max_turn_ms = 2000
    pipeline, stt, seen = make_pipeline(GatedTextToSpeech(gated=False), TurnConfig(max_turn_ms=max_turn_ms))
    try:
        for frame in frames:
            pipeline.on_audio_frame(frame)
            if yield_between_frames:
                await asyncio.sleep(0)
        await until(lambda: any(e["type"] == "agent_text" and e.get("final") for e in seen))
    finally:
        await pipeline.stop()

    (session,) = stt.sessions
    turns = session.turns
    # 7 s of speech in turns of at most 2 s: three cuts, and the rest of the utterance.
    assert len(turns) == 4, [t.size for t in turns]
    for turn in turns:
        assert 0 < turn.size <= (max_turn_ms + 100 + 2 * 32) * VAD_RATE // 1000
    # Each turn's audio is the inbound audio from where the last one stopped: nothing twice, nothing lost.
    offset = _find(inbound, turns[0])
    assert abs(offset - 900 * VAD_RATE // 1000) <= 64 * VAD_RATE // 1000  # from 100 ms before the speech
    for turn in turns:
        assert np.array_equal(inbound[offset : offset + turn.size], turn)
        offset += turn.size
    assert abs(offset - 8000 * VAD_RATE // 1000) <= 64 * VAD_RATE // 1000  # to the end of the speech

    # The caller spoke once, and is answered once, with the whole of it.
    assert [e["speaking"] for e in seen if e["type"] == "user_speaking"] == [True, False]
    (final,) = [e for e in seen if e["type"] == "transcript" and e.get("final")]
    assert final["text"] == "part 1 part 2 part 3 part 4"
    (answer,) = [e for e in seen if e["type"] == "agent_text" and e.get("final")]
    assert "part 1 part 2 part 3 part 4" in str(answer["text"])


def _find(haystack: np.ndarray, needle: np.ndarray) -> int:
    head = needle[:64]
    for start in np.flatnonzero(haystack == head[0]):
        if np.array_equal(haystack[start : start + head.size], head):
            return int(start)
    raise AssertionError("the turn's audio is not in the inbound audio")
