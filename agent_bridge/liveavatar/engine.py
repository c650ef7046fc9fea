"""The process-wide LiveAvatar engine: the settings and one HTTP client for every session."""

from __future__ import annotations

import asyncio
import os
import weakref
from collections.abc import Mapping

import aiohttp

from agent_bridge.interfaces import AvatarChoice
from agent_bridge.liveavatar.orphans import stop_orphan
from agent_bridge.liveavatar.rest import LiveAvatarRest, SessionToken
from agent_bridge.liveavatar.session import (
    EventCallback,
    LiveAvatarSession,
    SessionState,
)
from agent_bridge.liveavatar.settings import QUALITIES, LiveAvatarSettings


class LiveAvatarEngine:
    """Opens LiveAvatar sessions; aclose() stops the ones that may be billing and closes the client."""

    name = "liveavatar"

    def __init__(self, settings: LiveAvatarSettings, *, http: aiohttp.ClientSession | None = None) -> None:
        self.settings = settings
        self._http = http
        self._owns_http = http is None
        self._rest: LiveAvatarRest | None = None
        # Weak: a session only minted and stored (not started, not billed) is dropped by its maker.
        self._sessions: weakref.WeakSet[LiveAvatarSession] = weakref.WeakSet()
        self._closed = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> LiveAvatarEngine:
        return cls(LiveAvatarSettings.from_env(environ))

    @property
    def rest(self) -> LiveAvatarRest:
        if self._closed:
            raise RuntimeError("the LiveAvatar engine is closed")
        if self._rest is None:
            if self._http is None:  # made on first use, on the loop that uses it
                self._http = aiohttp.ClientSession(
                    timeout=aiohttp.ClientTimeout(total=None, connect=self.settings.connect_timeout_s),
                    headers={"User-Agent": "voice-avatar-server (agent_bridge.liveavatar)"},
                )
            self._rest = LiveAvatarRest(self.settings, self._http)
        return self._rest

    def avatars(self) -> list[AvatarChoice]:
        """The configured avatars, the default first (LIVEAVATAR_AVATAR_ID, LIVEAVATAR_AVATAR_IDS)."""
        ids = [self.settings.avatar_id] if self.settings.avatar_id else []
        return [AvatarChoice(avatar_id, avatar_id) for avatar_id in dict.fromkeys([*ids, *self.settings.avatar_ids])]

    def open_session(
        self,
        avatar_id: str | None = None,
        quality: str | None = None,
        voice_id: str | None = None,
        *,
        on_event: EventCallback | None = None,
        keep_alive_interval_s: float | None = None,
    ) -> LiveAvatarSession:
        """A new session in state "new"; nothing is asked of the service until its create()."""
        avatar = avatar_id or self.settings.avatar_id
        if not avatar:
            raise ValueError("no avatar: pass avatar_id or set LIVEAVATAR_AVATAR_ID")
        if quality is not None and quality not in QUALITIES:
            raise ValueError(f"quality must be one of {', '.join(QUALITIES)}, got {quality!r}")
        return self._track(LiveAvatarSession(
            self.rest, self._client(), self.settings, avatar_id=avatar, quality=quality, voice_id=voice_id,
            on_event=on_event, keep_alive_interval_s=keep_alive_interval_s,
        ))

    def resume_session(
        self,
        session_id: str,
        session_token: str,
        *,
        avatar_id: str | None = None,
        on_event: EventCallback | None = None,
        keep_alive_interval_s: float | None = None,
    ) -> LiveAvatarSession:
        """A session minted earlier (maybe by another node), from its stored id and token: state "token"."""
        return self._track(LiveAvatarSession(
            self.rest, self._client(), self.settings, avatar_id=avatar_id or self.settings.avatar_id or "",
            on_event=on_event, keep_alive_interval_s=keep_alive_interval_s,
            token=SessionToken(session_id, session_token),
        ))

    async def stop_orphan(
        self, session_id: str, session_token: str | None, reason: str = "ZOMBIE_SESSION_REAP"
    ) -> bool:
        """Stop a session a dead node left; True once stopped, else LiveAvatarError (try again later)."""
        return await stop_orphan(self.rest, session_id, session_token, reason, raise_on_failure=True)

    async def aclose(self) -> None:
        """Stop every session of this engine that may be billing (each bounded), then close the client."""
        if self._closed:
            return
        self._closed = True
        running = [s for s in self._sessions if s.start_attempted and s.state is not SessionState.STOPPED]
        await asyncio.gather(*(s.stop("USER_CLOSED") for s in running), return_exceptions=True)
        if self._owns_http and self._http is not None:
            await self._http.close()
        self._http = None
        self._rest = None

    def _client(self) -> aiohttp.ClientSession:
        rest = self.rest  # makes the client on first use
        assert self._http is not None and rest is not None
        return self._http

    def _track(self, session: LiveAvatarSession) -> LiveAvatarSession:
        self._sessions.add(session)
        return session
