"""The fake LiveKit server against the real livekit SDK, over real sockets on the namespace's address."""

from __future__ import annotations

import asyncio
import gc
import math
import time
import weakref
from collections.abc import AsyncIterator, Callable

import numpy as np
import pytest
from livekit import rtc

from tests.fakes.livekit_fake import AVATAR_IDENTITY, FakeLiveKitServer, read_pattern
from tests.netns import NETNS_ADDRESS

pytestmark = pytest.mark.timeout(60)

RATE = 48_000
TONE_HZ = 440.0
LOUD_RMS = 1000.0  # the tone's RMS is about 5,700; decoded silence is all but zero


@pytest.fixture
async def server() -> AsyncIterator[FakeLiveKitServer]:
    fake = FakeLiveKitServer(NETNS_ADDRESS)
    await fake.start()
    yield fake
    await fake.aclose()


async def join(server: FakeLiveKitServer, room: str, identity: str = "relay") -> tuple[rtc.Room, dict[str, rtc.Track]]:
    """A connected SDK room and the avatar's tracks it subscribed to, by kind ("video", "audio")."""
    lk = rtc.Room()
    subscribed: asyncio.Queue[rtc.Track] = asyncio.Queue()
    lk.on("track_subscribed", lambda track, publication, participant: subscribed.put_nowait(track))
    await asyncio.wait_for(lk.connect(server.url, server.token(room, identity)), 15)
    tracks: dict[str, rtc.Track] = {}
    while len(tracks) < 2:
        track = await asyncio.wait_for(subscribed.get(), 10)
        tracks["video" if track.kind == rtc.TrackKind.KIND_VIDEO else "audio"] = track
    return lk, tracks


def tone(seconds: float, rate: int = 24_000, amplitude: int = 8000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * math.pi * TONE_HZ * t)).astype(np.int16).tobytes()


class AudioTap:
    """Reads an SDK audio track in the background, keeping (arrival time, 48 kHz mono samples) chunks."""

    def __init__(self, track: rtc.Track) -> None:
        self._stream = rtc.AudioStream(track, sample_rate=RATE, num_channels=1)
        self.chunks: list[tuple[float, np.ndarray]] = []
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for event in self._stream:
            self.chunks.append((time.monotonic(), np.asarray(event.frame.data, np.int16).copy()))

    def since(self, start: float) -> np.ndarray:
        parts = [samples for at, samples in self.chunks if at >= start]
        return np.concatenate(parts) if parts else np.zeros(0, np.int16)

    async def first_chunk(self, after: float, test: Callable[[np.ndarray], bool], timeout: float = 5) -> float:
        """Arrival time of the first chunk after `after` passing `test`."""
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            for at, samples in self.chunks[seen:]:
                if at >= after and test(samples):
                    return at
            seen = len(self.chunks)
            await asyncio.sleep(0.01)
        raise AssertionError(f"no matching audio within {timeout} s")

    async def aclose(self) -> None:
        self._task.cancel()
        await self._stream.aclose()


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2))) if len(samples) else 0.0


async def test_the_avatar_video_shows_the_pattern_frame_by_frame(server: FakeLiveKitServer) -> None:
    room = server.room("video-room", width=640, height=360, fps=25)
    lk, tracks = await join(server, "video-room")
    try:
        assert [p.identity for p in lk.remote_participants.values()] == [AVATAR_IDENTITY]
        avatar = lk.remote_participants[AVATAR_IDENTITY]
        assert sorted(pub.kind for pub in avatar.track_publications.values()) == [
            rtc.TrackKind.KIND_AUDIO,
            rtc.TrackKind.KIND_VIDEO,
        ]
        stream = rtc.VideoStream(tracks["video"], format=rtc.VideoBufferType.I420)
        decoded: list[tuple[int | None, float]] = []
        async for event in stream:
            frame = event.frame
            assert (frame.width, frame.height) == (640, 360)
            y = np.frombuffer(frame.data, np.uint8)[: 640 * 360].reshape(360, 640)
            decoded.append(read_pattern(y))
            if len(decoded) == 25:
                break
        await stream.aclose()
    finally:
        await lk.disconnect()
    indices = [index for index, _ in decoded]
    assert None not in indices, decoded
    assert indices == sorted(indices) and len(set(indices)) >= 20, indices  # a skipped frame is fine, none repeat
    assert max(error for _, error in decoded) < 12, decoded
    assert all(index in room.frame_sent_at for index in indices)
    assert room.frames_published >= indices[-1] - indices[0] + 1


