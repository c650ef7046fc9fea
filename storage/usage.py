"""Meters of calls and the monthly usage ledger, in integer base units (µs, characters, tokens)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

USAGE_TYPES = (
    "mic_audio_seconds",
    "speech_audio_seconds",
    "avatar_video_seconds",
    "stt_seconds",
    "tts_characters",
    "agent_tokens",
)
# Stored in microseconds; the API shows seconds.
TIME_USAGE_TYPES = tuple(t for t in USAGE_TYPES if t.endswith("_seconds"))
METER_KINDS = ("audio", "video", "time", "count")
METER_DIRECTIONS = ("inbound", "outbound", "none")
DEFAULT_PLAN = "free"

US_PER_SECOND = 1_000_000


def presented(usage_type: str, amount: int | None) -> float | int | None:
    """An amount as the API shows it: stored microseconds become seconds, counts stay whole, None (unlimited) stays."""
    if amount is None:
        return None
    return amount / US_PER_SECOND if usage_type in TIME_USAGE_TYPES else amount


def unit_of(usage_type: str) -> str:
    """The unit the API shows a type in: seconds for time types, else the type's last word (characters, tokens)."""
    return "seconds" if usage_type in TIME_USAGE_TYPES else usage_type.split("_")[-1]


def period_sql(param: str) -> str:
    """The first day of the UTC month of the timestamptz parameter, or of the database's now() if null.

    The database clock, not each node's, decides the month, so all nodes agree at the boundary.
    """
    return f"(date_trunc('month', coalesce({param}::timestamptz, now()) at time zone 'UTC'))::date"


def checked_now(now: datetime | None) -> datetime | None:
    """`now` as given, refused if naive: its month would depend on the node's local time zone."""
    if now is not None and now.utcoffset() is None:
        raise ValueError("now must be a timezone-aware datetime")
    return now


def limits_sql(user_param: str, types_param: str, plan_param: str) -> str:
    """Rows (usage_type, monthly_limit) of the user's effective limits: the plan's, overlaid by overrides.

    A user not stored yet is on the default plan; an override row with a null limit means unlimited.
    """
    return f"""
        select t.usage_type,
               case when o.user_id is not null then o.monthly_limit else pl.monthly_limit end as monthly_limit
        from unnest({types_param}::text[]) as t(usage_type)
        left join plan_limits pl
               on pl.plan = coalesce((select plan from users where id = {user_param}), {plan_param})
              and pl.usage_type = t.usage_type
        left join user_quota_overrides o on o.user_id = {user_param} and o.usage_type = t.usage_type
    """


@dataclass(frozen=True)
class MeterReading:
    """One meter of one call; amount is its ABSOLUTE running total, never an increment."""

    session_id: uuid.UUID
    user_id: str
    meter: str
    kind: str  # audio, video, time, count
    direction: str  # inbound, outbound, none
    usage_type: str | None  # the ledger type it is billed as, if any
    amount: int


@dataclass(frozen=True)
class MeterRow:
    meter: str
    kind: str
    direction: str
    usage_type: str | None
    amount: int


@dataclass(frozen=True)
class PeriodUsage:
    used: int
    reserved: int
    limit: int | None  # None = unlimited
    remaining: int | None  # None if unlimited; limit - used - reserved, floored at 0


