"""The call's three clocks: connect in time, keep receiving media, and stop at the longest call allowed."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from media.call_limits import CallLimits
from media.call_state import CallState

_MAX_TICK_S = 0.5


async def watch_call(
    limits: CallLimits,
    state: Callable[[], CallState],
    last_media_at: Callable[[], float],
    end_call: Callable[[str], None],
) -> None:
    """Ends the call with `connect_timeout`, `peer_gone` or `max_duration`; `last_media_at` is loop time."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    bounds = [b for b in (limits.connect_timeout_s, limits.media_timeout_s, limits.max_call_seconds) if b]
    if not bounds:
        return
    tick = min(_MAX_TICK_S, min(bounds) / 4)
    while True:
        await asyncio.sleep(tick)
        now = loop.time()
        current = state()
        if limits.max_call_seconds and now - started >= limits.max_call_seconds:
            end_call("max_duration")
            return
        if current is CallState.CONNECTING and limits.connect_timeout_s and now - started >= limits.connect_timeout_s:
            end_call("connect_timeout")
            return
        if current is CallState.CONNECTED and limits.media_timeout_s and now - last_media_at() >= limits.media_timeout_s:
            end_call("peer_gone")
            return
        if current not in (CallState.CONNECTING, CallState.CONNECTED):
            return
