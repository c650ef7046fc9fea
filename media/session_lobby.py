"""What waits on a session before its call exists: event subscribers and trickled ICE candidates.

A `Call` is made only for an offer. Candidates and WebSockets that come first wait here, bounded,
and the lobby is dropped when the call takes them over, when the session ends or when it expires.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiortc import RTCIceCandidate

from media.events import EventBus


class TooManyCandidates(Exception):
    """The session has had all the ICE candidates it may have."""


@dataclass
class CandidateBudget:
    """How many trickled candidates one session may still send, over its whole life."""

    limit: int  # 0 = unlimited
    used: int = 0

    def take(self) -> None:
        if self.limit and self.used >= self.limit:
            raise TooManyCandidates(f"a session takes at most {self.limit} ICE candidates")
        self.used += 1


@dataclass
class SessionLobby:
    session_id: str
    user_id: str
    budget: CandidateBudget
    events: EventBus = field(default_factory=EventBus)
    # Parsed candidates in arrival order; None is the browser's end-of-candidates.
    candidates: list[RTCIceCandidate | None] = field(default_factory=list)
    _expiry: asyncio.TimerHandle | None = None

    def expire_at(self, deadline_epoch_s: float, on_expired: Callable[[SessionLobby], None]) -> None:
        loop = asyncio.get_running_loop()
        delay = max(deadline_epoch_s - time.time(), 0.0)
        self._expiry = loop.call_later(delay, on_expired, self)

    def close(self, reason: str | None) -> None:
        """Drop the lobby; with a reason, tell its subscribers the session has ended."""
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        self.candidates.clear()
        if reason is not None:
            self.events.publish("state", state="ended", reason=reason)
