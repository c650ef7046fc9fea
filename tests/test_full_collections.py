"""Full garbage collections (media.full_collections): CPython's own are off while it holds the
thresholds; one runs when CPython's rule says it is due (enough middle-generation collections, and the
oldest generation grown by a quarter), right after the clock's tick (or on the idle timer with no
stream on the clock), it collects what a full collection must, and the clock's next frame goes out as
soon as it ends."""

from __future__ import annotations

import asyncio
import gc
import sys
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from media.frame_clock import FrameClock
from media.full_collections import FullCollections, holder


@pytest.fixture(autouse=True)
def thresholds_released() -> Iterator[None]:
    """A server of another test in this process may hold the thresholds: it gets them back after."""
    running = holder()
    if running is not None:
        running.uninstall()
    try:
        yield
    finally:
        if running is not None:
            assert running.install()


@contextmanager
def installed(collections: FullCollections) -> Iterator[FullCollections]:
    """The collections holding the process's thresholds for the block, released on every way out."""
    assert collections.install()
    try:
        yield collections
    finally:
        collections.uninstall()


class Cycle:
    def __init__(self) -> None:
        self.me = self


def old_garbage_cycle() -> weakref.ref[Cycle]:
    """A reference cycle that sits in the oldest generation when it becomes garbage."""
    cycle = Cycle()
    gc.collect(1)
    gc.collect(1)  # survived twice: now in generation 2, where only a full collection looks
    ref = weakref.ref(cycle)
    del cycle
    return ref


