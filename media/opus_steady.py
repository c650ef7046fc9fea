"""Remembering what libopus's decoder does once it has settled, so settled packets need not be decoded again.

A muted or silent microphone sends libopus's answer to silence: one packet again and again, or a short
cycle of them (2, 2, 3, 2, 2, 3, ... after speech). libopus's decoder settles too: after a while its
state, byte for byte, is one of a few, and each of those packets takes it from one of them to another
(often the very same). opus_decode is a function of its state and the packet alone, so a decode seen
once from a state is known for good: `SteadyDecodes` keeps those moves (state, packet) -> (state,
samples) and answers with them. libopus's own state is left where the last real decode put it; before
the next real decode it is set to the state the answered packets have reached (a copy of at most one
state), so what follows is decoded exactly as if every packet had been.

Speech costs one membership test per packet (its packets do not repeat). The state is read and
compared (against MAX_STATES snapshots at most) only after packets that repeat, until every move is
known.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import numpy as np

MAX_STATES = 4  # snapshots kept (each is the decoder's whole state, ~18 kB)
RECENT_PACKETS = 6  # a packet seen among the last ones "repeats"


class SteadyDecodes:
    """Per decoder. `answer` first; when it gives None, decode for real and then `learn`."""

    def __init__(self, read_state: Callable[[], bytes], write_state: Callable[[bytes], None]) -> None:
        self._read_state = read_state
        self._write_state = write_state
        self._recent: deque[bytes] = deque(maxlen=RECENT_PACKETS)
        self._states: list[bytes] = []
        self._moves: dict[tuple[int, bytes], tuple[int, np.ndarray]] = {}
        self._at: int | None = None  # the state the packets so far have reached, if it is a kept one
        self._held: int | None = None  # the kept state libopus actually holds

    def answer(self, payload: bytes) -> np.ndarray | None:
        """The samples decoding `payload` gives from here, if known; else None, with libopus's state
        set to where the packets so far have brought it, ready to decode `payload` for real."""
        at = self._at
        if at is None:
            return None
        move = self._moves.get((at, payload))
        if move is not None:
            self._at, samples = move
            return samples
        if self._held != at:
            self._write_state(self._states[at])
            self._held = at
        return None

    def learn(self, payload: bytes, samples: np.ndarray) -> None:
        """Note a packet just decoded for real, and the samples it gave."""
        repeats = payload in self._recent
        self._recent.append(payload)
        if not repeats:  # speech: nothing here will come again
            if self._states:
                self._forget()
            return
        state = self._read_state()
        came_from = self._at
        reached = next((index for index, kept in enumerate(self._states) if kept == state), None)
        if reached is None:
            if len(self._states) == MAX_STATES:  # still settling: start over from here
                self._forget()
                came_from = None
            self._states.append(state)
            reached = len(self._states) - 1
        if came_from is not None:
            self._moves[(came_from, payload)] = (reached, samples.copy())
        self._at = self._held = reached

    def _forget(self) -> None:
        self._states.clear()
        self._moves.clear()
        self._at = self._held = None
