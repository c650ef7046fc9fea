"""Keeping a LiveAvatar session alive while nothing is said.

LITE sessions close after 5 idle minutes (the avatar leaves, the socket closes). Whenever nothing
went out for `interval_s` (60 s by default, as the livekit-agents plugin does), one keep-alive is
sent; speech is activity, so a talking session sends none.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from agent_bridge.liveavatar.errors import LiveAvatarError

log = logging.getLogger(__name__)


class KeepAlive:
    def __init__(
        self,
        interval_s: float,
        last_activity: Callable[[], float],
        send: Callable[[], Awaitable[None]],
        on_failure: Callable[[LiveAvatarError], None],
    ) -> None:
        self.interval_s = interval_s
        self._last_activity = last_activity  # monotonic time of the last frame sent
        self._send = send
        self._on_failure = on_failure
        self._last_sent = time.monotonic()
        self._task: asyncio.Task[None] | None = None
        self.sent = 0

    def start(self) -> None:
        if self._task is None:
            self._last_sent = time.monotonic()
            self._task = asyncio.create_task(self._run(), name="liveavatar-keep-alive")

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            last = max(self._last_sent, self._last_activity())
            wait = last + self.interval_s - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            self._last_sent = time.monotonic()  # also on failure: no hammering a sick service
            try:
                await self._send()
                self.sent += 1
            except LiveAvatarError as exc:
                log.warning("liveavatar: keep-alive failed: %s", exc.message)
                self._on_failure(exc)
