"""One paid LiveAvatar LITE session, from its token to its stop, with checked states:

    new -> token -> started -> connected -> stopping -> stopped
    connected -> started      (the realtime socket dropped; open_realtime() may run again)
    new/token/started -> failed -> stopping -> stopped

Billing starts with start() (one minute is held at once) and runs until the service hears stop,
so stop() is built for teardown paths: callable from any state and any number of times, bounded
in time, never raising, and it still tells the service to stop when start() failed or was cut off
(a start that timed out may have started the session all the same).

What the service says reaches `on_event(name, data)`: the wire type and frame of every server
event ("agent.speak_ended", "session.state_updated", "error", ...), plus "realtime.dropped"
{"code", "reason"} and "keep_alive.failed" {"error"}. A dropped socket also calls
`on_lost(reason, message)`, reason "session_closed" when the service had said it was closing,
else "realtime_dropped".
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any, TypeVar

import aiohttp

from agent_bridge.liveavatar.errors import LiveAvatarError, LiveAvatarStateError
from agent_bridge.liveavatar.events import (
    ENDED_STATES,
    RealtimeEvent,
    ServerEvent,
    SocketClosed,
    StateUpdated,
)
from agent_bridge.liveavatar.keepalive import KeepAlive
from agent_bridge.liveavatar.orphans import stop_orphan, stop_remote
from agent_bridge.liveavatar.realtime import LiveAvatarRealtime, RealtimeState
from agent_bridge.liveavatar.rest import LiveAvatarRest, SessionStart, SessionToken
from agent_bridge.liveavatar.session_state import (
    MOVES,
    EventCallback,
    LostCallback,
    RoomAccess,
    SessionState,
)
from agent_bridge.liveavatar.settings import LiveAvatarSettings

log = logging.getLogger(__name__)
T = TypeVar("T")
S = SessionState
__all__ = ["EventCallback", "LiveAvatarSession", "RoomAccess", "SessionState", "stop_orphan"]


class LiveAvatarSession:
    """Made by LiveAvatarEngine.open_session / resume_session; use it on one event loop."""

    def __init__(
        self,
        rest: LiveAvatarRest,
        http: aiohttp.ClientSession,
        settings: LiveAvatarSettings,
        *,
        avatar_id: str,
        quality: str | None = None,
        voice_id: str | None = None,
        on_event: EventCallback | None = None,
        keep_alive_interval_s: float | None = None,
        chunk_ms: int = 1000,
        token: SessionToken | None = None,
    ) -> None:
        self._rest = rest
        self._http = http
        self._settings = settings
        self.avatar_id = avatar_id
        self.quality = quality
        self.voice_id = voice_id  # LITE speaks our TTS audio: the voice is the caller's, not sent
        self.on_event = on_event
        self.on_lost: LostCallback | None = None
        self._chunk_ms = chunk_ms
        self._state = S.TOKEN if token is not None else S.NEW  # a token: resumed from the store
        self._token = token
        self._start: SessionStart | None = None
        self._realtime: LiveAvatarRealtime | None = None
        self._op: asyncio.Future[Any] | None = None  # the REST/socket call in flight, cut by stop()
        self._keep_alive = KeepAlive(
            keep_alive_interval_s or settings.keep_alive_interval_s,
            lambda: self._realtime.last_sent_at if self._realtime is not None else 0.0,
            self._send_keep_alive,
            lambda exc: self._emit("keep_alive.failed", {"error": exc.message}),
        )
        self._service_closing = False
        self._stop_requested = False
        self._stop_task: asyncio.Task[bool] | None = None
        self.start_attempted = False  # from then on the session may be billing until stopped
        self.stop_error: str | None = None  # why the service did not confirm the stop, if it did not

    # -- what the caller reads ------------------------------------------------------------------

    @property
    def state(self) -> SessionState:
        return self._state

    @property
    def session_id(self) -> str | None:
        return self._token.session_id if self._token else None

    @property
    def session_token(self) -> str | None:
        """For the store a sweeper reads to stop sessions a dead node left; a secret."""
        return self._token.session_token if self._token else None

    @property
    def realtime(self) -> LiveAvatarRealtime | None:
        return self._realtime

    @property
    def keep_alives_sent(self) -> int:
        return self._keep_alive.sent

    def __repr__(self) -> str:
        return f"<LiveAvatarSession {self.session_id or '-'} {self._state.value}>"

    # -- the life of the session ----------------------------------------------------------------

    async def create(self) -> SessionToken:
        """Mint the session token (nothing billed yet): session_id and session_token to store."""
        self._require(S.NEW, "create")
        try:
            token = await self._guarded("create", self._rest.create_token(self.avatar_id, quality=self.quality))
        except BaseException:
            self._fail()
            raise
        self._token = token
        self._move(S.TOKEN)
        return token

    async def start(self) -> RoomAccess:
        """Start the session (billing begins) and keep it alive while idle; returns the room."""
        self._require(S.TOKEN, "start")
        assert self._token is not None
        self.start_attempted = True
        try:
            started = await self._guarded("start", self._rest.start(self._token.session_token))
        except BaseException:
            self._fail()
            raise
        self._start = started
        self._move(S.STARTED)
        self._keep_alive.start()
        return RoomAccess(
            session_id=started.session_id or self._token.session_id,
            livekit_url=started.livekit_url,
            livekit_client_token=started.livekit_client_token,
            max_session_duration_s=started.max_session_duration_s,
        )

    async def open_realtime(self) -> None:
        """Open the realtime socket. Audio spoken before the service says "connected" is held."""
        self._require(S.STARTED, "open_realtime")
        assert self._start is not None
        realtime = LiveAvatarRealtime(
            self._http,
            self._start.ws_url,
            on_event=self._on_realtime_event,
            chunk_ms=self._chunk_ms,
            max_pending_audio_s=self._settings.max_pending_audio_s,
            connect_timeout_s=self._settings.request_timeout_s,
        )
        self._realtime, self._service_closing = realtime, False
        try:
            await self._guarded("open_realtime", realtime.connect())
        except BaseException:
            if self._realtime is realtime:
                self._realtime = None
            raise  # the paid session is still up: the caller retries or stops
        if realtime.state is RealtimeState.CLOSED:  # it dropped before this resumed (reported already)
            self._realtime = None
            raise LiveAvatarStateError("session: the realtime socket dropped as it opened")
        self._move(S.CONNECTED)

    async def wait_connected(self, timeout: float) -> bool:
        """Wait for the service's "connected" (the avatar is in its room and hears commands)."""
        realtime = self._realtime
        return realtime is not None and await realtime.wait_ready(timeout)

    async def speak(self, pcm24k: bytes) -> str:
        """Audio of the current utterance, PCM16 24 kHz mono; returns the utterance's event_id."""
        return await self._connected_realtime("speak").speak(pcm24k)

    async def speak_end(self) -> str | None:
        return await self._connected_realtime("speak_end").speak_end()

    async def interrupt(self) -> str | None:
        return await self._connected_realtime("interrupt").interrupt()

    async def stop(self, reason: str = "USER_CLOSED") -> bool:
        """Stop the paid session; True when the service confirmed it (or nothing was minted).

        `reason` is the service's (USER_CLOSED...) or ours ("call_ended"...), mapped to the
        nearest of the service's. Idempotent, safe from any state, bounded by
        settings.stop_timeout_s, never raises. A caller cancelled while waiting gets its
        CancelledError; the stop goes on regardless.
        """
        if self._stop_task is None:
            self._stop_requested = True
            self._stop_task = asyncio.create_task(self._stop(reason), name="liveavatar-stop")
        return await asyncio.shield(self._stop_task)

    # -- internals ------------------------------------------------------------------------------

    def _move(self, new: SessionState) -> None:
        if new not in MOVES[self._state]:
            raise LiveAvatarStateError(f"session: {self._state.value} -> {new.value} is not allowed")
        log.debug("liveavatar session %s: %s -> %s", self.session_id or "-", self._state.value, new.value)
        self._state = new

    def _require(self, state: SessionState, what: str) -> None:
        if self._stop_requested:
            raise LiveAvatarStateError(f"session: {what} after stop")
        if self._state is not state:
            raise LiveAvatarStateError(f"session: {what} needs state {state.value}, it is {self._state.value}")

    def _fail(self) -> None:
        if not self._stop_requested and self._state in (S.NEW, S.TOKEN, S.STARTED):
            self._move(S.FAILED)

    async def _guarded(self, what: str, call: Awaitable[T]) -> T:
        """Run a call that stop() may cut short; then raise LiveAvatarStateError, not CancelledError."""
        op = asyncio.ensure_future(call)
        self._op = op
        try:
            result = await op
        except asyncio.CancelledError:
            me = asyncio.current_task()
            if self._stop_requested and op.cancelled() and not (me and me.cancelling()):
                raise LiveAvatarStateError(f"session: stopped during {what}") from None
            op.cancel()
            raise
        finally:
            self._op = None
        if self._stop_requested:
            raise LiveAvatarStateError(f"session: stopped during {what}")
        return result

    def _connected_realtime(self, what: str) -> LiveAvatarRealtime:
        realtime = self._realtime
        if self._state is not S.CONNECTED or realtime is None:
            raise LiveAvatarStateError(f"session: {what} needs state connected, it is {self._state.value}")
        return realtime

    async def _send_keep_alive(self) -> None:
        """On the socket once the service is connected (LITE's own command), else over REST."""
        realtime = self._realtime
        if realtime is not None and realtime.state is RealtimeState.READY and await realtime.keep_alive():
            return
        assert self._token is not None
        await self._rest.keep_alive(self._token.session_id, self._token.session_token)

    def _on_realtime_event(self, event: RealtimeEvent) -> None:
        if isinstance(event, StateUpdated) and event.state in ENDED_STATES:
            self._service_closing = True  # max duration, idle timeout, stopped elsewhere
        if isinstance(event, ServerEvent):
            self._emit(event.name, event.raw)
            return
        if not isinstance(event, SocketClosed) or event.expected or self._stop_requested:
            return
        if self._state is S.CONNECTED:
            self._move(S.STARTED)
            self._realtime = None
        self._emit("realtime.dropped", {"code": event.code, "reason": event.reason})
        if self.on_lost is not None:
            try:
                self.on_lost("session_closed" if self._service_closing else "realtime_dropped", event.reason)
            except Exception:
                log.exception("liveavatar session %s: on_lost failed", self.session_id)

    def _emit(self, name: str, data: dict[str, Any]) -> None:
        if self.on_event is None:
            return
        try:
            self.on_event(name, data)
        except Exception:
            log.exception("liveavatar session %s: an event handler failed", self.session_id)

    async def _stop(self, reason: str) -> bool:
        stopped = False
        try:
            async with asyncio.timeout(self._settings.stop_timeout_s):
                stopped = await self._stop_steps(reason)
        except TimeoutError:
            self.stop_error = f"no confirmation within {self._settings.stop_timeout_s:g} s"
        except Exception as exc:  # noqa: BLE001 - never raise from a teardown path
            self.stop_error = f"{type(exc).__name__}: {exc}"
        finally:
            if self._state is S.STOPPING:
                self._move(S.STOPPED)
        if not stopped:
            # The sweeper (stop_orphan with the stored token) gets another chance at it.
            log.warning("liveavatar session %s: the stop was not confirmed: %s", self.session_id, self.stop_error)
        return stopped

    async def _stop_steps(self, reason: str) -> bool:
        op = self._op
        if op is not None:
            op.cancel()
            await asyncio.gather(op, return_exceptions=True)
        if self._token is None:  # nothing was minted (or the mint was cut off): nothing is billed
            self._move(S.STOPPED)
            return True
        self._move(S.STOPPING)
        await self._keep_alive.aclose()
        realtime, self._realtime = self._realtime, None
        # Closing the socket and telling the service go together: the stop must not wait on the socket.
        token = self._token
        results = await asyncio.gather(
            realtime.aclose() if realtime is not None else asyncio.sleep(0),
            stop_remote(self._rest, token.session_id, token.session_token, reason),
            return_exceptions=True,
        )
        self._move(S.STOPPED)
        if isinstance(results[1], LiveAvatarError):
            self.stop_error = results[1].message
            return False
        if isinstance(results[1], BaseException):
            raise results[1]
        return True
