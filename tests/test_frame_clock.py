"""The shared 20 ms clock (media.frame_clock): every stream once a tick, in order, without drift or bursts.

Driven by a fake loop whose time only moves when the test says, so the schedule is checked exactly.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from media.frame_clock import FrameClock


class FakeTimer:
    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeLoop:
    def __init__(self) -> None:
        self.now = 100.0
        self.timers: list[FakeTimer] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], None]) -> FakeTimer:
        timer = FakeTimer(when, callback)
        self.timers.append(timer)
        return timer

    def pending(self) -> list[FakeTimer]:
        return [t for t in self.timers if not t.cancelled]

    def fire(self, late_by: float = 0.0) -> float:
        """Run the one pending timer, `late_by` seconds after it was due; returns when it was due."""
        (timer,) = self.pending()
        self.timers.remove(timer)
        self.now = timer.when + late_by
        timer.callback()
        return timer.when


def test_streams_tick_in_order_on_a_fixed_grid() -> None:
    loop = FakeLoop()
    clock = FrameClock(loop)  # type: ignore[arg-type]
    calls: list[str] = []
    a = clock.add(lambda: calls.append("a"))
    clock.add(lambda: calls.append("b"))
    due = [loop.fire(late_by=0.004) for _ in range(5)]  # each tick runs 4 ms late
    # Lateness never shifts the grid: tick n is due at anchor + n * 20 ms.
    assert due == pytest.approx([100.02 + 0.02 * n for n in range(5)])
    assert calls == ["a", "b"] * 5
    clock.remove(a)
    clock.remove(a)  # idempotent
    loop.fire()
    assert calls[-1:] == ["b"] and len(clock) == 1


def test_a_stall_re_anchors_instead_of_bursting() -> None:
    loop = FakeLoop()
    clock = FrameClock(loop)  # type: ignore[arg-type]
    ticks: list[float] = []
    clock.add(lambda: ticks.append(loop.time()))
    loop.fire()
    loop.fire(late_by=0.03)  # 30 ms late: the next tick keeps the grid (one catch-up frame at most)
    assert loop.pending()[0].when == pytest.approx(100.06)
    loop.fire(late_by=0.2)  # the loop stalled 200 ms: no burst of ten frames
    assert clock.reanchored == 1
    assert loop.pending()[0].when == pytest.approx(loop.now)  # the next frame now, then 20 ms apart
    loop.fire()
    assert loop.pending()[0].when == pytest.approx(loop.now + 0.02)


def test_the_timer_stops_with_the_last_stream_and_a_failing_stream_spares_the_others() -> None:
    loop = FakeLoop()
    clock = FrameClock(loop)  # type: ignore[arg-type]
    heard: list[int] = []

    def broken() -> None:
        raise RuntimeError("boom")

    first = clock.add(broken)
    second = clock.add(lambda: heard.append(1))
    loop.fire()
    assert heard == [1]
    clock.remove(first)
    clock.remove(second)
    assert loop.pending() == [] and len(clock) == 0
    # Removing itself from inside its own tick stops the timer too.
    own: list[int] = []
    own.append(clock.add(lambda: clock.remove(own[0])))
    loop.fire()
    assert loop.pending() == []


def test_a_hook_that_overran_the_next_tick_has_it_run_at_once_and_only_a_long_hook_does() -> None:
    loop = FakeLoop()
    clock = FrameClock(loop, monotonic=loop.time)  # type: ignore[arg-type]
    ticks: list[float] = []
    hook_s = [0.0]

    def hook() -> None:  # the loop's time moves as a collection of hook_s would move it
        loop.now += hook_s[0]
        hook_s[0] = 0.0

    clock.after_tick = hook
    clock.add(lambda: ticks.append(loop.now))
    loop.fire()
    hook_s[0] = 0.03
    loop.fire()  # its hook ran 30 ms: the next tick, due 10 ms before the hook ended, runs in this call
    assert ticks == pytest.approx([100.02, 100.04, 100.07]) and clock.caught_up == 1
    assert loop.pending()[0].when == pytest.approx(100.08)  # the grid holds
    loop.fire(late_by=0.015)  # a busy loop: late, with a short hook that ends past the next tick
    hook_s[0] = 0.006
    loop.fire(late_by=0.018)
    assert len(ticks) == 5 and clock.caught_up == 1  # left to the timer: no ticks back to back
    assert clock.reanchored == 0
