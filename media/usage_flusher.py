"""Every live meter on this node goes to Postgres once a second, in one batched statement.

Stored values are absolute running totals (a monotonic upsert), so a retried flush never double
counts. If Postgres is away, media keeps flowing: totals stay in memory, and what a call's end
must write (its final totals, its end, its unused quota) waits here until the database is back.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from media.call_usage import MeterSample
from storage.quotas import QuotaRepository
from storage.sessions import SessionRepository
from storage.usage import MeterReading, UsageRepository

log = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 1.0


@dataclass
class _EndedCall:
    user_id: str
    reason: str
    final: list[MeterSample]
    drain: Callable[[], Awaitable[bool]] | None  # more of the call's rows to write (avatar events)


class LiveCall(Protocol):
    """What the flusher needs of a live call."""

    session_id: str
    user_id: str

    def usage_snapshot(self) -> list[MeterSample]:
        """Every meter of the call as an absolute running total."""


def readings_of(session_id: str, user_id: str, samples: Iterable[MeterSample]) -> list[MeterReading]:
    sid = uuid.UUID(session_id)
    return [MeterReading(sid, user_id, s.meter, s.kind, s.direction, s.usage_type, s.amount) for s in samples]


class UsageFlusher:
    def __init__(
        self,
        live_calls: Callable[[], Iterable[LiveCall]],
        usage: UsageRepository,
        sessions: SessionRepository,
        quotas: QuotaRepository,
        interval_s: float = FLUSH_INTERVAL_S,
    ) -> None:
        self._live_calls = live_calls
        self._usage = usage
        self._sessions = sessions
        self._quotas = quotas
        self._interval_s = interval_s
        self._ended: dict[str, _EndedCall] = {}
        # (session, meter) -> the total last written for a live call: a meter that has not moved since
        # is not sent again (Postgres would skip it anyway; most of a call's meters rest most seconds).
        self._written: dict[tuple[str, str], int] = {}
        self._lock = asyncio.Lock()  # one flush at a time: the loop and a call's end may race
        self.flushes = 0
        self.failures = 0
        self.last_success_at: float | None = None  # time.monotonic() of the last flush that wrote everything
        # Told of every flush's duration in seconds and whether it succeeded (the app's metrics).
        self.on_flushed: Callable[[float, bool], None] | None = None

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            await self.flush()

    async def call_ended(
        self, call: LiveCall, reason: str, drain: Callable[[], Awaitable[bool]] | None = None
    ) -> None:
        """Take the call's final totals and end, and try to write them now."""
        self._ended[call.session_id] = _EndedCall(call.user_id, reason, call.usage_snapshot(), drain)
        await self.flush()

    @property
    def pending_ends(self) -> int:
        return len(self._ended)

    async def flush(self) -> bool:
        async with self._lock:
            started = time.monotonic()
            ok = await self._flush_locked()
            if ok:
                self.last_success_at = time.monotonic()
            if self.on_flushed is not None:
                self.on_flushed(time.monotonic() - started, ok)
            return ok

    async def _flush_locked(self) -> bool:
        readings: list[MeterReading] = []
        moved: dict[tuple[str, str], int] = {}
        live: set[str] = set()
        written = self._written
        for call in self._live_calls():
            session_id = call.session_id
            if session_id not in self._ended:
                live.add(session_id)
                samples = [s for s in call.usage_snapshot() if written.get((session_id, s.meter)) != s.amount]
                moved.update(((session_id, s.meter), s.amount) for s in samples)
                readings.extend(readings_of(session_id, call.user_id, samples))
        ended = dict(self._ended)
        for session_id, end in ended.items():
            readings.extend(readings_of(session_id, end.user_id, end.final))  # all of them, at every try
        try:
            await self._usage.flush(readings)
            self._written = {key: amount for key, amount in written.items() if key[0] in live}
            self._written.update(moved)
            for session_id, end in ended.items():
                # Totals first, then the end, then the unused quota back: each step is idempotent.
                await self._sessions.end(uuid.UUID(session_id), end.reason)
                await self._quotas.release(uuid.UUID(session_id))
                if end.drain is not None and not await end.drain():
                    continue  # the rest waits for the next flush
                self._ended.pop(session_id, None)
        except Exception as exc:  # the database is away; everything stays to be written next time
            self.failures += 1
            log.warning("usage flush failed (%d calls waiting to end): %s", len(self._ended), exc)
            return False
        self.flushes += 1
        return True
