"""Questions for the voice benchmark, spoken by voices the server's own TTS did not make.

Piper's joe voice is also what the server answers with, so a figure taken on it alone flatters the
loop. espeak-ng (a formant synthesiser: another timbre, other timing) speaks most sets, at several
voices and speeds, and one set breaks its sentences with real pauses, as people do.
All questions are ones the offline demo agent answers (time, date, thanks), so replies stay short.
"""

from __future__ import annotations

import subprocess
import tempfile
import wave
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.client_timing import RATE, voiced_span
from media.audio_resample import OutboundResampler

ESPEAK = "espeak-ng"

# One to six seconds of speech at espeak's default speed; the long ones stay under six at -s 140.
QUESTIONS = [
    "What time is it now, please?",
    "Could you tell me what time it is right now, please?",
    "What is the date today, please?",
    "Excuse me, I would like to know which day it is today.",
    "Thank you very much for your help.",
    "I have a meeting and I lost track of the hours, so could you tell me what time it is now?",
    "Which day of the week is it today?",
    "Good evening, what's the time?",
]
# Spoken piece by piece with silence between, as a person hesitates mid-sentence.
PAUSED = [
    ["Hello,", "what time is it?"],
    ["So,", "what is the date today?"],
    ["Let me think,", "which day is it today?"],
    ["Okay,", "could you tell me", "what time it is?"],
    ["Excuse me,", "what's the time?"],
    ["Well,", "thank you very much."],
]
PAUSES_MS = [400, 650, 900, 500, 800, 550, 750]
VOICES = ["en-us", "en-gb", "en-us+f3", "en+m3", "en-gb-scotland", "en-us+f2"]
SPEEDS = [140, 175, 210]
# Spoken over the bot in the barge-in trials.
INTERRUPTIONS = ["Wait, what time is it?", "Stop, what is the date today?", "Sorry, which day is it today?"]

Mark = Callable[[np.ndarray], np.ndarray]  # cloud-fakes: overlays tones the fake STT hears as words


@dataclass(frozen=True)
class Question:
    set_name: str
    voice: str  # who spoke it, for the per-turn lines
    text: str
    samples: np.ndarray  # 48 kHz mono int16, silence around it included
    voiced_start: int  # first voiced sample
    voiced_end: int  # one past the last voiced sample

    @property
    def seconds(self) -> float:
        return (self.voiced_end - self.voiced_start) / RATE


def espeak(text: str, voice: str = "en-us", speed: int = 175) -> np.ndarray:
    """`text` spoken by espeak-ng, as 48 kHz mono int16."""
    # A file, not --stdout: on a pipe espeak-ng cannot go back to fill in the WAV header's sizes.
    with tempfile.TemporaryDirectory(prefix="bench-espeak-") as folder:
        path = Path(folder) / "speech.wav"
        subprocess.run([ESPEAK, "-v", voice, "-s", str(speed), "-w", str(path), text], check=True, capture_output=True)
        with wave.open(str(path), "rb") as wav:
            if wav.getnchannels() != 1 or wav.getsampwidth() != 2:
                raise RuntimeError(f"espeak-ng wrote {wav.getnchannels()} channels of {wav.getsampwidth()} bytes")
            rate, pcm = wav.getframerate(), wav.readframes(wav.getnframes())
    resampler = OutboundResampler(rate, RATE)
    return np.concatenate([resampler.resample(pcm), resampler.flush()])


def piper(text: str) -> np.ndarray:
    from tests.speech import utterance  # loads the Piper voice: only when the set is asked for

    return utterance(text)


def silence(ms: int) -> np.ndarray:
    return np.zeros(RATE * ms // 1000, np.int16)


def trimmed(speech: np.ndarray) -> np.ndarray:
    """The voiced part only, so cloud-fakes' marker tones end where the speech does."""
    start, end = voiced_span(speech)
    return speech[start:end]


def question(set_name: str, voice: str, text: str, speech: np.ndarray, mark: Mark) -> Question:
    samples = np.concatenate([silence(200), mark(trimmed(speech)), silence(200)])
    start, end = voiced_span(samples)
    return Question(set_name, voice, text, samples, start, end)


def _same(speech: np.ndarray) -> np.ndarray:
    return speech


def piper_set(count: int, mark: Mark) -> list[Question]:
    return [question("piper", "piper joe", QUESTIONS[i % len(QUESTIONS)], piper(QUESTIONS[i % len(QUESTIONS)]), mark)
            for i in range(count)]  # fmt: skip


def espeak_voices_set(count: int, mark: Mark) -> list[Question]:
    out = []
    for i in range(count):
        voice, text = VOICES[i % len(VOICES)], QUESTIONS[(i + 1) % len(QUESTIONS)]
        out.append(question("espeak-voices", f"{voice} s175", text, espeak(text, voice), mark))
    return out


def espeak_speeds_set(count: int, mark: Mark) -> list[Question]:
    out = []
    for i in range(count):
        speed, text = SPEEDS[i % len(SPEEDS)], QUESTIONS[(i + 2) % len(QUESTIONS)]
        voice = VOICES[(i // len(SPEEDS)) % len(VOICES)]
        out.append(question("espeak-speeds", f"{voice} s{speed}", text, espeak(text, voice, speed), mark))
    return out


def pauses_set(count: int, mark: Mark) -> list[Question]:
    out = []
    for i in range(count):
        pieces, voice = PAUSED[i % len(PAUSED)], VOICES[i % len(VOICES)]
        pauses = [PAUSES_MS[(i + k) % len(PAUSES_MS)] for k in range(len(pieces) - 1)]
        # Each piece marked on its own, so the pauses stay silent under cloud-fakes too.
        parts = [mark(trimmed(espeak(pieces[0], voice)))]
        for pause, piece in zip(pauses, pieces[1:], strict=True):
            parts += [silence(pause), mark(trimmed(espeak(piece, voice)))]
        label = f"{voice} pauses {'/'.join(map(str, pauses))} ms"
        out.append(question("pauses", label, " ".join(pieces), np.concatenate(parts), _same))
    return out


SETS: dict[str, Callable[[int, Mark], list[Question]]] = {
    "piper": piper_set,
    "espeak-voices": espeak_voices_set,
    "espeak-speeds": espeak_speeds_set,
    "pauses": pauses_set,
}


def build(names: list[str], count: int, mark: Mark | None = None) -> list[Question]:
    """`count` questions of each named set, in set order."""
    return [q for name in names for q in SETS[name](count, mark or _same)]


def interruption(index: int, mark: Mark | None = None) -> Question:
    text, voice = INTERRUPTIONS[index % len(INTERRUPTIONS)], VOICES[index % len(VOICES)]
    return question("barge-in", voice, text, espeak(text, voice), mark or _same)
