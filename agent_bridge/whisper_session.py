"""One call's turns on the offline Whisper engine: interim passes while a turn grows, a final pass per turn."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING

from agent_bridge.interfaces import (
    EngineError,
    InterimCallback,
    SpeechToTextSession,
    Transcript,
)
from agent_bridge.whisper_window import SAMPLE_RATE

if TYPE_CHECKING:
    from agent_bridge.whisper_stt import WhisperSpeechToText

log = logging.getLogger(__name__)

MIN_TURN_SAMPLES = SAMPLE_RATE // 5  # under 0.2 s nothing intelligible was said
INTERIM_EVERY_SAMPLES = SAMPLE_RATE * 8 // 10  # re-transcribe the growing turn every 0.8 s of audio


@dataclass
class _Pass:
    """A queued or running transcription of the first `samples` samples of a turn."""

    samples: int
    future: Future[str]


class WhisperSession(SpeechToTextSession):
    """One call's turns: interim passes while audio grows, a final pass per turn.

    speech_paused() starts the final pass on the turn so far; finish_turn() uses that pass unless
    speech_resumed() came in between. Audio pushed during the pause (the silence the pipeline
    waits out before ending the turn) is not transcribed; the transcript ends where the pause began.
    """

    def __init__(self, engine: WhisperSpeechToText, on_interim: InterimCallback) -> None:
        self._engine = engine
        self._on_interim = on_interim
        self._turn = bytearray()
        self._clock_bytes = 0  # everything ever pushed: the session's audio clock
        self._turn_start = 0  # clock position (samples) where the current turn began
        self._generation = 0  # bumped whenever a turn ends, so late interim results are dropped
        self._interim: Future[str] | None = None
        self._interim_mark = 0  # turn samples covered by the last interim pass
        self._speculative: _Pass | None = None
        self._paused = False
        self._closed = False
        self._samples_transcribed = 0

    @property
    def audio_ms_transcribed(self) -> int:
        """Audio of the turns that got a final pass, in ms (the usage to meter)."""
        return self._samples_transcribed * 1000 // SAMPLE_RATE

    def push(self, pcm: bytes) -> None:
        self._check_open()
        if not pcm:
            return
        self._turn += pcm
        self._clock_bytes += len(pcm)
        self._maybe_start_interim()

    def speech_paused(self) -> None:
        self._check_open()
        self._paused = True
        samples = len(self._turn) // 2
        if samples < MIN_TURN_SAMPLES or self._speculative is not None:
            return  # too little to say anything, or this pause already has its pass
        self._speculative = _Pass(samples, self._engine.submit_pcm(bytes(self._turn)))

    def speech_resumed(self) -> None:
        self._check_open()
        self._paused = False
        self._drop_speculative()

    async def paused_transcript(self) -> str | None:
        speculative = self._speculative
        if speculative is None:
            return None
        try:
            text = await self._engine.result(speculative.future)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            return None  # speech resumed and the pass was dropped
        except EngineError:
            if speculative.future.cancelled():
                return None
            raise
        # Speech may have resumed while the pass ran: then the pass no longer stands for the turn.
        return text if self._speculative is speculative else None

    async def finish_turn(self) -> Transcript | None:
        self._check_open()
        pcm = bytes(self._turn)
        samples = len(pcm) // 2
        start = self._turn_start
        speculative = self._speculative
        self._speculative = None
        self._start_new_turn()  # audio pushed while we wait belongs to the next turn
        if speculative is not None:
            # Still valid: no speech_resumed since the pause, so whatever was pushed after it is
            # the pause's own silence, and the pass already covers everything that was said.
            future, samples = speculative.future, speculative.samples
        elif samples < MIN_TURN_SAMPLES:
            return None
        else:
            future = self._engine.submit_pcm(pcm)
        text = await self._engine.result(future)
        self._samples_transcribed += samples
        if not text:
            return None
        return Transcript(text=text, final=True, start_ms=_ms(start), end_ms=_ms(start + samples))

    def reset(self) -> None:
        self._check_open()
        self._drop_speculative()
        self._start_new_turn()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._drop_speculative()
        self._start_new_turn()
        self._closed = True
        # The callback is the pipeline's bound method and the pipeline holds this session: let go
        # of it, so a closed call's pipeline (its resampler, VAD state, buffers) is freed as soon
        # as the call drops it, not at the next full garbage collection.
        self._on_interim = _no_interim

    def _check_open(self) -> None:
        if self._closed:
            raise EngineError("whisper", "session is closed")

    def _start_new_turn(self) -> None:
        self._turn = bytearray()
        self._turn_start = self._clock_bytes // 2
        self._generation += 1
        self._interim_mark = 0
        self._paused = False

    def _drop_speculative(self) -> None:
        if self._speculative is not None:
            self._speculative.future.cancel()  # only stops it if it has not started yet
            self._speculative = None

    def _maybe_start_interim(self) -> None:
        samples = len(self._turn) // 2
        if self._paused or self._interim is not None or samples - self._interim_mark < INTERIM_EVERY_SAMPLES:
            return
        if not self._engine.interim_allowed:
            return  # interims are a courtesy: never let them take CPU from a turn being decided
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop to deliver the result on
        self._interim_mark = samples
        generation, start = self._generation, self._turn_start
        future = self._engine.submit_pcm(bytes(self._turn), interim=True)
        self._interim = future

        def delivered(done: Future[str]) -> None:  # runs on the worker thread
            try:
                loop.call_soon_threadsafe(self._deliver_interim, done, generation, start, samples)
            except RuntimeError:
                pass  # the loop has closed; nobody is listening any more

        future.add_done_callback(delivered)

    def _deliver_interim(self, done: Future[str], generation: int, start: int, samples: int) -> None:
        self._interim = None
        if done.cancelled() or self._closed or generation != self._generation:
            return
        error = done.exception()
        if error is not None:
            log.warning("whisper interim pass failed: %s", error)
            return
        text = done.result()
        if text:
            try:
                self._on_interim(Transcript(text=text, final=False, start_ms=_ms(start), end_ms=_ms(start + samples)))
            except Exception:
                log.exception("interim transcript callback failed")
        self._maybe_start_interim()


def _no_interim(_: Transcript) -> None:
    """A closed session's interim callback."""


def _ms(samples: int) -> int:
    return samples * 1000 // SAMPLE_RATE
