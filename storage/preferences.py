"""Each user's preferences: the defaults their new sessions take (avatar, voice, quality)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import asyncpg


@dataclass(frozen=True)
class Preferences:
    avatar_id: str | None = None
    voice_id: str | None = None
    quality: str = "medium"
    enable_avatar: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


PREFERENCE_FIELDS = tuple(f.name for f in fields(Preferences))


class PreferencesRepository:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def get(self, user_id: str) -> Preferences:
        """The user's stored preferences, or the defaults for a user who never set any."""
        row = await self._pool.fetchrow(
            "select avatar_id, voice_id, quality, enable_avatar from user_preferences where user_id = $1", user_id
        )
        return Preferences(**dict(row)) if row is not None else Preferences()

    async def saved(self, user_id: str) -> bool:
        """Whether the user ever set preferences (a page may keep its own defaults until then)."""
        return bool(await self._pool.fetchval("select exists(select 1 from user_preferences where user_id = $1)", user_id))

    async def update(self, user_id: str, changes: Mapping[str, Any]) -> Preferences:
        """Set the given fields (already validated), keep the others; returns all of them as stored.

        One statement per step in one transaction: two concurrent updates of different fields both land."""
        unknown = set(changes) - set(PREFERENCE_FIELDS)
        if unknown:
            raise ValueError(f"unknown preferences: {', '.join(sorted(unknown))}")
        given = [name in changes for name in PREFERENCE_FIELDS]
        values = [changes.get(name) for name in PREFERENCE_FIELDS]
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("insert into users(id) values ($1) on conflict (id) do nothing", user_id)
            row = await conn.fetchrow(
                """
                insert into user_preferences as p (user_id, avatar_id, voice_id, quality, enable_avatar)
                values ($1, $2, $3, coalesce($4, 'medium'), coalesce($5, false))
                on conflict (user_id) do update set
                    avatar_id = case when $6 then excluded.avatar_id else p.avatar_id end,
                    voice_id = case when $7 then excluded.voice_id else p.voice_id end,
                    quality = case when $8 then excluded.quality else p.quality end,
                    enable_avatar = case when $9 then excluded.enable_avatar else p.enable_avatar end,
                    updated_at = now()
                returning avatar_id, voice_id, quality, enable_avatar
                """,
                user_id,
                *values,
                *given,
            )
        return Preferences(**dict(row))
