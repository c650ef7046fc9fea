"""The audio one session streams to Google, kept until the service has finalised it.

Positions count bytes of 16 kHz mono int16 in the order they go to the service: the pushed audio
plus the short silences the session adds at turn ends (so the service finalises a turn). Audio past
the last final result stays here, to be sent again on the next stream; a final result frees what it
covers, so finalised audio is never sent twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

SAMPLE_RATE = 16_000
BYTES_PER_MS = SAMPLE_RATE * 2 // 1000


def offset_bytes(offset: timedelta) -> int:
    """A service time offset as a byte position (whole samples) from the start of its stream."""
    samples = round(offset.total_seconds() * SAMPLE_RATE)
    return max(samples, 0) * 2


def duration_ms(value: timedelta) -> int:
    return max(round(value.total_seconds() * 1000), 0)


@dataclass(frozen=True)
class FinalText:
    """Text the service finalised: `end` is the position after its audio, `end_ms` that moment on the
    session's clock (pushed audio only)."""

    text: str
    end: int
    end_ms: int


class SentAudio:
    def __init__(self) -> None:
        self.end = 0  # the position after the last byte appended
        self.final_mark = 0  # audio before it is finalised: freed, never sent again
        self.pushed = 0  # bytes the pipeline pushed: the session's clock
        self._kept = bytearray()  # positions [final_mark, end)
        # Silences the session added, as (position, length), for mapping positions to the session's clock;
        # those wholly before final_mark are folded into one sum.
        self._silences: list[tuple[int, int]] = []
        self._silence_before = 0

    @property
    def unfinalised(self) -> int:
        return self.end - self.final_mark

    def append(self, pcm: bytes) -> None:
        self._kept += pcm
        self.end += len(pcm)
        self.pushed += len(pcm)

    def append_silence(self, length: int) -> None:
        length -= length % 2
        if length <= 0:
            return
        self._silences.append((self.end, length))
        self._kept += bytes(length)
        self.end += length

    def read(self, position: int, limit: int) -> bytes:
        """Up to `limit` bytes from `position`, which must not be finalised yet."""
        if position < self.final_mark:
            raise ValueError(f"audio at {position} was finalised (up to {self.final_mark})")
        start = position - self.final_mark
        return bytes(self._kept[start : start + limit])

    def finalise(self, position: int) -> None:
        """Everything before `position` is done with: free it."""
        position = min(position, self.end)
        if position <= self.final_mark:
            return
        del self._kept[: position - self.final_mark]
        self.final_mark = position
        while self._silences and sum(self._silences[0]) <= position:
            self._silence_before += self._silences.pop(0)[1]

    def skip_added_silence(self) -> None:
        """Between streams: when the last final ended inside a silence the session added, the rest of
        that silence holds nothing to recognise; the next stream starts after it."""
        for start, length in self._silences:
            if start <= self.final_mark < start + length:
                self.finalise(start + length)
                return

    def session_ms(self, position: int) -> int:
        """A position (at or after final_mark) on the session's clock: an added silence lasts no time there."""
        added = self._silence_before
        for start, length in self._silences:
            if start >= position:
                break
            added += min(length, position - start)
        return (position - added) // BYTES_PER_MS