# One statement, so a flush commits whole or not at all. Each step carries forward what the next
# needs, so every join is a primary-key lookup (never a CTE scanned once per row of another):
#   input      the readings, one per (session, meter) with the highest amount, only for sessions of
#              the user they name.
#   prev       the stored totals the readings exceed, row-locked in key order: a concurrent flush
#              of the same call waits, and the locked read rechecks the newest committed total, so
#              no rise is counted twice. Totals a reading does not exceed are neither locked nor
#              written, so updated_at is when the meter last rose.
#   raised     those totals set to the reading; the delta is new - old.
#   added      meters seen for the first time, whose first write fixes their kind, direction and
#              usage type; a concurrent first write of the same meter fails the statement on the
#              primary key (the retry then sees it) instead of counting twice.
#   deltas     the rise per (session, usage type).
#   held       the call's reservations of those types, row-locked (always before ledger rows).
#   consumed   each delta taken out of its call's reservation, as far as the reservation goes.
#   adjust     per ledger row, the used to add (in the flush's period).
#   given_back per ledger row, the reserved to take off (in the reservation's own period, which
#              differs only for a call that crossed a month), as one jsonb object to look keys up
#              in, because ON CONFLICT DO UPDATE cannot see its source row.
#   ledger     one upsert per ledger row, in key order so concurrent flushes cannot deadlock.
_FLUSH_SQL = f"""
with input as (
    select distinct on (r.session_id, r.meter)
           r.session_id, r.user_id, r.meter, r.kind, r.direction, r.usage_type, r.amount
    from unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[])
         as r(session_id, user_id, meter, kind, direction, usage_type, amount)
    join user_sessions s on s.id = r.session_id and s.user_id = r.user_id
    order by r.session_id, r.meter, r.amount desc
),
prev as (
    select m.session_id, m.meter, i.user_id, m.amount as old_amount, i.amount as new_amount
    from input i
    join session_meters m on m.session_id = i.session_id and m.meter = i.meter
    where i.amount > m.amount
    order by m.session_id, m.meter
    for no key update of m
),
raised as (
    update session_meters m
    set amount = p.new_amount,
        updated_at = greatest(m.updated_at, coalesce($8::timestamptz, now()))
    from prev p
    where m.session_id = p.session_id and m.meter = p.meter
    returning m.session_id, p.user_id, m.usage_type, p.new_amount - p.old_amount as delta
),
added as (
    insert into session_meters (session_id, meter, kind, direction, usage_type, amount, updated_at)
    select i.session_id, i.meter, i.kind, i.direction, i.usage_type, i.amount, coalesce($8::timestamptz, now())
    from input i
    where not exists (select 1 from session_meters m where m.session_id = i.session_id and m.meter = i.meter)
    returning session_id, usage_type, amount as delta
),
deltas as (
    select session_id, user_id, usage_type, sum(delta)::bigint as delta
    from (
        select session_id, user_id, usage_type, delta from raised
        union all
        select a.session_id, s.user_id, a.usage_type, a.delta
        from added a join user_sessions s on s.id = a.session_id
    ) d
    where usage_type is not null and delta > 0
    group by session_id, user_id, usage_type
),
held as (
    select q.session_id, q.usage_type, q.user_id, q.period, q.reserved, d.delta
    from deltas d
    join quota_reservations q on q.session_id = d.session_id and q.usage_type = d.usage_type
    where q.reserved > 0
    order by q.session_id, q.usage_type
    for update of q
),
consumed as (
    update quota_reservations q
    set reserved = h.reserved - least(h.delta, h.reserved)
    from held h
    where q.session_id = h.session_id and q.usage_type = h.usage_type
    returning h.user_id, h.period, h.usage_type, least(h.delta, h.reserved) as amount
),
adjust as (
    select user_id, period, usage_type, sum(used)::bigint as used
    from (
        select user_id, {period_sql("$8")} as period, usage_type, delta as used from deltas
        union all
        select user_id, period, usage_type, 0 from consumed
    ) a
    group by user_id, period, usage_type
),
given_back as (
    select coalesce(jsonb_object_agg(key, amount), '{{}}') as by_key
    from (
        select jsonb_build_array(user_id, period, usage_type)::text as key, sum(amount) as amount
        from consumed
        group by user_id, period, usage_type
    ) c
),
ledger as (
    insert into usage_ledger as l (user_id, period, usage_type, used, reserved)
    select user_id, period, usage_type, used, 0 from adjust
    order by user_id, period, usage_type
    on conflict (user_id, period, usage_type) do update
    set used = l.used + excluded.used,
        reserved = greatest(l.reserved - coalesce(
            ((select by_key from given_back) ->> jsonb_build_array(l.user_id, l.period, l.usage_type)::text)::bigint, 0
        ), 0)
    returning 1
)
select (select count(*) from raised) + (select count(*) from added) as written
"""


