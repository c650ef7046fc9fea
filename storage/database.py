"""Opening the asyncpg pool: DATABASE_URL if given, otherwise the embedded server."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from storage.embedded import EmbeddedPostgres
from storage.migrations import apply_migrations


async def _init_connection(conn: asyncpg.Connection) -> None:
    # jsonb columns in and out as Python objects.
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _keep_session(conn: asyncpg.Connection) -> None:
    """What a pooled connection needs on its way back beyond what asyncpg's pool always does (roll back
    an open transaction, drop its listeners): nothing.

    No code here leaves session state on a pooled connection: no SET outside a transaction, no LISTEN,
    no cursor outside a transaction, no session-level advisory lock (the node lock, the control bus and
    the migrations each have a connection of their own). asyncpg's default reset query (unlock every
    advisory lock, CLOSE ALL, UNLISTEN *, RESET ALL) would only give every pool query a second round
    trip: 182 -> 89 us a query on the embedded server.
    """


@dataclass
class Database:
    """The pool and, when embedded, the server behind it."""

    pool: asyncpg.Pool
    url: str
    embedded: EmbeddedPostgres | None = field(default=None)

    async def close(self) -> None:
        await self.pool.close()
        if self.embedded is not None:
            await self.embedded.stop()

    async def ping(self) -> bool:
        try:
            async with self.pool.acquire(timeout=2) as conn:
                return await conn.fetchval("select 1", timeout=2) == 1
        except (OSError, asyncpg.PostgresError, TimeoutError):
            return False


async def open_database(
    database_url: str | None,
    pgdata: Path,
    *,
    migrate: bool = True,
    min_size: int = 1,
    max_size: int = 10,
) -> Database:
    embedded: EmbeddedPostgres | None = None
    url = database_url
    if not url:
        embedded = EmbeddedPostgres(pgdata)
        url = await embedded.start()
    try:
        if migrate:
            # A connection of its own: the migrations' session-level lock goes with it, whatever happens.
            conn = await asyncpg.connect(url)
            try:
                await apply_migrations(conn)
            finally:
                await conn.close()
        pool = await asyncpg.create_pool(
            url, min_size=min_size, max_size=max_size, init=_init_connection, reset=_keep_session
        )
    except BaseException:
        if embedded is not None:
            await embedded.stop()
        raise
    return Database(pool=pool, url=url, embedded=embedded)
