"""Graceful drain: the node takes no new calls, lets its live calls finish, then stops.

It starts on SIGTERM (run.py) or when another process takes this node's NODE_ID. From then on
`/readyz` answers 503 so a balancer stops sending new calls; the calls already here go on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from signaling.errors import ApiError

log = logging.getLogger(__name__)

SIGTERM = "sigterm"
SIGINT = "sigint"
NODE_ID_TAKEN = "node_id_taken"
_POLL_S = 0.2


class Drain:
    """Whether this node is draining, and why: explicit state the routes and run.py both read."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.reason: str | None = None

    @property
    def draining(self) -> bool:
        return self.started.is_set()

    def begin(self, reason: str) -> None:
        if self.draining:
            return
        self.reason = reason
        self.started.set()
        log.warning("draining (%s): no new sessions or offers; live calls go on", reason)

    def refuse_new_call(self) -> None:
        """The first step of every route that would start a call on this node."""
        if self.draining:
            raise ApiError(503, "draining", "this server is shutting down; try again", retry_after_s=1)


async def wait_for_calls(
    live_calls: Callable[[], int], pending_ends: Callable[[], int], timeout_s: float, hurry: asyncio.Event
) -> bool:
    """Wait until no call is live and every ended call is written; returns whether that happened.

    Gives up after timeout_s (0: at once) or when `hurry` is set; the calls still live then are
    ended by the shutdown that follows.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    last_logged = -1
    while live_calls() or pending_ends():
        left = deadline - loop.time()
        if left <= 0 or hurry.is_set():
            log.warning("drain over with %d live call(s): they end with server_shutdown", live_calls())
            return False
        if live_calls() != last_logged:
            last_logged = live_calls()
            log.warning("draining: %d live call(s), at most %.0f s more", last_logged, left)
        try:
            await asyncio.wait_for(hurry.wait(), min(_POLL_S, left))
        except TimeoutError:
            pass
    return True
