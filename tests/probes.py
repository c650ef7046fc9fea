"""Small waits and counts the tests share."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import psutil


def udp_sockets() -> int:
    """UDP sockets this test process holds (the in-process server's included)."""
    return len(psutil.Process().net_connections(kind="udp"))


async def until(predicate: Callable[[], bool], timeout: float = 5.0, step: float = 0.05) -> bool:
    """Whether `predicate` came true within `timeout` seconds (checked every `step`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(step)
    return predicate()
