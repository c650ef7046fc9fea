"""Cut a stream of text deltas into speakable pieces, so speech can start before the reply ends."""

from __future__ import annotations

import re

_TERMINATORS = ".!?;:"
# Closing quotes and brackets belong to the sentence they close.
_CLOSERS = "\"')]}\u201d\u2019\u00bb"
# Words whose trailing period is not a sentence end ("Dr. Smith", "e.g. this").
_ABBREVIATIONS = frozenset(
    {"dr", "mr", "mrs", "ms", "prof", "st", "sr", "jr", "vs", "approx", "fig", "mt", "e.g", "i.e", "a.m", "p.m"}
)
_DOTTED = re.compile(r"^(?:[a-z]\.)+[a-z]$")  # "u.s", "e.g": letters separated by dots


class SentenceSplitter:
    """Buffers text deltas and hands back each sentence once it is certainly complete.

    A sentence ends at . ! ? ; : or a newline, followed by whitespace; a terminator at the
    very end of the buffer waits for the next delta, since "4." may still become "4.30".
    A clause longer than `max_clause_chars` is cut at its last comma so speech can start,
    and text longer than `hard_max_chars` without any break is cut at a space.
    """

    def __init__(self, max_clause_chars: int = 120, hard_max_chars: int = 240) -> None:
        self.max_clause_chars = max_clause_chars
        self.hard_max_chars = hard_max_chars
        self._buffer = ""

    def push(self, delta: str) -> list[str]:
        """Add a delta; return the sentences it completed (possibly none)."""
        self._buffer += delta
        pieces: list[str] = []
        while (cut := self._next_cut()) is not None:
            piece, self._buffer = self._buffer[:cut].strip(), self._buffer[cut:]
            if piece:
                pieces.append(piece)
        return pieces

    def flush(self) -> str | None:
        """The rest of the text (the stream ended), or None if nothing speakable is left."""
        rest, self._buffer = self._buffer.strip(), ""
        return rest or None

    def _next_cut(self) -> int | None:
        text = self._buffer
        cut = _sentence_end(text)
        if cut is not None:
            return cut
        if len(text) > self.max_clause_chars:
            comma = _last_comma(text)
            if comma is not None:
                return comma
        if len(text) > self.hard_max_chars:
            space = text.rfind(" ", 0, self.hard_max_chars)
            if space > 0:
                return space + 1
        return None


def split_sentences(text: str) -> list[str]:
    """Split a whole text at once (same rules as the streaming splitter)."""
    splitter = SentenceSplitter()
    pieces = splitter.push(text)
    rest = splitter.flush()
    return pieces + [rest] if rest else pieces


def _sentence_end(text: str) -> int | None:
    """Index just past the first confirmed sentence end in `text`, or None."""
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\n":
            return i + 1
        if ch not in _TERMINATORS:
            i += 1
            continue
        end = i + 1
        while end < len(text) and (text[end] in _CLOSERS or text[end] in _TERMINATORS):
            end += 1  # "?!", "...", '."'
        if end >= len(text):
            return None  # need the next character to decide
        if text[end].isspace() and not (ch == "." and _is_not_a_sentence_end(text, i)):
            return end
        i = end
    return None


def _is_not_a_sentence_end(text: str, dot: int) -> bool:
    """Whether the period at `dot` ends an abbreviation, an initial or a list number."""
    start = dot
    while start > 0 and not text[start - 1].isspace():
        start -= 1
    word = text[start:dot].lstrip("\"'([{\u201c\u2018").lower()
    if word in _ABBREVIATIONS or _DOTTED.match(word):
        return True
    if len(word) == 1 and word.isalpha():
        return True  # an initial: "J. Smith"
    # "1. First item": a number alone at the start of the piece is a list marker.
    return word.isdigit() and not text[:start].strip()


def _last_comma(text: str) -> int | None:
    """Index just past the last comma that is followed by whitespace."""
    for i in range(len(text) - 2, 0, -1):
        if text[i] == "," and text[i + 1].isspace():
            return i + 1
    return None
