"""The node's avatars: which one a session gets, its paid LiveAvatar session from creation to stop, and orphans.

A session that asks for the avatar (`"avatar": true`) with AVATAR_ENGINE=liveavatar gets its
LiveAvatar session token when the session is created: the avatar_sessions row (token encrypted)
is linked to the user session there. The call's offer starts it (media.avatar_relay). Sessions
that a killed node left running are stopped by `sweep_orphans`, from their stored tokens.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from agent_bridge.registry import AvatarEngines
from agent_bridge.rendered_avatar import RENDERED_AVATAR_ID
from media.avatar_relay import AvatarRelay
from storage.avatar_sessions import AvatarSessionStore
from storage.avatar_usage import AvatarSessionRepository
from storage.sessions import SessionRepository

if TYPE_CHECKING:
    from media.call import Call

log = logging.getLogger(__name__)

QUALITIES = ("low", "medium", "high", "very_high")
__all__ = ["QUALITIES", "RENDERED_AVATAR_ID", "AvatarOpened", "AvatarRequest", "AvatarService"]


@dataclass(frozen=True)
class AvatarRequest:
    avatar_id: str | None = None
    quality: str = "medium"
    voice_id: str | None = None


@dataclass(frozen=True)
class AvatarOpened:
    """What a new session's avatar is: its row, the provider's session id, and whether it is usable."""

    engine: str  # liveavatar or rendered
    status: str  # created, or failed / unavailable (the call gets the fallback)
    avatar_session_id: uuid.UUID | None = None
    heygen_session_id: str | None = None
    avatar_id: str | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"engine": self.engine, "status": self.status}
        if self.avatar_session_id is not None:
            body["avatar_session_id"] = str(self.avatar_session_id)
        if self.heygen_session_id is not None:
            body["heygen_session_id"] = self.heygen_session_id
        if self.avatar_id is not None:
            body["avatar_id"] = self.avatar_id
        if self.error is not None:
            body["error"] = self.error
        return body


class AvatarService:
    def __init__(
        self,
        engines: AvatarEngines,
        store: AvatarSessionStore | None,
        sessions: SessionRepository,
        rendered_rows: AvatarSessionRepository,
    ) -> None:
        # No store means no cipher for tokens, which only a node without the LiveAvatar may lack.
        if engines.liveavatar is not None and store is None:
            raise ValueError("the LiveAvatar needs a token store (AVATAR_TOKEN_KEYS)")
        self.engines = engines
        self.store = store
        self._sessions = sessions
        self._rendered_rows = rendered_rows
        self.sessions_stopped = 0  # by the sweeper

    @property
    def engine(self) -> str:
        if self.engines.liveavatar is not None:
            return "liveavatar"
        return "rendered" if self.engines.renderer is not None else "none"

    # -- at session creation -----------------------------------------------------------------

    async def open(self, user_session_id: uuid.UUID, request: AvatarRequest, expires_at: datetime) -> AvatarOpened:
        """The session asked for the avatar: make its LiveAvatar session (a token, nothing paid yet) and link it."""
        liveavatar, store = self.engines.liveavatar, self.store
        if liveavatar is None or store is None:
            return await self._open_rendered(user_session_id, request, expires_at)
        session = liveavatar.open_session(request.avatar_id, request.quality, request.voice_id)
        try:
            token = await session.create()
        except Exception as exc:
            log.warning("creating the LiveAvatar session of %s failed: %s", user_session_id, exc)
            await self._sessions.set_avatar(user_session_id, None, "failed")
            return AvatarOpened("liveavatar", "failed", error=str(exc))
        avatar_id = request.avatar_id or liveavatar.settings.avatar_id or ""
        try:
            avatar_session_id = await store.create(
                user_session_id,
                token.session_id,
                token.session_token,
                avatar_id,
                quality=request.quality,
                voice_id=request.voice_id,
                expires_at=expires_at,
            )
            await store.set_avatar_link(user_session_id, avatar_session_id, "created", None, expires_at)
        except BaseException:
            await session.stop("session_not_stored")  # a session we cannot find again must not run
            raise
        return AvatarOpened("liveavatar", "created", avatar_session_id, token.session_id, avatar_id)

    async def _open_rendered(self, user_session_id: uuid.UUID, request: AvatarRequest, expires_at: datetime) -> AvatarOpened:
        if self.engines.renderer is None:
            return AvatarOpened("none", "unavailable", error="this server has no avatar (AVATAR_ENGINE=none)")
        avatar_session_id = await self._rendered_rows.create(
            user_session_id,
            f"rendered-{user_session_id}",
            "offline",
            RENDERED_AVATAR_ID,
            quality=request.quality,
            voice_id=request.voice_id,
            expires_at=expires_at,
        )
        await self._sessions.set_avatar(user_session_id, str(avatar_session_id), "created")
        return AvatarOpened("rendered", "created", avatar_session_id, None, RENDERED_AVATAR_ID)

    # -- at call start -----------------------------------------------------------------------

    async def attach(self, call: Call) -> uuid.UUID | None:
        """Start the call's LiveAvatar if its session has one; returns that avatar session's id."""
        liveavatar, store = self.engines.liveavatar, self.store
        user_session_id = uuid.UUID(call.session_id)
        if liveavatar is None or store is None:
            if call.avatar is None:
                return None
            # The rendered face: its row exists if the session asked for the avatar, else it is made later.
            linked = await self._sessions.get_for_user(user_session_id, call.user_id)
            return uuid.UUID(linked.avatar_session_id) if linked and linked.avatar_session_id else None
        record = await store.get_for_user_session(user_session_id)
        if record is None or record.session_status != "created":
            if call.avatar is not None:
                linked = await self._sessions.get_for_user(user_session_id, call.user_id)
                if linked is not None and linked.avatar_status == "failed":
                    call.events.publish("error", code="avatar_failed", message="the avatar service could not make a session")
                    if self.engines.fallback == "rendered":
                        call.events.publish("avatar_fallback", engine="rendered", reason="token_failed")
                if self.engines.fallback == "none":
                    call.stop_avatar("no_avatar_session")
            return None
        heygen_session_id, token = await store.token_of(record.id)
        session = liveavatar.resume_session(heygen_session_id, token)
        if call.avatar is None:  # no video was offered: the paid session is never started
            await session.stop("no_video")
            await store.mark_stopped(record.id, "ended")
            await self._sessions.set_avatar(user_session_id, str(record.id), "ended")
            return None

        async def on_status(status: str) -> None:
            assert store is not None
            await store.set_status(record.id, status)
            await self._sessions.set_avatar(user_session_id, str(record.id), status)

        relay = AvatarRelay(
            session,
            call.avatar,
            call.audio_out,
            call.speech,
            call.events,
            fallback=self.engines.fallback,
            stop_video=call.stop_avatar,
            on_status=on_status,
        )
        call.usage.relay_video, call.usage.relay_audio = relay.video.meter, relay.audio
        session.on_event = relay.on_avatar_event
        session.on_lost = relay.lose
        await store.set_status(record.id, "starting")
        call.avatar_relay = relay
        call.run_task(relay.run(), "avatar_relay")
        return record.id

    # -- orphans -----------------------------------------------------------------------------

    async def sweep_orphans(self, node_stale_after_s: float) -> int:
        """Stop the provider sessions whose call is gone (its node was killed, say); returns how many."""
        liveavatar, store = self.engines.liveavatar, self.store
        if liveavatar is None or store is None:
            return 0
        stopped = 0
        for orphan in await store.orphaned_sessions(node_stale_after_s=node_stale_after_s):
            if orphan.heygen_session_token is not None:
                try:
                    await liveavatar.stop_orphan(orphan.heygen_session_id, orphan.heygen_session_token, orphan.reason)
                except Exception as exc:  # tried again at the next sweep
                    log.warning("stopping orphaned avatar session %s failed: %s", orphan.avatar_session_id, exc)
                    continue
            if await store.mark_stopped(orphan.avatar_session_id):
                stopped += 1
                log.info("stopped orphaned avatar session %s (%s)", orphan.avatar_session_id, orphan.reason)
        self.sessions_stopped += stopped
        return stopped
