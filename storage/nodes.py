"""Server processes: heartbeats, and ending the calls of a process that restarted or went silent."""

from __future__ import annotations

import uuid

import asyncpg

from storage.quotas import release_reservations

# Ends the live sessions of the nodes named by $1 (a subquery fragment). Rows are locked in id order
# so several nodes reaping at once neither deadlock nor end a call twice: the one that waited sees
# the session ended and skips it. A call ends when its meters last moved, else now.
_END_SQL = """
with doomed as (
    select s.id from user_sessions s
    where s.node_id in ({nodes}) and s.status <> 'ended'
    order by s.id
    for update of s
)
update user_sessions s
set status = 'ended',
    end_reason = $1,
    ended_at = coalesce((select max(m.updated_at) from session_meters m where m.session_id = s.id), now())
from doomed d
where s.id = d.id
returning s.id
"""


class NodeRepository:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def heartbeat(self, node_id: str) -> None:
        await self._pool.execute(
            """
            insert into nodes(node_id) values ($1)
            on conflict (node_id) do update set heartbeat_at = now()
            """,
            node_id,
        )

    async def is_stale(self, node_id: str, stale_after_s: float) -> bool:
        """Whether the node's heartbeat is older than stale_after_s (an unknown node is stale)."""
        fresh = await self._pool.fetchval(
            "select heartbeat_at >= now() - make_interval(secs => $2) from nodes where node_id = $1",
            node_id,
            float(stale_after_s),
        )
        return not fresh

    async def end_sessions_of(self, node_id: str, reason: str) -> list[uuid.UUID]:
        """A node starting again ends the calls its previous run owned; returns the sessions ended."""
        return await self._end(_END_SQL.format(nodes="$2"), reason, node_id)

    async def reap_dead(self, stale_after_s: float, reason: str = "node_lost") -> list[uuid.UUID]:
        """End the calls of every node whose heartbeat is older than stale_after_s; returns them."""
        nodes = "select node_id from nodes where heartbeat_at < now() - make_interval(secs => $2)"
        return await self._end(_END_SQL.format(nodes=nodes), reason, float(stale_after_s))

    async def _end(self, sql: str, reason: str, nodes_arg: object) -> list[uuid.UUID]:
        async with self._pool.acquire() as conn, conn.transaction():
            ended = [row["id"] for row in await conn.fetch(sql, reason, nodes_arg)]
            await release_reservations(conn, ended)
        return ended
