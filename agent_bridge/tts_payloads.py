"""Shaping text for a cloud TTS request and reading the audio it returns, with no I/O."""

from __future__ import annotations

import struct

from agent_bridge.sentences import SentenceSplitter

_NEVER = 10**9  # clause and hard cuts off: here only whole sentences are units


def split_for_requests(text: str, max_bytes: int) -> list[str]:
    """Cut `text` into pieces of at most `max_bytes` UTF-8 bytes, at sentence boundaries.

    Whole sentences are packed together; a sentence longer than the limit is cut between words,
    and a single word longer than that between characters (never inside one).
    """
    splitter = SentenceSplitter(max_clause_chars=_NEVER, hard_max_chars=_NEVER)
    sentences = splitter.push(text)
    rest = splitter.flush()
    if rest:
        sentences.append(rest)
    units: list[str] = []
    for sentence in sentences:
        units.extend([sentence] if _size(sentence) <= max_bytes else _split_words(sentence, max_bytes))
    return _pack(units, max_bytes)


def _size(text: str) -> int:
    return len(text.encode("utf-8"))


def _pack(units: list[str], max_bytes: int) -> list[str]:
    """Join neighbouring units with a space while the result still fits."""
    pieces: list[str] = []
    for unit in units:
        if pieces and _size(pieces[-1]) + 1 + _size(unit) <= max_bytes:
            pieces[-1] = f"{pieces[-1]} {unit}"
        else:
            pieces.append(unit)
    return pieces


def _split_words(sentence: str, max_bytes: int) -> list[str]:
    words: list[str] = []
    for word in sentence.split():
        words.extend([word] if _size(word) <= max_bytes else _split_chars(word, max_bytes))
    return _pack(words, max_bytes)


def _split_chars(word: str, max_bytes: int) -> list[str]:
    parts, current = [], ""
    for char in word:
        if current and _size(current + char) > max_bytes:
            parts.append(current)
            current = ""
        current += char
    return parts + [current] if current else parts


class WavError(ValueError):
    """Audio that claims to be a WAV and is not one we can play."""


def wav_pcm(data: bytes, expected_rate: int) -> bytes:
    """The samples of a mono 16-bit PCM WAV, found by walking its RIFF chunks.

    The header is not assumed to be 44 bytes: writers may put LIST, fact or other chunks before
    `data`, and playing any of their bytes as samples is an audible click.
    """
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise WavError("not a RIFF/WAVE file")
    pos, fmt_seen = 12, False
    while pos + 8 <= len(data):
        chunk_id, size = data[pos : pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        body = pos + 8
        if chunk_id == b"fmt ":
            _check_format(data[body : body + size], expected_rate)
            fmt_seen = True
        elif chunk_id == b"data":
            if not fmt_seen:
                raise WavError("data chunk before the fmt chunk")
            # A streaming writer may leave the size unset (0 or 0xFFFFFFFF): the samples run to the end.
            end = len(data) if size in (0, 0xFFFFFFFF) else min(body + size, len(data))
            samples = data[body:end]
            return samples[: len(samples) - len(samples) % 2]
        pos = body + size + (size & 1)  # chunks are padded to an even length
    raise WavError("no data chunk")


def _check_format(fmt: bytes, expected_rate: int) -> None:
    if len(fmt) < 16:
        raise WavError("fmt chunk too short")
    tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", fmt)
    if tag not in (1, 0xFFFE) or channels != 1 or bits != 16:
        raise WavError(f"not mono 16-bit PCM (format {tag}, {channels} channels, {bits} bits)")
    if rate != expected_rate:
        raise WavError(f"sample rate {rate} Hz, expected {expected_rate} Hz")
