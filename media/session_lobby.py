"""What waits on a session before its call exists: event subscribers and trickled ICE candidates.

A `Call` is made only for an offer. Candidates and WebSockets that come first wait here, bounded,
and the lobby is dropped when the call takes them over, when the session ends or when it expires.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from aiortc import RTCIceCandidate

from media.events import EventBus
from media.ice_candidates import IceCandidateInit


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
    expires_at: datetime
    budget: CandidateBudget
    events: EventBus = field(default_factory=EventBus)
    # Parsed candidates in arrival order (None is the browser's end-of-candidates), and as sent,
    # for handing them to another node that takes the offer.
    candidates: list[RTCIceCandidate | None] = field(default_factory=list)
    raw_candidates: list[IceCandidateInit] = field(default_factory=list)
    # Set while the lobby's subscribers follow a call on another node.
    relay_unsubscribe: Callable[[], None] | None = None
    _expiry: asyncio.TimerHandle | None = None

    def add(self, init: IceCandidateInit, parsed: RTCIceCandidate | None) -> None:
        self.budget.take()
        self.candidates.append(parsed)
        self.raw_candidates.append(init)

    def expire_with(self, on_expired: Callable[[SessionLobby], None]) -> None:
        loop = asyncio.get_running_loop()
        delay = max(self.expires_at.timestamp() - time.time(), 0.0)
        self._expiry = loop.call_later(delay, on_expired, self)

    def stop_expiry(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None

    def close(self, reason: str | None) -> None:
        """Drop the lobby; with a reason, tell its subscribers the session has ended."""
        self.stop_expiry()
        self.candidates.clear()
        self.raw_candidates.clear()
        if self.relay_unsubscribe is not None:
            self.relay_unsubscribe()
            self.relay_unsubscribe = None
        if reason is not None:
            self.events.publish("state", state="ended", reason=reason)