def _check(reading: MeterReading) -> None:
    if reading.usage_type is not None and reading.usage_type not in USAGE_TYPES:
        raise ValueError(f"unknown usage type {reading.usage_type!r} of meter {reading.meter!r}")
    if reading.kind not in METER_KINDS or reading.direction not in METER_DIRECTIONS:
        raise ValueError(f"meter {reading.meter!r}: bad kind {reading.kind!r} or direction {reading.direction!r}")
    if not isinstance(reading.amount, int) or isinstance(reading.amount, bool) or reading.amount < 0:
        raise ValueError(f"meter {reading.meter!r}: amount must be an integer >= 0, got {reading.amount!r}")


class UsageRepository:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def flush(self, readings: Sequence[MeterReading], *, now: datetime | None = None) -> int:
        """Write every reading in one statement; returns the meter rows written (new or raised).

        Monotonic: a stored total is only raised, and only the rise is billed, so a stale or
        retried flush (even one whose commit was acknowledged to nobody) writes and adds nothing.
        A reading of a session that does not exist, or is not the named user's, is not written.
        Two flushes writing the same new meter at the same moment make the later one fail on the
        primary key; nothing of it is kept, and retrying it (the totals are absolute) is exact.
        """
        if not readings:
            return 0
        for reading in readings:
            _check(reading)
        written = await self._pool.fetchval(
            _FLUSH_SQL,
            [r.session_id for r in readings],
            [r.user_id for r in readings],
            [r.meter for r in readings],
            [r.kind for r in readings],
            [r.direction for r in readings],
            [r.usage_type for r in readings],
            [r.amount for r in readings],
            checked_now(now),
        )
        return int(written)

    async def session_meters(self, session_id: uuid.UUID) -> list[MeterRow]:
        rows = await self._pool.fetch(
            "select meter, kind, direction, usage_type, amount from session_meters where session_id = $1 order by meter",
            session_id,
        )
        return [MeterRow(**dict(row)) for row in rows]

    async def period_usage(self, user_id: str, *, now: datetime | None = None) -> dict[str, PeriodUsage]:
        """Every usage type of the user's month (the month of `now`, default the database's now)."""
        rows = await self._pool.fetch(
            f"""
            select lim.usage_type, coalesce(l.used, 0) as used, coalesce(l.reserved, 0) as reserved,
                   lim.monthly_limit
            from ({limits_sql("$1", "$2", "$4")}) lim
            left join usage_ledger l
                   on l.user_id = $1 and l.period = {period_sql("$3")} and l.usage_type = lim.usage_type
            """,
            user_id,
            list(USAGE_TYPES),
            checked_now(now),
            DEFAULT_PLAN,
        )
        found = {row["usage_type"]: row for row in rows}
        result: dict[str, PeriodUsage] = {}
        for usage_type in USAGE_TYPES:
            row = found[usage_type]
            limit = row["monthly_limit"]
            remaining = None if limit is None else max(limit - row["used"] - row["reserved"], 0)
            result[usage_type] = PeriodUsage(row["used"], row["reserved"], limit, remaining)
        return result

    async def add_usage(self, user_id: str, usage_type: str, amount: int, *, now: datetime | None = None) -> int:
        """Add usage outside any call (a REST transcription, say) to the user's month; returns the month's used.

        One statement: the user and the ledger row are made on first use, and concurrent additions
        each land whole (the upsert takes the row lock), with nothing reserved for them beforehand.
        """
        if usage_type not in USAGE_TYPES:
            raise ValueError(f"unknown usage type {usage_type!r}")
        if not isinstance(amount, int) or isinstance(amount, bool) or amount < 0:
            raise ValueError(f"amount must be an integer >= 0, got {amount!r}")
        used = await self._pool.fetchval(
            f"""
            with new_user as (insert into users(id) values ($1) on conflict (id) do nothing)
            insert into usage_ledger as l (user_id, period, usage_type, used)
            values ($1, {period_sql("$4")}, $2, $3)
            on conflict (user_id, period, usage_type) do update set used = l.used + excluded.used
            returning l.used
            """,
            user_id,
            usage_type,
            amount,
            checked_now(now),
        )
        return int(used)
