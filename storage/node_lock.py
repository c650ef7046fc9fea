"""One live process per NODE_ID: a session-level advisory lock held on a connection of its own.

The lock lives as long as that connection, so it needs a real Postgres session: a direct
connection or a session-mode pooler, never a transaction-mode pooler.
"""

from __future__ import annotations

import asyncio
import logging
import secrets

import asyncpg

log = logging.getLogger(__name__)

# hashtextextended's seed: keeps node ids apart from the other advisory keys (sessions.py seeds with 1).
_LOCK_SEED = 0x6E6F6465  # "node"
_LOCK_SQL = "select pg_try_advisory_lock(hashtextextended($1, $2))"
# A host that vanishes without closing its socket would hold the lock until the kernel gives up on
# the connection (hours by default); these make Postgres notice within about half a minute.
_KEEPALIVES = {"tcp_keepalives_idle": "10", "tcp_keepalives_interval": "5", "tcp_keepalives_count": "3"}
_STALE_RELEASE_TRIES = 20  # 100 ms apart: how long an ended stale backend may take to let go


class NodeIdTaken(Exception):
    """Another live process holds this NODE_ID; `run.py` exits with status 2."""

    def __init__(self, node_id: str) -> None:
        super().__init__(f"another live process already runs as NODE_ID={node_id}")
        self.node_id = node_id


class NodeLock:
    """Holds NODE_ID's advisory lock for the life of the process, taking it again after a reconnect."""

    def __init__(self, url: str, node_id: str, *, timeout_s: float = 5.0) -> None:
        self._url = url
        self.node_id = node_id
        self._timeout_s = timeout_s
        # Marks this process's lock connections, so a dropped one that Postgres still keeps open
        # is told apart from another process holding the lock.
        self._tag = f"node-lock {secrets.token_hex(8)}"
        self._conn: asyncpg.Connection | None = None

    @property
    def held(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    async def acquire(self) -> None:
        """Take the lock at start; raises NodeIdTaken if another live process holds it."""
        if not await self._take():
            raise NodeIdTaken(self.node_id)

    async def check(self) -> bool:
        """Whether this process still holds the lock, taking it again if its connection dropped.

        False: another process took it meanwhile. Raises when the database cannot be reached
        (the caller tries again later).
        """
        if self.held:
            assert self._conn is not None
            try:
                await self._conn.fetchval("select 1", timeout=self._timeout_s)
                return True
            except Exception as exc:  # whatever broke it, a new session either gets the lock or proves it gone
                log.warning("NODE_ID lock connection lost (%s); taking the lock again", exc)
                await self._drop()
        return await self._take()

    async def release(self) -> None:
        """Closing the session releases the lock."""
        await self._drop()

    async def _take(self) -> bool:
        conn = await asyncpg.connect(
            self._url, timeout=self._timeout_s, server_settings={"application_name": self._tag, **_KEEPALIVES}
        )
        try:
            taken = await conn.fetchval(_LOCK_SQL, self.node_id, _LOCK_SEED, timeout=self._timeout_s)
            if not taken and await self._end_own_stale_sessions(conn):
                for _ in range(_STALE_RELEASE_TRIES):
                    taken = await conn.fetchval(_LOCK_SQL, self.node_id, _LOCK_SEED, timeout=self._timeout_s)
                    if taken:
                        break
                    await asyncio.sleep(0.1)
        except BaseException:
            await conn.close(timeout=self._timeout_s)
            raise
        if not taken:
            await conn.close(timeout=self._timeout_s)
            return False
        self._conn = conn
        return True

    async def _end_own_stale_sessions(self, conn: asyncpg.Connection) -> bool:
        """End this process's earlier lock sessions that Postgres has not seen drop; returns whether any."""
        ended = await conn.fetch(
            "select pg_terminate_backend(pid) from pg_stat_activity where application_name = $1 and pid <> pg_backend_pid()",
            self._tag,
            timeout=self._timeout_s,
        )
        if ended:
            log.warning("ended %d stale lock session(s) of this process for NODE_ID=%s", len(ended), self.node_id)
        return bool(ended)

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            try:
                await conn.close(timeout=self._timeout_s)
            except Exception:  # already gone: Postgres releases the lock with the session
                conn.terminate()
