"""Full garbage collections between two frames, not in the middle of one.

CPython starts a full (generation 2) collection from inside whatever allocation tips its counters,
about once a minute under load. At ~80 calls one walks ~56,000 objects and holds the loop for 20-38 ms;
landing just before a frame is due, with the packets that queue behind it, it stopped the loop for
65-93 ms, past the 20 ms clock's 60 ms limit, and the frames of the stall were never sent.

So the server turns CPython's own full collections off and runs them itself, by CPython's rule (after
`threshold2` collections of the middle generation), at the one moment that has the most room: right
after the shared clock has sent every call's frame. The next tick then waits for the collection
alone (it runs before the packets that queued), 20 ms later at most. With no call on the clock, a
timer checks once a second, so an idle server still collects. The thresholds are the process's: one
FullCollections at a time holds them (a second app in the same process leaves them to the first).
"""

from __future__ import annotations

import asyncio
import gc

from media.frame_clock import FrameClock

IDLE_CHECK_S = 1.0
# Beyond any count of middle-generation collections, so CPython itself never starts a full one.
_NEVER = 1 << 30
_holder: FullCollections | None = None


def holder() -> FullCollections | None:
    """The FullCollections that holds the process's thresholds now, if any."""
    return _holder


class FullCollections:
    """Runs generation-2 collections after the clock's ticks (or on a timer when it is idle)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, clock: FrameClock, *, idle_check_s: float = IDLE_CHECK_S) -> None:
        self._loop = loop
        self._clock = clock
        self._idle_check_s = idle_check_s
        self._thresholds: tuple[int, int, int] | None = None
        self._idle_timer: asyncio.TimerHandle | None = None
        self.collections = 0

    def install(self) -> bool:
        """Take full collections over from CPython; False when another holds them already (idempotent)."""
        global _holder
        if self._thresholds is not None:
            return True
        if _holder is not None:
            return False
        _holder = self
        first, second, third = gc.get_threshold()
        self._thresholds = (first, second, third)
        gc.set_threshold(first, second, _NEVER)
        self._clock.after_tick = self._after_tick
        self._idle_timer = self._loop.call_later(self._idle_check_s, self._idle_check)
        return True

    def uninstall(self) -> None:
        """Give full collections back to CPython (idempotent)."""
        global _holder
        if self._thresholds is None:
            return
        gc.set_threshold(*self._thresholds)
        self._thresholds = None
        _holder = None
        if self._clock.after_tick == self._after_tick:
            self._clock.after_tick = None
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    @property
    def due(self) -> bool:
        """As CPython would: more middle-generation collections since the last full one than its threshold."""
        return self._thresholds is not None and gc.get_count()[2] > self._thresholds[2]

    def _after_tick(self) -> None:
        if self.due:
            self._collect()

    def _idle_check(self) -> None:
        self._idle_timer = self._loop.call_later(self._idle_check_s, self._idle_check)
        if len(self._clock) == 0 and self.due:
            self._collect()

    def _collect(self) -> None:
        gc.collect(2)
        self.collections += 1
