"""Users, keyed by the id their access token carries."""

from __future__ import annotations

import asyncpg


class UserRepository:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def ensure(self, user_id: str) -> None:
        """Create the user on first sight; remember when we last saw them."""
        await self._pool.execute(
            """
            insert into users(id) values ($1)
            on conflict (id) do update set last_seen_at = now()
            """,
            user_id,
        )

    async def exists(self, user_id: str) -> bool:
        return bool(await self._pool.fetchval("select exists(select 1 from users where id = $1)", user_id))

    async def plan_of(self, user_id: str) -> str | None:
        """The user's plan, or None for a user not stored yet (who is on the default plan)."""
        return await self._pool.fetchval("select plan from users where id = $1", user_id)