def grow_oldest_generation() -> list[list[int]]:
    """New long-lived objects: a third more than the oldest generation holds, moved into it."""
    kept = [[] for _ in range(len(gc.get_objects(generation=2)) // 3 + 1000)]
    gc.collect(1)
    gc.collect(1)
    return kept


def make_due(collections: FullCollections) -> list[list[int]]:
    """Middle-generation collections past CPython's threshold, none of which sees the old cycle, and the
    oldest generation grown past a quarter (keep what this returns until the collection)."""
    kept = grow_oldest_generation()
    for _ in range(1000):
        if collections.due:
            return kept
        gc.collect(1)
    raise AssertionError("never due")


def in_after_tick() -> bool:
    frame = sys._getframe()
    while frame is not None:
        if frame.f_code.co_name == "_after_tick" and frame.f_code.co_filename.endswith("full_collections.py"):
            return True
        frame = frame.f_back  # type: ignore[assignment]
    return False


async def test_cpython_full_collections_are_off_while_held_and_restored_after() -> None:
    loop = asyncio.get_running_loop()
    before = gc.get_threshold()
    first = FullCollections(loop, FrameClock(loop))
    second = FullCollections(loop, FrameClock(loop))
    assert first.install()
    try:
        assert gc.get_threshold()[:2] == before[:2] and gc.get_threshold()[2] > 1_000_000
        assert not second.install()  # one holder a process: the second leaves them to the first
        second.uninstall()
        assert gc.get_threshold()[2] > 1_000_000
        ref = old_garbage_cycle()
        for _ in range(3 * before[2]):  # far past CPython's own rule: still nobody collects it
            gc.collect(1)
        assert ref() is not None
    finally:
        first.uninstall()
    assert gc.get_threshold() == before
    gc.collect()
    assert ref() is None


async def test_a_due_full_collection_runs_right_after_a_tick() -> None:
    loop = asyncio.get_running_loop()
    clock = FrameClock(loop)
    collections = FullCollections(loop, clock, idle_check_s=60, measure_every_s=0)
    ticks: list[float] = []
    started_in_hook: list[tuple[int, bool]] = []

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start" and info["generation"] == 2:
            started_in_hook.append((len(ticks), in_after_tick()))

    gc.collect()
    with installed(collections):
        stream = clock.add(lambda: ticks.append(loop.time()))
        gc.callbacks.append(on_gc)
        try:
            await asyncio.sleep(0.1)
            assert len(ticks) >= 3 and collections.collections == 0  # not due: ticks alone collect nothing
            ref = old_garbage_cycle()
            kept = make_due(collections)
            assert ref() is not None
            await asyncio.sleep(0.1)
            assert ref() is None and collections.collections == 1 and not collections.due
            assert started_in_hook and all(in_hook for _, in_hook in started_in_hook)
            assert started_in_hook[0][0] >= 4  # after the tick that sent this stream's frame
            del kept
        finally:
            gc.callbacks.remove(on_gc)
            clock.remove(stream)


async def test_with_no_stream_on_the_clock_the_idle_timer_collects() -> None:
    loop = asyncio.get_running_loop()
    clock = FrameClock(loop)
    collections = FullCollections(loop, clock, idle_check_s=0.02, measure_every_s=0)
    gc.collect()
    with installed(collections):
        ref = old_garbage_cycle()
        kept = make_due(collections)
        for _ in range(50):
            await asyncio.sleep(0.02)
            if ref() is None:
                break
        assert ref() is None and collections.collections == 1 and len(clock) == 0
        del kept


async def test_a_failing_after_tick_hook_does_not_stop_the_clock() -> None:
    loop = asyncio.get_running_loop()
    clock = FrameClock(loop)
    ticks: list[int] = []

    def broken() -> None:
        raise RuntimeError("hook failed")

    clock.after_tick = broken
    stream = clock.add(lambda: ticks.append(1))
    try:
        await asyncio.sleep(0.1)
        assert len(ticks) >= 3
    finally:
        clock.remove(stream)


async def test_without_growth_of_the_oldest_generation_no_full_collection_is_due() -> None:
    loop = asyncio.get_running_loop()
    collections = FullCollections(loop, FrameClock(loop), idle_check_s=60, measure_every_s=0)
    gc.collect()
    with installed(collections):
        threshold = gc.get_threshold()
        for _ in range(3 * 10 + 5):  # far past CPython's count of middle-generation collections
            gc.collect(1)
        assert gc.get_count()[2] > 30 and not collections.due  # nothing grew: nothing to free
        ref = old_garbage_cycle()  # a little cyclic garbage is not a quarter of the generation
        gc.collect(1)
        assert not collections.due and ref() is not None
        kept = grow_oldest_generation()  # a third more long-lived objects
        assert collections.due
        collections._after_tick()
        assert collections.collections == 1 and ref() is None and not collections.due
        assert gc.get_threshold() == threshold
        del kept


async def test_the_tick_after_a_long_collection_goes_out_as_soon_as_it_ends() -> None:
    loop = asyncio.get_running_loop()
    clock = FrameClock(loop)
    order: list[str] = []
    hooks = 0

    def slow_hook() -> None:  # what a 30 ms full collection does to the loop
        nonlocal hooks
        hooks += 1
        if hooks == 3:
            loop.call_soon(order.append, "packet queued during the hook")
            time.sleep(0.03)

    clock.after_tick = slow_hook
    stream = clock.add(lambda: order.append("tick"))
    try:
        await asyncio.sleep(0.15)
    finally:
        clock.remove(stream)
    queued = order.index("packet queued during the hook")
    assert order[:queued] == ["tick"] * 4  # the 4th tick was sent before the callback that queued
    assert clock.caught_up == 1 and clock.reanchored == 0


async def test_the_generation_is_measured_at_most_once_per_interval() -> None:
    loop = asyncio.get_running_loop()
    collections = FullCollections(loop, FrameClock(loop), idle_check_s=60, measure_every_s=3600)
    gc.collect()
    with installed(collections):
        for _ in range(11):
            gc.collect(1)
        assert not collections.due  # measured now: nothing grew
        kept = grow_oldest_generation()
        assert not collections.due  # grown, but the next measurement is an hour away
        collections._measure_every_s = 0
        assert collections.due
        del kept
