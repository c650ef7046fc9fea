"""One client's signalling session with the fake LiveKit server: protobuf over a WebSocket, two aiortc peers.

The protocol is LiveKit's "v0" signalling (path /rtc), which the SDK falls back to when /rtc/v1
answers 404: the server sends `join`, then offers the subscriber peer connection itself (the
`subscriber_primary` flow), carrying the avatar's tracks with stream id "{participant sid}|{track sid}".
The client answers; both sides trickle candidates as JSON in `trickle`. The client's own publisher
peer connection (its `_reliable`/`_lossy` data channels, and any track it publishes) is answered
by a second aiortc peer whose incoming media is read and counted, never kept.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable

from aiohttp import WSMsgType, web
from aiortc import (
    RTCBundlePolicy,
    RTCConfiguration,
    RTCDataChannel,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.sdp import candidate_from_sdp
from livekit.protocol import models as proto_models
from livekit.protocol import rtc as proto_rtc

from tests.fakes.livekit_media import AvatarMedia, SubscriberTrack
from tests.fakes.livekit_model import AvatarInfo, DataMessage, new_sid

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 16
SERVER_VERSION = "1.9.0"
PING_INTERVAL_S = 5
PING_TIMEOUT_S = 15
PUBLISHER = proto_rtc.SignalTarget.PUBLISHER
SUBSCRIBER = proto_rtc.SignalTarget.SUBSCRIBER


def _new_peer_connection(registry: set[RTCPeerConnection]) -> RTCPeerConnection:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
    registry.add(pc)
    return pc


class ClientSession:
    """One SDK participant: its WebSocket, its subscriber and publisher peer connections."""

    def __init__(
        self,
        *,
        identity: str,
        ws: web.WebSocketResponse,
        room_sid: str,
        room_name: str,
        avatar: AvatarInfo,
        media: AvatarMedia,
        peer_connections: set[RTCPeerConnection],
        on_closed: Callable[[ClientSession], None],
        received: dict[str, int],
        data: list[DataMessage],
    ) -> None:
        self.identity = identity
        self.sid = new_sid("PA_")
        self._ws = ws
        self._room_sid, self._room_name = room_sid, room_name
        self._avatar, self._media = avatar, media
        self._registry = peer_connections
        self._on_closed = on_closed
        self._received = received  # "{identity}/{kind}" -> frames received from this client's tracks
        self._data = data
        self._reliable: RTCDataChannel | None = None
        self._pcs: dict[int, RTCPeerConnection] = {}
        self._pending_candidates: dict[int, list[dict[str, object]]] = {PUBLISHER: [], SUBSCRIBER: []}
        self._tracks: list[SubscriberTrack] = []
        self._readers: set[asyncio.Task[None]] = set()
        self._closing = False
        self.closed = asyncio.Event()

    async def run(self) -> None:
        """Join, offer the avatar's tracks, then serve requests until the socket closes."""
        try:
            await self._send(join=self._join_response())
            await self._offer_subscriber()
            async for message in self._ws:
                if message.type != WSMsgType.BINARY:
                    continue
                request = proto_rtc.SignalRequest()
                request.ParseFromString(message.data)
                try:
                    await self._handle(request)
                except (ConnectionResetError, asyncio.CancelledError):
                    raise
                except Exception:
                    # Keep serving: a test sees the failure in the log rather than as a silent hang-up.
                    log.exception("fake livekit: %s from %s failed", request.WhichOneof("message"), self.identity)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            await self.close()

    async def kick(self, reason: int, *, grace_s: float = 2.0) -> None:
        """Server-initiated leave: tell the client, give it a moment to hang up, then hang up on it."""
        if self._closing:
            return
        try:
            await self._send(
                leave=proto_rtc.LeaveRequest(
                    can_reconnect=False, reason=reason, action=proto_rtc.LeaveRequest.Action.DISCONNECT
                )
            )
        except ConnectionError:
            pass
        try:
            await asyncio.wait_for(self.closed.wait(), grace_s)
        except TimeoutError:
            pass
        await self.close()

    async def close(self) -> None:
        if self._closing:
            await self.closed.wait()
            return
        self._closing = True
        for track in self._tracks:
            track.stop()
        for task in self._readers:
            task.cancel()
        for pc in self._pcs.values():
            await pc.close()
            self._registry.discard(pc)
        if not self._ws.closed:
            await self._ws.close()
        self.closed.set()
        self._on_closed(self)

    # Messages ------------------------------------------------------------------------------

    async def _send(self, **message: object) -> None:
        await self._ws.send_bytes(proto_rtc.SignalResponse(**message).SerializeToString())  # type: ignore[arg-type]

    async def _handle(self, request: proto_rtc.SignalRequest) -> None:
        kind = request.WhichOneof("message")
        if kind == "offer":
            await self._answer_publisher(request.offer)
        elif kind == "answer":
            pc = self._pcs[SUBSCRIBER]
            await pc.setRemoteDescription(RTCSessionDescription(request.answer.sdp, "answer"))
            await self._flush_candidates(SUBSCRIBER)
        elif kind == "trickle":
            self._pending_candidates[request.trickle.target].append(json.loads(request.trickle.candidateInit))
            await self._flush_candidates(request.trickle.target)
        elif kind == "add_track":
            await self._send(track_published=self._track_published(request.add_track))
        elif kind == "ping_req":
            pong = proto_rtc.Pong(last_ping_timestamp=request.ping_req.timestamp, timestamp=_now_ms())
            await self._send(pong_resp=pong)
        elif kind == "ping":
            await self._send(pong=_now_ms())
        elif kind == "leave":
            await self.close()
        # mute, subscription, track_setting, update_layers, sync_state...: nothing to do in a fake

    def _join_response(self) -> proto_rtc.JoinResponse:
        return proto_rtc.JoinResponse(
            room=proto_models.Room(
                sid=self._room_sid, name=self._room_name, creation_time=self._avatar.joined_at, num_participants=2
            ),
            participant=proto_models.ParticipantInfo(
                sid=self.sid,
                identity=self.identity,
                name=self.identity,
                state=proto_models.ParticipantInfo.State.JOINED,
                joined_at=int(time.time()),
                permission=proto_models.ParticipantPermission(
                    can_subscribe=True, can_publish=True, can_publish_data=True
                ),
            ),
            other_participants=[self._avatar.participant()],
            server_version=SERVER_VERSION,
            subscriber_primary=True,
            ping_interval=PING_INTERVAL_S,
            ping_timeout=PING_TIMEOUT_S,
            server_info=proto_models.ServerInfo(
                edition=proto_models.ServerInfo.Edition.Standard,
                version=SERVER_VERSION,
                protocol=PROTOCOL_VERSION,
                node_id="fake-livekit",
            ),
        )

    def _track_published(self, add: proto_rtc.AddTrackRequest) -> proto_rtc.TrackPublishedResponse:
        info = proto_models.TrackInfo(
            sid=new_sid("TR_"), type=add.type, name=add.name, source=add.source, width=add.width, height=add.height
        )
        return proto_rtc.TrackPublishedResponse(cid=add.cid, track=info)

    # Peer connections -----------------------------------------------------------------------

    async def _offer_subscriber(self) -> None:
        pc = self._pcs[SUBSCRIBER] = _new_peer_connection(self._registry)
        for kind, track_sid in (("video", self._avatar.video_sid), ("audio", self._avatar.audio_sid)):
            track = self._media.subscribe(kind, track_sid)
            self._tracks.append(track)
            sender = pc.addTrack(track)
            # The SDK finds the publication from the msid: stream "{participant sid}|{track sid}".
            sender._stream_id = f"{self._avatar.sid}|{track_sid}"
        # A LiveKit server opens these on every subscriber connection; data from the room arrives here.
        self._reliable = pc.createDataChannel("_reliable", ordered=True)
        pc.createDataChannel("_lossy", ordered=True, maxRetransmits=0)
        await pc.setLocalDescription(await pc.createOffer())  # aiortc gathers every candidate here
        await self._send(offer=proto_rtc.SessionDescription(type="offer", sdp=pc.localDescription.sdp, id=1))

    async def _answer_publisher(self, offer: proto_rtc.SessionDescription) -> None:
        pc = self._pcs.get(PUBLISHER)
        if pc is None:
            pc = self._pcs[PUBLISHER] = _new_peer_connection(self._registry)
            pc.on("track", self._read_published)
            pc.on("datachannel", self._read_data)
        await pc.setRemoteDescription(RTCSessionDescription(offer.sdp, "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        await self._send(answer=proto_rtc.SessionDescription(type="answer", sdp=pc.localDescription.sdp, id=offer.id))
        await self._flush_candidates(PUBLISHER)

    async def _flush_candidates(self, target: int) -> None:
        """Hand trickled candidates to their peer once it has the remote description they belong to."""
        pc = self._pcs.get(target)
        if pc is None or pc.remoteDescription is None:
            return  # the client trickles as soon as it gathers, which can be before its offer/answer lands
        pending, self._pending_candidates[target] = self._pending_candidates[target], []
        for init in pending:
            line = str(init.get("candidate") or "")
            if not line:
                continue  # end of candidates
            candidate = candidate_from_sdp(line.split(":", 1)[1] if line.startswith("candidate:") else line)
            candidate.sdpMid = init.get("sdpMid")  # type: ignore[assignment]
            candidate.sdpMLineIndex = init.get("sdpMLineIndex")  # type: ignore[assignment]
            await pc.addIceCandidate(candidate)

    def send_data(self, packet: proto_models.DataPacket) -> bool:
        """Send a data packet down the subscriber connection; False if its channel is not open (yet)."""
        if self._reliable is None or self._reliable.readyState != "open":
            return False
        self._reliable.send(packet.SerializeToString())
        return True

    def _read_data(self, channel: RTCDataChannel) -> None:
        reliable = channel.label == "_reliable"

        def on_message(message: bytes | str) -> None:
            if not isinstance(message, bytes):
                return
            packet = proto_models.DataPacket()
            try:
                packet.ParseFromString(message)
            except Exception:  # noqa: BLE001 - a fake shrugs at what it cannot parse
                return
            if packet.WhichOneof("value") == "user":
                self._data.append(DataMessage(self.identity, packet.user.topic, packet.user.payload, reliable))

        channel.on("message", on_message)

    def _read_published(self, track: MediaStreamTrack) -> None:
        """Drain what the client publishes (aiortc would otherwise queue it without bound), counting frames."""
        key = f"{self.identity}/{track.kind}"

        async def read() -> None:
            try:
                while True:
                    await track.recv()
                    self._received[key] = self._received.get(key, 0) + 1
            except MediaStreamError:
                pass

        task = asyncio.create_task(read())
        self._readers.add(task)
        task.add_done_callback(self._readers.discard)


def _now_ms() -> int:
    return int(time.time() * 1000)
