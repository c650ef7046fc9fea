"""What a call's life writes to storage: its start, its quota guard, its avatar rows, its end."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from decimal import Decimal

from media.avatar_event_log import AvatarEventLog
from media.avatar_presence import AvatarPresence
from media.avatar_service import RENDERED_AVATAR_ID, AvatarService
from media.call import Call
from media.quota_guard import QuotaGuard, QuotaPolicy
from media.usage_flusher import UsageFlusher
from storage.avatar_usage import AvatarSessionRepository
from storage.quotas import QuotaRepository
from storage.sessions import SessionRepository
from storage.usage import UsageRepository

AVATAR_USAGE_TYPE = "avatar_video_seconds"
logger = logging.getLogger(__name__)


@dataclass
class Accounting:
    """Metering and quota for every call on this node."""

    flusher: UsageFlusher
    quotas: QuotaRepository
    usage: UsageRepository
    policy: QuotaPolicy
    avatars: AvatarSessionRepository
    avatar_cost_per_minute: Decimal
    sessions: SessionRepository
    node_id: str
    # The usage types every call of this node's pipeline consumes; the avatar's is added per call.
    call_usage_types: tuple[str, ...]
    avatar_service: AvatarService
    _avatar_presence: dict[str, tuple[AvatarPresence, AvatarEventLog]] = field(default_factory=dict)

    async def claim(self, session_id: uuid.UUID) -> bool:
        """Take the session for a call on this node: False if it is offered elsewhere or ended."""
        return await self.sessions.mark_connecting(session_id, self.node_id)

    async def end_reason(self, session_id: uuid.UUID) -> str | None:
        """Why the session ended, if it has (a claim that failed: a hang-up won, or another node took it)."""
        return await self.sessions.end_reason_of(session_id)

    async def unclaim(self, session_id: uuid.UUID) -> None:
        """Give back a claim whose offer was refused, so the session can take another offer."""
        await self.sessions.unclaim(session_id, self.node_id)

    async def call_started(self, call: Call) -> None:
        """The offer was accepted: guard the call's quota. An error here makes the caller end the call,
        so no call ever runs without its guard."""
        types = self.call_usage_types + ((AVATAR_USAGE_TYPE,) if call.avatar is not None else ())
        guard = QuotaGuard(
            call.session_id,
            call.user_id,
            types,
            call.usage_snapshot,
            call.events,
            lambda usage_type: self._on_exhausted(call, usage_type),
            self.quotas,
            self.usage,
            self.policy,
        )
        call.run_task(guard.run(), "quota_guard", critical=True)
        # A LiveAvatar starts now (its rows exist since the session was made); else the rendered face.
        try:
            avatar_session_id = await self.avatar_service.attach(call)
        except Exception as exc:  # the call goes on with the fallback avatar
            logger.warning("call %s: starting its avatar failed", call.session_id, exc_info=True)
            call.events.publish("error", code="avatar_failed", message=f"the avatar could not start: {exc}")
            avatar_session_id = None
        if call.avatar is not None:
            log = AvatarEventLog(
                self.avatars, self.sessions, call.session_id, RENDERED_AVATAR_ID, self.avatar_cost_per_minute, avatar_session_id
            )
            self._avatar_presence[call.session_id] = (AvatarPresence(call.avatar, call.events, log), log)

    @staticmethod
    def _on_exhausted(call: Call, usage_type: str) -> bool:
        """A usage type ran out: the avatar can go and the call lives on; anything else ends it."""
        if usage_type == AVATAR_USAGE_TYPE and call.avatar is not None:
            call.stop_avatar("quota_exhausted")
            return True
        call.close_soon("quota_exhausted")
        return False

    async def connected(self, call: Call) -> None:
        await self.sessions.mark_connected(uuid.UUID(call.session_id))

    async def ended(self, call: Call, reason: str) -> None:
        avatar = self._avatar_presence.pop(call.session_id, None)
        if avatar is not None:
            avatar[0].end()
        if call.had_media:
            await self.flusher.call_ended(call, reason, avatar[1].drain if avatar else None)
        else:
            await self.sessions.end(uuid.UUID(call.session_id), reason)