async def test_pushed_audio_plays_on_the_avatar_track_and_clear_stops_it(server: FakeLiveKitServer) -> None:
    room = server.room("audio-room")
    lk, tracks = await join(server, "audio-room")
    tap = AudioTap(tracks["audio"])
    try:
        await tap.first_chunk(0, lambda s: len(s) > 0)
        await asyncio.sleep(0.4)
        assert rms(tap.since(time.monotonic() - 0.3)) < 50, "nothing pushed yet: the avatar should be silent"

        pushed_at = time.monotonic()
        room.push_audio(tone(1.0))
        assert 990 < room.audio_queued_ms <= 1010
        heard_at = await tap.first_chunk(pushed_at, lambda s: rms(s) > LOUD_RMS)
        await asyncio.sleep(1.3)
        heard = tap.since(heard_at)
        loud = np.concatenate(
            [heard[i : i + 480] for i in range(0, len(heard), 480) if rms(heard[i : i + 480]) > LOUD_RMS]
        )
        assert 0.9 * RATE < len(loud) < 1.1 * RATE, len(loud) / RATE
        spectrum = np.abs(np.fft.rfft(loud * np.hanning(len(loud))))
        assert abs(np.argmax(spectrum) * RATE / len(loud) - TONE_HZ) < 5
        assert abs(room.audio_samples_played - RATE) < 200
        assert room.audio_queued_ms == 0
        assert rms(tap.since(time.monotonic() - 0.2)) < 50, "after the tone, silence again"

        room.push_audio(tone(5.0))
        await tap.first_chunk(time.monotonic(), lambda s: rms(s) > LOUD_RMS)
        cleared_at = time.monotonic()
        dropped = room.clear_audio()
        assert dropped > 3 * RATE and room.audio_queued_ms == 0
        quiet_at = await tap.first_chunk(cleared_at, lambda s: rms(s) < 50)
        assert quiet_at - cleared_at < 0.5, f"clear_audio took {quiet_at - cleared_at:.2f} s to be heard"
        print(f"push to first sound {heard_at - pushed_at:.3f} s; clear to silence {quiet_at - cleared_at:.3f} s")
    finally:
        await tap.aclose()
        await lk.disconnect()


async def test_a_bad_token_is_refused(server: FakeLiveKitServer) -> None:
    room = server.room("guarded")
    wrong_secret = FakeLiveKitServer(NETNS_ADDRESS, api_secret="another-secret-" + "z" * 32).token(
        "guarded", "intruder"
    )
    expired = server.token("guarded", "late", ttl_s=-60)
    for token in ("not-a-token", wrong_secret, expired):
        lk = rtc.Room()
        started = time.monotonic()
        with pytest.raises(rtc.ConnectError):
            await asyncio.wait_for(lk.connect(server.url, token), 20)
        assert time.monotonic() - started < 10
    assert room.joined == [] and not server.peer_connections
    assert len(server.rejected) >= 3 and all(why.startswith("invalid token") for why in server.rejected)


async def test_disconnect_all_disconnects_the_sdk(server: FakeLiveKitServer) -> None:
    room = server.room("doomed")
    lk, _ = await join(server, "doomed")
    disconnected: asyncio.Future[object] = asyncio.get_running_loop().create_future()
    lk.on("disconnected", lambda reason: disconnected.done() or disconnected.set_result(reason))
    await room.wait_joined("relay")
    await room.disconnect_all()
    reason = await asyncio.wait_for(disconnected, 5)
    assert reason == rtc.DisconnectReason.ROOM_DELETED
    assert not lk.isconnected()
    assert room.present == set() and not server.peer_connections
    await lk.disconnect()


