"""Event-loop lag: sleep a fixed interval and measure how much longer it took.

Oversleeping is time the loop spent on other callbacks; for a media server it is how late a
20 ms frame or a packet could be handled, so it is worth watching all the time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

LAG_INTERVAL_S = 0.5


async def watch_loop_lag(on_lag: Callable[[float], None], interval_s: float = LAG_INTERVAL_S) -> None:
    """Forever: report each interval's oversleep in seconds (0 when on time)."""
    loop = asyncio.get_running_loop()
    while True:
        started = loop.time()
        await asyncio.sleep(interval_s)
        on_lag(max(0.0, loop.time() - started - interval_s))
