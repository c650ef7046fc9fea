"""Avatar streaming sessions and their events, with totals kept exact from the events' microseconds."""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg

from storage.avatar_sessions import heygen_token_context, insert_avatar_session
from storage.token_cipher import TokenCipher

AVATAR_EVENT_TYPES = ("started", "speaking", "listening", "idle", "ended")
# What a session with no provider behind it stores for a token when there is no cipher: a short word
# such as "offline". A real session token never looks like this, so none is ever stored in the clear.
_NON_SECRET_LABEL = re.compile(r"[a-z]{1,16}")


class AvatarSessionRepository:
    """Sessions of the avatar rendered on this server (no provider to stop), and every session's events.

    HeyGen LiveAvatar sessions are created through storage.avatar_sessions.AvatarSessionStore.
    """

    def __init__(self, pool: asyncpg.Pool, cipher: TokenCipher | None = None) -> None:
        self._pool = pool
        self._cipher = cipher

    async def create(
        self,
        user_session_id: uuid.UUID,
        heygen_session_id: str,
        heygen_session_token: str,
        avatar_id: str,
        *,
        quality: str = "medium",
        voice_id: str | None = None,
        expires_at: datetime | None = None,
    ) -> uuid.UUID:
        """The token is encrypted when there is a cipher; without one only a non-secret label is taken."""
        avatar_session_id = uuid.uuid4()
        if self._cipher is not None:
            stored = self._cipher.encrypt(heygen_session_token, context=heygen_token_context(avatar_session_id))
        elif _NON_SECRET_LABEL.fullmatch(heygen_session_token):
            stored = heygen_session_token
        else:
            raise ValueError("an avatar session token is stored encrypted: give AvatarSessionRepository a TokenCipher")
        return await insert_avatar_session(
            self._pool,
            avatar_session_id,
            user_session_id,
            heygen_session_id,
            stored,
            avatar_id,
            provider=None,
            quality=quality,
            voice_id=voice_id,
            expires_at=expires_at,
            status="active",
        )

    async def record_event(
        self,
        avatar_session_id: uuid.UUID,
        event_type: str,
        *,
        duration_us: int,
        quota_cost: Decimal,
        data: dict[str, Any] | None = None,
    ) -> None:
        """Store the event and bring the session's totals up to date in the same transaction.

        The duration column holds whole seconds; the exact µs go in event_data["duration_us"], and
        total_streaming_time is the floor of their sum, so per-event rounding never accumulates.
        """
        if event_type not in AVATAR_EVENT_TYPES:
            raise ValueError(f"unknown avatar event {event_type!r}; known: {', '.join(AVATAR_EVENT_TYPES)}")
        if not isinstance(duration_us, int) or isinstance(duration_us, bool) or duration_us < 0:
            raise ValueError(f"duration_us must be an integer >= 0, got {duration_us!r}")
        if not isinstance(quota_cost, Decimal) or quota_cost < 0:
            raise ValueError(f"quota_cost must be a Decimal >= 0, got {quota_cost!r}")
        event_data = {**(data or {}), "duration_us": duration_us}
        async with self._pool.acquire() as conn, conn.transaction():
            # Locking the session first makes concurrent events of one session take turns, so each
            # recount below sees every event committed before it.
            found = await conn.fetchval("select 1 from avatar_sessions where id = $1 for update", avatar_session_id)
            if found is None:
                raise LookupError(f"no avatar session {avatar_session_id}")
            await conn.execute(
                """
                insert into avatar_session_events(avatar_session_id, event_type, event_data, duration_seconds, quota_cost)
                values ($1, $2, $3, $4, $5)
                """,
                avatar_session_id,
                event_type,
                event_data,
                duration_us // 1_000_000,
                quota_cost,
            )
            await conn.execute(
                """
                update avatar_sessions a
                set total_streaming_time = t.duration_us / 1000000,  -- bigint division: the floor
                    quota_consumed = t.quota_cost,
                    last_activity_at = now(),
                    session_status = case when $2 = 'ended' then 'ended' else a.session_status end
                from (
                    select coalesce(sum((event_data ->> 'duration_us')::bigint), 0)::bigint as duration_us,
                           coalesce(sum(quota_cost), 0) as quota_cost
                    from avatar_session_events
                    where avatar_session_id = $1
                ) t
                where a.id = $1
                """,
                avatar_session_id,
                event_type,
            )
