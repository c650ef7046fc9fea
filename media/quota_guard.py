"""Keeping one call inside its user's quota while it runs, and telling the browser how much is left.

Quota is reserved in chunks by an atomic UPDATE in Postgres, so calls of one user on several server
processes can never overspend by more than a chunk each. A chunk is the policy's base while the user's
month is nearly spent, and grows with what is left (a tenth of it, up to the policy's most): a call of a
user far from the limit reserves about once a minute instead of every few seconds, and near the limit
calls still share what is left in small pieces. When nothing more can be reserved
and the call has used what it holds, `on_exhausted(usage_type)` decides: the call loses what that
type pays for and goes on (the avatar), or it ends with reason `quota_exhausted`.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from storage.quotas import QuotaRepository
from storage.usage import TIME_USAGE_TYPES, UsageRepository

from media.call_usage import MeterSample, usage_summary
from media.events import EventBus

log = logging.getLogger(__name__)

CHECK_INTERVAL_S = 0.25
USAGE_EVENT_INTERVAL_S = 1.0
WARN_FRACTION = 0.8
WARN_REMAINING_US = 30_000_000


CHUNK_SHARE_OF_HEADROOM = 10  # a grown chunk takes at most a tenth of what the month has left


@dataclass(frozen=True)
class QuotaPolicy:
    chunk_us: int = 5_000_000  # time types: the base chunk
    chunk_count: int = 500  # characters, tokens
    max_chunk_us: int = 60_000_000  # the most a chunk grows to, far from the limit
    max_chunk_count: int = 6_000

    def bounds(self, usage_type: str) -> tuple[int, int]:
        """The base chunk and the most a chunk grows to, for this type."""
        if usage_type in TIME_USAGE_TYPES:
            return self.chunk_us, max(self.max_chunk_us, self.chunk_us)
        return self.chunk_count, max(self.max_chunk_count, self.chunk_count)

    def chunk(self, usage_type: str, headroom: int | None) -> int:
        """What to ask for, given what the user's month has left for anyone (None: not known yet)."""
        base, most = self.bounds(usage_type)
        if headroom is None:
            return base
        return min(max(headroom // CHUNK_SHARE_OF_HEADROOM, base), most)


@dataclass
class _Allowance:
    limit: int
    granted: int = 0
    others: int = 0  # what the user's other calls and past use took, as of the last look at the ledger
    headroom: int | None = None  # what the month had left for anyone (not reserved), as of that look
    exhausted: bool = False  # the last reservation got nothing
    warned: set[str] = field(default_factory=set)

    def remaining(self, consumed: int) -> int:
        return max(self.limit - self.others - consumed, 0)


class QuotaGuard:
    def __init__(
        self,
        session_id: str,
        user_id: str,
        usage_types: Iterable[str],
        snapshot: Callable[[], list[MeterSample]],
        events: EventBus,
        on_exhausted: Callable[[str], bool],
        quotas: QuotaRepository,
        usage: UsageRepository,
        policy: QuotaPolicy,
    ) -> None:
        self._session_id = uuid.UUID(session_id)
        self._user_id = user_id
        self._usage_types = frozenset(usage_types)  # only what this call consumes is guarded
        self._snapshot = snapshot
        self._events = events
        self._on_exhausted = on_exhausted  # returns whether the call goes on without that type
        self._quotas = quotas
        self._usage = usage
        self._policy = policy
        self._allowances: dict[str, _Allowance] = {}

    async def run(self) -> None:
        limits = await self._retry(lambda: self._quotas.limits(self._user_id))
        self._allowances = {
            t: _Allowance(limit) for t, limit in limits.items() if limit is not None and t in self._usage_types
        }
        loop = asyncio.get_running_loop()
        next_usage_event = loop.time()
        while True:
            samples = self._snapshot()
            consumed = self._consumed(samples)
            for usage_type, allowance in list(self._allowances.items()):
                used_now = consumed.get(usage_type, 0)
                base_chunk, _ = self._policy.bounds(usage_type)
                if allowance.granted - used_now < base_chunk // 2 and not allowance.exhausted:
                    await self._reserve(usage_type, allowance, used_now)
                self._warn(usage_type, allowance, used_now)
                if allowance.exhausted and used_now >= allowance.granted:
                    self._events.publish("quota_exhausted", usage_type=usage_type)
                    if not self._on_exhausted(usage_type):
                        return
                    del self._allowances[usage_type]
            if loop.time() >= next_usage_event:
                next_usage_event += USAGE_EVENT_INTERVAL_S
                self._events.publish("usage", **usage_summary(samples), quota=self._quota_view(consumed))
            await asyncio.sleep(CHECK_INTERVAL_S)

    @staticmethod
    def _consumed(samples: list[MeterSample]) -> dict[str, int]:
        return {s.usage_type: s.amount for s in samples if s.usage_type is not None}

    async def _reserve(self, usage_type: str, allowance: _Allowance, used_now: int) -> None:
        try:
            chunk = self._policy.chunk(usage_type, allowance.headroom)
            granted = await self._quotas.reserve(self._session_id, self._user_id, usage_type, chunk)
            period = await self._usage.period_usage(self._user_id)
        except Exception as exc:  # the database is away: the call goes on, we try again next check
            log.warning("quota reservation for %s failed: %s", self._session_id, exc)
            return
        allowance.granted += granted
        allowance.exhausted = granted == 0
        row = period.get(usage_type)
        if row is not None:
            # The ledger's used + reserved holds all we were granted: the rest is everyone else's.
            allowance.others = max(row.used + row.reserved - allowance.granted, 0)
            allowance.headroom = row.remaining

    def _warn(self, usage_type: str, allowance: _Allowance, used_now: int) -> None:
        remaining = allowance.remaining(used_now)
        levels = []
        if allowance.limit and (allowance.limit - remaining) >= WARN_FRACTION * allowance.limit:
            levels.append("80_percent")
        if usage_type in TIME_USAGE_TYPES and remaining <= WARN_REMAINING_US:
            levels.append("30_seconds")
        for level in levels:
            if level not in allowance.warned:
                allowance.warned.add(level)
                self._events.publish("quota_warning", usage_type=usage_type, level=level, **_amounts(usage_type, allowance.limit, remaining))

    def _quota_view(self, consumed: dict[str, int]) -> dict[str, dict[str, float | int]]:
        return {
            t: _amounts(t, a.limit, a.remaining(consumed.get(t, 0))) for t, a in self._allowances.items()
        }

    @staticmethod
    async def _retry(fetch):  # type: ignore[no-untyped-def]
        while True:
            try:
                return await fetch()
            except Exception as exc:
                log.warning("quota limits unavailable, retrying: %s", exc)
                await asyncio.sleep(1.0)


def _amounts(usage_type: str, limit: int, remaining: int) -> dict[str, float | int]:
    if usage_type in TIME_USAGE_TYPES:
        return {"limit_seconds": limit / 1_000_000, "remaining_seconds": remaining / 1_000_000}
    return {"limit": limit, "remaining": remaining}
