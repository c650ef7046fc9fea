"""Usage per UTC day of a month (table usage_daily, filled by a trigger on usage_ledger: migration 0007)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

import asyncpg

from storage.usage import DEFAULT_PLAN, USAGE_TYPES, checked_now, limits_sql, period_sql


@dataclass(frozen=True)
class DailyUsage:
    """One month from its first day up to today (the database's UTC day), in base units."""

    period_start: date
    days: list[date]  # period_start .. today, every day, oldest first
    daily: dict[str, list[int]]  # usage type -> amount per day, aligned with `days`
    limits: dict[str, int | None]  # usage type -> monthly limit; None = unlimited


class DailyUsageRepository:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def month(self, user_id: str, *, now: datetime | None = None) -> DailyUsage:
        """The user's month of `now` (default the database's now), day by day for every usage type."""
        now = checked_now(now)
        async with self._pool.acquire() as conn:
            # The database's clock decides the month and today, as it does for the ledger the trigger follows.
            bounds = await conn.fetchrow(
                f"select {period_sql('$1')} as period, (coalesce($1::timestamptz, now()) at time zone 'UTC')::date as today",
                now,
            )
            period: date = bounds["period"]
            today: date = bounds["today"]
            rows = await conn.fetch(
                """
                select day, usage_type, amount from usage_daily
                where user_id = $1 and day >= $2 and day <= $3
                """,
                user_id,
                period,
                today,
            )
            limit_rows = await conn.fetch(limits_sql("$1", "$2", "$3"), user_id, list(USAGE_TYPES), DEFAULT_PLAN)
        days = [date.fromordinal(n) for n in range(period.toordinal(), today.toordinal() + 1)]
        index = {day: i for i, day in enumerate(days)}
        daily = {usage_type: [0] * len(days) for usage_type in USAGE_TYPES}
        for row in rows:
            if row["usage_type"] in daily:  # a type no longer known stays stored but is not shown
                daily[row["usage_type"]][index[row["day"]]] = int(row["amount"])
        found = {row["usage_type"]: row["monthly_limit"] for row in limit_rows}
        limits = {usage_type: found.get(usage_type) for usage_type in USAGE_TYPES}
        return DailyUsage(period, days, daily, limits)
