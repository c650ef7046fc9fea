"""This node's heartbeat, its hold on NODE_ID, and whether it may judge other nodes dead.

The heartbeat is a task of its own, so a slow or failing usage flush never makes a live node look
dead. A node reaps others only after reaching the database without a failed heartbeat for longer
than NODE_STALE_SECONDS: after an outage every heartbeat is old, and the nodes that were cut off
with it must first have had a full stale period to heartbeat again.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable

from storage.node_lock import NodeLock
from storage.nodes import NodeRepository

log = logging.getLogger(__name__)


class NodeLiveness:
    def __init__(
        self,
        nodes: NodeRepository,
        lock: NodeLock,
        node_id: str,
        stale_s: float,
        on_lost: Callable[[], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._nodes = nodes
        self._lock = lock
        self._node_id = node_id
        self.stale_s = stale_s
        self.interval_s = stale_s / 3
        self._on_lost = on_lost
        self._clock = clock
        # Start of the current run of successful heartbeats; None after a failure.
        self.connected_since: float | None = None
        self.last_ok: float | None = None
        self.lost = False  # another process took NODE_ID: this one heartbeats no more
        self.failures = 0

    def connected_for(self) -> float:
        """Seconds this node has reached the database without a failed heartbeat; 0 if not now."""
        now = self._clock()
        if self.connected_since is None or self.last_ok is None:
            return 0.0
        # A heartbeat that hangs has not failed yet, but the link is not known to be up either.
        if now - self.last_ok > 2 * self.interval_s:
            return 0.0
        return now - self.connected_since

    def may_reap(self) -> bool:
        return not self.lost and self.connected_for() > self.stale_s

    async def reap_dead(self) -> list[uuid.UUID]:
        """End the calls of nodes silent for NODE_STALE_SECONDS, if this node may judge; returns them.

        Every reaper goes through here, so none reaps right after an outage that silenced it too.
        """
        if not self.may_reap():
            return []
        return await self._nodes.reap_dead(self.stale_s)

    async def beat(self) -> bool:
        """One heartbeat (and a check that NODE_ID's lock is still ours); never raises."""
        if self.lost:
            return False
        try:
            async with asyncio.timeout(self.interval_s):
                if not await self._lock.check():
                    self._lose()
                    return False
                await self._nodes.heartbeat(self._node_id)
        except Exception as exc:  # the database is away (or too slow to count as there)
            self.failures += 1
            if self.connected_since is not None:
                log.warning("heartbeat failed: not reaping other nodes until connected again for %.0f s: %s", self.stale_s, exc)
            self.connected_since = None
            return False
        now = self._clock()
        if self.connected_since is None:
            self.connected_since = now
        self.last_ok = now
        return True

    async def run(self) -> None:
        while not self.lost:
            await asyncio.sleep(self.interval_s)
            await self.beat()

    def _lose(self) -> None:
        self.lost = True
        self.connected_since = None
        log.error("another process took NODE_ID=%s while the database was away; this one stops taking calls", self._node_id)
        self._on_lost()
