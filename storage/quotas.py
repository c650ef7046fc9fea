"""Monthly quotas: effective limits, and reservations a live call draws its allowance from.

A call reserves small chunks; its meters' flushes consume them and the end of the call gives back
the rest. Rows are always locked in one order, session, then reservation, then ledger rows
(by user, period, type), so reservations, flushes, releases and reaping cannot deadlock.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

import asyncpg

from storage.usage import DEFAULT_PLAN, USAGE_TYPES, checked_now, limits_sql, period_sql

# Gives every outstanding reservation of the sessions back to the ledger and zeroes it.
_RELEASE_SQL = """
with held as (
    select session_id, usage_type, user_id, period, reserved
    from quota_reservations
    where session_id = any($1::uuid[]) and reserved > 0
    order by session_id, usage_type
    for update
),
cleared as (
    update quota_reservations q set reserved = 0
    from held h
    where q.session_id = h.session_id and q.usage_type = h.usage_type
    returning h.user_id, h.period, h.usage_type, h.reserved
),
given as (
    select user_id, period, usage_type, sum(reserved)::bigint as amount
    from cleared
    group by user_id, period, usage_type
),
locked as (
    select l.user_id, l.period, l.usage_type, g.amount
    from usage_ledger l
    join given g on g.user_id = l.user_id and g.period = l.period and g.usage_type = l.usage_type
    order by l.user_id, l.period, l.usage_type
    for update of l
)
update usage_ledger l set reserved = greatest(l.reserved - k.amount, 0)
from locked k
where l.user_id = k.user_id and l.period = k.period and l.usage_type = k.usage_type
"""

# The grant, computed and applied under the ledger row's lock: least(chunk, what remains), or the
# whole chunk when unlimited. Updates nothing when nothing remains.
_GRANT_SQL = f"""
update usage_ledger l
set reserved = l.reserved + g.amount
from (
    select case when lim.monthly_limit is null then $4::bigint
                else least($4::bigint, lim.monthly_limit - cur.used - cur.reserved) end as amount
    from usage_ledger cur
    cross join ({limits_sql("$1", "$5", "$6")}) lim
    where cur.user_id = $1 and cur.period = $2 and cur.usage_type = $3
    for update of cur
) g
where l.user_id = $1 and l.period = $2 and l.usage_type = $3 and g.amount > 0
returning g.amount
"""


def _check_type(usage_type: str) -> None:
    if usage_type not in USAGE_TYPES:
        raise ValueError(f"unknown usage type {usage_type!r}; known: {', '.join(USAGE_TYPES)}")


async def release_reservations(conn: asyncpg.Connection | asyncpg.Pool, session_ids: Sequence[uuid.UUID]) -> None:
    """Give the sessions' outstanding reservations back to the ledger; idempotent."""
    if session_ids:
        await conn.execute(_RELEASE_SQL, list(session_ids))


async def _limits(conn: asyncpg.Connection | asyncpg.Pool, user_id: str) -> dict[str, int | None]:
    rows = await conn.fetch(limits_sql("$1", "$2", "$3"), user_id, list(USAGE_TYPES), DEFAULT_PLAN)
    found = {row["usage_type"]: row["monthly_limit"] for row in rows}
    return {usage_type: found[usage_type] for usage_type in USAGE_TYPES}


