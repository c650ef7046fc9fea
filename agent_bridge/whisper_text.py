"""What of Whisper's output is worth a turn: its inventions on silence, noise and breath are dropped."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Protocol


class _Segment(Protocol):
    text: str
    no_speech_prob: float
    avg_logprob: float


# Whisper's inventions on silence, noise and breath. Annotations ("[BLANK_AUDIO]", "(music)",
# "*sigh*") are removed from any text; a text made only of filler words is never a turn;
# polite closings are real speech often enough that they are dropped only when Whisper
# itself was unsure of them.
_ANNOTATION = re.compile(r"\[[^\]]*\]|\([^)]*\)|\*[^*]*\*|[\u266a\u266b\u266c]")
_FILLER_WORDS = frozenset({"you", "u", "uh", "um", "umm", "hmm", "hm", "mm", "mhm", "ah", "oh", "huh", "eh"})
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
