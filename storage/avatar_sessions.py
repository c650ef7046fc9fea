"""HeyGen LiveAvatar sessions: their rows' life, their tokens encrypted at rest, and the orphans to stop.

Every token is encrypted with the row it belongs to as context (see storage/token_cipher.py), so a
token copied into another row does not decrypt. Events and totals stay in storage/avatar_usage.py.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

import asyncpg

from storage.token_cipher import TokenCipher, TokenDecryptError

log = logging.getLogger(__name__)

PROVIDER_LIVEAVATAR = "liveavatar"
AVATAR_SESSION_STATUSES = ("created", "starting", "active", "stopping", "failed", "ended", "stopped")
# A session in one of these is over at the provider: it is never revived nor swept again.
FINAL_STATUSES = ("ended", "stopped")

_RECORD_COLUMNS = (
    "id, user_session_id, provider, heygen_session_id, avatar_id, session_status, quality_setting, voice_id,"
    " created_at, expires_at, last_activity_at, stopped_at, total_streaming_time, quota_consumed"
)
_NOT_FINAL = "coalesce(session_status, '') not in ('ended', 'stopped')"


def heygen_token_context(avatar_session_id: uuid.UUID) -> bytes:
    return f"avatar_sessions.heygen_session_token:{avatar_session_id}".encode()


def avatar_link_context(user_session_id: uuid.UUID) -> bytes:
    return f"user_sessions.avatar_session_token:{user_session_id}".encode()


@dataclass(frozen=True)
class AvatarSessionRecord:
    """An avatar_sessions row without its token (token_of reads that), so it can be logged safely."""

    id: uuid.UUID
    user_session_id: uuid.UUID | None
    provider: str | None
    heygen_session_id: str
    avatar_id: str
    session_status: str | None
    quality_setting: str | None
    voice_id: str | None
    created_at: datetime | None
    expires_at: datetime | None
    last_activity_at: datetime | None
    stopped_at: datetime | None
    total_streaming_time: int | None
    quota_consumed: Decimal | None

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> AvatarSessionRecord:
        return cls(**dict(row))


@dataclass(frozen=True)
class OrphanAvatar:
    """A provider session nobody will stop unless the sweeper does.

    reason: "no_user_session", "user_session_ended", "node_dead" or "expired". heygen_session_token is
    None when it cannot be decrypted (its key id is no longer listed): the sweeper can only mark it.
    """

    avatar_session_id: uuid.UUID
    user_session_id: uuid.UUID | None
    heygen_session_id: str
    heygen_session_token: str | None = field(repr=False)
    session_status: str | None
    node_id: str | None
    expires_at: datetime | None
    reason: str


def _check_status(status: str) -> None:
    if status not in AVATAR_SESSION_STATUSES:
        raise ValueError(f"unknown avatar session status {status!r}; known: {', '.join(AVATAR_SESSION_STATUSES)}")


async def insert_avatar_session(
    pool: asyncpg.Pool,
    avatar_session_id: uuid.UUID,
    user_session_id: uuid.UUID,
    heygen_session_id: str,
    stored_token: str,
    avatar_id: str,
    *,
    provider: str | None,
    quality: str,
    voice_id: str | None,
    expires_at: datetime | None,
    status: str,
) -> uuid.UUID:
    """Insert a row whose token is already in its stored form (its id is chosen first: it is the token's context)."""
    return await pool.fetchval(
        """
        insert into avatar_sessions(id, user_session_id, provider, heygen_session_id, heygen_session_token, avatar_id,
                                    quality_setting, voice_id, expires_at, session_status)
        values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
        returning id
        """,
        avatar_session_id,
        user_session_id,
        provider,
        heygen_session_id,
        stored_token,
        avatar_id,
        quality,
        voice_id,
        expires_at,
        status,
    )


# Unstopped provider sessions, each with the first reason it is orphaned (null: it is not). $1: how long
# an ended call's own node gets to stop its avatar; $2: a node whose heartbeat is older is dead (a node
# never seen is dead too, like NodeRepository.is_stale); $3: how many.
_ORPHANS_SQL = """
select * from (
    select a.id, a.user_session_id, a.heygen_session_id, a.heygen_session_token, a.session_status, a.expires_at,
           s.node_id,
           case
               when s.id is null then 'no_user_session'
               when s.status = 'ended' and coalesce(s.ended_at, s.created_at) <= now() - make_interval(secs => $1)
                   then 'user_session_ended'
               when s.node_id is not null and not exists (
                   select 1 from nodes n
                   where n.node_id = s.node_id and n.heartbeat_at >= now() - make_interval(secs => $2)
               ) then 'node_dead'
               when a.expires_at < now() then 'expired'
           end as reason
    from avatar_sessions a
    left join user_sessions s on s.id = a.user_session_id
    where a.provider is not null and coalesce(a.session_status, '') not in ('ended', 'stopped')
) candidates
where reason is not null
order by expires_at nulls last, id
limit $3
"""


class AvatarSessionStore:
    """LiveAvatar session rows; tokens encrypted on write and decrypted on read."""

    def __init__(self, pool: asyncpg.Pool, cipher: TokenCipher) -> None:
        self._pool = pool
        self._cipher = cipher

    async def create(
        self,
        user_session_id: uuid.UUID,
        heygen_session_id: str,
        heygen_session_token: str,
        avatar_id: str,
        *,
        quality: str,
        voice_id: str | None,
        expires_at: datetime | None,
        status: str = "created",
    ) -> uuid.UUID:
        _check_status(status)
        avatar_session_id = uuid.uuid4()
        stored = self._cipher.encrypt(heygen_session_token, context=heygen_token_context(avatar_session_id))
        return await insert_avatar_session(
            self._pool,
            avatar_session_id,
            user_session_id,
            heygen_session_id,
            stored,
            avatar_id,
            provider=PROVIDER_LIVEAVATAR,
            quality=quality,
            voice_id=voice_id,
            expires_at=expires_at,
            status=status,
        )

    async def set_status(self, avatar_session_id: uuid.UUID, status: str) -> bool:
        """Move a session on; False if it is unknown or already ended/stopped (those are never revived)."""
        _check_status(status)
        result = await self._pool.execute(
            f"""
            update avatar_sessions
            set session_status = $2::text, last_activity_at = now(),
                stopped_at = case when $2::text in ('ended', 'stopped') then now() else stopped_at end
            where id = $1 and {_NOT_FINAL}
            """,
            avatar_session_id,
            status,
        )
        return result.endswith(" 1")

    async def set_heygen_ids(
        self, avatar_session_id: uuid.UUID, heygen_session_id: str, heygen_session_token: str
    ) -> bool:
        """The provider's ids once a start confirmed them; False if the session is unknown or over."""
        stored = self._cipher.encrypt(heygen_session_token, context=heygen_token_context(avatar_session_id))
        result = await self._pool.execute(
            f"""
            update avatar_sessions set heygen_session_id = $2, heygen_session_token = $3, last_activity_at = now()
            where id = $1 and {_NOT_FINAL}
            """,
            avatar_session_id,
            heygen_session_id,
            stored,
        )
        return result.endswith(" 1")

    async def get(self, avatar_session_id: uuid.UUID) -> AvatarSessionRecord | None:
        row = await self._pool.fetchrow(
            f"select {_RECORD_COLUMNS} from avatar_sessions where id = $1", avatar_session_id
        )
        return AvatarSessionRecord.from_row(row) if row else None

    async def get_for_user_session(self, user_session_id: uuid.UUID) -> AvatarSessionRecord | None:
        """The call's newest provider avatar session (a call may have started one again after a failure)."""
        row = await self._pool.fetchrow(
            f"""
            select {_RECORD_COLUMNS} from avatar_sessions
            where user_session_id = $1 and provider is not null
            order by created_at desc, id desc
            limit 1
            """,
            user_session_id,
        )
        return AvatarSessionRecord.from_row(row) if row else None

    async def token_of(self, avatar_session_id: uuid.UUID) -> tuple[str, str]:
        """(heygen_session_id, heygen_session_token) decrypted; LookupError if unknown, TokenDecryptError if unreadable."""
        row = await self._pool.fetchrow(
            "select heygen_session_id, heygen_session_token from avatar_sessions where id = $1", avatar_session_id
        )
        if row is None:
            raise LookupError(f"no avatar session {avatar_session_id}")
        token = self._cipher.decrypt(row["heygen_session_token"], context=heygen_token_context(avatar_session_id))
        return row["heygen_session_id"], token

    async def set_avatar_link(
        self,
        user_session_id: uuid.UUID,
        avatar_session_id: uuid.UUID | str,
        status: str,
        token_plaintext: str | None,
        expires_at: datetime | None,
    ) -> bool:
        """Point the user session at its avatar session, with the token encrypted; False if no such session."""
        context = avatar_link_context(user_session_id)
        stored = None if token_plaintext is None else self._cipher.encrypt(token_plaintext, context=context)
        result = await self._pool.execute(
            """
            update user_sessions
            set avatar_session_id = $2, avatar_status = $3, avatar_session_token = $4, avatar_session_expires_at = $5
            where id = $1
            """,
            user_session_id,
            str(avatar_session_id),
            status,
            stored,
            expires_at,
        )
        return result.endswith(" 1")

    async def avatar_link_token(self, user_session_id: uuid.UUID) -> str | None:
        """The user session's avatar token decrypted; None if it has none. TokenDecryptError if unreadable."""
        stored = await self._pool.fetchval(
            "select avatar_session_token from user_sessions where id = $1", user_session_id
        )
        if stored is None:
            return None
        return self._cipher.decrypt(stored, context=avatar_link_context(user_session_id))

    async def orphaned_sessions(
        self, *, node_stale_after_s: float, ended_grace_s: float = 30.0, limit: int = 100
    ) -> list[OrphanAvatar]:
        """Provider sessions not ended/stopped whose call is gone (no user session, the user session
        ended over ended_grace_s ago, or its node stopped heartbeating node_stale_after_s ago) or which
        expired; the soonest expiring first."""
        rows = await self._pool.fetch(_ORPHANS_SQL, float(ended_grace_s), float(node_stale_after_s), limit)
        return [self._orphan(row) for row in rows]

    async def mark_stopped(self, avatar_session_id: uuid.UUID, status: str = "stopped") -> bool:
        """Set a final status once: of several callers (nodes sweeping at once) exactly one gets True."""
        if status not in FINAL_STATUSES:
            raise ValueError(f"a stopped avatar session's status is one of {', '.join(FINAL_STATUSES)}, not {status!r}")
        result = await self._pool.execute(
            f"""
            update avatar_sessions set session_status = $2, stopped_at = now(), last_activity_at = now()
            where id = $1 and {_NOT_FINAL}
            """,
            avatar_session_id,
            status,
        )
        return result.endswith(" 1")

    def _orphan(self, row: asyncpg.Record) -> OrphanAvatar:
        fields = dict(row)
        try:
            token: str | None = self._cipher.decrypt(
                fields.pop("heygen_session_token"), context=heygen_token_context(row["id"])
            )
        except TokenDecryptError as exc:
            log.warning("orphaned avatar session %s: token unreadable: %s", row["id"], exc)
            token = None
        return OrphanAvatar(avatar_session_id=fields.pop("id"), heygen_session_token=token, **fields)
