"""The calls live on this node, and what their lifecycle writes to storage."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from aiortc import RTCIceServer

from media.avatar_event_log import AvatarEventLog
from media.avatar_presence import AvatarPresence
from media.avatar_track import AvatarVideoTrack
from media.call import Call
from media.pipeline import PipelineFactory
from media.quota_guard import QuotaGuard, QuotaPolicy
from media.usage_flusher import UsageFlusher
from storage.avatar_usage import AvatarSessionRepository
from storage.quotas import QuotaRepository
from storage.sessions import SessionRepository
from storage.usage import UsageRepository

log = logging.getLogger(__name__)


@dataclass
class Accounting:
    """Metering and quota for every call on this node."""

    flusher: UsageFlusher
    quotas: QuotaRepository
    usage: UsageRepository
    policy: QuotaPolicy
    avatars: AvatarSessionRepository
    avatar_cost_per_minute: Decimal


class CallRegistry:
    """Creates at most one Call per session, records its states, meters and guards it, ends them all at shutdown."""

    def __init__(
        self,
        sessions: SessionRepository,
        *,
        node_id: str,
        ice_servers: list[RTCIceServer],
        pipeline_factory: PipelineFactory,
        avatar_factory: Callable[[], AvatarVideoTrack] | None,
        accounting: Callable[[CallRegistry], Accounting],
    ) -> None:
        self._sessions = sessions
        self._node_id = node_id
        self._ice_servers = ice_servers
        self._pipeline_factory = pipeline_factory
        self._avatar_factory = avatar_factory
        self._calls: dict[str, Call] = {}
        self._avatar_presence: dict[str, tuple[AvatarPresence, AvatarEventLog]] = {}
        self.accounting = accounting(self)

    def __len__(self) -> int:
        return len(self._calls)

    def get(self, session_id: uuid.UUID) -> Call | None:
        return self._calls.get(str(session_id))

    def live_calls(self) -> list[Call]:
        """Calls that have media (an accepted offer) and have not ended."""
        return [c for c in self._calls.values() if c.state in ("connecting", "connected")]

    def get_or_create(self, session_id: uuid.UUID, user_id: str) -> Call:
        key = str(session_id)
        call = self._calls.get(key)
        if call is None:
            call = Call(
                key,
                user_id,
                ice_servers=self._ice_servers,
                pipeline_factory=self._pipeline_factory,
                avatar_factory=self._avatar_factory,
                on_connected=self._record_connected,
                on_ended=self._record_ended,
            )
            self._calls[key] = call
        return call

    async def call_started(self, call: Call) -> None:
        """The offer was accepted: record it and start guarding the call's quota."""
        await self._sessions.mark_connecting(uuid.UUID(call.session_id), self._node_id)
        accounting = self.accounting
        guard = QuotaGuard(
            call.session_id,
            call.user_id,
            call.usage_snapshot,
            call.events,
            call.close_soon,
            accounting.quotas,
            accounting.usage,
            accounting.policy,
        )
        call.run_task(guard.run(), "quota-guard")
        if call.avatar is not None:
            log_ = AvatarEventLog(
                accounting.avatars, self._sessions, call.session_id, "rendered-default", accounting.avatar_cost_per_minute
            )
            self._avatar_presence[call.session_id] = (AvatarPresence(call.avatar, call.events, log_), log_)

    async def _record_connected(self, call: Call, _: str) -> None:
        await self._sessions.mark_connected(uuid.UUID(call.session_id))

    async def _record_ended(self, call: Call, reason: str) -> None:
        self._calls.pop(call.session_id, None)
        avatar = self._avatar_presence.pop(call.session_id, None)
        if avatar is not None:
            avatar[0].end()
        if call.had_media:
            await self.accounting.flusher.call_ended(call, reason, avatar[1].drain if avatar else None)
        else:
            await self._sessions.end(uuid.UUID(call.session_id), reason)

    async def end(self, session_id: uuid.UUID, reason: str) -> bool:
        """End the call if it lives here; returns whether one did."""
        call = self._calls.get(str(session_id))
        if call is None:
            return False
        await call.close(reason)
        return True

    async def close_all(self, reason: str = "server_shutdown") -> None:
        calls = list(self._calls.values())
        results = await asyncio.gather(*(c.close(reason) for c in calls), return_exceptions=True)
        for call, result in zip(calls, results):
            if isinstance(result, BaseException):
                log.error("closing call %s failed", call.session_id, exc_info=result)
