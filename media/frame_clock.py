"""One 20 ms clock for every call's outbound audio on an event loop.

A sleeping coroutine per track costs a timer, a future and a task step per frame per call; one
timer that hands each registered stream its frame in turn costs one timer per 20 ms for all of
them. Pacing is media.pacing.FrameSchedule's, as for a self-paced track: tick n is due at
anchor + n * interval, without drift; a tick more than 60 ms late re-anchors the schedule instead of
bursting frames to catch up.

The after-tick hook runs once a tick, after every stream has sent (media.full_collections puts full
garbage collections there). When the hook itself overran the next tick's time, that tick runs at once:
left to its timer, it would also wait behind every packet that queued during the hook (at ~80 calls a
38 ms collection became a 60 ms gap between frames). Only a long hook does this, so a loop too busy for
its ticks is never kept from its I/O by ticks run back to back.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Callable

from media.pacing import FrameSchedule

log = logging.getLogger(__name__)

FRAME_S = 0.02

_clocks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, FrameClock] = weakref.WeakKeyDictionary()


class FrameClock:
    """Calls every registered callback once per tick, in the order they were added."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, interval_s: float = FRAME_S, *, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self._loop = loop
        # The time now, on the loop's clock's base: uvloop's loop.time() stays at the start of the loop
        # iteration, so it cannot tell how long the hook took.
        self._monotonic = monotonic
        self._interval_s = interval_s
        self._streams: dict[int, Callable[[], None]] = {}
        self._next_id = 0
        self._timer: asyncio.TimerHandle | None = None
        self._schedule = FrameSchedule(interval_s)
        self._ticks = 0
        # Called once a tick, after every stream has sent (the moment with the most room before the next).
        self.after_tick: Callable[[], None] | None = None
        self.caught_up = 0  # ticks run at once because the hook overran their time

    def add(self, on_tick: Callable[[], None]) -> int:
        """Start calling `on_tick` every tick; returns the id to remove it with."""
        stream_id = self._next_id
        self._next_id += 1
        self._streams[stream_id] = on_tick
        if self._timer is None:
            first = self._loop.time() + self._interval_s
            self._schedule.start(0, first)
            self._ticks = 0
            self._timer = self._loop.call_at(first, self._tick)
        return stream_id

    def remove(self, stream_id: int) -> None:
        """Stop calling a stream back (idempotent); the timer stops with the last one."""
        self._streams.pop(stream_id, None)
        if not self._streams and self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def __len__(self) -> int:
        return len(self._streams)

    @property
    def reanchored(self) -> int:
        """Times the loop fell more than 60 ms behind."""
        return self._schedule.reanchored

    def _tick(self) -> None:
        for on_tick in list(self._streams.values()):
            try:
                on_tick()
            except Exception:  # one stream's failure must not silence the others
                log.exception("an outbound stream failed on its tick")
        if not self._streams:
            self._timer = None
            return
        self._ticks += 1
        due = self._schedule.due(self._ticks, self._loop.time())
        self._timer = self._loop.call_at(due, self._tick)
        if self.after_tick is not None:
            self._run_hook(self.after_tick, due)

    def _run_hook(self, hook: Callable[[], None], due: float) -> None:
        started = self._monotonic()
        try:
            hook()
        except Exception:
            log.exception("the clock's after-tick hook failed")
        ended = self._monotonic()
        if ended >= due and ended - started >= self._interval_s / 2 and self._timer is not None:
            self._timer.cancel()
            self.caught_up += 1
            self._tick()


def frame_clock() -> FrameClock:
    """The running loop's clock (made on first use)."""
    loop = asyncio.get_running_loop()
    clock = _clocks.get(loop)
    if clock is None:
        clock = _clocks[loop] = FrameClock(loop)
    return clock
