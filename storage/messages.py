"""The messages of a session's conversation: user turns and agent replies, oldest first."""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

ROLES = ("user", "agent")
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
SOURCES = ("voice", "text")

_COLUMNS = (
    "seq, id, session_id, role, source, content, created_at, turn_start_ms, turn_end_ms, interrupted,"
    " spoken_characters, generated_characters"
)


@dataclass(frozen=True)
class NewMessage:
    """A message as the server made it; written (again, by id) when it changes, e.g. a reply cut short."""

    id: uuid.UUID
    session_id: uuid.UUID
    role: str  # user, agent
    source: str  # voice (spoken on the call), text (typed, or a reply not spoken)
    content: str
    created_at: datetime
    turn_start_ms: int | None = None
    turn_end_ms: int | None = None
    interrupted: bool = False
    spoken_characters: int | None = None
    generated_characters: int | None = None

    def __post_init__(self) -> None:
        if self.role not in ROLES or self.source not in SOURCES:
            raise ValueError(f"bad role {self.role!r} or source {self.source!r}")
        if self.created_at.utcoffset() is None:
            raise ValueError("created_at must be timezone-aware")


@dataclass(frozen=True)
class StoredMessage(NewMessage):
    seq: int = 0

    def to_json(self) -> dict[str, object]:
        return {
            "message_id": str(self.id),
            "session_id": str(self.session_id),
            "role": self.role,
            "source": self.source,
            "content": self.content,
            "created_at": self.created_at.isoformat(),
            "turn_start_ms": self.turn_start_ms,
            "turn_end_ms": self.turn_end_ms,
            "interrupted": self.interrupted,
            "spoken_characters": self.spoken_characters,
            "generated_characters": self.generated_characters,
        }


@dataclass(frozen=True)
class MessagePage:
    messages: list[StoredMessage]
    next_after: int | None  # the seq to continue after, None on the last page


def _storable(text: str) -> str:
    """Postgres text holds no NUL and only valid UTF-8: such characters become U+FFFD, the rest stays."""
    return _UNSTORABLE.sub("\ufffd", text)


class MessageRepository:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def write(self, message: NewMessage) -> None:
        """Insert the message, or update it by id (its place in the order stays where it was first written).

        A message of a session that no longer exists is dropped (the session was deleted meanwhile).
        """
        await self._pool.execute(
            """
            insert into messages (id, session_id, role, source, content, created_at, turn_start_ms, turn_end_ms,
                                  interrupted, spoken_characters, generated_characters)
            select $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11
            where exists (select 1 from user_sessions where id = $2)
            on conflict (id) do update
            set content = excluded.content, source = excluded.source, interrupted = excluded.interrupted,
                spoken_characters = excluded.spoken_characters, generated_characters = excluded.generated_characters
            where messages.session_id = excluded.session_id
            """,
            message.id,
            message.session_id,
            message.role,
            message.source,
            _storable(message.content),
            message.created_at,
            message.turn_start_ms,
            message.turn_end_ms,
            message.interrupted,
            message.spoken_characters,
            message.generated_characters,
        )

    async def page(self, session_id: uuid.UUID, *, after: int | None, limit: int) -> MessagePage:
        """Up to `limit` messages of the session after position `after` (None: from the first), in order."""
        rows = await self._pool.fetch(
            f"select {_COLUMNS} from messages where session_id = $1 and seq > $2 order by seq limit $3",
            session_id,
            after or 0,
            limit + 1,  # one more says whether another page follows
        )
        messages = [StoredMessage(**dict(row)) for row in rows[:limit]]
        next_after = messages[-1].seq if len(rows) > limit else None
        return MessagePage(messages, next_after)

    async def count(self, session_id: uuid.UUID) -> int:
        return int(await self._pool.fetchval("select count(*) from messages where session_id = $1", session_id))

    async def counts(self, session_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, int]:
        """Messages per session, for each of `session_ids` (0 for a session with none)."""
        rows = await self._pool.fetch(
            "select session_id, count(*) as n from messages where session_id = any($1::uuid[]) group by session_id",
            list(session_ids),
        )
        found = {row["session_id"]: int(row["n"]) for row in rows}
        return {session_id: found.get(session_id, 0) for session_id in session_ids}
