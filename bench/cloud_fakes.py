"""The three cloud engines' local fakes, served from a thread of their own, for benchmarks.

The server under test is another process: it reaches the fakes over sockets exactly as it would reach
Google. Speech carries marker tones that the speech fake recognises as words (it hears tones, not voices).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from tests.fakes.speech_fake import WORDS, FakeSpeech
from tests.fakes.tts_fake import FakeTextToSpeech
from tests.fakes.vertex_fake import ENGINE, VertexFake

_RATE = 48_000


def marked(speech: np.ndarray) -> np.ndarray:
    """48 kHz speech with two word tones over it, so the speech fake transcribes something of the audio."""
    t = np.arange(speech.size) / _RATE
    first = np.arange(speech.size) < speech.size // 2
    tone = np.where(first, np.sin(2 * np.pi * WORDS["kilo"] * t), np.sin(2 * np.pi * WORDS["lima"] * t))
    return np.clip(speech.astype(np.float64) + 9000 * tone, -32767, 32767).astype(np.int16)


@contextmanager
def cloud_fakes(*, enabled: bool = True, reply_seconds_per_char: float | None = None) -> Iterator[dict[str, str]]:
    """Yields the server's environment for the cloud engines (empty when not enabled).

    reply_seconds_per_char: how long the TTS fake speaks per character of text (its own default if None).
    """
    if not enabled:
        yield {}
        return
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="cloud-fakes", daemon=True)
    thread.start()
    tts = FakeTextToSpeech() if reply_seconds_per_char is None else FakeTextToSpeech(seconds_per_char=reply_seconds_per_char)
    speech, vertex = FakeSpeech(), VertexFake(event_delay=0.0)

    def run(coro):  # type: ignore[no-untyped-def]
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout=30)

    run(speech.start())
    run(tts.start())
    run(vertex.start())
    try:
        yield {
            "STT_ENGINE": "google", "GOOGLE_CLOUD_PROJECT": "demo-project", "GOOGLE_SPEECH_ENDPOINT": speech.endpoint,
            "TTS_ENGINE": "google", "GOOGLE_TTS_ENDPOINT": tts.endpoint,
            "AGENT_ENGINE": "vertex", "VERTEX_AGENT_ENGINE": ENGINE, "VERTEX_API_ENDPOINT": vertex.base_url,
            "GOOGLE_API_INSECURE": "1",
        }  # fmt: skip
    finally:
        run(speech.stop())
        run(tts.stop())
        run(vertex.close())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
