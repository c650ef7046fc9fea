"""The avatar session's rows (avatar_sessions, avatar_session_events), written in order in the background.

Media never waits for them; if Postgres is away they stay queued and are written when it is back.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import deque
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from storage.avatar_usage import AvatarSessionRepository
from storage.sessions import SessionRepository

log = logging.getLogger(__name__)

_CENT = Decimal("0.01")
_US_PER_MINUTE = 60_000_000


@dataclass(frozen=True)
class _Row:
    event_type: str
    duration_us: int
    data: dict[str, object] | None


class AvatarEventLog:
    def __init__(
        self,
        avatars: AvatarSessionRepository,
        sessions: SessionRepository,
        user_session_id: str,
        avatar_id: str,
        cost_per_minute: Decimal,
        avatar_session_id: uuid.UUID | None = None,
    ) -> None:
        self._avatars = avatars
        self._sessions = sessions
        self._user_session_id = uuid.UUID(user_session_id)
        self._avatar_id = avatar_id
        self._cost_per_minute = cost_per_minute
        self._pending: deque[_Row] = deque()
        self._drain_lock = asyncio.Lock()
        self._drainer: asyncio.Task[bool] | None = None
        # A LiveAvatar's row exists from the session's creation; the rendered face's is made with its first event.
        self.avatar_session_id = avatar_session_id

    def quota_cost(self, duration_us: int) -> Decimal:
        return (Decimal(duration_us) * self._cost_per_minute / _US_PER_MINUTE).quantize(_CENT, ROUND_HALF_UP)

    def record(self, event_type: str, duration_us: int, data: dict[str, object] | None = None) -> None:
        self._pending.append(_Row(event_type, duration_us, data))
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.ensure_future(self.drain())

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def drain(self) -> bool:
        """Write what is queued, in order; False (with the rest still queued) if the database is away."""
        async with self._drain_lock:
            try:
                if self.avatar_session_id is None and self._pending:
                    self.avatar_session_id = await self._avatars.create(
                        self._user_session_id, f"rendered-{self._user_session_id}", "offline", self._avatar_id
                    )
                    await self._sessions.set_avatar(self._user_session_id, str(self.avatar_session_id), "active")
                while self._pending:
                    row = self._pending[0]
                    assert self.avatar_session_id is not None
                    await self._avatars.record_event(
                        self.avatar_session_id,
                        row.event_type,
                        duration_us=row.duration_us,
                        quota_cost=self.quota_cost(row.duration_us),
                        data=row.data,
                    )
                    self._pending.popleft()
                    if row.event_type == "ended":
                        await self._sessions.set_avatar(self._user_session_id, str(self.avatar_session_id), "ended")
            except Exception as exc:  # the database is away: keep the rows for the next try
                log.warning("avatar events of %s not written yet: %s", self._user_session_id, exc)
                return False
            return True
