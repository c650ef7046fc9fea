"""Full garbage collections between two frames, not in the middle of one.

CPython starts a full (generation 2) collection from inside whatever allocation tips its counters,
about once a minute under load. At ~80 calls one walks ~56,000 objects and holds the loop for 20-38 ms;
landing just before a frame is due, with the packets that queue behind it, it stopped the loop for
65-93 ms, past the 20 ms clock's 60 ms limit, and the frames of the stall were never sent.

So the server turns CPython's own full collections off and runs them itself, by CPython's rule, at the
one moment that has the most room: right after the shared clock has sent every call's frame (and the
clock sends the next frame as soon as the collection ends, media.frame_clock). With no call on the
clock, a timer checks once a second, so an idle server still collects. The thresholds are the
process's: one FullCollections at a time holds them (a second app in the same process leaves them to
the first).

CPython's rule has two parts: more middle-generation collections since the last full one than
`threshold2`, and the oldest generation grown by a quarter since then (its long_lived_pending against
long_lived_total: the full collection's cost is paid only when there may be that much to free). Python
cannot read CPython's counter of objects moved to the oldest generation, so the growth is measured as
the oldest generation's size now against just after the last full collection, at most once per
middle-generation collection and once per MEASURE_EVERY_S (listing a generation of 800,000 objects
holds the loop 14 ms; ~56,000 at 80 calls, under 1 ms). Objects moved there and freed since by their
reference counts do not count; cyclic garbage, the one thing only a full collection frees, does. With
calls that hold steady, the oldest generation stays the same size and full collections become rare (one
per minute at ~80 calls before, 20-40 ms each).
"""

from __future__ import annotations

import asyncio
import gc
import time

from media.frame_clock import FrameClock

IDLE_CHECK_S = 1.0
GROWTH_FRACTION = 0.25  # CPython's: long_lived_pending must reach long_lived_total / 4
MEASURE_EVERY_S = 10.0
# Beyond any count of middle-generation collections, so CPython itself never starts a full one.
_NEVER = 1 << 30
_holder: FullCollections | None = None


def holder() -> FullCollections | None:
    """The FullCollections that holds the process's thresholds now, if any."""
    return _holder


class FullCollections:
    """Runs generation-2 collections after the clock's ticks (or on a timer when it is idle)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        clock: FrameClock,
        *,
        idle_check_s: float = IDLE_CHECK_S,
        measure_every_s: float = MEASURE_EVERY_S,
    ) -> None:
        self._loop = loop
        self._clock = clock
        self._idle_check_s = idle_check_s
        self._measure_every_s = measure_every_s
        self._measured_time = -measure_every_s  # time.monotonic() of the last measurement
        self._thresholds: tuple[int, int, int] | None = None
        self._idle_timer: asyncio.TimerHandle | None = None
        self._settled_size = 0  # the oldest generation's size just after the last full collection
        self._grown = False  # by GROWTH_FRACTION since then, as of the last middle-generation collection measured
        self._measured_at = -1  # gc.get_count()[2] when the size was last measured
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
        self._settled()
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
        """As CPython would: more middle-generation collections since the last full one than its
        threshold, and the oldest generation grown by a quarter since."""
        if self._thresholds is None:
            return False
        middle_collections = gc.get_count()[2]
        if middle_collections <= self._thresholds[2]:
            return False
        now = time.monotonic()
        # Only a middle-generation collection adds to the generation; and listing it is not free.
        if middle_collections != self._measured_at and now - self._measured_time >= self._measure_every_s:
            self._measured_at, self._measured_time = middle_collections, now
            grown = len(gc.get_objects(generation=2)) - self._settled_size
            self._grown = grown >= self._settled_size * GROWTH_FRACTION
        return self._grown

    def _settled(self) -> None:
        self._settled_size = len(gc.get_objects(generation=2))
        self._grown = False
        self._measured_at = -1

    def _after_tick(self) -> None:
        if self.due:
            self._collect()

    def _idle_check(self) -> None:
        self._idle_timer = self._loop.call_later(self._idle_check_s, self._idle_check)
        if len(self._clock) == 0 and self.due:
            self._collect()

    def _collect(self) -> None:
        gc.collect(2)
        self._settled()
        self.collections += 1
