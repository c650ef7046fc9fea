"""The short-window Whisper pass: sized to the turn, decoder loops cut, as accurate as the 30 s window.

Speech comes from espeak-ng (another voice than the server's Piper) where it is installed, so the
comparison is on audio the project did not make; Piper otherwise.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import wave
from pathlib import Path

import numpy as np
import pytest

from agent_bridge.whisper_stt import (
    WhisperSpeechToText,
    _prompt,
    bundled_model_path,
    shared_model,
)
from agent_bridge.whisper_text import clean_transcript
from agent_bridge.whisper_window import (
    MAX_AUDIO_SAMPLES,
    MAX_FRAMES,
    MIN_FRAMES,
    collapse_repetition,
    max_tokens,
    transcribe_window,
    window_frames,
)
from media.audio_resample import OutboundResampler

RATE = 16_000
PHRASES = [
    "What time is it now, please?",
    "Could you tell me what the date is today?",
    "I lost track of the hours, so could you tell me the time?",
]


def test_window_is_ten_seconds_at_least_and_never_past_thirty() -> None:
    assert window_frames(RATE) == MIN_FRAMES  # 1 s of speech: the 10 s floor
    assert window_frames(RATE * 9) == 1100  # 9 s + 2 s of room, rounded up to a second
    assert window_frames(RATE * 9 + 1) == 1100
    assert window_frames(MAX_AUDIO_SAMPLES) == MAX_FRAMES
    assert window_frames(RATE * 40) == MAX_FRAMES
    assert max_tokens(RATE * 2) == 32


def test_a_decoder_loop_is_cut_to_its_phrase() -> None:
    assert collapse_repetition(" Thank you. Thank you. Thank you. Thank") == "Thank you."
    assert collapse_repetition(" Which day? Which day? Which day?") == "Which day?"
    assert collapse_repetition("What is the time? What is the time?") == "What is the time?"
    # Real speech that repeats a little is kept.
    assert collapse_repetition("No, no, I said the time.") == "No, no, I said the time."
    assert collapse_repetition("Bye bye.") == "Bye bye."
    assert collapse_repetition("Hello hello") == "Hello hello"
    assert collapse_repetition("") == ""


def _espeak(text: str, voice: str, speed: int) -> np.ndarray:
    with tempfile.TemporaryDirectory(prefix="test-espeak-") as folder:
        path = Path(folder) / "speech.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(path), text], check=True, capture_output=True)
        with wave.open(str(path), "rb") as wav:
            rate, pcm = wav.getframerate(), wav.readframes(wav.getnframes())
    resampler = OutboundResampler(rate, RATE)
    return np.concatenate([resampler.resample(pcm), resampler.flush()]).astype(np.float32) / 32768


def _words(text: str) -> set[str]:
    return set(re.sub(r"[^\w\s']", " ", text.lower()).split())


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed (.ci/run installs it)")
def test_window_pass_hears_what_the_thirty_second_pass_hears() -> None:
    model = shared_model(bundled_model_path(), 1)
    prompt, eot = _prompt(model)
    full_options = {"language": "en", "beam_size": 1, "temperature": 0.0, "without_timestamps": True,
                    "condition_on_previous_text": False, "vad_filter": False}  # fmt: skip
    heard_window = heard_full = 0
    total = 0
    for index, phrase in enumerate(PHRASES):
        for voice, speed in (("en-us", 175), ("en-gb", 150 + 25 * index)):
            audio = np.concatenate([np.zeros(RATE // 5, np.float32), _espeak(phrase, voice, speed)])
            window = clean_transcript([transcribe_window(model, audio, prompt, eot)])
            full = clean_transcript(model.transcribe(audio, **full_options)[0])
            wanted = _words(phrase)
            total += len(wanted)
            heard_window += len(wanted & _words(window))
            heard_full += len(wanted & _words(full))
            assert window.count(phrase.split()[0]) <= 1, f"a decoder loop survived: {window!r}"
    assert heard_window >= 0.8 * total, (heard_window, total)
    assert heard_window >= heard_full - 2, (heard_window, heard_full)


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed (.ci/run installs it)")
def test_a_turn_longer_than_one_window_is_still_transcribed_whole() -> None:
    engine = WhisperSpeechToText(cpu_threads=1)
    try:
        pause = np.zeros(RATE, np.float32)
        pieces: list[np.ndarray] = []
        while sum(piece.size for piece in pieces) < RATE * 29:
            pieces += [_espeak(PHRASES[0], "en-us", 140), pause]
        pieces.append(_espeak("Thank you very much for your help.", "en-gb", 160))
        audio = np.concatenate(pieces)
        assert audio.size > MAX_AUDIO_SAMPLES
        text = engine._transcribe_blocking((audio * 32767).astype("<i2").tobytes())
        assert "help" in _words(text), text  # the part past the first 30 s was heard too
    finally:
        engine._executor.shutdown(wait=True)
        engine._interim_executor.shutdown(wait=True)
