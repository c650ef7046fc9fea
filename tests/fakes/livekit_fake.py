"""A fake LiveKit server that the real `livekit` SDK joins over a real socket; stands in for LiveAvatar's room.

Each room holds one fake remote participant, "liveavatar-avatar", publishing a VP8 video track that
draws `pattern_frame(index)` (check decoded frames with `read_pattern`) and an Opus audio track that
plays whatever `push_audio` queued, in real time, silence otherwise. Tokens are checked like a
LiveKit server does (HS256, issuer = API key, `video.roomJoin` for the room). WebRTC needs a
non-loopback address, so tests run it inside a network namespace (tests/netns) on NETNS_ADDRESS:

    server = FakeLiveKitServer(NETNS_ADDRESS)
    await server.start()
    room = server.room("avatar-room", width=1280, height=720)
    ...  # the code under test joins server.url with server.token("avatar-room", "relay")
    room.push_audio(pcm_24k)
    await server.aclose()

Signalling: GET /rtc/v1 answers 404 (no single-peer-connection mode), so the SDK falls back to /rtc;
a bad token gets 401 on the upgrade and on /rtc/validate; a resume (`reconnect=1`) gets 410, so the
SDK rejoins from scratch. Faults: `disconnect_all` (a `leave`, the SDK ends up disconnected) and
`drop_connections` (a hang-up, the SDK reconnects by itself).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from aiohttp import web
from aiortc import RTCPeerConnection
from livekit.protocol import models as proto_models

from tests.fakes.livekit_media import AUDIO_RATE, AvatarMedia
from tests.fakes.livekit_model import AvatarInfo, DataMessage, TokenError, make_token, new_sid, verify_token
from tests.fakes.livekit_pattern import pattern_frame, read_pattern
from tests.fakes.livekit_signal import ClientSession

__all__ = [
    "AUDIO_RATE",
    "AVATAR_IDENTITY",
    "DataMessage",
    "FakeLiveKitServer",
    "FakeRoom",
    "pattern_frame",
    "read_pattern",
]

log = logging.getLogger(__name__)

AVATAR_IDENTITY = "liveavatar-avatar"


class FakeRoom:
    """One room: the avatar's media, who joined, and the server-side faults tests can cause."""

    def __init__(
        self, name: str, *, width: int, height: int, fps: int, peer_connections: set[RTCPeerConnection]
    ) -> None:
        self.name = name
        self.width, self.height, self.fps = width, height, fps
        self.sid = new_sid("RM_")
        self.avatar = AvatarInfo(
            identity=AVATAR_IDENTITY,
            sid=new_sid("PA_"),
            video_sid=new_sid("TR_"),
            audio_sid=new_sid("TR_"),
            width=width,
            height=height,
            joined_at=int(time.time()),
        )
        self.joined: list[str] = []
        self.present: set[str] = set()
        self.received_frames: dict[str, int] = {}  # "{identity}/{kind}" -> frames a client published to us
        self.received_data: list[DataMessage] = []  # user data packets clients sent into the room
        self.on_participant_joined: Callable[[str], None] | None = None
        self.on_participant_left: Callable[[str], None] | None = None
        self._media = AvatarMedia(width, height, fps)
        self._sessions: list[ClientSession] = []
        self._peer_connections = peer_connections
        self._changed = asyncio.Event()
        self._kicks: set[asyncio.Task[None]] = set()

    # Audio ---------------------------------------------------------------------------------

    def push_audio(self, pcm: bytes, sample_rate: int = 24000) -> None:
        """Queue mono s16le PCM; it is resampled to 48 kHz and played 20 ms a frame after what is queued."""
        self._media.push(pcm, sample_rate)

    def clear_audio(self) -> int:
        """Drop the queued audio (an interrupt); returns how many 48 kHz samples were dropped."""
        return self._media.clear()

    @property
    def audio_queued_ms(self) -> float:
        return self._media.queued_ms

    @property
    def audio_samples_played(self) -> int:
        """Queued (non-filler) 48 kHz samples sent so far; silence played when the queue is empty is not counted."""
        return self._media.audio_samples_played

    # Video ---------------------------------------------------------------------------------

    @property
    def frames_published(self) -> int:
        return self._media.frames_published

    @property
    def frame_sent_at(self) -> dict[int, float]:
        """Frame index (not wrapped) -> time.monotonic() it was handed to an encoder; the last 2000 frames."""
        return self._media.frame_sent_at

    # Data ----------------------------------------------------------------------------------

    def send_data(self, payload: bytes, topic: str = "") -> int:
        """The avatar sends a reliable user data packet to every client; returns how many got it."""
        packet = proto_models.DataPacket(
            kind=proto_models.DataPacket.Kind.RELIABLE,
            participant_identity=self.avatar.identity,
            user=proto_models.UserPacket(
                participant_sid=self.avatar.sid, participant_identity=self.avatar.identity, payload=payload, topic=topic
            ),
        )
        return sum(session.send_data(packet) for session in self._sessions)

    # Participants --------------------------------------------------------------------------

    async def wait_joined(self, identity: str | None = None, timeout: float = 10) -> str:
        """The identity (given, or the first one) once it is present in the room."""

        def found() -> str | None:
            if identity is not None:
                return identity if identity in self.present else None
            return next((who for who in self.joined if who in self.present), None)

        async with asyncio.timeout(timeout):
            while (who := found()) is None:
                self._changed.clear()
                await self._changed.wait()
        return who

    async def disconnect_all(self, reason: str = "room closed") -> None:
        """Server-initiated disconnect of every client (a "room disconnect" fault): `leave`, then hang up."""
        log.info("fake livekit room %s: disconnecting everyone (%s)", self.name, reason)
        sessions = list(self._sessions)
        await asyncio.gather(*(s.kick(proto_models.DisconnectReason.ROOM_DELETED) for s in sessions))

    async def drop_connections(self) -> None:
        """Hang up on every client without a `leave` (a network fault): the SDK then reconnects by itself."""
        await asyncio.gather(*(s.close() for s in list(self._sessions)))

    async def close(self) -> None:
        """Disconnect everyone and stop the avatar's media; a later join to this name gets the same room back."""
        await self.disconnect_all()
        await asyncio.gather(*self._kicks)
        await self._media.aclose()

    # Used by the server ----------------------------------------------------------------------

    def _session(self, identity: str, ws: web.WebSocketResponse) -> ClientSession:
        session = ClientSession(
            identity=identity,
            ws=ws,
            room_sid=self.sid,
            room_name=self.name,
            avatar=self.avatar,
            media=self._media,
            peer_connections=self._peer_connections,
            on_closed=self._left,
            received=self.received_frames,
            data=self.received_data,
        )
        for old in [s for s in self._sessions if s.identity == identity]:
            # LiveKit keeps one connection per identity: the newcomer replaces the old one.
            kick = asyncio.create_task(old.kick(proto_models.DisconnectReason.DUPLICATE_IDENTITY, grace_s=0.5))
            self._kicks.add(kick)
            kick.add_done_callback(self._kicks.discard)
        self._sessions.append(session)
        self.joined.append(identity)
        self.present.add(identity)
        self._changed.set()
        if self.on_participant_joined is not None:
            self.on_participant_joined(identity)
        return session

    def _left(self, session: ClientSession) -> None:
        if session not in self._sessions:
            return
        self._sessions.remove(session)
        if any(s.identity == session.identity for s in self._sessions):
            return  # replaced by a newer connection of the same identity: still present
        self.present.discard(session.identity)
        self._changed.set()
        if self.on_participant_left is not None:
            self.on_participant_left(session.identity)


