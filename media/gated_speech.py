"""Speech held back until the turn it answers is certain, then let through without a gap.

A reply made ahead (during the user's pause) speaks into a GatedSpeech: its audio waits here, unheard,
and `open()` hands it all to the call's real output at once; anything pushed later goes straight
through. `discard()` drops it, and nothing ever reached the browser.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable

import numpy as np

from media.speech_output import SpeechOutput


class GatedSpeech:
    """A SpeechOutput in front of `inner`, shut until `open()`.

    Positions handed out while shut are negative (-1 - index of the sample among those held), so a
    `when_sent` for one of them is told apart from the inner output's own positions, and mapped to the
    inner position its chunk got when the gate opened (any sample of the chunk, not only its first).
    """

    def __init__(self, inner: SpeechOutput) -> None:
        self._inner = inner
        self.state = "shut"  # shut -> open | discarded
        self._held: list[tuple[int, np.ndarray]] = []  # (index of the first held sample, chunk)
        self._held_samples = 0
        self._waiting: list[tuple[int, Callable[[], None]]] = []
        self._drained: list[Callable[[], None]] = []
        self._opened_at: dict[int, int] = {}  # held index of a chunk's first sample -> inner position, once open
        self._opened_starts: list[int] = []  # those held indexes, ascending
        self._ended = False

    @property
    def held_samples(self) -> int:
        """Samples ever held (held positions count them, so the count never goes back)."""
        return self._held_samples

    def open(self) -> None:
        """Let the held speech through, in order, and everything after it."""
        if self.state != "shut":
            raise RuntimeError(f"a {self.state} gate cannot open")
        self.state = "open"
        for index, chunk in self._held:
            self._opened_at[index] = self._inner.push(chunk)
            self._opened_starts.append(index)
        self._held.clear()
        for position, callback in self._waiting:
            self.when_sent(position, callback)
        self._waiting.clear()
        for callback in self._drained:
            self._inner.when_drained(callback)
        self._drained.clear()
        if self._ended:
            self._inner.end_of_reply()

    def discard(self) -> None:
        """Drop what is held; later pushes are dropped too. Safe to call in any state."""
        if self.state == "shut":
            self.state = "discarded"
            self._held.clear()
            self._waiting.clear()
            self._drained.clear()

    # -- SpeechOutput ------------------------------------------------------------------------

    def push(self, samples: np.ndarray) -> int:
        if self.state == "open":
            return self._inner.push(samples)
        index = self._held_samples
        if self.state == "shut" and samples.size:
            self._held.append((index, samples))
            self._held_samples += samples.size
        return -1 - index

    def when_sent(self, position: int, callback: Callable[[], None]) -> None:
        if position >= 0:
            self._inner.when_sent(position, callback)
        elif self.state == "shut":
            self._waiting.append((position, callback))
        elif self.state == "open":
            index = -1 - position
            chunk = bisect_right(self._opened_starts, index) - 1
            if chunk >= 0 and index < self._held_samples:
                start = self._opened_starts[chunk]
                self._inner.when_sent(self._opened_at[start] + index - start, callback)

    def when_drained(self, callback: Callable[[], None]) -> None:
        if self.state == "open":
            self._inner.when_drained(callback)
        elif self.state == "shut":
            self._drained.append(callback)

    def flush(self) -> int:
        if self.state == "open":
            return self._inner.flush()
        self._held.clear()
        return 0  # nothing held was ever heard

    @property
    def queued_samples(self) -> int:
        return self._inner.queued_samples if self.state == "open" else 0

    def end_of_reply(self) -> None:
        if self.state == "open":
            self._inner.end_of_reply()
        else:
            self._ended = True
