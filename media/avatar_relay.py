"""One call's LiveAvatar, from start to stop: the paid session, its room, and the relay into our tracks.

The whole life is the coroutine `run`, a call task: start the session, join its room, open its
realtime socket, then carry the call's speech to the avatar and the avatar's video and audio to
the browser until the call ends or the avatar fails. Every way out passes the `finally` that
stops the paid session, so it never outlives the call. A failure is an `error` event and a
fallback (the rendered face, or no video), never a dead call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from enum import Enum
from typing import Any, Protocol

from media.avatar_room import AvatarRoom, RoomLost
from media.avatar_speech import AvatarSpeech
from media.avatar_track import AvatarVideoTrack
from media.avatar_video_sources import RelayVideoSource
from media.avatar_voice import OrderedVoice
from media.events import EventBus
from media.outbound_audio import PacedAudioTrack
from media.relay_audio import RelayAudioBuffer
from media.speech_output import SpeechRouter

log = logging.getLogger(__name__)

# How long the avatar may take to show its first frame and its audio once the room is joined.
FIRST_MEDIA_TIMEOUT_S = 20.0


class RelayState(str, Enum):
    NEW = "new"
    STARTING = "starting"
    LIVE = "live"
    ENDED = "ended"  # the call ended it, or max_session_duration
    FAILED = "failed"


_NEXT: dict[RelayState, tuple[RelayState, ...]] = {
    RelayState.NEW: (RelayState.STARTING, RelayState.ENDED, RelayState.FAILED),
    RelayState.STARTING: (RelayState.LIVE, RelayState.ENDED, RelayState.FAILED),
    RelayState.LIVE: (RelayState.ENDED, RelayState.FAILED),
    RelayState.ENDED: (),
    RelayState.FAILED: (),
}


class PaidAvatarSession(Protocol):
    """The service side (agent_bridge.liveavatar.session.LiveAvatarSession)."""

    async def start(self) -> Any: ...
    async def open_realtime(self) -> None: ...
    async def speak(self, pcm24k: bytes) -> None: ...
    async def speak_end(self) -> None: ...
    async def interrupt(self) -> None: ...
    async def stop(self, reason: str) -> None: ...


class AvatarFailed(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class AvatarRelay:
    def __init__(
        self,
        session: PaidAvatarSession,
        track: AvatarVideoTrack,
        audio_out: PacedAudioTrack,
        speech: SpeechRouter,
        events: EventBus,
        *,
        fallback: str,
        stop_video: Callable[[str], None],
        on_status: Callable[[str], Awaitable[None]],
    ) -> None:
        self.session = session
        self.state = RelayState.NEW
        self.end_reason: str | None = None
        self.video = RelayVideoSource()
        self.audio = RelayAudioBuffer()
        self._track = track
        self._audio_out = audio_out
        self._speech_router = speech
        self._events = events
        self._fallback = fallback
        self._stop_video = stop_video
        self._on_status = on_status
        self._lost: asyncio.Future[tuple[str, str]] | None = None
        self._speech: AvatarSpeech | None = None
        self._voice: OrderedVoice | None = None
        self._room: AvatarRoom | None = None
        self._ending = False

    def _move(self, state: RelayState) -> None:
        if state not in _NEXT[self.state]:
            raise RuntimeError(f"avatar relay: {self.state.value} -> {state.value} is not allowed")
        self.state = state

    def lose(self, reason: str, message: str = "") -> None:
        """Something the relay depends on went away (socket dropped, room left, a send failed)."""
        if self._lost is None:  # not running yet: it ends as soon as it starts
            self._lost = asyncio.get_event_loop().create_future()
        if not self._lost.done():
            self._lost.set_result((reason, message or reason))

    def end(self, reason: str) -> None:
        """End the avatar on purpose (its quota ran out, it was deleted): no fallback, the call goes on."""
        self._ending = True
        self.lose(reason)

    def on_avatar_event(self, name: str, data: dict[str, Any] | None = None) -> None:
        """What the avatar's realtime socket said, by event name."""
        if name == "agent.speak_ended" and self._speech is not None:
            self._speech.avatar_finished()
        elif name == "error":
            self._events.publish("avatar_warning", message=str((data or {}).get("message", "avatar error")))

    async def run(self) -> None:
        if self._lost is None:
            self._lost = asyncio.get_running_loop().create_future()
        if self._fallback == "none":
            self._track.use_source(self.video)  # nothing is shown until the avatar's first frame
        self._move(RelayState.STARTING)
        outcome = ("call_ended", "")  # unless something else ends it first: a cancel is the call ending
        try:
            max_duration_s = await self._bring_up()
            self._move(RelayState.LIVE)
            self._events.publish("avatar_started", engine="liveavatar")
            await self._status_quietly("active")
            done, _ = await asyncio.wait({self._lost}, timeout=max_duration_s)
            outcome = self._lost.result() if done else ("max_session_duration", "")
        except AvatarFailed as exc:
            outcome = (exc.reason, str(exc))
        finally:
            await self._shut_down(outcome[0])
            if outcome[0] == "call_ended":
                self._finish(RelayState.ENDED, "call_ended")
                await self._status_quietly("ended")
        reason, message = outcome
        if reason == "max_session_duration" or self._ending:
            self._finish(RelayState.ENDED, reason)
            self._stop_video(reason)
            await self._status_quietly("ended")
            return
        self._finish(RelayState.FAILED, reason)
        log.warning("avatar of a call failed (%s): %s", reason, message)
        self._events.publish("error", code="avatar_failed", message=f"the avatar stopped: {message}")
        if self._fallback == "rendered":
            self._track.use_source(self._track.rendered)
            self._events.publish("avatar_fallback", engine="rendered", reason=reason)
        else:
            self._stop_video(reason)
        await self._status_quietly("failed")

    async def _bring_up(self) -> float | None:
        """Start the paid session, join its room, open its socket; the max duration it allows."""
        try:
            access = await self.session.start()
        except Exception as exc:
            raise AvatarFailed("start_failed", f"starting the avatar session failed: {exc}") from exc
        room = self._room = AvatarRoom(self.video, self.audio, lambda reason: self.lose(reason))
        try:
            await room.join(access.livekit_url, access.livekit_client_token)
        except RoomLost as exc:
            raise AvatarFailed("room_failed", str(exc)) from exc
        try:
            await self.session.open_realtime()
        except Exception as exc:
            raise AvatarFailed("realtime_failed", f"the avatar's realtime socket failed: {exc}") from exc
        self._voice = OrderedVoice(self.session, on_failed=lambda exc: self.lose("realtime_failed", str(exc)))
        self._speech = AvatarSpeech(self._voice, self.audio, self._audio_out)
        # The avatar speaks from now on: the browser hears its audio, our speech goes to it.
        self._audio_out.relay = self.audio
        self._speech_router.avatar = self._speech
        await self._first_frame()
        self._track.use_source(self.video)
        max_s = getattr(access, "max_session_duration_s", None)
        return float(max_s) if max_s else None

    async def _first_frame(self) -> None:
        """Until the avatar's first frame is in; AvatarFailed if the relay is lost or no frame comes in time."""
        assert self._lost is not None
        shown = asyncio.ensure_future(self.video.first_frame.wait())
        try:
            await asyncio.wait({shown, self._lost}, timeout=FIRST_MEDIA_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED)
        finally:
            shown.cancel()
        if self.video.first_frame.is_set():
            return
        if self._lost.done():
            raise AvatarFailed(*self._lost.result())
        raise AvatarFailed("no_video", "the avatar sent no video")

    async def _shut_down(self, reason: str) -> None:
        """Give the call its own audio back, stop the paid session, leave the room. Never raises."""
        if self._speech_router.avatar is self._speech:
            self._speech_router.avatar = None
        if self._audio_out.relay is self.audio:
            self._audio_out.relay = None
            self._audio_out.relay_speaking = False
        if self._speech is not None:
            self._speech.detach()
        if self._voice is not None:
            await self._voice.aclose()
        with contextlib.suppress(Exception):
            await self.session.stop(reason)
        if self._room is not None:
            await self._room.aclose()
        self.video.detach()

    def _finish(self, state: RelayState, reason: str) -> None:
        if self.state in (RelayState.ENDED, RelayState.FAILED):
            return
        self.end_reason = reason
        self._move(state)

    async def _status_quietly(self, status: str) -> None:
        try:
            await self._on_status(status)
        except Exception:  # the row catches up at the call's end; the call goes on
            log.warning("storing avatar status %s failed", status, exc_info=True)