class QuotaRepository:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def limits(self, user_id: str) -> dict[str, int | None]:
        """Monthly limit per usage type in base units; None = unlimited."""
        return await _limits(self._pool, user_id)

    async def set_limits(self, user_id: str, limits: Mapping[str, int | None]) -> dict[str, int | None]:
        """Override some of the user's limits (None = unlimited); returns all effective limits."""
        for usage_type, limit in limits.items():
            _check_type(usage_type)
            if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 0):
                raise ValueError(f"the limit of {usage_type} must be an integer >= 0 or None, got {limit!r}")
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("insert into users(id) values ($1) on conflict (id) do nothing", user_id)
            await conn.execute(
                """
                insert into user_quota_overrides(user_id, usage_type, monthly_limit)
                select $1, t.usage_type, t.monthly_limit
                from unnest($2::text[], $3::bigint[]) as t(usage_type, monthly_limit)
                on conflict (user_id, usage_type) do update
                set monthly_limit = excluded.monthly_limit, updated_at = now()
                """,
                user_id,
                list(limits.keys()),
                list(limits.values()),
            )
            return await _limits(conn, user_id)

    async def reserve(
        self, session_id: uuid.UUID, user_id: str, usage_type: str, chunk: int, *, now: datetime | None = None
    ) -> int:
        """Grant the call min(chunk, what remains of the month); returns the grant (0 = nothing left).

        Unlimited types always grant the chunk. A session that is ended, missing, or not this
        user's gets nothing: nothing would ever give its reservation back.
        """
        _check_type(usage_type)
        if not isinstance(chunk, int) or isinstance(chunk, bool) or chunk < 0:
            raise ValueError(f"chunk must be an integer >= 0, got {chunk!r}")
        now = checked_now(now)
        if chunk == 0:
            return 0
        async with self._pool.acquire() as conn, conn.transaction():
            # FOR SHARE waits for a concurrent end of the session (which releases) and sees its result.
            session = await conn.fetchrow(
                f"""
                select s.status <> 'ended' as live, {period_sql("$3")} as period
                from user_sessions s where s.id = $1 and s.user_id = $2
                for share of s
                """,
                session_id,
                user_id,
                now,
            )
            if session is None or not session["live"]:
                return 0
            period = session["period"]
            # The reservation row is locked before the ledger row, as a flush locks them.
            held = await conn.fetchrow(
                """
                insert into quota_reservations as q (session_id, usage_type, user_id, period)
                values ($1, $2, $3, $4)
                on conflict (session_id, usage_type) do update set reserved = q.reserved
                returning q.period, q.reserved
                """,
                session_id,
                usage_type,
                user_id,
                period,
            )
            if held["period"] != period:
                # A call that crossed into a new month gives last month's hold back first.
                await conn.execute(
                    """
                    update usage_ledger set reserved = greatest(reserved - $4, 0)
                    where user_id = $1 and period = $2 and usage_type = $3
                    """,
                    user_id,
                    held["period"],
                    usage_type,
                    held["reserved"],
                )
                await conn.execute(
                    "update quota_reservations set period = $3, reserved = 0 where session_id = $1 and usage_type = $2",
                    session_id,
                    usage_type,
                    period,
                )
            await conn.execute(
                """
                insert into usage_ledger(user_id, period, usage_type) values ($1, $2, $3)
                on conflict (user_id, period, usage_type) do nothing
                """,
                user_id,
                period,
                usage_type,
            )
            granted = await conn.fetchval(_GRANT_SQL, user_id, period, usage_type, chunk, [usage_type], DEFAULT_PLAN)
            if not granted:
                return 0
            await conn.execute(
                "update quota_reservations set reserved = reserved + $3 where session_id = $1 and usage_type = $2",
                session_id,
                usage_type,
                granted,
            )
            return int(granted)

    async def release(self, session_id: uuid.UUID) -> None:
        """Give back what the session holds and has not consumed; idempotent."""
        await release_reservations(self._pool, [session_id])

    async def exhausted_types(
        self, user_id: str, types: Iterable[str], *, now: datetime | None = None
    ) -> list[str]:
        """The given types that have a limit and nothing left this month (reservations count as taken)."""
        wanted = list(types)
        for usage_type in wanted:
            _check_type(usage_type)
        rows = await self._pool.fetch(
            f"""
            select lim.usage_type
            from ({limits_sql("$1", "$2", "$4")}) lim
            left join usage_ledger l
                   on l.user_id = $1 and l.period = {period_sql("$3")} and l.usage_type = lim.usage_type
            where lim.monthly_limit is not null
              and lim.monthly_limit - coalesce(l.used, 0) - coalesce(l.reserved, 0) <= 0
            """,
            user_id,
            wanted,
            checked_now(now),
            DEFAULT_PLAN,
        )
        exhausted = {row["usage_type"] for row in rows}
        return [usage_type for usage_type in wanted if usage_type in exhausted]