class FakeLiveKitServer:
    """aiohttp on host:<random port>: /rtc (signalling WebSocket), /rtc/validate, 404 for /rtc/v1."""

    def __init__(self, host: str, *, api_key: str = "fake-key", api_secret: str = "fake-secret-" + "s" * 32) -> None:
        self.host = host
        self.api_key, self.api_secret = api_key, api_secret
        self.rooms: dict[str, FakeRoom] = {}
        self.peer_connections: set[RTCPeerConnection] = set()  # every one not yet closed
        self.rejected: list[str] = []  # why each refused connection was refused
        self._runner: web.AppRunner | None = None
        self._port = 0

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/rtc", self._rtc)
        app.router.add_get("/rtc/validate", self._validate)
        app.router.add_get("/rtc/v1", self._not_found)
        self._runner = web.AppRunner(app, shutdown_timeout=1)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, 0).start()
        self._port = self._runner.addresses[0][1]

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self._port}"

    def token(self, room: str, identity: str, ttl_s: int = 3600) -> str:
        return make_token(self.api_key, self.api_secret, room, identity, ttl_s)

    def room(self, name: str, *, width: int = 512, height: int = 512, fps: int = 25) -> FakeRoom:
        """The room called `name`, made with these video settings if it does not exist yet."""
        if name not in self.rooms:
            self.rooms[name] = FakeRoom(
                name, width=width, height=height, fps=fps, peer_connections=self.peer_connections
            )
        return self.rooms[name]

    async def aclose(self) -> None:
        """Say `leave` to every client, close every peer connection, stop serving. Safe to call twice."""
        for room in list(self.rooms.values()):
            await room.close()
        for pc in list(self.peer_connections):
            await pc.close()
        self.peer_connections.clear()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # Handlers --------------------------------------------------------------------------------

    def _check(self, request: web.Request) -> tuple[str, str]:
        header = request.headers.get("Authorization", "")
        token = header.removeprefix("Bearer ").strip() or request.query.get("access_token", "")
        try:
            return verify_token(token, self.api_key, self.api_secret)
        except TokenError as exc:
            self.rejected.append(str(exc))
            raise web.HTTPUnauthorized(text=str(exc)) from exc

    async def _rtc(self, request: web.Request) -> web.StreamResponse:
        identity, room_name = self._check(request)
        if request.query.get("reconnect") == "1":
            # No resume here: sessions do not outlive their socket. The SDK then rejoins from scratch.
            raise web.HTTPGone(text="session not found")
        room = self.room(room_name)
        ws = web.WebSocketResponse(heartbeat=None, max_msg_size=0)
        await ws.prepare(request)
        session = room._session(identity, ws)
        await session.run()
        return ws

    async def _validate(self, request: web.Request) -> web.Response:
        self._check(request)
        return web.Response(text="success")

    async def _not_found(self, request: web.Request) -> web.Response:
        return web.Response(status=404, text="single peer connection signalling is not supported by this server")
