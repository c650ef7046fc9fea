"""Which of the caller's audio reaches STT, and when, through the turns of one call.

Only a turn's audio is fed (from its start, given by the VAD). A pause's audio is held back, so a
speculative pass started at the pause stays exact, and is fed only if speech resumes. While an ended
turn is closing (its finish_turn not yet begun), the next turn's audio waits: finish_turn takes the
audio pushed before it, so nothing later may reach STT first.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


class SttFeed:
    def __init__(self, push: Callable[[bytes], None]) -> None:
        self._push = push  # to the call's STT session (whichever engine serves the call now)
        self.feeding = False  # a turn is on
        self.paused = False  # the turn's speech paused: its audio is held
        self._held: list[bytes] = []
        self._closing = 0  # ended turns whose finish_turn has not begun
        self._next_turn_audio: list[bytes] = []
        # Where STT was fed up to at the last turn's end: a turn cut at max_turn_ms goes on from there.
        self.fed_until = 0

    @property
    def closing(self) -> bool:
        return self._closing > 0

    def hear(self, pcm: np.ndarray) -> None:
        """The caller's audio as it arrives (16 kHz mono int16)."""
        if self.feeding:
            if self.paused:
                self._held.append(pcm.tobytes())
            else:
                self._feed(pcm.tobytes())

    def start_turn(self, since_start: bytes) -> None:
        """A turn began: its audio so far (from the preroll), then what follows."""
        self._feed(since_start)
        self.feeding = True
        self.paused = False

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        """Speech resumed: the pause's audio goes to STT after all (tell STT of the resume first)."""
        self.paused = False
        for pcm in self._held:
            self._feed(pcm)
        self._held.clear()

    def end_turn(self, end_sample: int) -> list[bytes]:
        """The turn ended at `end_sample` of the inbound audio; returns the audio its closing must push
        (kept while an earlier turn closed) before it calls finish_turn, then turn_closed()."""
        self.feeding = False
        self.paused = False
        self._held.clear()
        self.fed_until = end_sample
        carry, self._next_turn_audio = self._next_turn_audio, []
        self._closing += 1
        return carry

    def turn_closed(self) -> None:
        """The ended turn's finish_turn has begun: later audio may reach STT again."""
        self._closing -= 1

    def _feed(self, pcm: bytes) -> None:
        if self._closing:
            self._next_turn_audio.append(pcm)
            return
        for kept in self._next_turn_audio:
            self._push(kept)
        self._next_turn_audio.clear()
        self._push(pcm)
