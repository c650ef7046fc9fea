"""User sessions: one per call, owned by one user."""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

_COLUMNS = (
    "id, user_id, status, end_reason, node_id, agent_session_id, avatar_session_id, avatar_status,"
    " created_at, expires_at, connected_at, ended_at"
)


@dataclass(frozen=True)
class SessionRecord:
    id: uuid.UUID
    user_id: str
    status: str
    end_reason: str | None
    node_id: str | None
    agent_session_id: str | None
    avatar_session_id: str | None
    avatar_status: str | None
    created_at: datetime
    expires_at: datetime
    connected_at: datetime | None
    ended_at: datetime | None

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> SessionRecord:
        return cls(**dict(row))

    def to_json(self) -> dict[str, object]:
        def iso(value: datetime | None) -> str | None:
            return value.isoformat() if value else None

        return {
            "session_id": str(self.id),
            "user_id": self.user_id,
            "status": self.status,
            "end_reason": self.end_reason,
            "agent_session_id": self.agent_session_id,
            "avatar_session_id": self.avatar_session_id,
            "avatar_status": self.avatar_status,
            "created_at": iso(self.created_at),
            "expires_at": iso(self.expires_at),
            "connected_at": iso(self.connected_at),
            "ended_at": iso(self.ended_at),
        }


class TooManyOpenSessions(Exception):
    """The user has as many open sessions as they may."""


class SessionRateLimited(Exception):
    """The user created as many sessions in the last minute as they may."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"retry after {retry_after_s} s")
        self.retry_after_s = retry_after_s


# One user's open sessions (created and unexpired, or live) and creations in the last minute.
_USER_SESSION_COUNTS = """
select count(*) filter (where status <> 'ended' and (status <> 'created' or expires_at > now())) as open,
       count(*) filter (where created_at > now() - interval '1 minute') as recent,
       coalesce(extract(epoch from min(created_at) filter (where created_at > now() - interval '1 minute')
                        + interval '1 minute' - now()), 0) as window_left_s
from user_sessions
where user_id = $1 and (status <> 'ended' or created_at > now() - interval '1 minute')
"""


class SessionRepository:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def create(
        self,
        user_id: str,
        ttl_seconds: int,
        node_id: str,
        *,
        max_open: int = 0,
        max_per_minute: int = 0,
        voice_id: str | None = None,
    ) -> SessionRecord:
        """A new session; with limits (0 = none), checked and inserted atomically across nodes.

        Raises TooManyOpenSessions or SessionRateLimited.
        """
        async with self._pool.acquire() as conn, conn.transaction():
            if max_open or max_per_minute:
                # Serialises one user's creations on every node, so two at once cannot both pass.
                await conn.execute("select pg_advisory_xact_lock(hashtextextended($1, 1))", user_id)
                counts = await conn.fetchrow(_USER_SESSION_COUNTS, user_id)
                if max_open and counts["open"] >= max_open:
                    raise TooManyOpenSessions(f"at most {max_open} open sessions per user")
                if max_per_minute and counts["recent"] >= max_per_minute:
                    raise SessionRateLimited(max(1, math.ceil(float(counts["window_left_s"]))))
            row = await conn.fetchrow(
                f"""
                insert into user_sessions(user_id, node_id, expires_at, voice_id)
                values ($1, $2, now() + make_interval(secs => $3), $4)
                returning {_COLUMNS}
                """,
                user_id,
                node_id,
                float(ttl_seconds),
                voice_id,
            )
        return SessionRecord.from_row(row)

    async def voice_of(self, session_id: uuid.UUID) -> str | None:
        """The TTS voice the session's call speaks in; None: the engine's own."""
        return await self._pool.fetchval("select voice_id from user_sessions where id = $1", session_id)

    async def get_for_user(self, session_id: uuid.UUID, user_id: str) -> SessionRecord | None:
        """The session if it belongs to this user: a foreign session is indistinguishable from none."""
        row = await self._pool.fetchrow(
            f"select {_COLUMNS} from user_sessions where id = $1 and user_id = $2", session_id, user_id
        )
        return SessionRecord.from_row(row) if row else None

    async def end_reason_of(self, session_id: uuid.UUID) -> str | None:
        """Why the session ended; None while it has not (or there is no such session)."""
        row = await self._pool.fetchrow("select end_reason from user_sessions where id = $1 and status = 'ended'", session_id)
        return None if row is None else row["end_reason"] or "ended"

    async def mark_connecting(self, session_id: uuid.UUID, node_id: str) -> bool:
        """Claim a created session for a call on this node; False if it ended (or was claimed) meanwhile."""
        result = await self._pool.execute(
            "update user_sessions set status = 'connecting', node_id = $2 where id = $1 and status = 'created'",
            session_id,
            node_id,
        )
        return result.endswith(" 1")

    async def unclaim(self, session_id: uuid.UUID, node_id: str) -> None:
        """Back to created, if this node's claim is still all there is (its offer was refused)."""
        await self._pool.execute(
            "update user_sessions set status = 'created' where id = $1 and node_id = $2 and status = 'connecting'",
            session_id,
            node_id,
        )

    async def agent_session_of(self, session_id: uuid.UUID) -> str | None:
        return await self._pool.fetchval("select agent_session_id from user_sessions where id = $1", session_id)

    async def set_agent_session(self, session_id: uuid.UUID, agent_session_id: str) -> None:
        await self._pool.execute("update user_sessions set agent_session_id = $2 where id = $1", session_id, agent_session_id)

    async def mark_connected(self, session_id: uuid.UUID) -> None:
        await self._pool.execute(
            """
            update user_sessions set status = 'connected', connected_at = coalesce(connected_at, now())
            where id = $1 and status <> 'ended'
            """,
            session_id,
        )

    async def set_avatar(self, session_id: uuid.UUID, avatar_session_id: str | None, status: str) -> None:
        await self._pool.execute(
            "update user_sessions set avatar_session_id = $2, avatar_status = $3 where id = $1",
            session_id,
            avatar_session_id,
            status,
        )

    async def end(self, session_id: uuid.UUID, reason: str) -> bool:
        """Mark ended once; the first reason wins. Returns whether this call ended it."""
        result = await self._pool.execute(
            """
            update user_sessions set status = 'ended', end_reason = $2, ended_at = now()
            where id = $1 and status <> 'ended'
            """,
            session_id,
            reason,
        )
        return result.endswith(" 1")

    async def end_expired_unused(self) -> int:
        """Sessions that never got an offer before they expired."""
        result = await self._pool.execute(
            """
            update user_sessions set status = 'ended', end_reason = 'expired', ended_at = now()
            where status = 'created' and expires_at < now()
            """
        )
        return int(result.split()[-1])
