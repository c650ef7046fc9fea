"""Speaking one agent reply: text deltas -> sentences -> TTS -> 48 kHz frames on the outbound track.

The first sentence is synthesised while the agent is still writing the next, so the first audio
leaves before the agent has finished.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import numpy as np

from agent_bridge.interfaces import TextToSpeech
from agent_bridge.sentences import SentenceSplitter
from media.audio_resample import OutboundResampler
from media.events import EventBus
from media.speech_output import SpeechOutput
from media.spoken_progress import SpokenProgress
from media.turn_metrics import TurnTimer

OnEngineError = Callable[[str, BaseException], None]

# TTS engines start a reply with silence (Piper ~10-60 ms, cloud voices more): it only delays the
# answer, so it is cut, up to a bound, keeping a few ms before the first audible sample.
_ONSET_LEVEL = 64  # int16 peak, about -54 dBFS: above the few LSB of a TTS engine's silence
_ONSET_KEEP = 48_000 * 5 // 1000
_ONSET_MAX_CUT = 48_000 * 300 // 1000


def cut_leading_silence(samples: np.ndarray, already_cut: int) -> tuple[np.ndarray, bool]:
    """(`samples` less their leading silence, whether the onset is in them). `already_cut` is what
    earlier chunks of the reply lost; past _ONSET_MAX_CUT nothing more is cut."""
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) >= _ONSET_LEVEL)
    room = _ONSET_MAX_CUT - already_cut
    if not loud.size:
        if samples.size <= room:
            return samples[:0], False
        return samples[room:], True
    cut = min(max(0, int(loud[0]) - _ONSET_KEEP), room)
    return samples[cut:], True


class ReplySpeaker:
    """One reply's journey to the speaker. `speak` returns the reply's text once all of it is queued.

    A failing engine is reported through `on_error` ("agent_failed", "tts_failed") and never raises:
    if TTS fails the text still arrives whole; if the agent fails, what it said so far is kept.
    """

    def __init__(
        self,
        tts: TextToSpeech,
        audio_out: SpeechOutput,
        events: EventBus,
        timer: TurnTimer,
        on_first_frame: Callable[[], None],
        on_error: OnEngineError,
    ) -> None:
        self._tts = tts
        self._out = audio_out
        self._events = events
        self._timer = timer
        self._on_first_frame = on_first_frame
        self._on_error = on_error
        self._first_pushed = False
        self._silence_cut = 0  # leading samples of silence cut so far (until the onset is found)
        self.characters_synthesized = 0  # a running count: each piece of text as it goes to TTS
        self.progress = SpokenProgress(audio_out)  # what was generated, and how much of it was heard

    async def speak(self, deltas: AsyncIterator[str]) -> str:
        loop = asyncio.get_running_loop()
        sentences: asyncio.Queue[str | None] = asyncio.Queue()
        synthesis = asyncio.ensure_future(self._synthesize_all(sentences))
        splitter = SentenceSplitter()
        parts: list[str] = []
        try:
            try:
                async for delta in deltas:
                    if not delta:
                        continue
                    if self._timer.agent_first_text is None:
                        self._timer.agent_first_text = loop.time()
                    parts.append(delta)
                    self.progress.add_text(delta)
                    self._events.publish("agent_text", delta=delta, final=False)
                    for sentence in splitter.push(delta):
                        sentences.put_nowait(sentence)
            except Exception as exc:
                self._on_error("agent_failed", exc)
            rest = splitter.flush()
            if rest:
                sentences.put_nowait(rest)
            sentences.put_nowait(None)
            text = "".join(parts).strip()
            self._events.publish("agent_text", text=text, final=True)
            await synthesis
            return text
        finally:
            if not synthesis.done():
                synthesis.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await synthesis

    async def _synthesize_all(self, sentences: asyncio.Queue[str | None]) -> None:
        loop = asyncio.get_running_loop()
        resampler = OutboundResampler(self._tts.sample_rate)
        while (sentence := await sentences.get()) is not None:
            if self._timer.tts_requested is None:
                self._timer.tts_requested = loop.time()
            self.characters_synthesized += len(sentence)
            self.progress.sentence(sentence)
            try:
                async for pcm in self._tts.synthesize(sentence):
                    self._push(resampler.resample(pcm))
            except Exception as exc:
                # The rest of the reply is not spoken, but the text still reaches the user.
                self._on_error("tts_failed", exc)
                while await sentences.get() is not None:
                    pass
                return
        self._push(resampler.flush())

    def _push(self, samples: np.ndarray) -> None:
        if not self._first_pushed:
            before = samples.size
            samples, onset = cut_leading_silence(samples, self._silence_cut)
            self._silence_cut += before - samples.size
            if not onset:
                return
        if not samples.size:
            return
        position = self._out.push(samples)
        if not self._first_pushed:
            self._first_pushed = True
            self._timer.tts_first_audio = asyncio.get_running_loop().time()
            self._out.when_sent(position, self._on_first_frame)
        # After the first-frame mark: a track's marks fire in the order they were set.
        self.progress.audio_queued(position, samples.size)
