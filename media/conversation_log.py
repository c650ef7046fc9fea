"""A call's conversation written to the `messages` table, off the frame path.

The call hands every user turn and agent reply to its ConversationLog, which returns the message's id
at once and writes it from one background task, in order, through a bounded queue: the voice loop
never waits for the database, and a database that is away costs the messages, never a frame. A reply
is written when its text is complete and written again once it has been heard to its end or was cut
short (then as spoken). `aclose` (the call's end) drains what is left for a moment, then stops;
it is idempotent, so no writer task outlives its call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Protocol

from media.spoken_progress import SpokenProgress
from storage.messages import NewMessage

log = logging.getLogger(__name__)

_MAX_PENDING = 256  # messages waiting to be written; past this they are dropped (and logged)
_FLUSH_TIMEOUT_S = 5.0
_CLOSE_TIMEOUT_S = 2.0


class MessageStore(Protocol):
    async def write(self, message: NewMessage) -> None: ...


@dataclass(frozen=True)
class LoggedMessage:
    """A message handed to the log: its id and time are final, its row may not be written yet."""

    message_id: uuid.UUID
    created_at: datetime


class ConversationLog:
    def __init__(self, store: MessageStore | None, session_id: str) -> None:
        self._store = store
        try:
            self._session_id = uuid.UUID(session_id)
        except ValueError:
            if store is not None:
                raise
            # Nothing is written without a store: a pipeline made by a unit test may name its call freely.
            self._session_id = uuid.uuid5(uuid.NAMESPACE_URL, session_id)
        self._queue: asyncio.Queue[NewMessage] = asyncio.Queue(_MAX_PENDING)
        self._writer: asyncio.Task[None] | None = None
        self._closed = False
        self.dropped = 0

    def user_turn(
        self, content: str, source: str, *, turn_start_ms: int | None = None, turn_end_ms: int | None = None
    ) -> LoggedMessage:
        """A final user turn: a spoken one with its speech on the call's audio clock, or a typed one."""
        message = NewMessage(
            uuid.uuid4(), self._session_id, "user", source, content, datetime.now(UTC),
            turn_start_ms=turn_start_ms, turn_end_ms=turn_end_ms,
        )  # fmt: skip
        self._put(message)
        return LoggedMessage(message.id, message.created_at)

    def agent_reply(self, spoken: bool) -> ReplyRecord:
        """The record of a reply about to be written (and, if `spoken`, said on the call)."""
        return ReplyRecord(self, self._session_id, spoken)

    def _put(self, message: NewMessage) -> None:
        if self._store is None or self._closed:
            return
        try:
            self._queue.put_nowait(message)
        except asyncio.QueueFull:
            self.dropped += 1
            log.warning("call %s: message log full, dropped a %s message", self._session_id, message.role)
            return
        if self._writer is None:
            self._writer = asyncio.ensure_future(self._write_all())

    async def _write_all(self) -> None:
        assert self._store is not None
        while True:
            message = await self._queue.get()
            try:
                await self._store.write(message)
            except Exception as exc:  # the database is away: this message is lost, the call goes on
                self.dropped += 1
                log.warning("call %s: writing a %s message failed: %s", self._session_id, message.role, exc)
            finally:
                self._queue.task_done()

    async def flush(self, timeout: float = _FLUSH_TIMEOUT_S) -> None:
        """Wait (at most `timeout`) until everything handed over so far is written or given up."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), timeout)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self.flush(_CLOSE_TIMEOUT_S)
        if self._writer is not None:
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)


class ReplyRecord:
    """One agent reply's message: written when its text is complete, then once heard whole or stopped.

    Each step writes at most once and `finish` wins over a later `written`; nothing is written for a
    reply that produced no text at all.
    """

    def __init__(self, log_: ConversationLog, session_id: uuid.UUID, spoken: bool) -> None:
        self._log = log_
        self._spoken = spoken
        self._progress: SpokenProgress | None = None
        self._text = ""  # the text of a reply that is not spoken
        self._finished = False
        self.message = NewMessage(
            uuid.uuid4(), session_id, "agent", "voice" if spoken else "text", "", datetime.now(UTC)
        )

    @property
    def logged(self) -> LoggedMessage:
        return LoggedMessage(self.message.id, self.message.created_at)

    def follow(self, progress: SpokenProgress) -> None:
        """The speaker's progress: what was generated and what was heard."""
        self._progress = progress

    def text_so_far(self, text: str) -> None:
        """For a reply not spoken: its text as it grows."""
        self._text = text

    def written(self) -> None:
        """The whole text is there (and, spoken, queued): the message appears, not yet known as heard."""
        if not self._finished:
            self._write(interrupted=False, heard=False)

    def finish(self, *, interrupted: bool) -> None:
        """Heard to its end (or, not spoken, delivered), or cut short: the message as it stays."""
        if not self._finished:
            self._finished = True
            self._write(interrupted=interrupted, heard=True)

    def _write(self, *, interrupted: bool, heard: bool) -> None:
        generated = self._progress.generated if self._progress is not None else self._text.strip()
        if not generated:
            return
        spoken_chars: int | None = None
        content = generated
        if self._spoken and self._progress is not None and heard:
            spoken = self._progress.spoken
            spoken_chars = len(spoken)
            if interrupted:
                content = spoken  # stored as the listener heard it, not as it was written
        self.message = replace(
            self.message, content=content, interrupted=interrupted,
            spoken_characters=spoken_chars, generated_characters=len(generated),
        )  # fmt: skip
        self._log._put(self.message)
