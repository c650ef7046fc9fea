"""What the fake LiveAvatar API knows about a session, and the shapes of what it answers.

A FakeSession goes created -> started -> stopped over REST; while started it may hold one realtime
socket, and its Utterances (by event_id) keep the audio the avatar heard. REST answers use the
service's envelope {"code", "data", "message"} (success code 1000); realtime events are JSON objects.
The LiveKit fake is only described here (RoomLike, LiveKitLike), not imported.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web

BYTES_PER_SECOND = 48_000  # PCM16 mono at 24 kHz
MAX_FRAME = 1_000_000


class RoomLike(Protocol):
    """What is used of tests.fakes.livekit_fake.FakeRoom (not imported: duck typing)."""

    present: set[str]

    def push_audio(self, pcm: bytes, sample_rate: int = 24000) -> None: ...
    def clear_audio(self) -> int: ...
    async def wait_joined(self, identity: str | None = None, timeout: float = 10) -> str: ...
    async def disconnect_all(self, reason: str = "room closed") -> None: ...


class LiveKitLike(Protocol):
    url: str

    def token(self, room: str, identity: str, ttl_s: int = 3600) -> str: ...
    def room(self, name: str, *, width: int = 512, height: int = 512, fps: int = 25) -> RoomLike: ...


@dataclass
class Utterance:
    event_id: str
    audio: bytearray = field(default_factory=bytearray)
    started: bool = False  # agent.speak_started sent
    ended: bool = False  # agent.speak_end received
    finished: bool = False  # agent.speak_ended sent
    interrupted: bool = False


@dataclass
class FakeSession:
    session_id: str
    session_token: str = field(repr=False)
    avatar_id: str
    request: dict[str, Any]
    state: str = "created"  # created -> started -> stopped
    stop_reason: str | None = None
    ws_token: str = field(default_factory=lambda: secrets.token_urlsafe(12), repr=False)
    room: RoomLike | None = None
    ws: web.WebSocketResponse | None = None
    ws_request: web.Request | None = None
    connected: bool = False  # the realtime "connected" state: commands are heard
    utterances: dict[str, Utterance] = field(default_factory=dict)
    dropped: list[tuple[str, str | None, bytes]] = field(default_factory=list)  # (type, event_id, audio)
    keep_alives: int = 0
    playhead: float = 0.0  # loop time when the queued audio has played out
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    def audio(self, event_id: str) -> bytes:
        return bytes(self.utterances[event_id].audio)


def ok_response(data: Any, message: str, *, status: int = 200) -> web.Response:
    return web.json_response({"code": 1000, "data": data, "message": message}, status=status)


def error_response(status: int, code: int, message: str) -> web.Response:
    return web.json_response({"code": code, "data": None, "message": message}, status=status)


def speak_event(kind: str, event_id: str) -> dict[str, Any]:
    return {"type": kind, "event_id": event_id, "source_event_id": event_id, "task": {"id": event_id}}


def ws_error(kind: str, message: str, event_id: str | None) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message, "event_id": event_id}}
