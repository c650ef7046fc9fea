"""A user's past and present sessions, newest first, each with its usage totals and message count."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from storage.sessions import _COLUMNS, SessionRecord


@dataclass(frozen=True)
class SessionSummary:
    record: SessionRecord
    usage: dict[str, int]  # usage type -> base units (µs for *_seconds, else counts), as metered so far
    message_count: int


@dataclass(frozen=True)
class SessionPage:
    sessions: list[SessionSummary]
    # Where the next page starts: (created_at, id) of the last session here; None on the last page.
    next_before: tuple[datetime, uuid.UUID] | None


class SessionHistoryRepository:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def page(self, user_id: str, *, before: tuple[datetime, uuid.UUID] | None, limit: int) -> SessionPage:
        """Up to `limit` of the user's sessions older than `before` (None: from the newest).

        Ordered by (created_at, id) descending: a total order, so pages neither repeat nor skip a
        session even when two were created in the same microsecond.
        """
        created_before, id_before = before if before is not None else (None, None)
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                f"""
                select {_COLUMNS} from user_sessions
                where user_id = $1 and ($2::timestamptz is null or (created_at, id) < ($2, $3::uuid))
                order by created_at desc, id desc
                limit $4
                """,
                user_id,
                created_before,
                id_before,
                limit + 1,
            )
            records = [SessionRecord.from_row(row) for row in rows[:limit]]
            ids = [record.id for record in records]
            # Every meter billed as a usage type counts towards it, as the usage ledger sums them.
            usage_rows = await conn.fetch(
                """
                select session_id, usage_type, sum(amount)::bigint as amount from session_meters
                where session_id = any($1::uuid[]) and usage_type is not null
                group by session_id, usage_type
                """,
                ids,
            )
            count_rows = await conn.fetch(
                "select session_id, count(*) as n from messages where session_id = any($1::uuid[]) group by session_id",
                ids,
            )
        usage: dict[uuid.UUID, dict[str, int]] = {session_id: {} for session_id in ids}
        for row in usage_rows:
            usage[row["session_id"]][row["usage_type"]] = int(row["amount"])
        counts = {row["session_id"]: int(row["n"]) for row in count_rows}
        summaries = [SessionSummary(r, usage[r.id], counts.get(r.id, 0)) for r in records]
        last = records[-1] if len(rows) > limit else None
        return SessionPage(summaries, (last.created_at, last.id) if last is not None else None)
