"""The LiveAvatar's LiveKit room, joined by the server as a participant: its video and audio come in here.

The livekit SDK (libwebrtc in a native library) receives and decodes; frames reach the event loop
as I420 video (the SDK's own decode format) and 48 kHz mono audio, and go straight into the relay
sources. The browser never sees the room: it only talks to us.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from enum import Enum

import numpy as np

from media.avatar_video_sources import RelayVideoSource
from media.relay_audio import RelayAudioBuffer

log = logging.getLogger(__name__)


class RoomState(str, Enum):
    NEW = "new"
    JOINING = "joining"
    JOINED = "joined"
    CLOSED = "closed"


_NEXT: dict[RoomState, tuple[RoomState, ...]] = {
    RoomState.NEW: (RoomState.JOINING, RoomState.CLOSED),
    RoomState.JOINING: (RoomState.JOINED, RoomState.CLOSED),
    RoomState.JOINED: (RoomState.CLOSED,),
    RoomState.CLOSED: (),
}


class RoomLost(Exception):
    """The room could not be joined, or was left by the avatar or the server."""


class AvatarRoom:
    """One call's seat in the avatar's room. `on_lost(reason)` is told once if the room goes away
    while joined; `aclose` leaves it (idempotent, never raises)."""

    def __init__(self, video: RelayVideoSource, audio: RelayAudioBuffer, on_lost: Callable[[str], None]) -> None:
        self.video = video
        self.audio = audio
        self.state = RoomState.NEW
        self._on_lost = on_lost
        self._room: object | None = None
        self._streams: list[object] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._lost_told = False
        self.tracks_subscribed: set[str] = set()  # "video", "audio"

    def _move(self, state: RoomState) -> None:
        if state not in _NEXT[self.state]:
            raise RuntimeError(f"avatar room: {self.state.value} -> {state.value} is not allowed")
        self.state = state

    async def join(self, url: str, token: str, *, timeout_s: float = 15.0) -> None:
        """Join and subscribe to what the avatar publishes; raises RoomLost if that fails."""
        from livekit import rtc  # loaded only where the LiveAvatar engine is used

        self._move(RoomState.JOINING)
        room = self._room = rtc.Room()
        room.on("track_subscribed", self._on_track_subscribed)
        room.on("disconnected", lambda reason=None: self._lost(f"room_disconnected: {reason}"))
        room.on("participant_disconnected", lambda participant: self._lost("avatar_left"))
        try:
            await asyncio.wait_for(
                room.connect(url, token, rtc.RoomOptions(auto_subscribe=True, connect_timeout=timeout_s)), timeout_s + 1
            )
        except (Exception, asyncio.TimeoutError) as exc:
            raise RoomLost(f"joining the avatar's room failed: {exc or type(exc).__name__}") from exc
        if self.state is RoomState.CLOSED:  # closed while joining
            raise RoomLost("the avatar room was closed while joining")
        self._move(RoomState.JOINED)

    def _on_track_subscribed(self, track: object, publication: object, participant: object) -> None:
        from livekit import rtc

        if self.state is RoomState.CLOSED:
            return
        if track.kind == rtc.TrackKind.KIND_VIDEO and "video" not in self.tracks_subscribed:  # type: ignore[attr-defined]
            self.tracks_subscribed.add("video")
            stream = rtc.VideoStream(track, format=rtc.VideoBufferType.I420)
            self._streams.append(stream)
            self._spawn(self._relay_video(stream))
        elif track.kind == rtc.TrackKind.KIND_AUDIO and "audio" not in self.tracks_subscribed:  # type: ignore[attr-defined]
            self.tracks_subscribed.add("audio")
            stream = rtc.AudioStream(track, sample_rate=48_000, num_channels=1)
            self._streams.append(stream)
            self._spawn(self._relay_audio(stream))

    async def _relay_video(self, stream: object) -> None:
        async for event in stream:  # type: ignore[attr-defined]
            frame = event.frame
            self.video.offer(frame.data, frame.width, frame.height, event.timestamp_us)

    async def _relay_audio(self, stream: object) -> None:
        async for event in stream:  # type: ignore[attr-defined]
            self.audio.push(np.frombuffer(event.frame.data, dtype=np.int16).copy())

    def _spawn(self, coro) -> None:  # type: ignore[no-untyped-def]
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("avatar room relay failed", exc_info=task.exception())
            self._lost("relay_failed")

    def _lost(self, reason: str) -> None:
        if self.state is not RoomState.JOINED or self._lost_told:
            return
        self._lost_told = True
        self._on_lost(reason)

    async def aclose(self) -> None:
        if self.state is RoomState.CLOSED:
            return
        self.state = RoomState.CLOSED  # every state may close
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for stream in self._streams:
            try:
                await stream.aclose()  # type: ignore[attr-defined]
            except Exception:
                log.debug("closing an avatar stream failed", exc_info=True)
        self._streams.clear()
        room, self._room = self._room, None
        if room is not None:
            try:
                await asyncio.wait_for(room.disconnect(), 5)  # type: ignore[attr-defined]
            except (Exception, asyncio.TimeoutError):
                log.warning("leaving the avatar room failed", exc_info=True)