async def test_dropped_connections_make_the_sdk_rejoin_by_itself(server: FakeLiveKitServer) -> None:
    """A hang-up without `leave` (a network fault): the SDK's resume is refused, so it rejoins from scratch."""
    room = server.room("flaky")
    lk, _ = await join(server, "flaky")
    events: list[str] = []
    reconnected = asyncio.Event()
    resubscribed: asyncio.Queue[rtc.Track] = asyncio.Queue()
    lk.on("reconnecting", lambda: events.append("reconnecting"))
    lk.on("reconnected", reconnected.set)
    lk.on("disconnected", lambda reason: events.append("disconnected"))
    lk.on("track_subscribed", lambda track, publication, participant: resubscribed.put_nowait(track))
    try:
        await room.drop_connections()
        await asyncio.wait_for(reconnected.wait(), 10)
        tracks = [await asyncio.wait_for(resubscribed.get(), 5) for _ in range(2)]
        assert events == ["reconnecting"] and lk.isconnected()
        assert room.joined == ["relay", "relay"] and room.present == {"relay"}
        video = next(track for track in tracks if track.kind == rtc.TrackKind.KIND_VIDEO)
        stream = rtc.VideoStream(video, format=rtc.VideoBufferType.I420)
        event = await asyncio.wait_for(anext(aiter(stream)), 5)
        await stream.aclose()
        y = np.frombuffer(event.frame.data, np.uint8)[: 512 * 512].reshape(512, 512)
        assert read_pattern(y)[0] is not None
    finally:
        await lk.disconnect()


async def test_a_client_leaving_shows_in_present(server: FakeLiveKitServer) -> None:
    room = server.room("comings-and-goings")
    joined: list[str] = []
    left: asyncio.Queue[str] = asyncio.Queue()
    room.on_participant_joined = joined.append
    room.on_participant_left = left.put_nowait
    lk, _ = await join(server, "comings-and-goings", identity="visitor")
    assert await room.wait_joined() == "visitor"
    assert room.joined == ["visitor"] and room.present == {"visitor"} and joined == ["visitor"]
    await lk.disconnect()
    assert await asyncio.wait_for(left.get(), 5) == "visitor"
    assert room.present == set() and room.joined == ["visitor"]


async def test_a_second_connection_of_the_same_identity_replaces_the_first(server: FakeLiveKitServer) -> None:
    room = server.room("twice")
    first, _ = await join(server, "twice")
    kicked: asyncio.Future[object] = asyncio.get_running_loop().create_future()
    first.on("disconnected", lambda reason: kicked.done() or kicked.set_result(reason))
    second, _ = await join(server, "twice")
    try:
        assert await asyncio.wait_for(kicked, 5) == rtc.DisconnectReason.DUPLICATE_IDENTITY
        assert room.joined == ["relay", "relay"] and room.present == {"relay"}
    finally:
        await first.disconnect()
        await second.disconnect()


async def test_what_a_client_publishes_reaches_the_room_and_avatar_data_reaches_it(server: FakeLiveKitServer) -> None:
    """The client's publisher peer connection is answered: data packets and a published track arrive."""
    room = server.room("two-way")
    lk, _ = await join(server, "two-way")
    received: asyncio.Queue[rtc.DataPacket] = asyncio.Queue()
    lk.on("data_received", received.put_nowait)
    source = rtc.AudioSource(RATE, 1)
    try:
        await asyncio.wait_for(lk.local_participant.publish_data(b"hello avatar", topic="control"), 10)
        track = rtc.LocalAudioTrack.create_audio_track("mic", source)
        await asyncio.wait_for(lk.local_participant.publish_track(track), 10)
        silence = rtc.AudioFrame(bytes(960 * 2), RATE, 1, 960)
        for _ in range(50):
            await source.capture_frame(silence)
        deadline = time.monotonic() + 5
        while room.received_frames.get("relay/audio", 0) < 10 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert room.received_frames.get("relay/audio", 0) >= 10
        assert [(m.identity, m.topic, m.payload) for m in room.received_data] == [("relay", "control", b"hello avatar")]
        assert room.send_data(b"hello relay", topic="events") == 1
        packet = await asyncio.wait_for(received.get(), 5)
        assert (packet.data, packet.topic, packet.participant.identity) == (b"hello relay", "events", AVATAR_IDENTITY)
    finally:
        await source.aclose()
        await lk.disconnect()


async def test_aclose_leaves_no_peer_connection_behind() -> None:
    fake = FakeLiveKitServer(NETNS_ADDRESS)
    await fake.start()
    rooms = [await join(fake, "leaky", identity=who) for who in ("a", "b")]
    made = list(fake.peer_connections)
    assert len(made) == 2
    await fake.aclose()
    await fake.aclose()  # idempotent
    assert not fake.peer_connections
    assert all(pc.connectionState == "closed" for pc in made)
    for lk, _ in rooms:
        await lk.disconnect()
    refs = [weakref.ref(pc) for pc in made]
    del made
    gc.collect()
    assert [ref() for ref in refs] == [None, None], "closed peer connections are still referenced"
